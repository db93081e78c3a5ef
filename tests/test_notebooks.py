"""The notebooks execute top to bottom on built runs (outputs are never committed), so the
public API they teach cannot drift from the code."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from analyzer import load_run
from analyzer.tracebuilder import build_run

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _execute(name: str, cwd: Path) -> str:
    """Run a notebook on the venv's python3 kernel; return its text outputs, joined."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        f"{name}: outputs must not be committed"
    )
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return "\n".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def test_notebooks_execute_on_built_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for recipe, seed in (("mixed", 1), ("mixed", 2), ("clean", 1)):
        path = tmp_path / f"{recipe}-{seed}"
        build_run(path, recipe, seed=seed, rate=40, duration_s=15)
        paths.append(path)
    failed = [len(load_run(p).failures) for p in paths]

    monkeypatch.setenv("ROLLTRACE_RUN", str(paths[0]))
    monkeypatch.setenv("ROLLTRACE_RUNS", os.pathsep.join(str(p) for p in paths))
    explored = _execute("01-explore-a-run.ipynb", tmp_path)
    assert f"failures total: {failed[0]}" in explored
    compared = _execute("02-compare-runs.ipynb", tmp_path)
    assert f"runs compared: 3; failed in total: {sum(failed)}" in compared
