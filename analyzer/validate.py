"""Check a run directory against docs/trace-format.md and say exactly where it is wrong.

The validator reads every file with the same readers the analysis uses (so "valid" means "the
analysis will read it"), in their tolerant modes, so that one bad line does not hide the next
hundred. Each ``Problem`` names the file (relative to the run directory), the line / row / byte
and the field. Errors make a run invalid; warnings are things the analysis works around but a
person should know (no capture, kernel drops, a phase missing).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from analyzer.errors import TraceError, UnusableRunError
from analyzer.events import KINDS, scan_events, scan_truth
from analyzer.readers.accesslog import read_access_log
from analyzer.readers.requests import load_requests
from analyzer.rundir import (
    PHASES,
    RUNNER_PHASES,
    Problem,
    RunMeta,
    RunPaths,
    Severity,
    read_run_meta,
)
from analyzer.schema import RunStatus, TruthEvent

MAX_PROBLEMS_PER_FILE = 100
"""Beyond this many, a file's problems are summarized in one line: the first ones show the
pattern, and a million-row file with one systematic bug must not print a million lines."""

PHASE_SLACK_NS = 5_000_000_000
"""Requests may be scheduled a little outside the recorded load phases (the generator and the
runner stamp them separately); beyond this they were probably timed by another clock."""

CLOCK_SLACK_NS = 60_000_000_000
"""Two files whose time spans, widened by this, still do not overlap were not timed by one
clock (or not recorded by one run)."""

MAX_EVENT_REORDER_NS = 1_000_000_000
"""Lines of events.jsonl are written by several watch streams; receive times a little out of
file order are normal, a jump back of more than this suggests two clocks or a concatenation."""


class NotARunDirectory(UnusableRunError):
    """The path is not a directory, or holds none of the files of a run directory."""


def validate_run(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem found in the run directory at ``path``, file by file, in reading order.

    Raises ``NotARunDirectory`` when ``path`` is no run directory at all.
    """
    paths = RunPaths(path)
    if not paths.root.is_dir():
        raise NotARunDirectory(f"{paths.root}: not a directory")
    markers = (paths.run_json, paths.requests, paths.events, paths.packets_dir)
    if not any(p.exists() for p in markers):
        raise NotARunDirectory(
            f"{paths.root}: not a run directory (none of run.json, requests.parquet, "
            "events.jsonl, packets/)"
        )
    problems: list[Problem] = []
    meta = _check_run_json(paths, problems)
    run = _Run(paths, meta, failed=meta is not None and meta.status is RunStatus.FAILED)
    for check in (_check_requests, _check_events, _check_truth, _check_packets, _check_hop_logs):
        problems += _capped(check(run))
    return problems + _check_clocks(run)


@dataclass
class _Run:
    paths: RunPaths
    meta: RunMeta | None
    failed: bool
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    """file → (first, last) realtime ns it covers, for the cross-file clock check."""

    def span(self, file: str, times: pd.Series) -> None:
        if len(times):
            self.spans[file] = (int(times.min()), int(times.max()))


def _relative(paths: RunPaths, file: str | Path) -> str:
    try:
        return str(Path(file).resolve().relative_to(paths.root.resolve()))
    except ValueError:
        return str(file)


def _from_error(paths: RunPaths, error: TraceError) -> Problem:
    return Problem(_relative(paths, error.path), error.location, error.field, error.message)


def _capped(problems: Iterable[Problem]) -> list[Problem]:
    kept: list[Problem] = []
    shown: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for problem in problems:
        if shown.get(problem.file, 0) < MAX_PROBLEMS_PER_FILE:
            kept.append(problem)
            shown[problem.file] = shown.get(problem.file, 0) + 1
        else:
            dropped[problem.file] = dropped.get(problem.file, 0) + 1
    for file, count in dropped.items():
        kept.append(Problem(file, "file", None, f"… and {count} more problems not shown"))
    return kept


# --------------------------------------------------------------------------------------------


def _check_run_json(paths: RunPaths, problems: list[Problem]) -> RunMeta | None:
    if not paths.run_json.exists():
        problems.append(Problem("run.json", "file", None, "missing"))
        return None
    try:
        meta = read_run_meta(paths.run_json)
    except TraceError as exc:
        problems.append(_from_error(paths, exc))
        return None
    problems += _check_meta(paths, meta)
    return meta


def _expected_phases(meta: RunMeta) -> tuple[str, ...]:
    """The phases a complete run has: all of ``PHASES``, but only the load's in an observation
    that ran for a duration and followed no rollout (``rolltrace observe --duration``)."""
    observe = meta.extra_fields().get("observe")
    if isinstance(observe, dict) and observe.get("until") == "duration":
        return ("load_start", "load_stop")
    return PHASES


def _check_meta(paths: RunPaths, meta: RunMeta) -> list[Problem]:
    found: list[Problem] = []

    def add(field: str | None, message: str, severity: Severity = "error") -> None:
        found.append(Problem("run.json", "file", field, message, severity))

    if meta.status is not RunStatus.COMPLETE and not meta.status_reasons:
        add("status_reasons", f"status is {meta.status} but no reason is given", "warning")
    for name, value in meta.phases.items():
        if name not in RUNNER_PHASES:
            known = ", ".join(RUNNER_PHASES)
            add(f"phases.{name}", f"unknown phase (known: {known})", "warning")
        if value < 0:
            add(f"phases.{name}", "negative timestamp")
    present = [(name, meta.phases[name]) for name in RUNNER_PHASES if name in meta.phases]
    for (first, t1), (second, t2) in pairwise(present):
        if t2 < t1:
            add(f"phases.{second}", f"{second} is before {first}")
    if meta.status is RunStatus.COMPLETE:
        for name in [n for n in _expected_phases(meta) if n not in meta.phases]:
            add(f"phases.{name}", "missing although the run is complete", "warning")
    for key in ("port", "target_port", "node_port"):
        port = meta.service.get(key)
        if port is not None and not (
            isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
        ):
            add(f"service.{key}", f"{port!r} is not a TCP port")
    if "port" not in meta.service:
        add("service.port", "missing: the analyzer cannot tell the server side", "warning")
    listed = set()
    for i, capture in enumerate(meta.captures):
        file = paths.root / capture.file
        listed.add(file.resolve())
        if not file.is_file():
            severity: Severity = "error" if meta.status is RunStatus.COMPLETE else "warning"
            add(f"captures.{i}.file", f"{capture.file} does not exist", severity)
        if capture.point == "node" and not capture.node:
            add(f"captures.{i}.node", "a node capture must name its node", "warning")
        if capture.kernel_drops:
            add(
                f"captures.{i}.kernel_drops",
                f"the kernel dropped {capture.kernel_drops} packets: connections may look "
                "incomplete",
                "warning",
            )
    for file in paths.captures():
        if file.resolve() not in listed:
            add("captures", f"{_relative(paths, file)} is not listed", "warning")
    return found


def _check_requests(run: _Run) -> list[Problem]:
    if not run.paths.requests.exists():
        missing: Severity = "warning" if run.failed else "error"
        return [Problem("requests.parquet", "file", None, "missing", missing)]
    try:
        frame, problems = load_requests(run.paths.requests)
    except TraceError as exc:
        return [_from_error(run.paths, exc)]
    found = [
        Problem("requests.parquet", p.location, p.field, p.message, p.severity) for p in problems
    ]
    run.span("requests.parquet", pd.concat([frame["start_ns"], frame["end_ns"]]))
    load_start = run.meta.phase("load_start") if run.meta else None
    load_stop = run.meta.phase("load_stop") if run.meta else None
    if load_start is not None and load_stop is not None and len(frame):
        # scheduled, not start: a blocked client starts late, legitimately after load_stop
        scheduled = frame["scheduled_ns"].to_numpy()
        outside = (scheduled < load_start - PHASE_SLACK_NS) | (
            scheduled > load_stop + PHASE_SLACK_NS
        )
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            message = (
                f"{int(outside.sum())} requests are scheduled outside run.json's "
                "load_start..load_stop (another clock?); this is the first"
            )
            found.append(
                Problem("requests.parquet", f"row {row}", "scheduled_ns", message, "warning")
            )
    return found


def _check_events(run: _Run) -> list[Problem]:
    if not run.paths.events.exists():
        message = "missing: no pod lifecycle or endpoint tables"
        return [Problem("events.jsonl", "file", None, message, "warning")]
    scan = scan_events(run.paths.events)
    found = [_from_error(run.paths, e) for e in scan.problems]
    run.span("events.jsonl", scan.frame["recv_ns"])
    frame = scan.frame.sort_values("line")
    previous = 0
    columns = (frame["line"], frame["recv_ns"], frame["kind"], frame["type"], frame["since_ns"])
    for line, recv, kind, etype, since in zip(*columns, strict=True):
        if etype == "GAP":
            message = (
                f"{kind} events may be missing for {(recv - since) / 1e9:.1f} s: transitions "
                "first seen after it are flagged late"
            )
            found.append(Problem("events.jsonl", f"line {line}", "type", message, "warning"))
        if recv < previous - MAX_EVENT_REORDER_NS:
            message = f"receive time goes back {(previous - recv) / 1e9:.1f} s from the line before"
            found.append(Problem("events.jsonl", f"line {line}", "recv_ns", message, "warning"))
        previous = max(previous, int(recv))
        if kind not in KINDS:
            message = f"kind {kind!r} is not used by the analyzer (ignored)"
            found.append(Problem("events.jsonl", f"line {line}", "kind", message, "warning"))
    return sorted(found, key=lambda p: _line_number(p.location))


def _check_truth(run: _Run) -> list[Problem]:
    if not run.paths.truth.exists():
        return []
    scan = scan_truth(run.paths.truth)
    found = [_from_error(run.paths, e) for e in scan.problems]
    run.span("truth.jsonl", scan.frame["ts_ns"])
    known = {e.value for e in TruthEvent}
    for line, name in zip(scan.frame["line"], scan.frame["event"], strict=True):
        if name not in known:
            message = f"{name!r} is not a TruthEvent (ignored)"
            found.append(Problem("truth.jsonl", f"line {line}", "event", message, "warning"))
    return sorted(found, key=lambda p: _line_number(p.location))


def _line_number(location: str) -> int:
    _, _, number = location.partition(" ")
    return int(number) if number.isdigit() else 0


def _check_packets(run: _Run) -> list[Problem]:
    paths = run.paths
    captures = paths.captures()
    if not captures:
        message = "no packet capture: connection-level evidence is unavailable"
        return [Problem("packets/", "file", None, message, "warning")]
    try:
        pcap = importlib.import_module("analyzer.readers.pcap")
    except ImportError as exc:
        message = f"captures not checked: the pcap reader is unavailable ({exc})"
        return [Problem("packets/", "file", None, message, "warning")]
    found: list[Problem] = []
    for file in captures:
        try:
            packets = pcap.read_pcap(file, on_damage="raise")
        except TraceError as exc:
            found.append(_from_error(paths, exc))
            continue
        if len(packets) == 0:
            message = "no TCP packets in this capture"
            found.append(Problem(_relative(paths, file), "file", None, message, "warning"))
        run.span(_relative(paths, file), packets["ts_ns"])
    return found


def _check_hop_logs(run: _Run) -> list[Problem]:
    """Every L7 hop's access log (hops/*.log): each line the analysis would leave out."""
    found: list[Problem] = []
    for file in run.paths.hop_logs():
        try:
            log = read_access_log(file)
        except TraceError as exc:
            found.append(_from_error(run.paths, exc))
            continue
        found += [_from_error(run.paths, p.to_trace_error()) for p in log.problems]
        run.span(_relative(run.paths, file), log.requests["end_ns"])
    return found


def _check_clocks(run: _Run) -> list[Problem]:
    """Every file's time span must overlap the requests' (or, without requests, the phases'):
    the joins compare times across files, so one file on another clock silently breaks them."""
    reference_name = "requests.parquet"
    reference = run.spans.get(reference_name)
    if reference is None and run.meta is not None:
        phases = [run.meta.phases[p] for p in PHASES if p in run.meta.phases]
        reference_name = "run.json phases"
        reference = (min(phases), max(phases)) if phases else None
    if reference is None:
        return []
    found = []
    low, high = reference[0] - CLOCK_SLACK_NS, reference[1] + CLOCK_SLACK_NS
    for file, (first, last) in run.spans.items():
        if file != reference_name and (last < low or first > high):
            message = (
                f"its times ({first}..{last} ns) do not overlap {reference_name} "
                f"({reference[0]}..{reference[1]} ns): recorded by another clock or run?"
            )
            found.append(Problem(file, "file", None, message, "warning"))
    return found
