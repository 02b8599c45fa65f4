"""``ansm attack`` end to end through Typer: help with an example, one-line errors, a run that resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import ansm.cli as cli
from ansm.models import save_localizer

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, attack_localizer) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "localizer"
    save_localizer(attack_localizer, path)
    return str(path)


def _run(*args: str):
    return runner.invoke(cli.app, ["attack", *args])


def test_help_shows_an_example() -> None:
    res = _run("--help")
    assert res.exit_code == 0 and "Example:" in res.output and "--objective" in res.output


@pytest.mark.parametrize("args, message", [
    (["--attack", "pgdd"], "did you mean pgd"),
    (["--eps", "8/0"], "eps"),
    (["--data", "/nonexistent/folder"], "not found"),
    (["--shard", "3/2"], "shard"),
])
def test_one_line_errors(tmp_path: Path, checkpoint: str, args: list[str], message: str) -> None:
    base = {"--data": "synthetic:2", "--model": checkpoint, "--out": str(tmp_path / "out")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    res = _run(*[s for kv in base.items() for s in kv])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_run_and_resume(tmp_path: Path, checkpoint: str) -> None:
    args = ["--data", "synthetic:3", "--size", "48", "--model", checkpoint, "--out", str(tmp_path),
            "--attack", "bim", "--eps", "4/255", "--steps", "2", "--objective", "hide"]
    first = _run(*args)
    assert first.exit_code == 0, first.output
    assert "F1" in first.output and (tmp_path / "manifest.jsonl").is_file()
    again = _run(*args)
    assert again.exit_code == 0 and "0 attacked, 3 already done" in again.output
