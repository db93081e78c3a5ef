"""Render the scenario model as the reference blocks of docs/scenarios-reference.md.

Every field a scenario file may hold, the timing presets with their sources, the rollout
triggers and the deprecated fields come from ``rolltrace.scenario`` itself (field types,
bounds, defaults and ``Field(description=...)``), so the reference cannot fall behind the
model: a field without a description fails the rendering, and
``tests/rolltrace/test_scenario_docs.py`` fails when the document is stale.

    python -m rolltrace.scenario_doc --check docs/scenarios-reference.md   # exit 1 when stale
    python -m rolltrace.scenario_doc --write docs/scenarios-reference.md   # regenerate in place
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from analyzer.generated_doc import GeneratedDocument, table_cell
from rolltrace.runner.manifests import rollout_patch
from rolltrace.scenario import DEPRECATED_FIELDS, PRESET_CATALOG, Rollout, Scenario

# Example `rollout` sections, one per trigger, with what each trigger does to the Deployment.
TRIGGERS: dict[str, tuple[str, dict[str, Any]]] = {
    "restart": (
        "What `kubectl rollout restart` does: stamps the Pod template with a "
        "`kubectl.kubernetes.io/restartedAt` annotation, so every Pod is replaced by an "
        "identical one. With `rollout.app`, the new Pods also get the changed `DEMOAPP_*` env.",
        {"trigger": "restart"},
    ),
    "image": (
        "What `kubectl set image` does: sets the container's image to `rollout.image` "
        "(required). With `rollout.app`, the new Pods also get the changed `DEMOAPP_*` env.",
        {"trigger": "image", "image": "rolltrace/demoapp:0.1.1"},
    ),
    "patch": (
        "Sends `rollout.patch` (required) as a strategic merge patch of the Deployment, as "
        "`kubectl patch` does; it must change the Pod template to start a rollout. "
        "`rollout.app` is refused here: put env changes in the patch.",
        {
            "trigger": "patch",
            "patch": {"spec": {"template": {"metadata": {"labels": {"revision": "2"}}}}},
        },
    ),
}
EXAMPLE_TIME = "2026-01-01T00:00:00Z"  # a fixed restartedAt, so the rendering is reproducible
MAPPING_KEY = ".NAME"  # how a path shows the user-chosen key of a mapping's entry


@dataclass(frozen=True)
class Section:
    """One YAML mapping of a scenario file: the model that validates it, where it sits, and the
    description of the field that leads to it."""

    path: str
    model: type[BaseModel]
    about: str


def _models_in(annotation: Any) -> Iterator[tuple[type[BaseModel], str]]:
    """The models an annotation holds, each with the path suffix that reaches it (a mapping's
    values sit one key deeper)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, ""
        return
    args = get_args(annotation)
    if get_origin(annotation) is dict:
        yield from ((model, MAPPING_KEY + rest) for model, rest in _models_in(args[1]))
        return
    for arg in args:
        yield from _models_in(arg)


def sections() -> list[Section]:
    """Every section reachable from ``Scenario``, in the order a scenario file lists them."""
    found: list[Section] = []

    def visit(model: type[BaseModel], path: str, about: str) -> None:
        found.append(Section(path, model, about))
        for name, info in model.model_fields.items():
            for child, suffix in _models_in(info.annotation):
                visit(child, f"{path}.{name}{suffix}".lstrip("."), info.description or "")

    visit(Scenario, "", "The top level of a scenario file.")
    return found


def _bounds(info: FieldInfo) -> str:
    """A field's numeric bounds, e.g. `` ≥ 1, ≤ 500`` (pydantic keeps each as a metadata item
    with one of these attributes)."""
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = [
        f"{sign} {getattr(item, attr)}"
        for item in info.metadata
        for attr, sign in signs.items()
        if getattr(item, attr, None) is not None
    ]
    return (" " + ", ".join(parts)) if parts else ""


def type_text(annotation: Any, bounds: str = "") -> str:
    """A readable type: ``float ≥ 0``, ``"Local" | "Cluster"``, ``list of str``, ``section``."""
    origin = get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(json.dumps(value) for value in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " | ".join(json.dumps(member.value) for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if origin in (Union, types.UnionType):
        members = [type_text(arg) for arg in get_args(annotation) if arg is not type(None)]
        nullable = type(None) in get_args(annotation)
        return " | ".join([members[0] + bounds, *members[1:]] + (["null"] if nullable else []))
    if origin is list:
        return f"list of {type_text(get_args(annotation)[0])}"
    if origin is dict:
        key, value = (type_text(arg) for arg in get_args(annotation))
        return f"mapping of {key} to {value}"
    name = getattr(annotation, "__name__", str(annotation))
    return ("any" if annotation is Any else name) + bounds


def _yaml_flow(value: Any) -> str:
    """``value`` as one line of YAML, keys in the order written."""
    flow = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return str(flow).removesuffix("\n...\n").strip()


def default_text(info: FieldInfo) -> str:
    """The default as YAML, ``required``, or ``all defaults`` for a section left as is."""
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
        if not value:
            return "all defaults"
    return f"`{_yaml_flow(value)}`"


def _title(section: Section) -> str:
    """The heading of a section: its path, and which ``kind`` when a union branches on it."""
    title = f"`{section.path}`" if section.path else "Top level"
    kind = section.model.model_fields.get("kind")
    if kind is not None and get_origin(kind.annotation) is Literal:
        values = get_args(kind.annotation)
        if len(values) == 1:  # one branch of a union told apart by `kind`
            title += f" (kind: {values[0]})"
    return title


def anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _link_sections(kind: str, targets: list[str]) -> str:
    """Each ``section`` in a type links to its table; a union's sections come in the order
    ``type_text`` lists them, which is the order ``sections`` visits them."""
    remaining = iter(targets)
    return re.sub(r"\bsection\b", lambda m: f"[section](#{next(remaining)})", kind)


def field_type(info: FieldInfo) -> str:
    """The readable type of one field, bounds included."""
    return type_text(info.annotation, _bounds(info))


def section_table(section: Section, links: dict[str, list[str]]) -> list[str]:
    """A section's fields as Markdown table lines; a field without a description is an error,
    so no field ships undocumented."""
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, info in section.model.model_fields.items():
        path = f"{section.path}.{name}".lstrip(".")
        if not info.description:
            raise ValueError(f"scenario field {path} has no Field(description=...)")
        kind = _link_sections(field_type(info), links.get(path, []))
        cells = [f"`{path}`", table_cell(kind), default_text(info), table_cell(info.description)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _section_links(all_sections: list[Section]) -> dict[str, list[str]]:
    """Field path → anchors of the sections it leads to (several for a union)."""
    links: dict[str, list[str]] = {}
    for section in all_sections:
        field_path = re.sub(f"({re.escape(MAPPING_KEY)})+$", "", section.path)  # its field
        links.setdefault(field_path, []).append(anchor(_title(section)))
    return links


def render_fields() -> str:
    """One table per section; a model met again (``rollout.app``) points to its first table."""
    all_sections = sections()
    links = _section_links(all_sections)
    first: dict[type[BaseModel], Section] = {}
    out = []
    for section in all_sections:
        out += [f"### {_title(section)}", "", section.about, ""]
        seen = first.setdefault(section.model, section)
        if seen is not section:
            out += [f"Same fields as [{_title(seen)}](#{anchor(_title(seen))}).", ""]
            continue
        out += [*section_table(section, links), ""]
    return "\n".join(out)


def render_presets() -> str:
    """Each preset: what it models, the `cluster` fields it sets, and where the figures come from."""
    out = []
    for name, preset in PRESET_CATALOG.items():
        snippet = yaml.safe_dump({"cluster": preset.cluster}, sort_keys=False, width=10_000)
        out += [f"### `{name}`", "", preset.summary, ""]
        out += ["```yaml", f"# cluster: {{preset: {name}}} sets", snippet.rstrip(), "```", ""]
        out += [f"Source: {preset.source}", ""]
    return "\n".join(out)


def render_triggers() -> str:
    """Each trigger: what it does, and the patch rolltrace sends for an example section."""
    trigger_field = Rollout.model_fields["trigger"].annotation
    missing = set(get_args(trigger_field)) - set(TRIGGERS)
    if missing:
        raise KeyError(f"rollout triggers without a description: {sorted(missing)}")
    out = []
    for name, (effect, rollout) in TRIGGERS.items():
        scenario = Scenario.model_validate({"name": "example", "rollout": rollout})
        patch = rollout_patch(scenario, EXAMPLE_TIME)
        out += [f"### `{name}`", "", effect, "", "```yaml"]
        out += [f"rollout: {_yaml_flow(rollout)}", "# sends the Deployment this patch:"]
        out += [f"# {_yaml_flow(patch)}", "```", ""]
    return "\n".join(out)


def render_deprecated() -> str:
    """Fields that still load, with a warning, but do nothing; and what to use instead."""
    out = [
        "These still load, with a warning naming the replacement, and are ignored.",
        "",
        "| field | why, and what to use instead |",
        "|---|---|",
    ]
    for (section, name), replacement in DEPRECATED_FIELDS.items():
        out.append(f"| `{section}.{name}` | {table_cell(replacement)} |")
    return "\n".join(out) + "\n"


RENDERERS = {
    "fields": render_fields,
    "presets": render_presets,
    "triggers": render_triggers,
    "deprecated": render_deprecated,
}


def render_block(name: str) -> str:
    if name not in RENDERERS:
        raise KeyError(f"unknown scenario block {name!r} (blocks: {sorted(RENDERERS)})")
    return RENDERERS[name]()


def expected_blocks() -> list[str]:
    return list(RENDERERS)


SCENARIO_REFERENCE = GeneratedDocument("scenario", render_block, expected_blocks)


def main(argv: list[str] | None = None) -> int:
    return SCENARIO_REFERENCE.main(
        argv, prog="python -m rolltrace.scenario_doc", description=__doc__
    )


if __name__ == "__main__":
    sys.exit(main())
