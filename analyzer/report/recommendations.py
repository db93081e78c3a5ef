"""The report's lead: what to change, in the words a reader acts on, from the recommendations
summary.json carries (``analyzer.advice`` computes them once, in the analysis).

A reader opens the report to learn the fix: each line says the setting, from → to, the expected
effect and how sure, or that the fix is in the application and no setting will do. A run where
nothing needs changing gets the margins that held instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from analyzer.advice import Recommendation, SettingChange

#: What a fix outside the scenario's settings is, in the lead's words.
_FIX_PLACE = {
    "app": "In the application (no rollout setting fixes this)",
    "probe": "In the Pod's probe",
    "cluster": "In the Service / cluster",
    "evidence": "Before anything else",
}


def _value(value: object) -> str:
    if value is None:
        return "not set"
    return f"{value:g} s" if isinstance(value, float) else str(value)


def change_text(change: SettingChange) -> str:
    """``pod.pre_stop.sleep_s: 1 s → 5 s``; seconds for the settings that are durations."""
    seconds = change.setting.endswith("_s")
    to = f"{change.to_value:g} s" if seconds and isinstance(change.to_value, int | float) else None
    start = change.from_value
    before = f"{start:g} s" if seconds and isinstance(start, int | float) else _value(start)
    return f"{change.setting}: {before} → {to or _value(change.to_value)}"


def fix_line(rec: Recommendation) -> tuple[str, str]:
    """(what to do, the detail: expected effect, how sure, the tune command) for one
    recommendation that asks for a change or cannot decide."""
    if rec.changes:
        what = f"{rec.topic}: " + "; ".join(change_text(c) for c in rec.changes)
    else:
        what = f"{_FIX_PLACE.get(rec.fix_in, rec.topic)}: {rec.advice}"
    detail = [
        f"Expected: {rec.expected_effect}." if rec.expected_effect else "",
        f"How sure: {rec.how_sure}." if rec.how_sure else "",
        f"Find it by experiment: {rec.tune_command}"
        if rec.tune_command and rec.tune_command not in rec.advice
        else "",
    ]
    if rec.changes:
        detail.insert(0, rec.advice)
    return what, " ".join(d for d in detail if d)


def to_change(recs: Sequence[Recommendation]) -> list[Recommendation]:
    """The recommendations the lead shows: every one that is not ``ok``, changes first."""
    return [r for r in recs if r.verdict != "ok"]


def margins_held(recs: Sequence[Recommendation]) -> list[str]:
    """For a run that needs no change: each ``ok`` verdict's advice (it names its setting and
    the margin that held)."""
    return [r.advice for r in recs if r.verdict == "ok"]
