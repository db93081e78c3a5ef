"""The recommendation as a strategic-merge patch of the user's Deployment.

No path is mapped by hand: the demo Deployment is rendered (``rolltrace.runner.manifests``) for
the scenario as it is and with the recommendation applied, and the patch holds exactly what
differs. Lists of named objects (containers, env) are merged by ``name``, as strategic merge
does for them; a field that disappears becomes ``null`` (strategic merge deletes it).
"""

from __future__ import annotations

from typing import Any

import yaml

from rolltrace.runner.manifests import deployment
from rolltrace.scenario import Scenario
from rolltrace.tuning.search import TuneResult
from rolltrace.tuning.settings import format_value, with_candidate

PATCH_FILE = "patch.yaml"  # what `rolltrace tune` writes the patch as, in its -o DIR
# A setting of the demo app rather than of Kubernetes: a user's app has its own equivalent.
APP_SETTINGS_PREFIX = "workload.app."


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _diff_named(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Changed items of two name-keyed lists, each as ``{name, changed fields}``."""
    before = {item["name"]: item for item in old}
    changed = []
    for item in new:
        delta = diff(before.get(item["name"], {}), item)
        if delta:
            changed.append({"name": item["name"], **delta})
    return changed


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The strategic-merge patch that turns ``old`` into ``new`` (only what changed)."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if value == before:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = diff(before, value)
        elif isinstance(value, list) and isinstance(before, list) and _named(value + before):
            patch[key] = _diff_named(before, value)
        else:
            patch[key] = value
    patch.update({key: None for key in old if key not in new})
    return patch


def render_patch(result: TuneResult, scenario: Scenario) -> str:
    """``kubectl patch deployment NAME --patch-file FILE`` input, with comments saying what it
    changes and where the user must adapt it."""
    recommended = result.recommended
    if recommended is None:
        return "# No safe value was found in the range tried: there is nothing to apply.\n"
    before = deployment(scenario)
    after = deployment(with_candidate(scenario, recommended))
    patch = diff(before, after)
    changes = ", ".join(
        f"{v.path} {'unset' if v.current is None else format_value(v.current)} → "
        f"{format_value(recommended[v.path])}"
        for v in result.varies
        if v.current != recommended[v.path]
    )
    if not patch:
        return "# The scenario already has the recommended value: there is nothing to apply.\n"
    lines = [
        f"# Strategic-merge patch for your Deployment: {changes}.",
        f"# Apply: kubectl patch deployment YOUR-DEPLOYMENT --patch-file {PATCH_FILE}",
    ]
    if patch.get("spec", {}).get("template", {}).get("spec", {}).get("containers"):
        lines.append("# Containers are matched by name: use your container's name for `app`.")
    if any(path.startswith(APP_SETTINGS_PREFIX) for path in recommended):
        lines.append(
            "# DEMOAPP_* is the demo app's own setting: your app needs its own equivalent "
            "(e.g. how long its graceful shutdown waits for requests in flight)."
        )
    return "\n".join(lines) + "\n" + yaml.safe_dump(patch, sort_keys=False)
