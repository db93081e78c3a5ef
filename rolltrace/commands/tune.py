"""``rolltrace tune SCENARIO --vary PATH=LOW..HIGH``: the cheapest safe value of one or two
settings, found by running the scenario (docs/tuning.md).

The search is ``rolltrace.tuning`` (pure: it asks for candidates and reads their outcomes);
this module is its evaluator, which runs a candidate's repetitions on the cluster, and the
command around it.

Cache: a candidate's runs for one phase (search or verify) live in
``DIR/trials/<candidate>/<phase>/`` beside ``trial.json``, which holds the candidate, the key
(the whole scenario those runs had: the file, ``--set``, the candidate and ``repetitions``) and
the runs that finished. The same key later reads them instead of running again, so an
interrupted or widened tune resumes; another key is refused before anything runs, with the
fields that differ, because those runs measured another experiment. A run stopped by Ctrl-C
is never listed, so it is run again.

Exit codes: 0 a recommendation that held its verification, 1 no safe value (or the
verification failed), 2 a usage error (one located line), 130 Ctrl-C.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from rolltrace.commands import not_a_directory
from rolltrace.commands.run import LiveProgress

# The tuning core, the scenario model and the runner pull in pydantic, pandas and the kubernetes
# client: they are imported where used, so that `rolltrace --help` stays fast.
if TYPE_CHECKING:
    from rolltrace.scenario import Scenario
    from rolltrace.tuning.search import Phase, TrialRun, TuneResult
    from rolltrace.tuning.settings import Candidate, Vary

EXIT_NO_RECOMMENDATION = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd command
TRIAL_FILE = "trial.json"
#: Scenario fields that describe or judge a run but do not change it: left out of the cache key
#: so that editing a description or an expectation keeps the runs.
NOT_IN_KEY = frozenset({"description", "expect", "dominant_cause", "fixed_by"})
ROLLOUT_START, ROLLOUT_END = "rollout_trigger", "old_pods_gone"
ROLLOUT_DEFINITION = (
    "seconds from the rollout trigger to the last old Pod gone "
    f"(run.json phases {ROLLOUT_START} → {ROLLOUT_END})"
)

#: Runs one repetition of a scenario into a run directory; raises KeyboardInterrupt when the
#: user stopped it (the directory then holds a partial run).
RunTrial = Callable[["Scenario", Path], None]


class CacheMismatch(Exception):
    """A trial directory holds runs of another experiment than the one asked for."""


def rollout_seconds(phases: dict[str, int]) -> float | None:
    """The measured rollout time: from the trigger to the moment no old Pod was left (the
    runner's ``rollout_trigger`` and ``old_pods_gone`` marks in run.json). The end is the last
    old Pod gone, not the Deployment's "complete": the Deployment completes while old Pods
    still sleep in preStop and drain, so only this end sees what a longer preStop, grace
    period or drain costs. None when the run did not reach both marks."""
    start, end = phases.get(ROLLOUT_START), phases.get(ROLLOUT_END)
    if start is None or end is None:
        return None
    return round((end - start) / 1e9, 3)


def candidate_slug(candidate: Candidate) -> str:
    """A directory name for a candidate: ``sleep_s-4``, ``max_surge-1+max_unavailable-25pct``
    (setting names are unique by their last part among the tunable settings)."""
    parts = []
    for path, value in candidate.items():
        text = str(value).replace("%", "pct")
        parts.append(f"{path.rpartition('.')[2]}-{text}")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", "+".join(parts))


def default_output(scenario_name: str, paths: list[str]) -> Path:
    """``runs/tune/<scenario>-<settings>``: the same command, run again, finds its own trials
    and resumes; another range of the same settings reuses the values both ranges hold."""
    leaves = "+".join(path.rpartition(".")[2] for path in paths)
    return Path("runs") / "tune" / f"{scenario_name}-{leaves}"


def cache_key(scenario: Scenario) -> dict[str, Any]:
    """Everything of a scenario that changes its runs (repetitions included)."""
    return scenario.model_dump(mode="json", exclude=set(NOT_IN_KEY))


def key_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``load.rate 60 → 80, repetitions 2 → 3``: the fields two keys disagree on."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = flat_old.keys() | flat_new.keys()
    changed = sorted(k for k in keys if flat_old.get(k) != flat_new.get(k))
    shown = [f"{k} {flat_old.get(k, '(unset)')} → {flat_new.get(k, '(unset)')}" for k in changed]
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    return ", ".join(shown[:3]) + more


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def trial_run(run_dir: Path) -> TrialRun:
    """What one run directory says about its candidate: its status and rollout time
    (run.json) and its failures (the analysis, recomputed if the analyzer changed since)."""
    from analyzer.errors import AnalyzerError
    from analyzer.run import load_analysis
    from analyzer.rundir import RunPaths, read_run_meta
    from rolltrace.tuning.search import TrialRun

    meta = read_run_meta(run_dir)
    try:
        summary: dict[str, Any] = dict(load_analysis(RunPaths(run_dir)).summary)
    except AnalyzerError:  # no usable requests: nothing was measured, the status says why
        summary = {}
    causes = {k: int(v) for k, v in summary.get("failed_by_cause", {}).items() if v}
    return TrialRun(
        run_dir=str(run_dir),
        requests=int(summary.get("requests_total", 0)),
        failed=int(summary.get("requests_failed", 0)),
        causes=causes,
        rollout_s=rollout_seconds(meta.phases),
        status=str(meta.status),
    )


@dataclass
class TrialCache:
    """The search's evaluator: runs a candidate's repetitions, or reads them when a finished
    set with the same key is on disk (see the module's docstring)."""

    base: Scenario  # the scenario file with --set and repetitions applied
    output: Path
    run: RunTrial
    say: Callable[[str], None]

    def __call__(self, candidate: Candidate, phase: Phase) -> list[TrialRun]:
        from rolltrace.tuning.settings import with_candidate

        scenario = with_candidate(self.base, candidate)
        slug = candidate_slug(candidate)
        directory = self.output / "trials" / slug / phase
        runs = self._finished(directory, candidate, cache_key(scenario))
        wanted = [f"{slug}-r{i}" for i in range(1, scenario.repetitions + 1)]
        if all(name in runs for name in wanted):
            self.say(f"  cached: {len(wanted)} run(s) in {directory}")
        measured = []
        for name in wanted:
            fresh = name not in runs
            if fresh:
                self._run_one(candidate, scenario, directory, runs, name)
            measured.append(trial_run(directory / name))
            if fresh:
                self.say(f"  {name}: {_run_line(candidate, measured[-1])}")
        return measured

    def check_all(self) -> None:
        """Refuse before anything runs, not halfway: every trial directory already in the
        output must hold runs of this tune's scenario with its own candidate applied."""
        from rolltrace.tuning.settings import with_candidate

        for file in sorted(self.output.glob(f"trials/*/*/{TRIAL_FILE}")):
            recorded = json.loads(file.read_text())
            expected = cache_key(with_candidate(self.base, recorded["candidate"]))
            _check_key(file.parent, recorded["key"], expected)

    def _finished(self, directory: Path, candidate: Candidate, key: dict[str, Any]) -> list[str]:
        """The runs of this key already finished in ``directory`` (CacheMismatch when the
        directory holds another experiment's runs)."""
        from analyzer.rundir import RunPaths

        file = directory / TRIAL_FILE
        if not file.exists():
            directory.mkdir(parents=True, exist_ok=True)
            _write_json(file, {"candidate": candidate, "key": key, "runs": []})
            return []
        recorded = json.loads(file.read_text())
        _check_key(directory, recorded["key"], key)
        return [r for r in recorded["runs"] if RunPaths(directory / r).summary.exists()]

    def _run_one(
        self, candidate: Candidate, scenario: Scenario, directory: Path, runs: list[str], name: str
    ) -> None:
        run_dir = directory / name
        if run_dir.exists():  # what an interrupted run left: never evidence, run it again
            shutil.rmtree(run_dir)
        self.run(scenario, run_dir)  # KeyboardInterrupt leaves it unlisted
        runs.append(name)
        record = {"candidate": candidate, "key": cache_key(scenario), "runs": runs}
        _write_json(directory / TRIAL_FILE, record)


def _check_key(directory: Path, recorded: dict[str, Any], expected: dict[str, Any]) -> None:
    if recorded != expected:
        raise CacheMismatch(
            f"{directory} holds runs of another experiment "
            f"({key_difference(recorded, expected)}): they cannot stand for this one; "
            "give another -o, or remove that directory to run it again"
        )


def _run_line(candidate: Candidate, run: TrialRun) -> str:
    from analyzer.rundir import read_run_meta
    from rolltrace.tuning.search import COMPLETE, Trial, outcome

    line = outcome(Trial(candidate, (run,)))
    if run.rollout_s is not None:
        line += f"; rollout {run.rollout_s:.1f} s"
    if run.status == COMPLETE:
        return line
    reasons = read_run_meta(run.run_dir).status_reasons  # only a run that did not complete
    return line + "".join(f"\n    · {reason}" for reason in reasons)


def _write_json(file: Path, document: dict[str, Any]) -> None:
    """Atomically: a Ctrl-C mid-write leaves the previous file, never half of one."""
    from analyzer.rundir import atomic_write_bytes  # pydantic: not for `rolltrace --help`

    atomic_write_bytes(file, (json.dumps(document, indent=2) + "\n").encode())


class QuietProgress(LiveProgress):
    """The run's live display (phase, load, rollout) without a logged line per phase or
    cluster message: a tune runs many repetitions, and one line per run says what counts."""

    def phase(self, name: str) -> None:
        self.current = name.replace("_", " ")
        self.live.update(self._render())

    def note(self, message: str) -> None:
        self.current = escape(message)
        self.live.update(self._render())


def run_trial(console: Console) -> RunTrial:
    """The real runner: one repetition on the scenario's cluster, analyzed and reported."""
    from rolltrace.runner.backends import backend_for
    from rolltrace.runner.experiment import Experiment

    def run(scenario: Scenario, run_dir: Path) -> None:
        progress = QuietProgress(console, run_dir.name)
        backend = backend_for(scenario, on_progress=progress.note)
        with progress.live:
            outcome = Experiment(scenario, run_dir, backend, progress).run()
        if outcome.interrupted:
            raise KeyboardInterrupt

    return run


@dataclass(frozen=True)
class TunePlan:
    """The tune the command line asks for, checked before anything runs."""

    base: Scenario
    varies: list[Vary]
    output: Path
    command: str  # the command that runs (or resumes) this tune, -o spelled out


def plan_tune(
    scenario_file: Path,
    vary_texts: list[str],
    repetitions: int,
    step: float | None,
    output: Path | None,
    sets: list[str],
) -> TunePlan:
    """The scenario with --set and repetitions, the parsed --vary's and the output directory;
    a TuneError or ScenarioError (one located line) when the tune cannot run."""
    from rolltrace.scenario import load_scenario
    from rolltrace.tuning.settings import TuneError, parse_vary

    if len(vary_texts) > 2:
        raise TuneError(f"tune varies one or two settings at a time, not {len(vary_texts)}")
    base = load_scenario(scenario_file, [*sets, f"repetitions={repetitions}"])
    varies = [parse_vary(text, base, step) for text in vary_texts]
    problem = cluster_problem(base)
    if problem is not None:
        raise TuneError(f"{scenario_file}: {problem}")
    output = output or default_output(base.name, [v.path for v in varies])
    unusable = not_a_directory("-o", output)
    if unusable:
        raise TuneError(unusable)
    argv = ["rolltrace", "tune", str(scenario_file), *(f"--vary={t}" for t in vary_texts),
            f"--repetitions={repetitions}", *([f"--step={step:g}"] if step is not None else []),
            f"--output={output}", *(f"--set={s}" for s in sets)]  # fmt: skip
    return TunePlan(base, varies, output, shlex.join(argv))


def cluster_problem(scenario: Scenario) -> str | None:
    """Why the scenario's cluster cannot be used, found without starting or reaching it: the
    local cluster's prerequisites, or a real cluster's kubeconfig context."""
    from rolltrace.scenario import KubeCluster

    cluster = scenario.cluster
    if not isinstance(cluster, KubeCluster):
        from localcluster.dataplane.cluster import missing_prerequisites

        missing = missing_prerequisites()
        return f"the local cluster needs: {'; '.join(missing)}" if missing else None
    from kubernetes import config as k8s_config

    try:
        contexts, _ = k8s_config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (k8s_config.ConfigException, OSError) as exc:
        return f"cluster.kind is kube, but no kubeconfig is usable: {' '.join(str(exc).split())}"
    names = [c["name"] for c in contexts]
    if cluster.context not in names:
        return (
            f"cluster.context {cluster.context!r} is not in the kubeconfig (contexts: "
            f"{', '.join(names) or 'none'}); --set cluster.context=NAME"
        )
    return None


@dataclass(frozen=True)
class TuneOutputs:
    json: Path
    html: Path
    patch: Path


def write_outputs(result: TuneResult, plan: TunePlan, wall_s: float) -> TuneOutputs:
    """tune.json (the core's document plus how this tune ran), tune.html and patch.yaml."""
    from rolltrace.tuning.output import render_html
    from rolltrace.tuning.patch import PATCH_FILE, render_patch
    from rolltrace.tuning.search import to_json

    document = {
        **to_json(result),
        "scenario": plan.base.name,
        "command": plan.command,
        "repetitions": plan.base.repetitions,
        "rollout_s_is": ROLLOUT_DEFINITION,
        "wall_s": round(wall_s, 1),
    }
    outputs = TuneOutputs(plan.output / "tune.json", plan.output / "tune.html",
                          plan.output / PATCH_FILE)  # fmt: skip
    plan.output.mkdir(parents=True, exist_ok=True)
    _write_json(outputs.json, document)
    patch = render_patch(result, plan.base)
    outputs.html.write_text(render_html(result, plan.base.name, patch))
    outputs.patch.write_text(patch)
    return outputs


def print_result(result: TuneResult, outputs: TuneOutputs, wall_s: float) -> None:
    """The answer on stdout: the recommendation, its verification in words, the three files."""
    from rolltrace.tuning.search import bound_sentence, describe
    from rolltrace.tuning.settings import overrides

    if result.recommended is None:
        typer.echo(f"no recommendation: {result.message}")
    else:
        settings = ", ".join(overrides(result.recommended))
        typer.echo(f"recommended: {describe(result.varies, result.recommended)} ({settings})")
    if result.verified is not None:
        typer.echo(f"verified: {bound_sentence(result.verified)}")
    not_performed = [r for t in result.trials for r in t.runs if r.status == "failed"]
    if not_performed:
        typer.echo(
            f"note: {len(not_performed)} run(s) could not be performed (status failed, reasons "
            "above and in their run.json); their values counted as unsafe"
        )
    typer.echo(f"tune.json: {outputs.json}")
    typer.echo(f"tune.html: {outputs.html}")
    typer.echo(f"patch: {outputs.patch}")
    typer.echo(f"wall time: {wall_s:.0f} s")


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune_command(
        scenario_file: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
        vary: Annotated[
            list[str],
            typer.Option(
                "--vary",
                help="PATH=LOW..HIGH: a setting and its range (counts, seconds, or NN%..MM% "
                "for maxSurge/maxUnavailable); once or twice.",
            ),
        ],
        repetitions: Annotated[
            int, typer.Option("--repetitions", min=1, help="Runs per candidate (and to verify).")
        ] = 2,
        step: Annotated[float | None, typer.Option("--step", help="Grid step (default 1).")] = None,
        output: Annotated[
            Path | None,
            typer.Option(
                "-o",
                "--output",
                help="Tune directory (default runs/tune/<scenario>-<settings>: the same "
                "command resumes).",
            ),
        ] = None,
        sets: Annotated[
            list[str] | None, typer.Option("--set", help="Override a field: key.path=value.")
        ] = None,
    ) -> None:
        """Find the cheapest safe value of one or two settings by running the scenario:
        writes tune.json, tune.html and patch.yaml.

        One setting is bisected, two are searched on a small grid; every candidate runs
        --repetitions times, the recommendation runs again to verify it, and every run is
        cached so that the same command resumes. See docs/tuning.md.
        """
        from rolltrace.scenario import ScenarioError
        from rolltrace.tuning.search import tune
        from rolltrace.tuning.settings import TuneError

        console = Console(stderr=True, log_path=False, soft_wrap=True)
        try:
            plan = plan_tune(scenario_file, vary, repetitions, step, output, sets or [])
        except (ScenarioError, TuneError) as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(EXIT_USAGE) from None
        console.print(f"tune: {escape(plan.command)}")
        evaluate = TrialCache(plan.base, plan.output, run_trial(console),
                              lambda line: console.print(escape(line)))  # fmt: skip
        started = time.monotonic()
        try:
            evaluate.check_all()
            result = tune(plan.varies, evaluate, evaluate.say, repetitions=repetitions)
        except (CacheMismatch, TuneError) as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            console.print(
                f"interrupted: the runs that finished are kept in {escape(str(plan.output))}"
                f"/trials; to resume, run again: {escape(plan.command)}"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
        wall_s = time.monotonic() - started
        print_result(result, write_outputs(result, plan, wall_s), wall_s)
        if result.recommended is None:  # a recommendation exists only once verified
            raise typer.Exit(EXIT_NO_RECOMMENDATION)
