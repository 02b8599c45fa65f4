"""The real-forgery benchmark (``ansm benchmark --preset real``): the val rule picks what it says, a tiny run goes
through the stages on a folder written here (no ../shared needed), trains only on train images, resumes, and
refuses to mix settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import ansm.cli as cli
from ansm.benchmark.real import RECIPES, choose, load_finished

runner = CliRunner()
TINY = ["--set", "taps=enc2,enc3", "--set", "stage1_steps=2", "--set", "stage2_steps=2", "--set", "crop=32",
        "--set", "ansm_batch=2", "--set", "adaptive_n=2"]


def _val(f1_clean: float, rows: dict[str, tuple[float | None, float | None, float]]) -> dict:
    """A val result as evaluate_defenses writes it: per recipe (recovery PGD, recovery FGSM, clean+ANSM F1)."""
    return {"clean": {"f1": f1_clean}, "attacks": {
        a: {"defenses": {r: {"recovery": v[i], "f1_clean_def": v[2]} for r, v in rows.items()}}
        for i, a in enumerate(("pgd", "fgsm"))}}


def test_the_rule_prefers_recovery_only_within_the_clean_tolerance() -> None:
    paper, pixel, both = RECIPES
    # the paper's recipe recovers most but costs 0.05 clean F1: the best one within 0.02 wins
    winner, rows = choose(_val(0.50, {paper: (0.9, 0.8, 0.45), pixel: (0.5, 0.4, 0.49), both: (0.6, 0.2, 0.485)}))
    assert winner == pixel and rows[paper]["recovery_mean"] == pytest.approx(0.85)
    # a recovery that could not be measured (None) does not count as zero for the other attack
    winner, rows = choose(_val(0.50, {paper: (None, 0.9, 0.50), pixel: (0.5, 0.4, 0.50), both: (0.6, 0.2, 0.40)}))
    assert winner == paper and rows[paper]["recovery_mean"] == pytest.approx(0.9)
    # none within 0.02: the one that loses the least clean F1
    winner, _ = choose(_val(0.50, {paper: (0.9, 0.9, 0.40), pixel: (0.1, 0.1, 0.47), both: (0.5, 0.5, 0.45)}))
    assert winner == pixel


def _real_root(root: Path) -> Path:
    """``<root>/casia1``: 16 forged photos, landscape and portrait, split 8 / 4 / 4."""
    casia = root / "casia1"
    casia.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = []
    for i in range(16):
        w, h = ((72, 48), (48, 72))[i % 2]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(casia / f"f{i}.png")
        m = np.zeros((h, w), np.uint8)
        m[8:30, 10:40] = 255
        Image.fromarray(m).save(casia / f"f{i}_gt.png")
        ids.append(f"f{i}")
    (casia / "splits.json").write_text(json.dumps({"train": ids[:8], "val": ids[8:12], "test": ids[12:]}))
    return root


def test_a_resumed_training_is_timed_over_all_its_steps(tmp_path: Path) -> None:
    """The side-by-side's training seconds: a run resumed at step 200 of 250 timed 50 steps (98 s on CASIA v1), and
    is reported as the 250 steps' 490 s; an unbroken one as it was timed."""
    from ansm.benchmark.real_informed import _training_seconds

    for name, training in {"resumed": {"train_s": 98.0, "steps": 250, "resumed_from": 200},
                           "unbroken": {"train_s": 420.0, "steps": 250, "resumed_from": 0}}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"training": training}))
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    seconds = _training_seconds({"adv-finetune": {"s0": tmp_path / "resumed", "s1": tmp_path / "unbroken"}})
    assert seconds == {"adv-finetune@s0": 490.0, "adv-finetune@s1": 420.0}


def test_a_tiny_run_through_every_stage_resumes_and_refuses_other_settings(tmp_path: Path,
                                                                          trained_localizer_path: Path) -> None:
    """Through val (the attack sets, the recipe rule), then on to stage 7 (informed): the robust ANSM and the
    adversarial fine-tuning trained per seed at the plain ANSM's budget, scored per image, resumed from the cells."""
    from ansm.checkpoint import load_checkpoint_meta

    root, out = _real_root(tmp_path / "real"), tmp_path / "bench"
    args = ["benchmark", "--preset", "real", "--data", str(root), "--model", str(trained_localizer_path), "--out",
            str(out), "--device", "cpu", *TINY, "--set", "seeds=[0,1]", "--set", "informed_n=2",
            "--set", "informed_steps=2", "--set", "informed_eps=8/255,4/255"]
    res = runner.invoke(cli.app, [*args, "--until", "val"])
    assert res.exit_code == 0, res.output
    # the attack sets hold train images only: every 4th of the 8 (the shard), none of val's or test's
    ids = sorted(json.loads(p.read_text())["id"] for p in (out / "ansm" / "adv-pgd" / "records").glob("*.json"))
    assert ids == ["f0", "f4"]
    done = load_finished(out)
    assert set(done["val"]["recipes"]) == set(RECIPES) and done["val"]["winner"] in RECIPES
    assert done["val"]["n_forged"] == 4 and "test" not in done
    report = (out / "report.md").read_text()
    assert "ANSM recipes on val" in report and "**chosen**" in report and "CASIA v1 test" in report
    # resuming finds every stage done (no checkpoint written again), and a changed setting is refused in one line
    def stamps(folder: Path) -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in folder.rglob("*.safetensors")}

    trained = stamps(out / "ansm" / "val")
    res = runner.invoke(cli.app, [*args, "--until", "val"])
    assert res.exit_code == 0 and stamps(out / "ansm" / "val") == trained
    res = runner.invoke(cli.app, [*args, "--set", "stage2_steps=3", "--until", "val"])
    assert res.exit_code == 2 and "stage2_steps" in res.output and "Traceback" not in res.output

    # stage 7: robust ANSM and adversarial fine-tuning per seed at the same 4 steps x batch 2
    res = runner.invoke(cli.app, [*args, "--until", "informed"])
    assert res.exit_code == 0, res.output
    informed = out / "ansm" / "informed"
    for s in (0, 1):  # the robust recipe on top of the val-chosen one, and fine-tuning at the same 4 steps x batch 2
        robust = load_checkpoint_meta(informed / f"robust-s{s}" / "ansm")["train_config"]
        assert robust["defended_fraction"] == 1.0 and robust["stage1_steps"] + robust["stage2_steps"] == 4
        tuned = load_checkpoint_meta(informed / f"adv-finetune-s{s}" / "localizer")["training"]["config"]
        assert (tuned["steps"], tuned["batch_size"], tuned["adv_fraction"]) == (4, 2, 1.0)
        assert tuned["adv_eps"] == pytest.approx(8 / 255) and tuned["split"] == "train"
    done = load_finished(out)["informed"]
    assert done["n_forged"] == 2 and done["eps"] == [4, 8]
    assert set(done["groups"]) == {"none", "ansm@s0", "ansm@s1", "ansm-robust@s0", "ansm-robust@s1",
                                   "adv-finetune@s0", "adv-finetune@s1"}
    for key, m in done["means"].items():
        assert ("gray-box" in m) == key.startswith("ansm")  # only the ANSMs have another seed's weights to attack
        for e in (4, 8):  # the oblivious image is one of the white-box candidates, so white-box <= oblivious
            assert 0 <= m[f"white-box {e}"] <= m["oblivious"] + 1e-9
    report = (out / "report.md").read_text()
    assert "Attackers who know the defense" in report and "robust ANSM" in report and "white-box 4/255" in report
    # killed after scoring the images: the summary is rebuilt from the per-image cells, nothing retrained or attacked
    (out / "ansm" / "informed.json").unlink()
    trained, cells = stamps(informed), {p: p.stat().st_mtime_ns for p in (informed / "cells").glob("*.json")}
    res = runner.invoke(cli.app, [*args, "--until", "informed"])
    assert res.exit_code == 0, res.output
    assert stamps(informed) == trained and {p: p.stat().st_mtime_ns for p in (informed / "cells").glob("*.json")} == cells
    assert load_finished(out)["informed"]["means"] == done["means"]
    # each scoring (val, test, adaptive) keeps its finished batches only until its result is written
    assert {p.name for p in (out / "ansm").glob("*.json")} >= {"val-scores.json", "test.json", "adaptive.json"}
    assert not list(out.rglob("*.progress.json"))


@pytest.mark.parametrize("extra, message", [
    (["--defenses", "jpeg"], "not used by preset real"),
    (["--until", "seedz"], "--until must be one of"),
    (["--set", "seeds=[0]"], "at least two distinct seeds"),
    (["--set", "informed_eps=4/255,2"], "informed_eps"),
])
def test_one_line_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    res = runner.invoke(cli.app, ["benchmark", "--preset", "real", "--data", str(_real_root(tmp_path / "r")),
                                  "--out", str(tmp_path / "b"), *extra])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_a_failing_stage_stops_with_one_line(tmp_path: Path) -> None:
    """A stage's own command fails (here: no checkpoint at --model): the benchmark says which stage, no traceback."""
    res = runner.invoke(cli.app, ["benchmark", "--preset", "real", "--data", str(_real_root(tmp_path / "r")),
                                  "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "b"), "--device", "cpu",
                                  "--until", "protocol"])
    assert res.exit_code == 2, res.output
    assert "stage `ansm evaluate` failed" in res.output and "Traceback" not in res.output

