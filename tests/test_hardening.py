"""Hardening (issue 13): a checkpoint cannot run code, every error a user can cause is one literal ``error:`` line
with exit code 2, numbers are validated at the boundary, and every file written is strict JSON with the umask's
mode. Each test crafts the bad input a user (or a downloaded file) could hand the tool."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ansm.cli import app
from ansm.defense.ansm_net import ANSM, save_ansm
from ansm.errors import CheckpointError, OutputError
from ansm.models.resolve import resolve_localizer

runner = CliRunner()

EVIL = '''
from pathlib import Path
Path({marker!r}).write_text("ran")

def build():
    Path({marker!r}).write_text("ran")
    import torch.nn as nn
    return nn.Conv2d(3, 1, 1)
'''


def assert_one_error_line(res, *fragments: str) -> None:
    """Exit 2, exactly one non-empty output line starting with ``error:``, no traceback, the fragments in it."""
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit), res.exception
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _image(path: Path, side: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


# ---- 1. checkpoints are data ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["module", "abspath", "relpath"])
def test_checkpoint_naming_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """A downloaded ANSM checkpoint whose JSON names ``evil:build`` (evil.py in the current directory), an absolute
    ``/.../evil.py:build`` or ``./evil.py:build``: nothing is imported, one error line tells the user what to do."""
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "pwned"
    (work / "evil.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.chdir(work)
    spec = {"module": "evil:build", "abspath": f"{work / 'evil.py'}:build", "relpath": "./evil.py:build"}[kind]
    save_ansm(ANSM(width=4), tmp_path / "dl" / "ansm", localizer=spec)
    _image(tmp_path / "in" / "a.png")
    res = runner.invoke(app, ["defend", "--ansm", str(tmp_path / "dl" / "ansm"), "--input", str(tmp_path / "in"),
                              "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert_one_error_line(res, str(tmp_path / "dl" / "ansm.json"), "--model")
    assert not marker.exists(), "the checkpoint's localizer spec was imported"
    assert "evil" not in __import__("sys").modules


def test_named_in_refuses_code_and_odd_values_but_keeps_data(tmp_path: Path, trained_localizer_path: Path) -> None:
    """``named_in`` (the API side of the rule): a registered name and a checkpoint path still load from a file."""
    with pytest.raises(CheckpointError, match="code to import"):
        resolve_localizer("os:getcwd", named_in=tmp_path / "x.json")
    with pytest.raises(CheckpointError, match="registered name or a checkpoint path"):
        resolve_localizer(["twostream"], named_in=tmp_path / "x.json")  # type: ignore[arg-type]
    assert resolve_localizer("unet-small", named_in=tmp_path / "x.json") is not None
    assert resolve_localizer(str(trained_localizer_path), named_in=tmp_path / "x.json") is not None


def test_current_directory_is_not_imported_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a typed ``helpers:build`` does not pick up a stray helpers.py from the current directory."""
    import sys

    marker = tmp_path / "pwned"
    (tmp_path / "helpers_cwd_probe.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    res = runner.invoke(app, ["evaluate", "--model", "helpers_cwd_probe:build", "--data", "synthetic:2",
                              "--size", "32", "--device", "cpu"])
    assert_one_error_line(res, "helpers_cwd_probe", "./helpers_cwd_probe.py:build")
    assert not marker.exists()
    # naming the file is the explicit way, and works
    model = resolve_localizer("./helpers_cwd_probe.py:build")
    assert marker.exists() and model is not None


# ---- 2. one literal error line ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["photo[final]", "odd[/x]", "[bold]x[/bold]"])
def test_error_printer_prints_paths_literally(tmp_path: Path, name: str) -> None:
    missing = tmp_path / name / "ansm"
    res = runner.invoke(app, ["defend", "--ansm", str(missing), "--input", str(tmp_path), "--out", str(tmp_path / "o")])
    assert_one_error_line(res, str(missing))
