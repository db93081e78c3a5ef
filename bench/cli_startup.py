"""CLI start-up: ``rolltrace --help`` and ``rolltrace version`` against ``import typer``.

The CLI can be no faster than Python plus typer, its framework; everything above that is what
rolltrace's own imports cost before a command runs. Each command is run in a fresh interpreter,
interleaved round by round (so that a busy machine slows all alike), and the median wall time of
each is compared with the baseline's. Goal: ≤ 1.5× ``python -c 'import typer'``.

Running any typer app costs more than importing typer: typer ≥ 0.16 loads pydantic for its
parameter adapters and rich for help. A bare two-command typer app is measured too, so the
part of the start-up that is rolltrace's own shows apart from the framework's.

Usage: .venv/bin/python bench/cli_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_RATIO = 1.5
BARE_APP = """
import typer
app = typer.Typer(no_args_is_help=True, add_completion=False)
app.command("version")(lambda: print("0"))
app.command("other")(lambda: print("1"))
app()
"""


def rolltrace_command() -> list[str]:
    """The console script of this interpreter's environment, as a user runs it."""
    script = Path(sys.executable).parent / "rolltrace"
    if script.exists():
        return [str(script)]
    found = shutil.which("rolltrace")
    if found is None:
        sys.exit("rolltrace is not installed in this environment: pip install -e .")
    return [found]


def wall_time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    cli = rolltrace_command()
    commands = {
        "import typer": [sys.executable, "-c", "import typer"],
        "bare typer --help": [sys.executable, "-c", BARE_APP, "--help"],
        "rolltrace --help": [*cli, "--help"],
        "rolltrace version": [*cli, "version"],
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for command in commands.values():  # warm the file cache once
        wall_time(command)
    for _ in range(args.rounds):
        for name, command in commands.items():
            samples[name].append(wall_time(command))
    baseline = statistics.median(samples["import typer"])
    for name, times in samples.items():
        median = statistics.median(times)
        print(f"{name:20s} {median * 1000:7.1f} ms  {median / baseline:4.2f}×")
    worst = max(statistics.median(samples[n]) for n in commands if "rolltrace" in n) / baseline
    verdict = "met" if worst <= GOAL_RATIO else "NOT met"
    print(f"worst ratio {worst:.2f}× (goal ≤ {GOAL_RATIO}×: {verdict}, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
