"""Coarse watch times do not break attribution: the trace builder's runs, their watch re-read as
kubectl would have printed it (no receive times, whole-second timestamps as upstream's
``metav1.Time`` writes them), attribute the failures of a rollout's main causes as well as
issue 10 asks of imported runs.

Where sub-second endpoint timing decides the cause (the LB's health-check window under
``externalTrafficPolicy: Local``) coarse times cost agreement: docs/trace-format.md says so and
names ``rolltrace watch`` as the precise recorder; those recipes are not held to the bar here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analyzer.pipeline import analyze
from analyzer.readers.kubectl import read_kubectl_streams
from analyzer.tracebuilder.build import build_run

MIN_AGREEMENT = 0.90  # issue 10: imported runs attribute ≥ 90 % of failures like the truth
_FRACTION = re.compile(r"(T\d\d:\d\d:\d\d)\.\d+(Z|[+-]\d\d:\d\d)")


def as_kubectl_streams(events: Path, directory: Path) -> list[Path]:
    """events.jsonl → one kubectl stream per kind: watch events without receive times, the
    initial list as ADDED (as kubectl prints it), timestamps truncated to the second."""
    streams: dict[str, list[str]] = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event["type"] not in {"ADDED", "MODIFIED", "DELETED", "LIST"}:
            continue
        etype = "ADDED" if event["type"] == "LIST" else event["type"]
        text = json.dumps({"type": etype, "object": event["object"]})
        streams.setdefault(event["kind"], []).append(_FRACTION.sub(r"\1\2", text))
    paths = []
    for kind, lines in streams.items():
        path = directory / f"{kind.lower()}s.json"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    "recipe", ["not-ready", "endpoint-lag", "inflight-cut", "killed-at-grace", "mixed-restarts"]
)
def test_causes_survive_coarse_watch_times(tmp_path: Path, recipe: str) -> None:
    built = build_run(tmp_path / recipe, recipe, seed=1)
    built.paths.truth.unlink()  # attribution must not need (or read) the truth
    derived = read_kubectl_streams(as_kubectl_streams(built.paths.events, tmp_path))
    assert derived.problems == []
    assert all(r["time_source"] != "receive" for r in derived.records)
    built.paths.events.write_text("".join(json.dumps(r) + "\n" for r in derived.records))
    failures = analyze(built.paths, write_tables=False, write_summary=False).tables["failures"]
    truth = built.causes[["request_id", "cause"]].rename(columns={"cause": "truth"})
    joined = truth.merge(failures[["request_id", "cause"]], on="request_id", how="left")
    assert len(joined) > 0
    agreement = float((joined["truth"] == joined["cause"]).mean())
    assert agreement >= MIN_AGREEMENT, (recipe, agreement)
