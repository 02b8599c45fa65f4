"""``ansm train`` / ``ansm defend`` through Typer, and a miniature ``run_demo`` that checks report.json's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ansm.cli as cli
from ansm.data.io import read_image, read_mask, write_png

runner = CliRunner()


def test_help_shows_examples() -> None:
    for name in ("train", "defend", "demo"):
        res = runner.invoke(cli.app, [name, "--help"])
        assert res.exit_code == 0 and "Example:" in res.output


def test_train_then_defend(tmp_path: Path, trained_localizer_path: Path, synthetic_batch) -> None:
    out = tmp_path / "ansm"
    res = runner.invoke(cli.app, ["train", "--model", str(trained_localizer_path), "--out", str(out), "--stage1-steps",
                                  "1", "--stage2-steps", "2", "--batch-size", "2", "--crop", "32", "--pool", "4",
                                  "--size", "64", "--pgd-steps", "1", "--width", "6", "--dilations", "1,3",
                                  "--taps", "enc2,context",
                                  "--eps-d", "8/255", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "taps enc2, context" in res.output
    config = json.loads((out / "ansm.json").read_text())["config"]
    assert config["width"] == 6 and config["dilations"] == [1, 3]
    images = tmp_path / "images"
    for i in range(2):
        write_png(images / f"img{i}.png", synthetic_batch["image"][i])
    write_png(images / "img0_gt.png", synthetic_batch["mask"][0])  # masks beside images are skipped
    res = runner.invoke(cli.app, ["defend", "--ansm", str(out / "ansm"), "--input", str(images),
                                  "--out", str(tmp_path / "def"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "def" / "defend.json").read_text())
    assert summary["n_images"] == 2
    for i in range(2):
        x = read_image(images / f"img{i}.png")
        xd = read_image(tmp_path / "def" / f"img{i}_defended.png")
        assert (xd - x).abs().max() <= 8 / 255 + 1 / 255  # bound, up to PNG rounding
        assert read_mask(tmp_path / "def" / f"img{i}_mask.png").shape == (1, 64, 64)
        assert read_mask(tmp_path / "def" / f"img{i}_mask_nodef.png").shape == (1, 64, 64)
        assert read_image(tmp_path / "def" / f"img{i}_overlay.png").shape[-1] == 3 * 64 + 2 * 4


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "/nonexistent/loc", "--out", "X"], "not found"),
    (["train", "--model", "twostream", "--out", "X", "--eps-d", "abc"], "eps_d"),
    (["defend", "--ansm", "/nonexistent/ansm", "--input", ".", "--out", "X"], "not found"),
    (["train", "--model", "twostream", "--out", "X", "--distill", "0.1"], "teacher"),
    (["train", "--model", "twostream", "--out", "X", "--dilations", "1,x"], "--dilations"),
    (["train", "--model", "twostream", "--out", "X", "--dilations", "0"], "--dilations"),
    (["train", "--model", "twostream", "--out", "X", "--teacher", "/nonexistent/t", "--distill", "0.1",
      "--pool", "2", "--size", "32", "--crop", "32", "--stage1-steps", "0", "--stage2-steps", "1", "--device", "cpu"], "/nonexistent/t"),
])
def test_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    res = runner.invoke(cli.app, [a.replace("X", str(tmp_path / "x")) for a in args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_miniature_demo_report(tmp_path: Path) -> None:
    from ansm.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=str(tmp_path / "demo"), size=32, loc_steps=3, loc_pool=8, loc_batch=4, attack_n=3,
                     stage1_steps=1, stage2_steps=1, ansm_batch=2, test_n=4, adaptive_n=2,
                     shared="none", examples=2)
    report = run_demo(cfg, log=lambda _m: None)
    on_disk = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert on_disk["attacks"].keys() == report["attacks"].keys()
    from ansm.demo import demo_attacks

    assert list(on_disk["attacks"]) == [spec.name for spec, _ in demo_attacks()] + ["pgd-adaptive"]
    assert [k for k, r in on_disk["attacks"].items() if r["seen_in_training"]] == ["pgd", "fgsm"]
    for row in on_disk["attacks"].values():
        assert {"f1_clean", "f1_adv", "f1_def", "f1_def_ci", "f1_clean_def", "recovery", "fp_adv", "fp_def"} <= row.keys()
        assert row["recovery"] is None  # 4 images: under RECOVERY_MIN_IMAGES, so no ratio is printed
        assert "stage1_only" in row["ablation"] or row["adaptive_to"]
    assert on_disk["heldout"]["split"] == "test"
    assert on_disk["runtime_s"] > 0 and "skipped" in on_disk["shared"]["note"]
    assert (tmp_path / "demo" / "figure.png").stat().st_size > 1000
    assert "recovery" in (tmp_path / "demo" / "report.md").read_text()
