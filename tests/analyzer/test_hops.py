"""Masked retries at L7 hops (``analyzer.hops``), the hop logs of a run directory in the
analysis, in ``rolltrace import`` and in the report.

The logs are generated from the documented formats (``accesslog_render``); what each request
went through is drawn at random and the expected counts and costs are computed from those
draws, not from the code under test."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from analyzer import load_run
from analyzer.hops import masked_retries, retries_summary
from analyzer.pipeline import analyze
from analyzer.readers.accesslog import HOP_TIMES_KEY, read_access_log
from analyzer.report.facts import run_facts
from analyzer.report.render import render_html, render_markdown, sections
from analyzer.rundir import RunPaths, read_run_meta
from analyzer.schema import HOP_ATTEMPTS, HOP_REQUESTS, MASKED_RETRIES, check_frame
from analyzer.tracebuilder import build_run
from analyzer.validate import validate_run
from rolltrace.cli import app
from tests.analyzer.accesslog_render import rolltrace_line, upstreaminfo_line, write_log

PODS = ["10.244.1.5:8080", "10.244.2.6:8080", "10.244.3.7:8080"]
HOSTILE_GROUP = "<b>pool|x</b>"  # a group name stands for the address when no server is chosen


@dataclass
class Drawn:
    """What the generated log's requests went through, for the expected numbers."""

    masked: int = 0
    failed: int = 0
    costs_ms: list[float] = field(default_factory=list)
    by_upstream: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)


def _attempt(rng: random.Random, failing: bool) -> tuple[str, str, str, str, int]:
    """(address, status, connect, header) texts and the response time in ms of one attempt."""
    ms = rng.randint(0, 40)
    if not failing:
        return rng.choice(PODS), "200", "0.001", f"{ms / 1000:.3f}", ms
    kind = rng.choice(["refused", "reset", "timeout", "no-server"])
    if kind == "no-server":
        return HOSTILE_GROUP, "502", "-", "-", ms
    status = "504" if kind == "timeout" else "502"
    return rng.choice(PODS), status, "0.000" if kind == "reset" else "-", "-", ms


def _request(rng: random.Random, drawn: Drawn, json_format: bool) -> str:
    """One request: a clean one, one masked by retries, one that failed at the hop, or one whose
    client hung up (499) after a failed attempt."""
    kind = rng.choices(["clean", "masked", "failed", "gone"], weights=[6, 3, 1, 1])[0]
    failing = {"clean": 0, "masked": rng.randint(1, 2), "failed": 2, "gone": 1}[kind]
    attempts = [_attempt(rng, True) for _ in range(failing)]
    if kind in {"clean", "masked"}:
        attempts.append(_attempt(rng, False))
    if kind == "masked":
        drawn.masked += 1
        drawn.costs_ms.append(sum(a[4] for a in attempts[:failing]))
        drawn.by_upstream.update(a[0] for a in attempts[:failing])
        drawn.by_status.update(a[1] for a in attempts[:failing])
    status = {"failed": attempts[-1][1], "gone": "499"}.get(kind, "200")
    drawn.failed += kind in {"failed", "gone"}
    columns = list(zip(*attempts, strict=True))
    values = {
        "upstream_addr": ", ".join(columns[0]),
        "upstream_status": ", ".join(columns[1]),
        "upstream_response_time": ", ".join(f"{ms / 1000:.3f}" for ms in columns[4]),
        "status": status,
    }
    if json_format:
        values["upstream_connect_time"] = ", ".join(columns[2])
        values["upstream_header_time"] = ", ".join(columns[3])
        return rolltrace_line(**values)
    values["upstream_response_length"] = ", ".join("0" for _ in attempts)
    return upstreaminfo_line(**values)


def _generated(path: Path, seed: int, count: int, json_format: bool = True) -> Drawn:
    rng, drawn = random.Random(seed), Drawn()
    write_log(path, [_request(rng, drawn, json_format) for _ in range(count)])
    return drawn


def _check(summary: dict, drawn: Drawn, requests: int) -> None:  # type: ignore[type-arg]
    assert summary["requests"] == requests
    assert summary["masked"] == drawn.masked
    assert summary["failed"] == drawn.failed
    assert summary["failed_attempts"] == sum(drawn.by_upstream.values())
    assert summary["by_upstream"] == dict(sorted(drawn.by_upstream.items()))
    assert summary["by_status"] == dict(sorted(drawn.by_status.items()))
    costs = np.array(drawn.costs_ms, dtype="float64")
    assert summary["cost_ms"]["n"] == len(costs)
    assert summary["cost_ms"]["p50_ms"] == pytest.approx(np.percentile(costs, 50), abs=1e-3)
    assert summary["cost_ms"]["p99_ms"] == pytest.approx(np.percentile(costs, 99), abs=1e-3)
    assert summary["cost_total_ms"] == pytest.approx(costs.sum(), abs=1e-3)


@pytest.mark.parametrize("json_format", [True, False], ids=["rolltrace", "ingress-nginx"])
def test_masked_retries_are_counted_with_their_cost(tmp_path: Path, json_format: bool) -> None:
    drawn = _generated(tmp_path / "edge.log", seed=7, count=400, json_format=json_format)
    log = read_access_log(tmp_path / "edge.log")
    masked = masked_retries(log.requests, log.attempts)
    check_frame(masked, MASKED_RETRIES, "test")
    assert len(masked) == drawn.masked
    assert (masked["status"] < 500).all() and (masked["failed_attempts"] >= 1).all()
    summary = retries_summary(log.requests, log.attempts, masked)
    assert list(summary) == ["edge"]
    _check(dict(summary["edge"]), drawn, 400)
    assert summary["edge"]["time_resolution_ms"] == (1.0 if json_format else 1000.0)


def test_a_masked_request_names_its_failed_attempts_in_order(tmp_path: Path) -> None:
    line = rolltrace_line(
        upstream_addr=f"{PODS[0]}, {PODS[1]} : {PODS[2]}",
        upstream_status="502, 504 : 200",
        upstream_connect_time="-, 0.001 : 0.001",
        upstream_header_time="-, - : 0.002",
        upstream_response_time="0.002, 1.000 : 0.002",
    )
    log = read_access_log(write_log(tmp_path / "edge.log", [line]))
    masked = masked_retries(log.requests, log.attempts)
    assert masked["failed_upstreams"].iloc[0] == (
        f"{PODS[0]} 502 connect-error, {PODS[1]} 504 response-timeout"
    )
    assert masked["cost_ms"].iloc[0] == pytest.approx(1002.0)


def test_without_hop_logs_nothing_is_masked() -> None:
    requests, attempts = HOP_REQUESTS.empty(), HOP_ATTEMPTS.empty()
    masked = masked_retries(requests, attempts)
    assert masked.empty and list(masked.columns) == MASKED_RETRIES.names
    assert retries_summary(requests, attempts, masked) == {}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hops") / "run"
    build_run(root, "endpoint-lag", seed=4, rate=40, duration_s=8)
    return root


def test_a_run_without_hop_logs_has_empty_hop_tables(built: Path) -> None:
    analysis = analyze(RunPaths(built), write_tables=False, write_summary=False)
    assert analysis.summary["masked_retries"] == {}
    for name in ("hop_requests", "hop_attempts", "masked_retries"):
        assert analysis.tables[name].empty


def test_the_analysis_reads_the_run_hop_logs(built: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    build_run(run_dir, "endpoint-lag", seed=4, rate=40, duration_s=8)
    paths = RunPaths(run_dir)
    drawn = _generated(paths.hop_log("ingress"), seed=3, count=200)
    with paths.hop_log("ingress").open("a") as handle:
        handle.write("{torn\n")
    run = load_run(run_dir)
    _check(dict(run.summary["masked_retries"]["ingress"]), drawn, 200)
    assert len(run.table("masked_retries")) == drawn.masked
    assert "hops/ingress.log" in run.summary["inputs"]["present"]
    assert "hops/ingress.log" in run.summary["inputs"]["fingerprint"]
    assert [d["where"] for d in run.summary["inputs"]["damaged"]] == ["line 201"]
    assert run.summary["analysis_status"] == "degraded"
    invalid = [(p.file, p.location) for p in validate_run(run_dir) if p.severity == "error"]
    assert invalid == [("hops/ingress.log", "line 201")]
    assert len(run.masked_retries) == drawn.masked  # a Run attribute, as every table
    cached = load_run(run_dir)  # read back from analysis/: the same hop tables
    assert cached.analysis.tables is not run.analysis.tables
    assert len(cached.table("hop_attempts")) == len(run.table("hop_attempts"))
    assert cached.summary["masked_retries"] == json.loads(json.dumps(run.summary["masked_retries"]))


def test_the_report_shows_retries_only_with_a_hop_log(built: Path, tmp_path: Path) -> None:
    without = [s.title for s in sections(run_facts(load_run(built)), has_truth=False)]
    assert "Retries at L7 hops" not in without
    run_dir = tmp_path / "run"
    build_run(run_dir, "endpoint-lag", seed=4, rate=40, duration_s=8)
    log = RunPaths(run_dir).hop_log("ingress")
    drawn = _generated(log, seed=5, count=100)
    hostile = rolltrace_line(
        upstream_addr=f"{HOSTILE_GROUP}, {PODS[0]}",
        upstream_status="502, 200",
        upstream_connect_time="-, 0.001",
        upstream_header_time="-, 0.002",
        upstream_response_time="0.000, 0.002",
    )
    with log.open("a") as handle:  # the most frequent failed upstream: the first one shown
        handle.write((hostile + "\n") * 50)
    parts = sections(run_facts(load_run(run_dir)), has_truth=False)
    (retries,) = [s for s in parts if s.title == "Retries at L7 hops"]
    assert retries.table is not None
    _, rows = retries.table
    assert rows[0][:5] == ["ingress", "150", rows[0][2], str(drawn.failed), str(drawn.masked + 50)]
    page = render_html("r", ["r"], [], parts, {})
    md = render_markdown("r", ["r"], [], parts, "figures")
    assert "<b>" not in page and "&lt;b&gt;pool|x&lt;/b&gt; ×" in page
    assert "&lt;b&gt;pool\\|x&lt;/b&gt; ×" in md


def _import(tmp_path: Path, built: Path, *extra: str) -> tuple[int, str, Path]:
    out = tmp_path / "imported"
    result = CliRunner().invoke(
        app,
        [
            "import",
            "-o",
            str(out),
            "--pcap",
            str(built / "packets" / "client.pcap"),
            "--watch",
            str(built / "events.jsonl"),
            *extra,
        ],
    )
    return result.exit_code, result.output, out


def test_import_takes_an_ingress_nginx_log(tmp_path: Path, built: Path) -> None:
    log = tmp_path / "controller.log"
    drawn = _generated(log, seed=11, count=150, json_format=False)
    code, output, out = _import(tmp_path, built, "--access-log", str(log), "--hop", "ingress")
    assert code == 0, output
    assert (out / "hops" / "ingress.log").read_bytes() == log.read_bytes()
    times = read_run_meta(out).extra_fields()[HOP_TIMES_KEY]["ingress"]
    assert times["format"] == "ingress-nginx" and times["coarse"] is True
    assert times["time_resolution_ms"] == 1000.0 and times["requests"] == 150
    assert "one-second times" in output
    summary = analyze(RunPaths(out)).summary
    _check(dict(summary["masked_retries"]["ingress"]), drawn, 150)


def test_import_names_a_bad_access_log(tmp_path: Path, built: Path) -> None:
    log = write_log(tmp_path / "edge.log", [rolltrace_line(), "{torn", rolltrace_line()])
    code, output, _ = _import(tmp_path, built, "--access-log", str(log))
    assert code == 2 and "edge.log: line 2" in output and "--keep-going" in output
    code, output, out = _import(tmp_path, built, "--access-log", str(log), "--keep-going")
    assert code == 0, output
    assert read_run_meta(out).extra_fields()[HOP_TIMES_KEY]["edge"]["bad_lines"] == 1


@pytest.mark.parametrize(
    "hops, message",
    [
        (["a", "b"], "2 --hop for 1 --access-log"),
        (["../x"], "not a hop name"),
    ],
)
def test_import_refuses_bad_hop_names(
    tmp_path: Path, built: Path, hops: list[str], message: str
) -> None:
    log = write_log(tmp_path / "edge.log", [rolltrace_line()])
    extra = ["--access-log", str(log)] + [arg for hop in hops for arg in ("--hop", hop)]
    code, output, out = _import(tmp_path, built, *extra)
    assert code == 2 and message in output and not out.exists()


def test_import_refuses_two_logs_of_one_hop_name(tmp_path: Path, built: Path) -> None:
    first = write_log(tmp_path / "a" / "access.log", [rolltrace_line()])
    second = write_log(tmp_path / "b" / "access.log", [rolltrace_line()])
    code, output, _ = _import(
        tmp_path, built, "--access-log", str(first), "--access-log", str(second)
    )
    assert code == 2 and "same hop" in output
