"""``ansm train`` under ``torchrun`` with 2 CPU processes (gloo) writes a checkpoint that loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ansm.defense import load_ansm


def _ansm_executable() -> str:
    exe = Path(sys.executable).with_name("ansm")
    return str(exe) if exe.is_file() else shutil.which("ansm") or "ansm"


def test_two_process_ddp_run(tmp_path: Path, trained_localizer_path: Path) -> None:
    out = tmp_path / "ansm-ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
           _ansm_executable(), "train", "--model", str(trained_localizer_path), "--out", str(out),
           "--stage1-steps", "2", "--stage2-steps", "2", "--batch-size", "4", "--crop", "32", "--pool", "8",
           "--size", "64", "--pgd-steps", "1", "--width", "8", "--device", "cpu", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ANSM_PROGRESS": ""}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "2 process(es)" in res.stdout
    model, meta = load_ansm(out / "ansm")
    assert meta["world_size"] == 2
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    x = torch.rand(1, 3, 32, 32)
    y = model(x)
    assert (y - x).abs().max() <= model.eps_d + 1e-6 and not torch.equal(y, x)


@pytest.mark.parametrize("extra", [[], ["--adv-eps", "8/255", "--adv-steps", "2", "--adv-fraction", "0.75"],
                                   ["--adv-eps", "4/255", "--adv-steps", "2", "--trades", "1"]],
                         ids=["clean", "pgd", "trades"])
def test_train_localizer_under_torchrun_matches_one_process(tmp_path: Path, extra: list[str]) -> None:
    """Two gloo processes, each with half of every global batch (gradients averaged), end at the weights one
    process reaches with the whole batch: the batches, and which images are attacked from which PGD random start
    (adversarial training: 3 of 4 images, split 2 + 1 across the processes; TRADES), do not depend on the number
    of processes."""
    from ansm.models.registry import load_localizer

    args = ["train-localizer", "--arch", "unet-small", "--steps", "3", "--batch-size", "4", "--size", "32",
            "--crop", "32", "--pool", "8", "--eval-n", "0", "--device", "cpu", "--seed", "2", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ANSM_PROGRESS": ""}
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
           _ansm_executable(), *args, "--out", str(tmp_path / "two")]
    res = subprocess.run(two, capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    res = subprocess.run([_ansm_executable(), *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=240, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    a = load_localizer(tmp_path / "one" / "localizer").state_dict()
    b = load_localizer(tmp_path / "two" / "localizer").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4, rtol=1e-3) for k in a)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
