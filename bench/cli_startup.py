"""CLI start-up: ``rolltrace --help`` and ``rolltrace version`` against ``import typer``.

A typer command can be no faster than Python plus typer, its framework; everything above that
is what rolltrace's own imports cost before a command runs (``rolltrace version`` is answered
before typer is imported, so it can be faster). Each command is run in a fresh interpreter,
interleaved round by round (so that a busy machine slows all alike), and the median wall time of
each is compared with the baseline's. Goal: ≤ 1.5× ``python -c 'import typer'``.

Running any typer app costs more than importing typer: rendering typer's rich help imports rich,
markdown-it and rich's traceback module. A bare two-command typer app is measured with rich help
and with click's plain help (the layout rolltrace uses), so that the framework's share shows
apart from rolltrace's own. ``rolltrace analyze --help`` shows what one command's help costs:
its module is imported then, and typer builds each parameter's pydantic adapter, so pydantic
loads; it is reported, not held to the goal.

Exits 1 when ``rolltrace --help`` or ``rolltrace version`` is above the goal.

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
app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode={markup!r})
app.command("version")(lambda: print("0"))
app.command("other")(lambda: print("1"))
app()
"""
#: the commands held to the goal; the other rows explain where the time goes
GOAL_COMMANDS = ("rolltrace --help", "rolltrace version")


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
        "bare typer --help (rich)": [
            sys.executable,
            "-c",
            BARE_APP.format(markup="rich"),
            "--help",
        ],
        "bare typer --help (plain)": [sys.executable, "-c", BARE_APP.format(markup=None), "--help"],
        "rolltrace --help": [*cli, "--help"],
        "rolltrace version": [*cli, "version"],
        "rolltrace analyze --help": [*cli, "analyze", "--help"],
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for command in commands.values():  # warm the file cache once
        wall_time(command)
    for _ in range(args.rounds):
        for name, command in commands.items():
            samples[name].append(wall_time(command))
    baseline = statistics.median(samples["import typer"])
    ratios = {name: statistics.median(times) / baseline for name, times in samples.items()}
    for name, ratio in ratios.items():
        print(f"{name:26s} {ratio * baseline * 1000:7.1f} ms  {ratio:4.2f}×")
    worst = max(ratios[name] for name in GOAL_COMMANDS)
    verdict = "met" if worst <= GOAL_RATIO else "NOT met"
    print(f"worst ratio {worst:.2f}× (goal ≤ {GOAL_RATIO}×: {verdict}, {args.rounds} rounds)")
    if worst > GOAL_RATIO:
        sys.exit(1)


if __name__ == "__main__":
    main()
