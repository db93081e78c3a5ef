"""The HTML report in a real browser: headless Chromium loads it with no console message and
draws something (the screenshot is not blank). A control page proves the console check can fail.

Layout is judged from the DOM Chromium laid out (bounding boxes a script writes into the page,
read back with ``--dump-dom``): the fix is above the fold (the first 900 px at 1400 px width) in
the report of a trace-builder run of every cause, and no two pieces of text overlap. The same
check over the library scenarios' real runs belongs to the e2e suite (not here: it needs the
local cluster).
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from analyzer import load_run
from analyzer.report import render_report
from analyzer.report.compare import render_comparison
from analyzer.schema import Cause
from analyzer.tracebuilder import build_run, get_recipe, recipe_names
from tests.conftest import require

CHROMIUM = "chromium"  # on PATH, as require() checks
_CONSOLE = re.compile(r":(?:INFO|WARNING|ERROR):CONSOLE[:(]")


#: The fold: what a reader sees without scrolling on a common laptop screen.
FOLD_WIDTH, FOLD_HEIGHT = 1400, 900


def _chromium(page: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page`` (no network, a profile of its own)."""
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={workdir / f'profile-{page.stem}'}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _load(page: Path, workdir: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot pixels and console lines of ``page`` in headless Chromium (no network)."""
    shot = workdir / f"{page.stem}.png"
    done = _chromium(
        page,
        workdir,
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        "--enable-logging=stderr",
        "--v=0",
    )
    console = [line for line in done.stderr.splitlines() if _CONSOLE.search(line)]
    return imread(shot), console


@pytest.mark.browser
def test_reports_load_in_chromium_without_console_errors_and_are_not_blank(tmp_path: Path) -> None:
    require("chromium")
    control = tmp_path / "control.html"
    control.write_text('<html><body><script>console.error("probe")</script></body></html>')
    _, control_console = _load(control, tmp_path)
    assert any('"probe"' in line for line in control_console), "console capture does not work"

    build_run(tmp_path / "run", "mixed", seed=1, rate=40, duration_s=15)
    build_run(tmp_path / "fixed", "clean", seed=1, rate=40, duration_s=15)
    run = load_run(tmp_path / "run")
    pages = [
        render_report(run.analysis, run.paths).html,
        render_comparison([tmp_path / "run", tmp_path / "fixed"], tmp_path / "cmp").html,
    ]
    for page in pages:
        pixels, console = _load(page, tmp_path)
        assert console == [], page
        grey = pixels[..., :3].mean(axis=2)
        assert grey.shape[0] >= 1500  # the window size: the page was drawn
        assert grey.std() > 0.05, page  # figures and text, not a blank page
        dark = (grey < 0.5).mean()
        assert 0.005 < dark < 0.6, page


#: Runs in the page once it has loaded: the lead's box, the page height, and one box per line of
#: text (Range client rects of every text node), written into the DOM for --dump-dom to carry.
_MEASURE = """
<script>
window.addEventListener("load", () => {
  const lead = document.querySelector(".lead");
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(), i = 0; node; node = walker.nextNode(), i++) {
    if (!node.textContent.trim() || node.parentElement.closest("script,pre#layout")) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) {
      if (r.width > 0 && r.height > 0) boxes.push([i, r.left, r.top, r.right, r.bottom]);
    }
  }
  const out = document.createElement("pre");
  out.id = "layout";
  out.textContent = JSON.stringify({
    lead: lead ? lead.getBoundingClientRect().bottom + window.scrollY : null,
    height: document.documentElement.scrollHeight,
    boxes: boxes,
  });
  document.body.appendChild(out);
});
</script>
"""


def _layout(page: Path, workdir: Path) -> dict[str, object]:
    """The laid-out page at the fold's width: lead bottom, page height, text line boxes."""
    measured = workdir / f"measured-{page.parent.parent.name}.html"
    measured.write_text(page.read_text().replace("</body>", _MEASURE + "</body>"))
    done = _chromium(
        measured,
        workdir,
        "--dump-dom",
        "--virtual-time-budget=5000",
        f"--window-size={FOLD_WIDTH},{FOLD_HEIGHT}",
    )
    found = re.search(r'<pre id="layout">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, done.stdout[-500:]
    return dict(json.loads(html.unescape(found.group(1))))


def _overlapping(boxes: list[list[float]]) -> list[tuple[int, int]]:
    """Pairs of distinct text nodes whose line boxes intersect by more than a pixel."""
    found = []
    for i, (node_a, left_a, top_a, right_a, bottom_a) in enumerate(boxes):
        for node_b, left_b, top_b, right_b, bottom_b in boxes[i + 1 :]:
            if node_a == node_b:
                continue
            if min(right_a, right_b) - max(left_a, left_b) > 1 and (
                min(bottom_a, bottom_b) - max(top_a, top_b) > 1
            ):
                found.append((int(node_a), int(node_b)))
    return found


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
    assert _overlapping(_layout(control, tmp_path)["boxes"]), "the overlap check cannot fail"  # type: ignore[arg-type]
    recipes = {**_one_recipe_per_cause(), "no failure": "clean"}
    assert len(recipes) >= 8, recipes  # most causes have a recipe: the check covers them
    heights: dict[str, float] = {}
    for cause, recipe in sorted(recipes.items()):
        size = {} if recipe in _NEEDS_ITS_OWN_LOAD else {"rate": 40.0, "duration_s": 15.0}
        build_run(tmp_path / recipe, recipe, seed=1, **size)
        run = load_run(tmp_path / recipe)
        assert cause == "no failure" or run.summary["failed_by_cause"][cause] > 0, cause
        page = render_report(run.analysis, run.paths).html
        layout = _layout(page, tmp_path)
        lead_bottom = layout["lead"]
        assert isinstance(lead_bottom, int | float), (cause, "no lead section")
        assert lead_bottom <= FOLD_HEIGHT, (cause, recipe, lead_bottom)
        boxes = layout["boxes"]
        assert isinstance(boxes, list) and boxes
        assert _overlapping(boxes) == [], (cause, recipe)
        height = layout["height"]
        assert isinstance(height, int | float)
        heights[cause] = float(height)
    # a run where nothing failed gets the short report: no causes, examples or failure charts
    assert heights["no failure"] < min(h for c, h in heights.items() if c != "no failure")
