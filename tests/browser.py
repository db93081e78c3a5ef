"""Reports in headless Chromium, for the report tests and the library e2e: screenshots with the
console's messages, and the layout judged from the DOM Chromium laid out.

Layout: a script injected into a copy of the page writes the lead section's bottom, the page
height and one box per line of text (Range client rects of every text node) into the DOM, and
``--dump-dom`` carries it back. One Chromium call per page: it adds a few seconds per report.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.image import imread

CHROMIUM = "chromium"  # on PATH, as tests.conftest.require("chromium") checks
_CONSOLE = re.compile(r":(?:INFO|WARNING|ERROR):CONSOLE[:(]")

#: The fold: what a reader sees without scrolling on a common laptop screen.
FOLD_WIDTH, FOLD_HEIGHT = 1400, 900


def chromium(page: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
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


def screenshot(page: Path, workdir: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot pixels and console lines of ``page`` in headless Chromium (no network)."""
    shot = workdir / f"{page.stem}.png"
    done = chromium(
        page,
        workdir,
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        "--enable-logging=stderr",
        "--v=0",
    )
    console = [line for line in done.stderr.splitlines() if _CONSOLE.search(line)]
    return imread(shot), console


#: Runs in the page once it has loaded: the lead's box, the page height, and one box per line of
#: text (Range client rects of every text node), written into the DOM for --dump-dom to carry.
_MEASURE = """
<script>
window.addEventListener("load", () => {
  const lead = document.querySelector(".lead");
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(), i = 0; node; node = walker.nextNode(), i++) {
    if (!node.textContent.trim() || node.parentElement.closest("script")) continue;
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


@dataclass(frozen=True)
class Layout:
    """A page as Chromium laid it out at the fold's width."""

    lead_bottom: float | None  # px from the top of the page; None: no lead section
    height: float
    boxes: list[list[float]]  # [text node index, left, top, right, bottom] per line of text

    def overlapping(self) -> list[tuple[int, int]]:
        """Pairs of distinct text nodes whose line boxes intersect by more than a pixel."""
        found = []
        for i, (node_a, left_a, top_a, right_a, bottom_a) in enumerate(self.boxes):
            for node_b, left_b, top_b, right_b, bottom_b in self.boxes[i + 1 :]:
                if node_a == node_b:
                    continue
                if min(right_a, right_b) - max(left_a, left_b) > 1 and (
                    min(bottom_a, bottom_b) - max(top_a, top_b) > 1
                ):
                    found.append((int(node_a), int(node_b)))
        return found

    def fold_problems(self) -> list[str]:
        """Why a reader would not see the fix without scrolling, or would see garbled text:
        empty when the lead section ends above the fold and no two lines of text overlap."""
        problems = []
        if self.lead_bottom is None:
            problems.append("no lead section")
        elif self.lead_bottom > FOLD_HEIGHT:
            problems.append(f"the lead ends at {self.lead_bottom:.0f} px, below the fold")
        if not self.boxes:
            problems.append("no text laid out")
        overlaps = self.overlapping()
        if overlaps:
            problems.append(f"{len(overlaps)} overlapping text pair(s), e.g. {overlaps[:3]}")
        return problems


def layout(page: Path, workdir: Path) -> Layout:
    """The laid-out page at the fold's width: lead bottom, page height, text line boxes."""
    measured = workdir / f"measured-{page.parent.parent.name}.html"
    measured.write_text(page.read_text().replace("</body>", _MEASURE + "</body>"))
    done = chromium(
        measured,
        workdir,
        "--dump-dom",
        "--virtual-time-budget=5000",
        f"--window-size={FOLD_WIDTH},{FOLD_HEIGHT}",
    )
    found = re.search(r'<pre id="layout">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, done.stdout[-500:]
    data = json.loads(html.unescape(found.group(1)))
    lead = data["lead"]
    return Layout(None if lead is None else float(lead), float(data["height"]), data["boxes"])
