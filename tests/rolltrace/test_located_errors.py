"""Bad input on the command line is a located message with exit 2, never a traceback: paths
that should be directories, YAML that does not parse, budgets that cannot mean what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rolltrace.cli import app

SCENARIO = "scenarios/no-prestop.yaml"


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "taken"
    path.write_text("a file, not a directory")
    return path


def invoke(*argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(argv))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_output_directories_that_are_files_are_refused_before_any_work(
    a_file: Path, below: str
) -> None:
    target = str(a_file / below) if below else str(a_file)
    for argv in (
        ["run", SCENARIO, "-o", target],
        ["compare", "run-a", "run-b", "-o", target],
        ["demo", "--synthetic", "--runs-dir", target],
        ["cluster", "up", "--virtual", "--name", "rtx", "--kubeconfig", f"{target}/kc"],
    ):
        code, output = invoke(*argv)
        assert code == 2, (argv, output)
        assert f"{a_file} exists and is not a directory" in output, (argv, output)


def test_a_cluster_config_that_cannot_be_read_is_located(tmp_path: Path) -> None:
    broken = tmp_path / "cluster.yaml"
    broken.write_text("nodes: 3\nlb: [1,\n")
    code, output = invoke("cluster", "up", "--virtual", "--config", str(broken))
    assert code == 2 and f"--config {broken}:3: not valid YAML" in output
    code, output = invoke("cluster", "up", "--virtual", "--config", str(tmp_path / "none.yaml"))
    assert code == 2 and "cannot read: No such file or directory" in output
    broken.write_text("- a list\n")
    code, output = invoke("cluster", "up", "--virtual", "--config", str(broken))
    assert code == 2 and "a ClusterConfig is a YAML mapping" in output


def test_an_override_that_makes_an_unknown_section_names_the_override() -> None:
    code, output = invoke("run", SCENARIO, "--dry-run", "--set", "a.b.c=1")
    assert code == 2 and "--set: a: Extra inputs are not permitted" in output


def test_an_expectation_comparing_rate_with_a_percentage_number_warns() -> None:
    code, output = invoke("run", SCENARIO, "--dry-run", "--set", "expect=['rate<5']")
    assert code == 0
    assert "warning: expect: budget 'rate<5' compares rate, a fraction" in output
    assert "'rate<5%'" in output
    code, output = invoke("run", SCENARIO, "--dry-run", "--set", "expect=['rate<5%']")
    assert code == 0 and "warning" not in output
