"""Render the e2e results (``ROLLTRACE_E2E_RESULTS=FILE`` of tests/e2e/test_scenarios.py) as
the "Measured results" table of docs/scenarios.md: one row per scenario, repetitions folded.

    .venv/bin/python scripts/e2e_results_table.py results.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

HEADER = (
    "| scenario | runs | requests (per run) | failed (per run) | causes (all runs) "
    "| undecided by truth | agreement with truth | precision / recall per cause | wall time per run |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _per_cause(rows: list[dict[str, Any]]) -> str:
    """Precision and recall per cause over the failures the truth decided, every run of a
    scenario summed (a cause claimed only where the truth could not decide is not listed)."""
    hits: Counter[str] = Counter()
    claimed: Counter[str] = Counter()
    true: Counter[str] = Counter()
    for row in rows:
        for cause, s in row.get("per_cause", {}).items():
            hits[cause] += s["hits"]
            claimed[cause] += s["claimed"]
            true[cause] += s["support"]
    parts = []
    for cause in sorted(set(true) | set(claimed), key=lambda c: -true[c]):
        precision = f"{hits[cause] / claimed[cause]:.2f}" if claimed[cause] else "—"
        recall = f"{hits[cause] / true[cause]:.2f}" if true[cause] else "—"
        parts.append(f"{cause} {precision} / {recall}")
    return ", ".join(parts) or "—"


def row(name: str, rows: list[dict[str, Any]]) -> str:
    causes: Counter[str] = Counter()
    for r in rows:
        causes.update(r.get("causes", {}))
    cause_text = ", ".join(f"{c} {n}" for c, n in causes.most_common()) or "—"
    agreement = min(r["agreement"] for r in rows)
    agree = f"{agreement:.1%}" + (" (min)" if len(rows) > 1 else "")
    return (
        f"| {name} | {len(rows)} | {', '.join(str(r['requests']) for r in rows)} "
        f"| {', '.join(str(r['failed']) for r in rows)} | {cause_text} "
        f"| {sum(r.get('undecided', 0) for r in rows)} | {agree} "
        f"| {_per_cause(rows)} | {round(rows[0]['wall_s'])} s |"
    )


def main(path: str) -> int:
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            print(f"{path}:{number}: not JSON: {exc.msg}", file=sys.stderr)
            return 2
        by_scenario[record["scenario"]].append(record)
    print(HEADER)
    for name in sorted(by_scenario):
        print(row(name, by_scenario[name]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
