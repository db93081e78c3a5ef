"""`rolltrace tune` without a cluster: its usage errors, its evaluator's cache, its outputs and
progress. A fake run stands in for the cluster: it writes the run.json and summary.json a real
run would, with failures decided by the candidate (endpoint-lag while preStop < 3 s)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import rolltrace.commands.tune as tune_module
from analyzer.pipeline import ANALYZER_VERSION, TABLES, input_fingerprint
from analyzer.rundir import RunMeta, RunPaths, write_run_meta
from analyzer.schema import SCHEMA_VERSION, RunStatus
from rolltrace.cli import app
from rolltrace.commands.tune import (
    CacheMismatch,
    TrialCache,
    candidate_slug,
    default_output,
    rollout_seconds,
)
from rolltrace.scenario import Scenario, load_scenario

SCENARIO = "scenarios/prestop-too-short.yaml"
NEEDED_PRESTOP_S = 3  # the fake's propagation: a shorter preStop fails
REQUESTS_PER_RUN = 500


class FakeRuns:
    """Writes a finished run directory for a scenario, as the real runner would, and counts the
    runs; ``interrupt_at`` makes that run (1-based) stop like a Ctrl-C after it started."""

    def __init__(self, interrupt_at: int | None = None, performed: bool = True) -> None:
        self.count = 0
        self.interrupt_at = interrupt_at
        self.performed = performed  # False: the experiment itself fails, nothing is recorded

    def __call__(self, scenario: Scenario, run_dir: Path) -> None:
        self.count += 1
        paths = RunPaths(run_dir)
        paths.analysis.mkdir(parents=True)
        if self.count == self.interrupt_at:
            raise KeyboardInterrupt
        pre_stop = scenario.pod.pre_stop.sleep_s if scenario.pod.pre_stop else 0
        failed = 0 if (pre_stop or 0) >= NEEDED_PRESTOP_S else 40
        trigger = 1_000_000_000_000
        status = RunStatus.COMPLETE if self.performed else RunStatus.FAILED
        meta = RunMeta(
            schema_version=SCHEMA_VERSION, run_id=run_dir.name, status=status,
            status_reasons=[] if self.performed else ["the load generator exited early"],
            backend="local", scenario=scenario.model_dump(mode="json"),
            phases={"rollout_trigger": trigger,
                    "old_pods_gone": trigger + int((4 + (pre_stop or 0)) * 1e9)},
        )  # fmt: skip
        write_run_meta(paths.run_json, meta)
        if not self.performed:  # no requests: nothing to analyze
            return
        summary = {
            "schema_version": SCHEMA_VERSION, "analyzer_version": ANALYZER_VERSION,
            "requests_total": REQUESTS_PER_RUN, "requests_failed": failed,
            "failed_by_cause": {"endpoint-lag": failed, "overload": 0},
            "inputs": {"fingerprint": input_fingerprint(paths)},
        }  # fmt: skip
        paths.summary.write_text(json.dumps(summary))
        paths.tables.mkdir()
        for table in TABLES:  # an analysis is whole with its tables; none is read here
            paths.table(table).touch()


def base(*sets: str) -> Scenario:
    return load_scenario(SCENARIO, [*sets, "repetitions=2"])


def cache(tmp_path: Path, runs: FakeRuns, scenario: Scenario, said: list[str]) -> TrialCache:
    return TrialCache(scenario, tmp_path, runs, said.append)


# --- the evaluator and its cache ----------------------------------------------------------------


def test_a_candidate_runs_its_repetitions_once_then_reads_them(tmp_path: Path) -> None:
    runs, said = FakeRuns(), list[str]()
    evaluate = cache(tmp_path, runs, base(), said)
    first = evaluate({"pod.pre_stop.sleep_s": 2}, "search")
    assert runs.count == 2 and [r.failed for r in first] == [40, 40]
    assert {r.causes["endpoint-lag"] for r in first} == {40} and "overload" not in first[0].causes
    assert first[0].rollout_s == pytest.approx(6.0) and first[0].status == "complete"
    again = TrialCache(base(), tmp_path, runs, said.append)({"pod.pre_stop.sleep_s": 2}, "search")
    assert runs.count == 2, "the cached candidate ran again"
    assert again == first
    assert any(line.startswith("  cached: 2 run(s)") for line in said)
    evaluate({"pod.pre_stop.sleep_s": 2}, "verify")  # a verification is new runs
    assert runs.count == 4


def test_a_changed_scenario_refuses_the_cache_and_names_the_change(tmp_path: Path) -> None:
    runs = FakeRuns()
    cache(tmp_path, runs, base(), [])({"pod.pre_stop.sleep_s": 4}, "search")
    changed = cache(tmp_path, runs, base("load.rate=80"), [])
    with pytest.raises(CacheMismatch, match=r"load\.rate 60\.0 → 80\.0"):
        changed({"pod.pre_stop.sleep_s": 4}, "search")
    more = TrialCache(load_scenario(SCENARIO, ["repetitions=3"]), tmp_path, runs, print)
    with pytest.raises(CacheMismatch, match="repetitions 2 → 3"):
        more({"pod.pre_stop.sleep_s": 4}, "search")
    assert runs.count == 2
    with pytest.raises(CacheMismatch, match=r"sleep_s-4/search holds .*load\.rate 60\.0 → 80\.0"):
        changed.check_all()  # what the command asks before its first candidate
    # a description or an expectation changes no run: the cache still stands
    cache(tmp_path, runs, base("description=other", "expect=[]"), [])(
        {"pod.pre_stop.sleep_s": 4}, "search"
    )
    assert runs.count == 2


def test_an_interrupted_candidate_resumes_at_the_run_it_was_in(tmp_path: Path) -> None:
    runs = FakeRuns(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        cache(tmp_path, runs, base(), [])({"pod.pre_stop.sleep_s": 5}, "search")
    directory = tmp_path / "trials" / "sleep_s-5" / "search"
    assert json.loads((directory / "trial.json").read_text())["runs"] == ["sleep_s-5-r1"]
    resumed = cache(tmp_path, runs, base(), [])({"pod.pre_stop.sleep_s": 5}, "search")
    assert runs.count == 3  # only the interrupted run ran again
    assert [Path(r.run_dir).name for r in resumed] == ["sleep_s-5-r1", "sleep_s-5-r2"]
    assert all(r.requests == REQUESTS_PER_RUN for r in resumed)


def test_rollout_time_is_trigger_to_last_old_pod_gone() -> None:
    assert rollout_seconds({"rollout_trigger": 10**9, "old_pods_gone": 7_500_000_000}) == 6.5
    assert rollout_seconds({"rollout_trigger": 10**9, "rollout_complete": 2 * 10**9}) is None


def test_candidate_directories_are_distinct_and_plain() -> None:
    slugs = {
        candidate_slug({"strategy.max_surge": 1, "strategy.max_unavailable": "25%"}),
        candidate_slug({"strategy.max_surge": "1%", "strategy.max_unavailable": 25}),
        candidate_slug({"workload.app.drain_timeout_s": 2.5}),
    }
    assert slugs == {"max_surge-1+max_unavailable-25pct", "max_surge-1pct+max_unavailable-25",
                     "drain_timeout_s-2.5"}  # fmt: skip
    assert default_output("prestop-too-short", ["pod.pre_stop.sleep_s"]) == Path(
        "runs/tune/prestop-too-short-sleep_s"
    )


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    """The command with the fake runner, and a cluster that needs nothing of this machine."""
    runs = FakeRuns()
    monkeypatch.setattr(tune_module, "run_trial", lambda console: runs)
    monkeypatch.setattr(tune_module, "cluster_problem", lambda scenario: None)
    return runs


def invoke(*argv: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["tune", *argv])
    return result.exit_code, result.stdout, result.stderr


def test_a_tune_writes_its_outputs_prints_progress_and_resumes(
    tmp_path: Path, fake_cluster: FakeRuns
) -> None:
    argv = (SCENARIO, "--vary", "pod.pre_stop.sleep_s=0..8", "--repetitions", "1",
            "-o", str(tmp_path))  # fmt: skip
    code, out, err = invoke(*argv)
    assert code == 0, err
    searched = fake_cluster.count
    assert searched <= 2 + 3 + 1  # both ends, bisection of 9 values, the verification
    document = json.loads((tmp_path / "tune.json").read_text())
    assert document["recommended"] == NEEDED_PRESTOP_S
    assert document["verified"]["failed"] == 0 and document["repetitions"] == 1
    assert (
        document["scenario"] == "prestop-too-short" and "old_pods_gone" in document["rollout_s_is"]
    )
    patch = yaml.safe_load((tmp_path / "patch.yaml").read_text())
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == NEEDED_PRESTOP_S
    page = (tmp_path / "tune.html").read_text()
    lead = page.split('<div class="lead">', 1)[1].split("</div>", 1)[0]
    assert f"recommended: preStop {NEEDED_PRESTOP_S} s" in lead
    assert "trial 1: preStop 8 s" in err and "verify: preStop 3 s" in err
    assert "sleep_s-0-r1: 40 failed of 500 (endpoint-lag 40); rollout 4.0 s" in err
    assert f"recommended: preStop 3 s (pod.pre_stop.sleep_s={NEEDED_PRESTOP_S})" in out
    assert "verified: 0 failed of 500 requests in 1 rollout" in out
    for name in ("tune.json", "tune.html", "patch.yaml"):
        assert str(tmp_path / name) in out
    code, out_again, err_again = invoke(*argv)
    assert code == 0 and fake_cluster.count == searched, "a resumed tune ran again"
    assert err_again.count("cached") == err.count("trial ") + 1  # every trial and the verify
    assert out_again.splitlines()[:2] == out.splitlines()[:2]


def test_a_tune_over_another_experiments_trials_is_refused_before_any_run(
    tmp_path: Path, fake_cluster: FakeRuns
) -> None:
    invoke(SCENARIO, "--vary", "pod.pre_stop.sleep_s=0..8", "--repetitions", "1",
           "-o", str(tmp_path))  # fmt: skip
    before = fake_cluster.count
    # its first candidate (9 s) is new, the trials it would reach later are not this experiment
    code, out, err = invoke(SCENARIO, "--vary", "pod.pre_stop.sleep_s=0..9", "--repetitions", "1",
                            "-o", str(tmp_path), "--set", "load.users=9")  # fmt: skip
    assert code == 2 and fake_cluster.count == before
    assert "holds runs of another experiment (load.users 8 → 9)" in err and out == ""


def test_no_safe_value_in_the_range_exits_1_with_the_outputs(
    tmp_path: Path, fake_cluster: FakeRuns
) -> None:
    code, out, _ = invoke(SCENARIO, "--vary", "pod.pre_stop.sleep_s=0..2", "--repetitions", "1",
                          "-o", str(tmp_path))  # fmt: skip
    assert code == 1 and fake_cluster.count == 1  # the expensive end failed: nothing else ran
    assert "no recommendation: no safe value" in out and "wider range" in out
    assert json.loads((tmp_path / "tune.json").read_text())["recommended"] is None
    assert (tmp_path / "patch.yaml").exists() and (tmp_path / "tune.html").exists()


def test_runs_that_could_not_be_performed_are_named_not_taken_for_safety(
    tmp_path: Path, fake_cluster: FakeRuns
) -> None:
    fake_cluster.performed = False
    code, out, err = invoke(SCENARIO, "--vary", "pod.pre_stop.sleep_s=0..8", "--repetitions", "1",
                            "-o", str(tmp_path))  # fmt: skip
    assert code == 1 and fake_cluster.count == 1
    assert "did not complete (failed)" in err and "· the load generator exited early" in err
    assert "note: 1 run(s) could not be performed (status failed" in out
    invoke(SCENARIO, "--vary", "pod.pre_stop.sleep_s=0..8", "--repetitions", "1",
           "-o", str(tmp_path))  # fmt: skip
    assert fake_cluster.count == 2, "a run without an analysis was taken from the cache"


def test_ctrl_c_stops_and_the_command_it_prints_resumes(
    tmp_path: Path, fake_cluster: FakeRuns
) -> None:
    fake_cluster.interrupt_at = 2
    code, _, err = invoke(SCENARIO, "--vary", "pod.pre_stop.sleep_s=0..8", "-o", str(tmp_path))
    assert code == 130
    assert f"kept in {tmp_path}/trials" in err
    assert not (tmp_path / "tune.json").exists()
    command = shlex.split(err.split("run again: ")[1])
    assert command[:2] == ["rolltrace", "tune"]
    code, _, err = invoke(*command[2:])
    assert code == 0, err
    assert "trial 1: preStop 8 s (2 runs)\n  sleep_s-8-r2:" in err  # r1 was kept
    assert json.loads((tmp_path / "tune.json").read_text())["recommended"] == NEEDED_PRESTOP_S


@pytest.mark.parametrize(
    ("vary", "problem"),
    [
        (["pod.pre_stop.sleep_s=a..3"], "--vary pod.pre_stop.sleep_s=a..3: 'a' is not a number"),
        (["load.rate=10..20"], "--vary load.rate=10..20: load.rate cannot be tuned; supported:"),
        (["pod.pre_stop.sleep_s=5..5"], "LOW must be below HIGH"),
        (["pod.pre_stop.sleep_s=0..10"] * 2 + ["strategy.max_surge=0..2"],
         "tune varies one or two settings at a time, not 3"),
        (["pod.pre_stop.sleep_s"], "expected PATH=LOW..HIGH"),
    ],
)  # fmt: skip
def test_a_vary_that_cannot_be_searched_is_one_line_and_exit_2(
    tmp_path: Path, fake_cluster: FakeRuns, vary: list[str], problem: str
) -> None:
    code, out, err = invoke(SCENARIO, *(f"--vary={v}" for v in vary), "-o", str(tmp_path))
    assert code == 2 and problem in err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert fake_cluster.count == 0 and list(tmp_path.iterdir()) == []


def test_a_real_cluster_scenario_without_its_context_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    code, _, err = invoke("scenarios/kube-example.yaml", "--vary", "pod.pre_stop.sleep_s=0..4",
                          "-o", str(tmp_path / "tune"))  # fmt: skip
    assert code == 2
    assert "scenarios/kube-example.yaml: cluster.kind is kube, but no kubeconfig is usable" in err
    assert len(err.strip().splitlines()) == 1


def test_an_output_that_is_a_file_and_a_bad_set_are_refused(
    tmp_path: Path, fake_cluster: FakeRuns
) -> None:
    file = tmp_path / "taken"
    file.write_text("")
    code, _, err = invoke(SCENARIO, "--vary", "pod.pre_stop.sleep_s=0..4", "-o", str(file))
    assert code == 2 and f"-o {file}: {file} exists and is not a directory" in err
    code, _, err = invoke(SCENARIO, "--vary", "pod.pre_stop.sleep_s=0..4", "--set", "load.rate=-1")
    assert code == 2 and "--set: load.rate:" in err
    assert fake_cluster.count == 0
