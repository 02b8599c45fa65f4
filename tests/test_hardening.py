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


def assert_one_error_line(res, *fragments: str, after_output: bool = False) -> None:
    """Exit 2, exactly one non-empty output line starting with ``error:``, no traceback, the fragments in it.
    ``after_output``: the command printed its results before failing to write them; the error is the last line."""
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    if after_output:
        assert sum(ln.startswith("error:") for ln in lines) == 1, res.output
        lines = lines[-1:]
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


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """An existing file, an existing folder, non-UTF-8 dataset JSON, a broken attack set, malformed checkpoints."""
    files = {"file": tmp_path / "afile", "folder": tmp_path / "afolder", "latin1": tmp_path / "latin1.json",
             "attack_set": tmp_path / "adv", "ckpt_json": tmp_path / "ck" / "ansm", "ckpt_cfg": tmp_path / "ck2" / "ansm",
             "loc_list": tmp_path / "ck3" / "localizer", "photos": tmp_path / "two_photos"}
    files["file"].write_text("x")
    files["folder"].mkdir()
    files["latin1"].write_bytes('[["caf\xe9.png", "Negative"]]'.encode("latin-1"))
    (files["attack_set"]).mkdir()
    (files["attack_set"] / "manifest.jsonl").write_text('{"id": "a", "image": "a.png", "mask": null}\n{"id": \n')
    save_ansm(ANSM(width=4), files["ckpt_json"], localizer="unet-small")
    Path(str(files["ckpt_json"]) + ".json").write_text("{not json")
    save_ansm(ANSM(width=4), files["ckpt_cfg"], localizer="unet-small")
    Path(str(files["ckpt_cfg"]) + ".json").write_text(json.dumps({"kind": "ansm", "config": {"no_such_option": 1}}))
    save_ansm(ANSM(width=4), files["loc_list"])
    Path(str(files["loc_list"]) + ".json").write_text("[1, 2]")
    for i in range(2):
        _image(files["photos"] / f"p{i}.png", 40)
    _image(tmp_path / "in" / "a.png")
    return files


CASES = {
    "out is a file": (["synth", "--out", "{file}", "--n", "2", "--size", "32"], "--out"),
    "out under a file": (["attack", "--data", "synthetic:2", "--model", "unet-small", "--out", "{file}/x"], "{file}"),
    "json is a folder": (["evaluate", "--model", "unet-small", "--data", "synthetic:2", "--size", "32",
                          "--json", "{folder}"], "--json"),
    "dataset JSON not UTF-8": (["evaluate", "--model", "unet-small", "--data", "{latin1}"], "UTF-8"),
    "malformed attack set": (["train", "--model", "unet-small", "--out", "{tmp}/t", "--adv-data", "{attack_set}",
                              "--pool", "2", "--size", "32", "--crop", "0", "--stage1-steps", "1", "--stage2-steps", "0",
                              "--device", "cpu"],
                             "manifest.jsonl:2"),
    "checkpoint JSON malformed": (["defend", "--ansm", "{ckpt_json}", "--input", "{tmp}/in", "--out", "{tmp}/o"],
                                  "not valid JSON"),
    "checkpoint config wrong": (["defend", "--ansm", "{ckpt_cfg}", "--input", "{tmp}/in", "--out", "{tmp}/o"],
                                "no_such_option"),
    "localizer checkpoint not an object": (["evaluate", "--model", "{loc_list}", "--data", "synthetic:2"],
                                           "must be an object"),
    "cuda without CUDA": (["evaluate", "--model", "unet-small", "--data", "synthetic:2", "--device", "cuda"],
                          "--device cuda"),
    "too few source photos": (["synth", "--out", "{tmp}/s", "--n", "2", "--size", "32", "--source", "{photos}"],
                              "at least 3"),
    "unknown device": (["evaluate", "--model", "unet-small", "--data", "synthetic:2", "--device", "tpu9"], "tpu9"),
    # fp16 autocast is CUDA's; on a CPU it is refused before any data is rendered or file written
    "amp on a CPU (ANSM)": (["train", "--model", "unet-small", "--out", "{tmp}/t", "--pool", "2", "--size", "32", "--crop", "0",
                             "--stage1-steps", "1", "--stage2-steps", "0", "--device", "cpu", "--amp"], "amp"),
    "amp on a CPU (localizer)": (["train-localizer", "--arch", "unet-small", "--out", "{tmp}/l", "--pool", "2",
                                  "--size", "32", "--steps", "1", "--device", "cpu", "--amp"], "amp"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_is_one_line(case: str, bad_files: dict[str, Path], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    if case == "cuda without CUDA":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args, fragment = CASES[case]
    fill = {k: str(v) for k, v in bad_files.items()} | {"tmp": str(tmp_path)}
    res = runner.invoke(app, [a.format(**fill) for a in args])
    assert_one_error_line(res, fragment.format(**fill))


def test_unwritable_output_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only folder (simulated: tests may run as root, who may write anywhere) and a full disk."""
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "ro"), "--n", "2", "--size", "32"])
    assert_one_error_line(res, str(tmp_path / "ro"), "Permission denied")
    monkeypatch.undo()

    real_replace = os.replace

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(os, "replace", disk_full)
    res = runner.invoke(app, ["evaluate", "--model", "unet-small", "--data", "synthetic:2", "--size", "32",
                              "--json", str(tmp_path / "eval.json")])
    assert_one_error_line(res, str(tmp_path / "eval.json"), "No space left", after_output=True)
    assert os.replace is not real_replace and not list(tmp_path.glob(".eval.json.*"))


def test_unexpected_os_error_is_one_line_naming_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError the library did not anticipate still comes out as one line naming the path, exit 2."""
    import ansm.data.synth as synth

    def boom(*args, **kwargs):
        raise IsADirectoryError(21, "Is a directory", str(tmp_path / "odd[/x]"))

    monkeypatch.setattr(synth, "synthesize_folder", boom)
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--n", "2"])
    assert_one_error_line(res, str(tmp_path / "odd[/x]"), "Is a directory")


@pytest.mark.parametrize("args, fragment", [
    (["train-localizer", "--steps", "abc"], "--steps"),
    (["evaluate", "--nope"], "--nope"),
    (["evaluate"], "--model"),
    (["no-such-command"], "no-such-command"),
])
def test_click_usage_errors_are_one_line(args: list[str], fragment: str) -> None:
    """A value that does not parse, an unknown option, a missing one, an unknown command: click's own errors."""
    res = runner.invoke(app, args)
    assert_one_error_line(res, fragment, "--help")


def test_help_and_success_keep_exit_code_zero(tmp_path: Path) -> None:
    assert runner.invoke(app, ["--help"]).exit_code == 0
    assert runner.invoke(app, ["evaluate", "--help"]).exit_code == 0
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--n", "2", "--size", "32"])
    assert res.exit_code == 0 and "error" not in res.output, res.output


# ---- 3. numbers at the boundary ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["train", "--model", "unet-small", "--mgr-lambda", "nan"], "--mgr-lambda"),
    (["train", "--model", "unet-small", "--mgr-dice", "-1"], "--mgr-dice"),
    (["train", "--model", "unet-small", "--ffa-alpha", "inf"], "--ffa-alpha"),
    (["train", "--model", "unet-small", "--adv-fraction", "1.5"], "--adv-fraction"),
    (["train", "--model", "unet-small", "--lr", "nan"], "lr"),
    (["train", "--model", "unet-small", "--eps-d", "nan"], "eps_d"),
    (["train", "--model", "unet-small", "--width", "0"], "--width"),
    (["train-localizer", "--lr", "inf"], "lr"),
    (["train-localizer", "--adv-fraction", "nan"], "adv_fraction"),
    (["defend", "--ansm", "x", "--input", ".", "--out", "o", "--max-side", "-5"], "--max-side"),
    (["evaluate", "--model", "unet-small", "--data", "synthetic:2", "--max-side", "0"], "--max-side"),
    (["evaluate", "--model", "unet-small", "--data", "synthetic:2", "--batch-size", "0"], "--batch-size"),
    (["attack", "--model", "unet-small", "--data", "synthetic:2", "--out", "o", "--batch-size", "-1"], "--batch-size"),
    (["attack", "--model", "unet-small", "--data", "synthetic:2", "--out", "o", "--eps", "nan"], "eps"),
    (["attack", "--model", "unet-small", "--data", "synthetic:2", "--out", "o", "--steps", "0"], "steps"),
    (["attack", "--model", "unet-small", "--data", "synthetic:2", "--out", "o", "--attack", "cw-l2", "--lr", "nan"],
     "lr"),
    (["benchmark", "--set", "blur_sigma=NaN"], "blur_sigma"),
    (["benchmark", "--set", "ansm_batch=0"], "ansm_batch"),
    (["train-localizer", "--seed", str(2**70)], "--seed"),
])
def test_bad_numbers_are_refused(args: list[str], fragment: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, args)
    assert_one_error_line(res, fragment)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o").exists()


def test_validate_rules() -> None:
    from ansm.errors import ConfigError
    from ansm.validate import fraction, integer, non_negative, positive, positive_int

    assert positive(0.5, "x") == 0.5 and non_negative(0, "x") == 0 and fraction(1.0, "x") == 1.0
    assert positive_int(None, "x") is None and integer(3, "x", minimum=3) == 3
    for rule, value in [(positive, 0.0), (positive, math.nan), (non_negative, -1e-9), (non_negative, math.inf),
                        (fraction, 1.01), (fraction, math.nan), (positive_int, 0), (positive_int, 2.0),
                        (positive_int, True), (positive, "1")]:
        with pytest.raises(ConfigError, match="--opt"):
            rule(value, "--opt")


# ---- 4. strict JSON, umask --------------------------------------------------------------------------------------

def test_written_json_is_strict(tmp_path: Path) -> None:
    from ansm.utils import dumps_json, write_json_atomic

    obj = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.float32("nan"), "d": np.arange(2), "e": (1, 2.0)}
    write_json_atomic(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text

    def strict(token: str) -> None:
        raise ValueError(token)

    assert json.loads(text, parse_constant=strict) == {"a": None, "b": [None, None, 1.5], "c": None, "d": [0, 1],
                                                       "e": [1, 2.0]}
    assert json.loads(dumps_json({"x": math.nan}), parse_constant=strict) == {"x": None}


def test_evaluate_json_has_no_bare_nan(tmp_path: Path) -> None:
    """synthetic:1 holds one forged image only, so image AUC is undefined: written as null, not NaN."""
    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["evaluate", "--model", "unet-small", "--data", "synthetic:1", "--size", "32",
                              "--json", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "NaN" not in text
    numbers = json.loads(text, parse_constant=lambda t: (_ for _ in ()).throw(ValueError(t)))["datasets"]["synthetic:1"]
    assert None in numbers.values()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    from ansm.utils import write_json_atomic, write_text_atomic

    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        write_text_atomic(tmp_path / "b.txt", "x")
        save_ansm(ANSM(width=4), tmp_path / "ck" / "ansm")  # safetensors writes its own file: checked too
    finally:
        os.umask(old)
    for p in (tmp_path / "a.json", tmp_path / "b.txt", tmp_path / "ck" / "ansm.safetensors",
              tmp_path / "ck" / "ansm.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


def test_atomic_write_refuses_a_folder_target(tmp_path: Path) -> None:
    from ansm.utils import write_json_atomic

    with pytest.raises(OutputError, match="is a folder"):
        write_json_atomic(tmp_path, {})
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="a file is in the way"):
        write_json_atomic(tmp_path / "f" / "x.json", {})
