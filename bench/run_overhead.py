"""Where a ``rolltrace run`` spends its wall time, phase by phase: which part is the experiment
(the scenario's warm-up, rollout, terminations and cool-down) and which is waiting around it
(cluster start, Deployment availability, LB publishing, load start, stop, analysis).

Runs one short local scenario ``--runs`` times (at most ``MAX_RUNS``), each under the run
cluster's flock lock (``/tmp/rolltrace-cluster.lock``, taken here per run: do not wrap this in
``flock(1)``), checks that each run is the scenario it names (status complete, requests > 0,
run.json's scenario name), and prints the median seconds of every phase. The cluster process's
own steps come from the run's ``logs/cluster.log`` (API server up, controllers, nodes, NAT
recorder, API endpoint in the network).

``--baseline-rev REV`` measures the code before a change on the same machine at the same time:
``--runs`` rounds, each one run of this tree and one of ``git archive REV`` (order alternating,
each in a fresh interpreter with its tree first on ``PYTHONPATH``), and prints both medians and
the difference. ``--save FILE`` keeps this tree's per-run phases as JSON; ``--baseline FILE``
compares with such a file instead (measured at another time: shared machines drift).

Usage: python bench/run_overhead.py [scenarios/no-prestop.yaml] [--runs 3]
       [--baseline-rev HEAD | --baseline FILE] [--save FILE]
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from analyzer.rundir import RunMeta, RunPaths
from kubewire import RolloutState
from localcluster.dataplane import missing_prerequisites
from rolltrace.runner.backends import LocalBackend
from rolltrace.runner.experiment import Experiment, Session
from rolltrace.scenario import LocalCluster, Scenario, load_scenario

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCENARIO = REPO / "scenarios" / "no-prestop.yaml"
#: the lock every cluster-starting command in this repository shares (the run cluster's name is
#: fixed, so only one run may use it at a time)
CLUSTER_LOCK = Path("/tmp/rolltrace-cluster.lock")
#: a bound on the cluster runs one invocation makes (each is ~20 s of a 2-core machine)
MAX_RUNS = 10
#: the cluster process's log lines that end one of its start-up steps (localcluster.main)
CLUSTER_STEPS = {
    "API server on": "cluster: process start → API server up",
    "controllers started": "cluster: controllers synced",
    "nodes started": "cluster: network, agents, nodes Ready",
    "NAT recorder started": "cluster: NAT recorder",
    "API endpoint in the network started": "cluster: API endpoint in the network",
}
#: phases that are the scenario's own experiment, not waiting around it
EXPERIMENT = ("warm-up (load.before_s)", "rollout", "old Pods gone", "cool-down (load.after_s)")


#: seconds per phase of one run, by the phase's name (``durations``)
Phases = dict[str, float]


@dataclass
class Stamps:
    """Monotonic seconds of each point of one run, plus the wall clock at the first (to place
    the cluster log's wall-clock lines on the same axis)."""

    at: dict[str, float] = field(default_factory=dict)
    wall_at_start: float = 0.0

    def stamp(self, name: str) -> None:
        if not self.at:
            self.wall_at_start = time.time()
        self.at.setdefault(name, time.monotonic())


class RecordingProgress:
    """The runner's progress callbacks, kept as stamps (the phases are run.json's)."""

    def __init__(self, stamps: Stamps) -> None:
        self.stamps = stamps

    def phase(self, name: str) -> None:
        self.stamps.stamp(name)

    def tick(self, load: dict[str, float], rollout: RolloutState | None) -> None:
        pass

    def note(self, message: str) -> None:
        print(f"  note: {message}", file=sys.stderr)


class TimedBackend:
    """The local backend, with the session's opening and closing stamped."""

    def __init__(self, stamps: Stamps) -> None:
        self.stamps = stamps
        self.inner = LocalBackend(on_progress=RecordingProgress(stamps).note)

    def open(self, scenario: Scenario, run: RunPaths) -> Session:
        self.stamps.stamp("open")
        session = self.inner.open(scenario, run)

        def close() -> None:
            self.stamps.stamp("cluster_stop")
            session.close()
            self.stamps.stamp("cluster_stopped")

        return replace(session, close=close)


class TimedExperiment(Experiment):
    """Stamps the points inside phases that run.json does not split."""

    stamps: Stamps

    def _find_service(self, *args: Any) -> tuple[str, int]:
        self.stamps.stamp("deployment_available")
        return super()._find_service(*args)

    def _wait_until_served(self, *args: Any) -> None:
        self.stamps.stamp("lb_address")
        super()._wait_until_served(*args)

    def _write_meta(self, *args: Any) -> RunMeta:
        meta = super()._write_meta(*args)
        self.stamps.stamp("run_json")
        return meta


def cluster_log_stamps(log: Path, stamps: Stamps) -> dict[str, float]:
    """The cluster process's start-up steps on the run's monotonic axis."""
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines()[:50]:
        for marker in CLUSTER_STEPS:
            if marker in line and marker not in found:
                wall = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found[marker] = stamps.at["open"] + wall - stamps.wall_at_start
    return found


def durations(stamps: Stamps, cluster: dict[str, float]) -> Phases:
    """Seconds per phase, in the order they happen, and the total's part that is not the
    experiment (everything but the warm-up, rollout, terminations and cool-down)."""
    points = [("open", stamps.at["open"])]
    points += [(CLUSTER_STEPS[m], t) for m, t in sorted(cluster.items(), key=lambda kv: kv[1])]
    names = {
        "cluster_ready": "cluster: Ready seen by the runner",
        "manifests_applied": "namespace, Service, Deployment created",
        "deployment_available": "Deployment available",
        "lb_address": "LB address and Service read",
        "available": "Service answers through the LB",
        "captures_started": "captures started",
        "load_start": "load sending",
        "rollout_trigger": EXPERIMENT[0],
        "rollout_complete": EXPERIMENT[1],
        "old_pods_gone": EXPERIMENT[2],
        "load_stop": EXPERIMENT[3],
        "captures_stopped": "captures stopped",
        "cluster_stopped": "cluster stopped, truth moved",
        "run_json": "run.json written",
        "analyzed": "analysis and report",
    }
    points += [(label, stamps.at[key]) for key, label in names.items() if key in stamps.at]
    out = {later[0]: later[1] - earlier[1] for earlier, later in itertools.pairwise(points)}
    out["total"] = stamps.at["analyzed"] - stamps.at["open"]
    out["not the experiment"] = out["total"] - sum(out.get(name, 0.0) for name in EXPERIMENT)
    return out


@contextmanager
def cluster_lock() -> Iterator[None]:
    """The shared lock, held for one run (other work on the machine may interleave)."""
    with open(CLUSTER_LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"  waiting for {CLUSTER_LOCK} (another cluster run)", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def problems_of(
    outcome_meta: RunMeta, summary: dict[str, Any] | None, scenario: Scenario
) -> list[str]:
    """Why a run is unusable: not the scenario it names, not complete, or without requests."""
    problems = []
    if outcome_meta.status != "complete":
        problems.append(f"status {outcome_meta.status}: {'; '.join(outcome_meta.status_reasons)}")
    if outcome_meta.scenario.get("name") != scenario.name:
        problems.append(f"run.json names scenario {outcome_meta.scenario.get('name')!r}")
    if not summary or not summary.get("requests_total"):
        problems.append("no requests analyzed")
    return problems


def one_run(scenario: Scenario, output: Path, index: int) -> Phases:
    stamps = Stamps()
    experiment = TimedExperiment(
        scenario, output / f"{scenario.name}-{index}", TimedBackend(stamps),
        RecordingProgress(stamps),
    )  # fmt: skip
    experiment.stamps = stamps
    with cluster_lock():
        outcome = experiment.run()
    stamps.stamp("analyzed")
    print(f"  {scenario.name}: {stamps.at['analyzed'] - stamps.at['open']:.1f} s", file=sys.stderr)
    problems = problems_of(outcome.meta, outcome.summary, scenario)
    if problems:  # its directory outlives the bench's temporary one, to be looked into
        kept = Path(tempfile.mkdtemp(prefix=f"run-overhead-{scenario.name}-"))
        shutil.copytree(outcome.paths.root, kept, dirs_exist_ok=True)
        sys.exit(f"run of {scenario.name} unusable ({kept}): " + "; ".join(problems))
    log = outcome.paths.logs / "cluster.log"
    cluster = cluster_log_stamps(log, stamps) if log.exists() else {}
    return durations(stamps, cluster)


def medians(runs: list[Phases]) -> Phases:
    names = list(dict.fromkeys(name for run in runs for name in run))
    return {name: statistics.median(run[name] for run in runs if name in run) for name in names}


def print_table(now: Phases, baseline: Phases | None) -> None:
    header = f"{'phase':52s} {'median s':>9s}"
    if baseline is not None:
        header += f" {'baseline':>9s} {'change':>8s}"
    print(header)
    for name in list(dict.fromkeys([*(baseline or {}), *now])):
        mark = " (scenario)" if name in EXPERIMENT else ""
        row = f"{name + mark:52s} {_cell(now.get(name)):>9s}"
        if baseline is not None:
            old, new = baseline.get(name), now.get(name)
            change = f"{new - old:+.2f}" if old is not None and new is not None else ""
            row += f" {_cell(old):>9s} {change:>8s}"
        print(row)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def interleaved(scenario: Path, rounds: int, rev: str) -> tuple[list[Phases], list[Phases]]:
    """``rounds`` rounds of one run of this tree's code and one of revision ``rev``'s, in
    alternating order, so that both see the same machine (others' work on a shared machine
    shifts every phase that needs CPU); each run in a fresh interpreter with its tree first
    on the path, as its cluster's processes are."""
    with tempfile.TemporaryDirectory(prefix="run-overhead-") as tmp:
        rev_tree = Path(tmp) / "rev"
        rev_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev],
                                 capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(rev_tree)], input=archive, check=True)
        trees = {"new": REPO, "baseline": rev_tree}
        runs: dict[str, list[Phases]] = {"new": [], "baseline": []}
        for index in range(rounds):
            for label in ("new", "baseline") if index % 2 == 0 else ("baseline", "new"):
                runs[label] += run_in_tree(trees[label], scenario.resolve(), Path(tmp), label)
                print(f"round {index + 1}/{rounds}: {label} {runs[label][-1]['total']:.1f} s",
                      file=sys.stderr)  # fmt: skip
    return runs["new"], runs["baseline"]


def run_in_tree(tree: Path, scenario: Path, tmp: Path, label: str) -> list[Phases]:
    """One run of this bench with ``tree``'s code (its phases as ``--save`` writes them)."""
    saved = tmp / "one-run.json"
    path = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, str(Path(__file__).resolve()), str(scenario), "--runs", "1",
               "--save", str(saved)]  # fmt: skip
    done = subprocess.run(command, cwd=tree, env={**os.environ, "PYTHONPATH": path},
                          stdout=subprocess.DEVNULL, check=False)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"the {label} run ({tree}) failed; its words are above")
    runs: list[Phases] = json.loads(saved.read_text())["runs"]
    return runs


def measured(scenario: Scenario, runs: int) -> list[Phases]:
    with tempfile.TemporaryDirectory(prefix="run-overhead-") as output:
        return [one_run(scenario, Path(output), index) for index in range(runs)]


def saved_baseline(path: Path, scenario: Scenario) -> list[Phases]:
    saved = json.loads(path.read_text())
    if saved["scenario"] != scenario.name:
        sys.exit(f"{path} measured {saved['scenario']}, not {scenario.name}")
    runs: list[Phases] = saved["runs"]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", type=Path, default=DEFAULT_SCENARIO)
    parser.add_argument("--runs", type=int, default=3, help=f"1–{MAX_RUNS} (rounds with a rev)")
    parser.add_argument("--save", type=Path, help="write the per-run phases as JSON")
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline", type=Path, help="a --save file of an earlier revision")
    baseline.add_argument("--baseline-rev", help="a git revision to run interleaved with this")
    args = parser.parse_args()
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs must be 1–{MAX_RUNS}")
    missing = missing_prerequisites()
    if missing:
        sys.exit("the local cluster needs: " + "; ".join(missing))
    scenario = load_scenario(args.scenario)
    if not isinstance(scenario.cluster, LocalCluster):
        sys.exit(f"{args.scenario} does not run on the local cluster")
    scenario = scenario.model_copy(update={"repetitions": 1})
    old: list[Phases] | None = None
    if args.baseline_rev:
        runs, old = interleaved(args.scenario, args.runs, args.baseline_rev)
    else:
        runs = measured(scenario, args.runs)
    if args.baseline:
        old = saved_baseline(args.baseline, scenario)
    if args.save:
        args.save.write_text(json.dumps({"scenario": scenario.name, "runs": runs}, indent=1))
    print(f"{scenario.name}: median of {len(runs)} run(s)")
    print_table(medians(runs), medians(old) if old else None)


if __name__ == "__main__":
    main()
