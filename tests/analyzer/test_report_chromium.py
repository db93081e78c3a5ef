"""The HTML report in a real browser: headless Chromium loads it with no console message and
draws something (the screenshot is not blank). A control page proves the console check can fail.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from analyzer import load_run
from analyzer.report import render_report
from analyzer.report.compare import render_comparison
from analyzer.tracebuilder import build_run
from tests.conftest import require

CHROMIUM = "chromium"  # on PATH, as require() checks
_CONSOLE = re.compile(r":(?:INFO|WARNING|ERROR):CONSOLE[:(]")


def _load(page: Path, workdir: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot pixels and console lines of ``page`` in headless Chromium (no network)."""
    shot = workdir / f"{page.stem}.png"
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
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            "--enable-logging=stderr",
            "--v=0",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
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
