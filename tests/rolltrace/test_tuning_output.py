"""What `rolltrace tune` hands the user: tune.html (self-contained, escaped, the choice and its
bound in words) and the strategic-merge patch (only what changed, and it really applies)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from localcluster.apiserver.patch import strategic_merge_patch
from rolltrace.runner.manifests import deployment
from rolltrace.scenario import Scenario, load_scenario
from rolltrace.tuning.output import render_html, trials_figure
from rolltrace.tuning.patch import render_patch
from rolltrace.tuning.search import Phase, TrialRun, TuneResult, Verification, tune
from rolltrace.tuning.settings import Candidate, parse_vary, with_candidate
from tests.rolltrace.test_tuning_search import (
    CAPACITY,
    PRESTOP,
    SLEEP,
    SURGE,
    UNAVAILABLE,
    FakeCluster,
    _needs,
    _overload,
    _pair,
    _rollout,
)


def _prestop_result() -> TuneResult:
    vary = parse_vary(f"{SLEEP}=0..10", load_scenario(PRESTOP))
    return tune([vary], FakeCluster(_needs(3.5)), lambda line: None)


def _pair_result() -> TuneResult:
    return tune(_pair("0..2", "0..2"), FakeCluster(_overload, _rollout, cause="overload"),
                lambda line: None)  # fmt: skip


def _page(result: TuneResult, scenario_name: str) -> str:
    """tune.html as the command writes it, with the patch beside it."""
    return render_html(result, scenario_name, render_patch(result, result.varies[0].scenario))


def test_the_page_is_self_contained() -> None:
    page = _page(_prestop_result(), "prestop-too-short")
    assert "http:" not in page and "https:" not in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


def test_the_page_leads_with_the_choice_and_its_bound_in_words() -> None:
    page = _page(_prestop_result(), "prestop-too-short")
    lead = page.split('<div class="lead">', 1)[1].split("</div>", 1)[0]
    assert "recommended: preStop 4 s" in lead
    assert "0 failed of 1,200 requests in 2 rollouts" in lead
    assert "at most 0.25 % of requests" in lead  # 1 − 0.05^(1/1200) = 0.2493 %


def test_a_hostile_scenario_name_is_escaped() -> None:
    page = _page(_prestop_result(), '<script>alert("x")</script>')
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_no_safe_value_says_so_on_the_page() -> None:
    vary = parse_vary(f"{SLEEP}=0..2", load_scenario(PRESTOP))
    result = tune([vary], FakeCluster(_needs(5)), lambda line: None)
    page = _page(result, "prestop-too-short")
    assert "no safe value" in page and "Verified" not in page


@pytest.mark.parametrize("result", [_prestop_result, _pair_result])
def test_the_figure_marks_the_choice_and_every_label_is_readable(
    result: Any,
) -> None:
    figure = trials_figure(result())
    figure.canvas.draw()
    texts = [t for t in figure.findobj(Text) if t.get_text() and t.get_visible()]
    assert texts and min(float(t.get_fontsize()) for t in texts) >= 8
    assert [a for a in figure.findobj() if a.get_gid() == "chosen"]


def test_the_bar_figure_stacks_failures_by_cause_per_value_tried() -> None:
    figure = trials_figure(_prestop_result())
    bars = [a for a in figure.findobj(Rectangle) if a.get_gid() == "failures:endpoint-lag"]
    (ax,) = figure.axes
    values = [label.get_text() for label in ax.get_xticklabels()]
    heights = dict(zip(values, (b.get_height() for b in bars), strict=True))
    # Bisection tried 10, 0, 5, 2, 3, 4 s; below the 3.5 s needed, 2 runs × 25 failed.
    assert heights == {"0": 50, "2": 50, "3": 50, "4": 0, "5": 0, "10": 0}


def _patch_of(scenario: Scenario, recommended: Candidate) -> tuple[str, dict[str, Any]]:
    varies = [parse_vary(f"{path}=0..60", scenario) for path in recommended]
    result = TuneResult(varies=varies, recommended=recommended)
    text = render_patch(result, scenario)
    patch = yaml.safe_load(text)
    merged = strategic_merge_patch(deployment(scenario), patch)  # the API server's own merge
    assert merged == deployment(with_candidate(scenario, recommended))
    return text, patch


def _container(patch: dict[str, Any]) -> dict[str, Any]:
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_a_pre_stop_patch_holds_only_the_hook() -> None:
    text, patch = _patch_of(load_scenario(PRESTOP), {SLEEP: 4})
    assert _container(patch) == {"name": "app", "lifecycle": {"preStop": {"sleep": {"seconds": 4}}}}
    assert text.startswith(
        "# Strategic-merge patch for your Deployment: pod.pre_stop.sleep_s 1 → 4."
    )
    assert "matched by name" in text


def test_a_grace_period_patch_holds_only_the_grace_period() -> None:
    _, patch = _patch_of(load_scenario(PRESTOP), {"pod.termination_grace_period_s": 12})
    assert patch == {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 12}}}}


def test_a_strategy_patch_holds_only_the_changed_fields() -> None:
    scenario = load_scenario(CAPACITY)  # maxSurge 0, maxUnavailable 2
    text, patch = _patch_of(scenario, {SURGE: 1, UNAVAILABLE: 2})
    assert patch == {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}}
    assert "strategy.max_surge 0 → 1." in text and UNAVAILABLE not in text


def test_a_drain_timeout_patch_changes_one_env_and_says_it_is_the_demo_apps() -> None:
    text, patch = _patch_of(load_scenario(PRESTOP), {"workload.app.drain_timeout_s": 2.5})
    env = [{"name": "DEMOAPP_DRAIN_TIMEOUT", "value": "2.5"}]
    assert _container(patch) == {"name": "app", "env": env}
    assert "your app needs its own equivalent" in text


def test_adding_a_pre_stop_hook_where_there_was_none() -> None:
    scenario = load_scenario(PRESTOP)
    scenario = scenario.model_copy(
        update={"pod": scenario.pod.model_copy(update={"pre_stop": None})}
    )
    text, patch = _patch_of(scenario, {SLEEP: 3})
    assert "pod.pre_stop.sleep_s unset → 3" in text
    assert _container(patch)["lifecycle"] == {"preStop": {"sleep": {"seconds": 3}}}


def test_no_recommendation_or_no_change_is_a_comment_only() -> None:
    scenario = load_scenario(PRESTOP)
    vary = parse_vary(f"{SLEEP}=0..10", scenario)
    unchanged: Candidate = {SLEEP: 1}
    for recommended in (None, unchanged):
        text = render_patch(TuneResult([vary], recommended=recommended), scenario)
        assert yaml.safe_load(text) is None and text.startswith("# ")
        assert "nothing to apply" in text


def test_the_page_shows_how_to_apply_the_patch() -> None:
    result = _prestop_result()
    result.verified = Verification((TrialRun("r", 100, 0, {}, 5.0, "complete"),))
    page = _page(result, "prestop-too-short")
    assert "seconds: 4" in page and "kubectl patch deployment" in page


def _refuted_result() -> TuneResult:
    """The search holds 4 s safe; the verification sees failures it missed below 5.5 s."""
    search, verifying = FakeCluster(_needs(3.5)), FakeCluster(_needs(5.5))

    def evaluate(candidate: Candidate, phase: Phase) -> list[TrialRun]:
        return (search if phase == "search" else verifying)(candidate, phase)

    vary = parse_vary(f"{SLEEP}=0..10", load_scenario(PRESTOP))
    return tune([vary], evaluate, lambda line: None)


def test_a_failed_verification_is_drawn_and_listed() -> None:
    result = _refuted_result()
    refuted = [c[SLEEP] for c, _ in result.failed_verifications]
    assert refuted and result.recommended is not None
    figure = trials_figure(result)
    (ax,) = figure.axes
    labels = [label.get_text() for label in ax.get_xticklabels()]
    marked = [t for t in figure.findobj(Text) if t.get_gid() == "verdict:failed verification"]
    assert sorted(labels[round(t.get_position()[0])] for t in marked) == sorted(
        str(v) for v in refuted
    )
    page = _page(result, "prestop-too-short")
    table = page.split("<h2>Verifications, in the order run</h2>", 1)[1].split("</table>", 1)[0]
    rows = table.split("<tr>")[2:]
    assert len(rows) == len(refuted) + 1
    assert all("failed: unsafe after all" in row for row in rows[:-1])
    assert "held" in rows[-1] and f"preStop {result.recommended[SLEEP]} s" in rows[-1]


def test_a_page_without_verification_has_no_verification_table() -> None:
    vary = parse_vary(f"{SLEEP}=0..2", load_scenario(PRESTOP))
    result = tune([vary], FakeCluster(_needs(5)), lambda line: None)
    assert "Verifications" not in _page(result, "prestop-too-short")
