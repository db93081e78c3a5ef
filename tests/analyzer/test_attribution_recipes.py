"""Attribution scored against the trace builder's truth: every recipe, every injected cause.

The builder writes real run directories (pcap bytes, events.jsonl, requests.parquet) from a
model of the rollout and records why each request failed in truth.jsonl. The analyzer is run
on the directory *without* truth.jsonl (it must never need it) and scored per cause.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from analyzer.pipeline import Analysis, analyze
from analyzer.schema import Cause
from analyzer.tracebuilder.build import BuiltRun, build_run

MIN_SCORE = 0.95


def compute(built: BuiltRun) -> Analysis:
    """The analysis of a built run, nothing written."""
    return analyze(built.paths, write_tables=False, write_summary=False)


@dataclass
class Scored:
    built: BuiltRun
    analysis: Analysis

    @property
    def joined(self) -> pd.DataFrame:
        truth = self.built.causes[["request_id", "cause"]].rename(columns={"cause": "truth"})
        found = self.analysis.tables["failures"][["request_id", "cause"]]
        return truth.merge(found, on="request_id", how="outer")


def _build_and_analyze(root: Path, recipe: str, seed: int) -> Scored:
    built = build_run(root / f"{recipe}-{seed}", recipe, seed=seed)
    (built.paths.truth).unlink()  # attribution must not need (or read) the truth
    return Scored(built, compute(built))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Scored]:
    root = tmp_path_factory.mktemp("recipes")
    cases = [(name, 1) for name in SINGLE] + [(name, s) for name in MIXED for s in (1, 2, 3)]
    return {(name, seed): _build_and_analyze(root, name, seed) for name, seed in cases}


SINGLE = [
    "clean",
    "not-ready",
    "endpoint-lag",
    "inflight-cut",
    "keepalive-race",
    "lb-lag",
    "no-endpoints",
    "overload",
    # failure classes beyond a plain rollout
    "liveness-kill",
    "crash-loop",
    "killed-at-grace",
    "warmup-503",
    "warmup-reset",
    "readiness-flap",
    "local-one-replica",
    "overload-slow",
    "keepalive-race-rst",
    "endpoint-lag-slow-node",
]
MIXED = [
    "mixed",
    "mixed-local",
    "mixed-restarts",
    "mixed-edge",
    "local-one-replica-fallback",
    "local-one-replica-recreate",
]


def per_cause_scores(joined: pd.DataFrame) -> dict[str, tuple[float, float, int]]:
    """cause → (precision, recall, truth count) over every cause that is true or claimed."""
    scores = {}
    for cause in set(joined["truth"].dropna()) | set(joined["cause"].dropna()):
        truth = joined["truth"] == cause
        claimed = joined["cause"] == cause
        hit = int((truth & claimed).sum())
        precision = hit / int(claimed.sum()) if claimed.any() else 1.0
        recall = hit / int(truth.sum()) if truth.any() else 1.0
        scores[str(cause)] = (precision, recall, int(truth.sum()))
    return scores


@pytest.mark.parametrize("recipe", SINGLE)
def test_single_cause_recipe_is_recovered(runs: dict[tuple[str, int], Scored], recipe: str) -> None:
    scored = runs[(recipe, 1)]
    joined = scored.joined
    # every failed request has exactly one attributed cause, and only failed requests do
    assert joined["truth"].notna().all() and joined["cause"].notna().all()
    assert joined["request_id"].is_unique
    for cause, (precision, recall, n) in per_cause_scores(joined).items():
        assert precision >= MIN_SCORE and recall >= MIN_SCORE, (cause, precision, recall, n)
    expected = {c.value for c in scored.built.recipe.causes}
    assert set(joined["truth"]) == expected  # the recipe injected what it says it does
    if recipe == "clean":
        assert scored.analysis.summary["requests_failed"] == 0


@pytest.mark.parametrize("recipe", MIXED)
def test_mixed_recipes_score_per_cause_over_seeds(
    runs: dict[tuple[str, int], Scored], recipe: str
) -> None:
    joined = pd.concat([runs[(recipe, s)].joined for s in (1, 2, 3)], ignore_index=True)
    scores = per_cause_scores(joined)
    injected = {c.value for c in runs[(recipe, 1)].built.recipe.causes}
    assert injected <= set(scores)
    for cause, (precision, recall, n) in scores.items():
        assert precision >= MIN_SCORE and recall >= MIN_SCORE, (cause, precision, recall, n)


def test_summary_counts_agree_with_truth(runs: dict[tuple[str, int], Scored]) -> None:
    scored = runs[("mixed", 1)]
    summary = scored.analysis.summary
    truth_counts = scored.built.causes["cause"].value_counts()
    assert summary["requests_total"] == len(scored.built.requests)
    assert summary["requests_failed"] == len(scored.built.causes)
    for cause in Cause:
        assert summary["failed_by_cause"][cause.value] == int(truth_counts.get(cause.value, 0))
    assert summary["pod_match"]["header"] + summary["pod_match"]["node-capture"] > 0


@pytest.mark.parametrize("recipe", ["not-ready", "endpoint-lag", "lb-lag", "overload"])
def test_windows_cover_the_injected_failures(
    runs: dict[tuple[str, int], Scored], recipe: str
) -> None:
    scored = runs[(recipe, 1)]
    truth = scored.built.windows
    windows = scored.analysis.tables["windows"]
    assert windows["failed"].sum() == truth["failed"].sum()
    assert windows["start_ns"].min() == truth["start_ns"].min()
    # windows close at the last failure's *end*, truth at its start
    assert windows["end_ns"].max() >= truth["end_ns"].max()
    assert windows["end_ns"].max() - truth["end_ns"].max() <= 4_000_000_000
    assert set(windows["dominant_cause"]) == set(truth["cause"])


def _truth_timing(built: BuiltRun, metric: str) -> pd.DataFrame:
    return built.timings[built.timings["metric"] == metric]


def test_readiness_lead_recovered_when_ready_comes_too_early(
    runs: dict[tuple[str, int], Scored],
) -> None:
    scored = runs[("not-ready", 1)]
    truth = _truth_timing(scored.built, "readiness_lead").set_index("pod")["value_ms"]
    measured = scored.analysis.tables["timings"]
    lead = measured[measured["timing"] == "readiness_lead"].set_index("pod")["ms"]
    assert len(truth) > 0 and set(lead.index) == set(truth.index)
    for pod, value in lead.items():
        assert abs(value - truth[pod]) <= 250.0, (pod, value, truth[pod])


@pytest.mark.parametrize("recipe", ["endpoint-lag", "clean"])
def test_propagation_recovered_per_node(runs: dict[tuple[str, int], Scored], recipe: str) -> None:
    """The last new connection a node still sent to a leaving Pod bounds that node's rules lag
    from below; over every Pod it comes close to it (sampling: a few connections per 100 ms)."""
    scored = runs[(recipe, 1)]
    truth = _truth_timing(scored.built, "propagation")
    measured = scored.analysis.tables["timings"]
    measured = measured[measured["timing"] == "propagation"]
    assert len(truth) == scored.built.recipe.nodes
    for row in truth.itertuples():  # the masquerading node's address is named by the Pods
        worst = measured[measured["node"] == str(row.node)]["ms"].max()
        assert row.value_ms - 500.0 <= worst <= row.value_ms + 100.0, (row.node, worst)


def test_drain_ends_by_exit_and_spans_prestop_where_connections_stay(
    runs: dict[tuple[str, int], Scored],
) -> None:
    """Effective drain = deletion → the Pod's last response or connection close: never after
    the process exited, and as long as the preStop sleep for Pods that kept a keep-alive
    connection (the draining app closes idle ones only at SIGTERM, after preStop)."""
    scored = runs[("clean", 1)]
    pods = scored.built.pods.set_index("pod")
    measured = scored.analysis.tables["timings"]
    drain = measured[measured["timing"] == "drain"].set_index("pod")["ms"]
    assert len(drain) == scored.built.recipe.replicas
    for pod, value in drain.items():
        exit_ms = (pods.loc[pod, "exited_ns"] - pods.loc[pod, "deletion_ns"]) / 1e6
        assert 0 < value <= exit_ms + 200, (pod, value, exit_ms)
    assert drain.max() >= scored.built.recipe.prestop_s * 1000 - 100


def test_without_packets_the_analysis_still_attributes_and_says_so(tmp_path: Path) -> None:
    built = build_run(tmp_path / "run", "endpoint-lag", seed=4)
    shutil.rmtree(built.paths.packets_dir)
    analysis = compute(built)
    summary = analysis.summary
    assert "packets/*.pcap" in summary["inputs"]["missing"]
    assert summary["timings"]["propagation"]["n"] == 0
    joined = Scored(built, analysis).joined
    precision, recall, _ = per_cause_scores(joined)[Cause.ENDPOINT_LAG.value]
    assert precision >= MIN_SCORE and recall >= MIN_SCORE
    failures = analysis.tables["failures"]
    assert (failures["pod_method"] == "inferred").all()
    assert failures["confidence"].max() < 0.9  # inferred evidence claims less


@pytest.mark.parametrize(
    "options",
    [
        {"watch_gap": (5.0, 9.0)},  # the rollout's transitions are only seen after the gap
        {"duplicate_client_packets": True},
        {"linktype": "sll2", "pcapng": True, "nanosecond": False},
        {"snaplen": 96},
        {"node_captures": False},
    ],
    ids=["watch-gap", "duplicates", "sll2-pcapng-us", "snaplen-96", "client-capture-only"],
)
def test_mixed_recipe_survives_trace_options(tmp_path: Path, options: dict[str, object]) -> None:
    built = build_run(tmp_path / "run", "mixed", seed=5, **options)
    built.paths.truth.unlink()
    joined = Scored(built, compute(built)).joined
    scores = per_cause_scores(joined)
    assert {c.value for c in built.recipe.causes} <= set(scores)
    for cause, (precision, recall, n) in scores.items():
        assert precision >= MIN_SCORE and recall >= MIN_SCORE, (cause, precision, recall, n)


def test_without_node_captures_propagation_is_seen_through_responses(tmp_path: Path) -> None:
    """A Pod in its preStop sleep still answers: the last new connection it answered after its
    endpoint left bounds the slowest node's lag from below."""
    built = build_run(tmp_path / "run", "clean", seed=1, node_captures=False)
    summary = compute(built).summary
    slowest = _truth_timing(built, "propagation")["value_ms"].max()
    measured = summary["timings"]["propagation"]
    assert measured["n"] == built.recipe.replicas
    assert slowest - 500.0 <= measured["max_ms"] <= slowest + 100.0
    assert summary["timings"]["propagation_by_node"] == {}
    assert "no node-side capture" in summary["timings"]["note"]
