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


def test_split_attacks_only_that_split(tmp_path: Path, checkpoint: str) -> None:
    """--split train: the attack set holds the train images of splits.json and none of val's (an ANSM trained on
    it never sees a held-out photo); an unknown split is one line."""
    import json

    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / f"f{i}.png")
        Image.fromarray(np.pad(np.full((10, 10), 255, np.uint8), ((5, 25), (5, 33)))).save(data / f"f{i}_gt.png")
    (data / "splits.json").write_text(json.dumps({"train": ["f0", "f2"], "val": ["f1"], "test": []}))
    base = ["--data", str(data), "--model", checkpoint, "--attack", "fgsm", "--eps", "4/255"]
    res = _run(*base, "--split", "train", "--out", str(tmp_path / "adv"))
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "adv" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["f0", "f2"]
    assert all(Path(r["source_image"]).name in {"f0.png", "f2.png"} for r in rows)
    res = _run(*base, "--split", "tain", "--out", str(tmp_path / "adv2"))
    assert res.exit_code == 2 and "tain" in res.output and "Traceback" not in res.output
