"""The runner without a cluster: its interrupted state, and the report made from the analysis it
just computed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from analyzer.rundir import RunPaths
from analyzer.schema import RunStatus
from analyzer.tracebuilder import build_run
from rolltrace.commands.run import run_scenario
from rolltrace.runner import backends
from rolltrace.runner.experiment import Experiment, Session
from rolltrace.scenario import Scenario, load_scenario

SCENARIO = "scenarios/prestop-too-short.yaml"


class _FailingBackend:
    """Opens no cluster: raises ``error`` instead, as Ctrl-C or a broken cluster would."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.opened = 0

    def open(self, scenario: Scenario, run: RunPaths) -> Session:
        self.opened += 1
        raise self.error


def test_ctrl_c_is_an_explicit_interrupted_state_and_run_json_keeps_its_format(
    tmp_path: Path,
) -> None:
    outcome = Experiment(
        load_scenario(SCENARIO), tmp_path / "run", _FailingBackend(KeyboardInterrupt())
    ).run()
    assert outcome.interrupted
    assert outcome.meta.status is RunStatus.PARTIAL
    written = json.loads((tmp_path / "run" / "run.json").read_text())
    assert written["status"] == "partial"
    assert written["status_reasons"] == ["interrupted by the user (Ctrl-C)"]


def test_a_failure_is_not_an_interruption(tmp_path: Path) -> None:
    error = RuntimeError("the cluster was interrupted")  # the word alone means nothing
    outcome = Experiment(load_scenario(SCENARIO), tmp_path / "run", _FailingBackend(error)).run()
    assert not outcome.interrupted
    assert outcome.meta.status is RunStatus.FAILED


@pytest.mark.parametrize(
    ("error", "runs"), [(KeyboardInterrupt(), 1), (RuntimeError("interrupted"), 3)]
)
def test_ctrl_c_stops_the_repetitions_and_a_failure_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, runs: int
) -> None:
    backend = _FailingBackend(error)
    monkeypatch.setattr(backends, "backend_for", lambda scenario, on_progress: backend)
    scenario = load_scenario(SCENARIO, ["repetitions=3"])
    outcomes = run_scenario(scenario, tmp_path, Console(file=io.StringIO()))
    assert len(outcomes) == backend.opened == runs
    assert [o.interrupted for o in outcomes] == [isinstance(error, KeyboardInterrupt)] * runs


def test_the_report_is_made_from_the_analysis_just_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is read back from analysis/tables between the analysis and its report."""
    from analyzer import run as loader

    def no_reading_back(self: object, name: str) -> None:
        raise AssertionError(f"table {name} read back from disk")

    monkeypatch.setattr(loader._WrittenTables, "__getitem__", no_reading_back)
    built = build_run(tmp_path / "run", "endpoint-lag", seed=1, rate=40, duration_s=15)
    experiment = Experiment(load_scenario(SCENARIO), built.path, _FailingBackend(RuntimeError()))
    summary = experiment._analyze()
    assert experiment.reasons == []  # neither the analysis nor the report failed
    assert summary == json.loads(built.paths.summary.read_text())
    assert summary is not None and summary["requests_failed"] > 0
    headline = f"{summary['requests_failed']} of {summary['requests_total']} requests failed"
    assert headline in built.paths.report_md.read_text()
