"""The disruption report of a run (``render_report``) and the comparison of several
(``render_comparison``): facts → figures → recommendations → HTML and Markdown (docs/report.md).
"""

from analyzer.report.compare import render_comparison
from analyzer.report.render import ReportPaths, render_report

__all__ = ["ReportPaths", "render_comparison", "render_report"]
