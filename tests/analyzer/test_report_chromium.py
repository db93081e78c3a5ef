"""The HTML report in a real browser: headless Chromium loads it with no console message and
draws something (the screenshot is not blank). A control page proves the console check can fail.

Layout is judged from the DOM Chromium laid out (bounding boxes a script writes into the page,
read back with ``--dump-dom``): the fix is above the fold (the first 900 px at 1400 px width) in
the report of a trace-builder run of every cause, and no two pieces of text overlap. The same
check over the library scenarios' real runs is in tests/e2e/test_scenarios.py (it needs the
local cluster); both use tests/browser.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer import load_run
from analyzer.report import render_report
from analyzer.report.compare import render_comparison
from analyzer.schema import Cause
from analyzer.tracebuilder import build_run, get_recipe, recipe_names
from tests.browser import layout, screenshot
from tests.conftest import require


@pytest.mark.browser
def test_reports_load_in_chromium_without_console_errors_and_are_not_blank(tmp_path: Path) -> None:
    require("chromium")
    control = tmp_path / "control.html"
    control.write_text('<html><body><script>console.error("probe")</script></body></html>')
    _, control_console = screenshot(control, tmp_path)
    assert any('"probe"' in line for line in control_console), "console capture does not work"

    build_run(tmp_path / "run", "mixed", seed=1, rate=40, duration_s=15)
    build_run(tmp_path / "fixed", "clean", seed=1, rate=40, duration_s=15)
    run = load_run(tmp_path / "run")
    pages = [
        render_report(run.analysis, run.paths).html,
        render_comparison([tmp_path / "run", tmp_path / "fixed"], tmp_path / "cmp").html,
    ]
    for page in pages:
        pixels, console = screenshot(page, tmp_path)
        assert console == [], page
        grey = pixels[..., :3].mean(axis=2)
        assert grey.shape[0] >= 1500  # the window size: the page was drawn
        assert grey.std() > 0.05, page  # figures and text, not a blank page
        dark = (grey < 0.5).mean()
        assert 0.005 < dark < 0.6, page


#: Recipes whose cause only shows under their own default load (overload needs enough requests
#: to queue); the others are built small to keep the test quick.
_NEEDS_ITS_OWN_LOAD = {"overload"}


def _one_recipe_per_cause() -> dict[str, str]:
    """A trace-builder recipe injecting each cause it can (the first that names the cause)."""
    chosen: dict[str, str] = {}
    for name in recipe_names():
        for cause in get_recipe(name).causes:
            chosen.setdefault(Cause(cause).value, name)
    return chosen


@pytest.mark.browser
def test_the_fix_is_above_the_fold_and_no_text_overlaps(tmp_path: Path) -> None:
    require("chromium")
    control = tmp_path / "control" / "analysis" / "report.html"
    control.parent.mkdir(parents=True)
    control.write_text(
        '<html><body><p style="position:absolute;top:5px">one</p>'
        '<p style="position:absolute;top:9px">two</p></body></html>'
    )
    assert layout(control, tmp_path).overlapping(), "the overlap check cannot fail"
    recipes = {**_one_recipe_per_cause(), "no failure": "clean"}
    assert len(recipes) >= 8, recipes  # most causes have a recipe: the check covers them
    heights: dict[str, float] = {}
    for cause, recipe in sorted(recipes.items()):
        size = {} if recipe in _NEEDS_ITS_OWN_LOAD else {"rate": 40.0, "duration_s": 15.0}
        build_run(tmp_path / recipe, recipe, seed=1, **size)
        run = load_run(tmp_path / recipe)
        assert cause == "no failure" or run.summary["failed_by_cause"][cause] > 0, cause
        laid_out = layout(render_report(run.analysis, run.paths).html, tmp_path)
        assert laid_out.fold_problems() == [], (cause, recipe)
        heights[cause] = laid_out.height
    # a run where nothing failed gets the short report: no causes, examples or failure charts
    assert heights["no failure"] < min(h for c, h in heights.items() if c != "no failure")
