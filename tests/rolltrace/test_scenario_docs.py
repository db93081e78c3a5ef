"""docs/scenarios-reference.md must document the current scenario model: its field tables,
presets, triggers and deprecated fields are generated from rolltrace/scenario.py, and these
tests fail when someone changes one without the other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args

import pytest
from pydantic import BaseModel, Field

from rolltrace import scenario_doc
from rolltrace.scenario import DEPRECATED_FIELDS, PRESET_CATALOG, PRESETS, Rollout, load_scenario
from rolltrace.scenario_doc import (
    SCENARIO_REFERENCE,
    Section,
    default_text,
    field_type,
    main,
    section_table,
    sections,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "scenarios-reference.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_doc_equals_the_rendering(doc: str) -> None:
    assert SCENARIO_REFERENCE.missing(doc) == []
    assert SCENARIO_REFERENCE.update(doc) == doc, (
        "docs/scenarios-reference.md is stale: "
        "run `python -m rolltrace.scenario_doc --write docs/scenarios-reference.md`"
    )
    assert main(["--check", str(DOC)]) == 0


def test_every_section_the_scenario_has_is_walked() -> None:
    paths = {section.path for section in sections()}
    for path in (
        "workload",
        "workload.app",
        "pod",
        "pod.readiness_probe",
        "pod.liveness_probe",
        "pod.pre_stop",
        "strategy",
        "service",
        "cluster",
        "cluster.lb",
        "cluster.proxy_delay",
        "load",
        "rollout",
        "rollout.app",
    ):
        assert path in paths


def test_every_model_field_appears(doc: str) -> None:
    """Each field of each section has its own row, except in a section whose model was
    documented earlier (``rollout.app``), which points to that table."""
    documented: set[type[BaseModel]] = set()
    for section in sections():
        title = section.path or "Top level"
        assert re.search(rf"^### `?{re.escape(title)}`?", doc, re.M), title
        if section.model in documented:
            continue
        documented.add(section.model)
        for name in section.model.model_fields:
            path = f"{section.path}.{name}".lstrip(".")
            assert f"| `{path}` |" in doc, f"{path} is not documented"


def test_presets_triggers_and_deprecated_fields_are_documented(doc: str) -> None:
    assert set(PRESET_CATALOG) == set(PRESETS)
    for name, preset in PRESET_CATALOG.items():
        assert f"### `{name}`" in doc
        assert preset.source and f"Source: {preset.source}" in doc
    for trigger in get_args(Rollout.model_fields["trigger"].annotation):
        assert f"### `{trigger}`" in doc
    for section, name in DEPRECATED_FIELDS:
        assert f"| `{section}.{name}` |" in doc


def test_example_scenario_loads(doc: str, tmp_path: Path) -> None:
    example = re.search(r"^## Example scenario\n\n```yaml\n(.*?)^```$", doc, re.S | re.M)
    assert example is not None, "docs/scenarios-reference.md has no example scenario"
    path = tmp_path / "example.yaml"
    path.write_text(example.group(1))
    scenario = load_scenario(path)
    assert scenario.cluster.kind == "local" and scenario.cluster.preset is not None
    # explicit fields win over the preset
    assert (
        scenario.cluster.lb.hc_interval_s != PRESETS[scenario.cluster.preset]["lb"]["hc_interval_s"]
    )


class _Demo(BaseModel):
    policy: Literal["Local", "Cluster"] = Field("Cluster", description="Where | why.")
    delay_s: float = Field(0.5, ge=0, description="A delay.")
    count: int | None = Field(None, ge=1, le=9, description="A count.")
    names: list[str] = Field(default_factory=list, description="Some names.")
    undocumented: int = 0


def test_types_and_defaults_are_readable() -> None:
    fields = _Demo.model_fields
    assert field_type(fields["policy"]) == '"Local" | "Cluster"'
    assert field_type(fields["delay_s"]) == "float ≥ 0"
    assert field_type(fields["count"]) == "int ≥ 1, ≤ 9 | null"
    assert field_type(fields["names"]) == "list of str"
    assert default_text(fields["delay_s"]) == "`0.5`"
    assert default_text(fields["names"]) == "`[]`"
    assert default_text(fields["count"]) == "`null`"


def test_a_field_without_description_fails_the_rendering() -> None:
    with pytest.raises(ValueError, match=r"demo\.undocumented has no Field\(description"):
        section_table(Section("demo", _Demo, "A demo section."), {})


def test_a_trigger_without_description_fails_the_rendering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(scenario_doc.TRIGGERS, "image")
    with pytest.raises(KeyError, match="image"):
        scenario_doc.render_triggers()


def test_check_and_write_follow_the_model(tmp_path: Path) -> None:
    stale = tmp_path / "doc.md"
    stale.write_text(
        "intro\n<!-- scenario:deprecated -->\n| old |\n<!-- /scenario:deprecated -->\n"
    )
    assert main(["--check", str(stale)]) == 1
    assert main(["--write", str(stale)]) == 1  # written, but the other blocks are missing
    written = stale.read_text()
    assert written.startswith("intro\n")
    assert scenario_doc.render_deprecated() in written and "| old |" not in written
