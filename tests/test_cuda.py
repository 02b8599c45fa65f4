"""The GPU path, run on a GPU: both trainers under fp16 autocast, attacks and defended inference on the device,
and checkpoints that move between a GPU and a CPU (a lab trains on its GPU and an analyst defends on a laptop).

CI has no GPU, so these skip there; ``scripts/gpu_check.sh`` runs them on one. ``ANSM_TEST_DEVICE=cpu`` runs the
same checks on a CPU (mixed precision off), which is how their logic is checked where no GPU is lent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ansm.attacks import create_attack
from ansm.cli import app
from ansm.defense import TrainANSMConfig, load_ansm, train_ansm
from ansm.eval.metrics import f1_score
from ansm.models.registry import load_localizer
from ansm.models.train import TrainLocalizerConfig, train_localizer
from ansm.utils import seed_everything

DEVICE = torch.device(os.environ.get("ANSM_TEST_DEVICE", "cuda"))
AMP = DEVICE.type == "cuda"
EPS = 8 / 255

pytestmark = pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (scripts/gpu_check.sh runs these on one; "
                                       "ANSM_TEST_DEVICE=cpu runs them on a CPU)")


@pytest.fixture(autouse=True)
def full_precision_matmuls():
    """TF32 convolutions would put ~1e-3 between the devices' outputs; the comparisons below are of fp32 maths."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, localizer_recipe: dict) -> tuple[Path, dict]:
    """The suite's fixture localizer (conftest's recipe), trained on DEVICE."""
    seed_everything(0)
    out = tmp_path_factory.mktemp("cuda_localizer")
    _, summary = train_localizer(TrainLocalizerConfig(out=str(out), device=str(DEVICE), **localizer_recipe))
    return out / "localizer", summary


@pytest.fixture()
def batch(synthetic_batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_batch["image"], synthetic_batch["mask"]


def _f1(model: torch.nn.Module, x: torch.Tensor, m: torch.Tensor) -> float:
    with torch.no_grad():
        return float(f1_score(torch.sigmoid(model(x)), m).mean())


def test_localizer_trains_on_the_device_and_predicts_alike_on_a_cpu(trained, batch) -> None:
    path, summary = trained
    assert summary["amp"] is AMP and summary["environments"][-1]["device"].startswith(DEVICE.type)
    on_device, on_cpu = load_localizer(path).to(DEVICE).eval(), load_localizer(path).eval()
    x, m = batch
    with torch.no_grad():
        p_device = torch.sigmoid(on_device(x.to(DEVICE))).cpu()
        p_cpu = torch.sigmoid(on_cpu(x))
    assert (p_device - p_cpu).abs().max() < 1e-3
    assert _f1(on_cpu, x, m) > 0.3  # it learned: the CPU fixture's recipe reaches ~0.5 here


def test_pgd_on_the_device_stays_in_budget_and_lowers_f1(trained, batch) -> None:
    model = load_localizer(trained[0]).to(DEVICE).eval()
    x, m = (t.to(DEVICE) for t in batch)
    adv = create_attack("pgd", model, eps=EPS, steps=10)(x, m, generator=torch.Generator(DEVICE).manual_seed(0))
    assert adv.device.type == DEVICE.type and 0 <= adv.min() and adv.max() <= 1
    assert (adv - x).abs().max() <= EPS + 1e-6
    before, after = _f1(model, x, m), _f1(model, adv, m)
    assert after < before - 0.15, (before, after)


def test_ansm_trains_on_the_device_and_defends_alike_on_a_cpu(trained, batch, tmp_path: Path) -> None:
    cfg = TrainANSMConfig(localizer=str(trained[0]), out=str(tmp_path / "ansm"), seed=0, stage1_steps=20,
                          stage2_steps=20, batch_size=8, crop=48, pool=32, size=64, pgd_steps=2, device=str(DEVICE))
    _, summary = train_ansm(cfg)
    assert summary["amp"] is AMP and summary["final_loss_stage2"] == summary["final_loss_stage2"]  # not NaN
    ansm, _ = load_ansm(tmp_path / "ansm" / "ansm")
    x = batch[0]
    with torch.no_grad():
        on_cpu = ansm.eval()(x)
        on_device = ansm.to(DEVICE)(x.to(DEVICE)).cpu()
    assert (on_cpu - x).abs().max() <= cfg.eps_d + 1e-6  # the defensive perturbation keeps its bound
    assert (on_device - on_cpu).abs().max() < 1e-4


def test_cli_defends_a_folder_on_the_device(trained, batch, tmp_path: Path) -> None:
    from ansm.data.io import write_png

    cfg = TrainANSMConfig(localizer=str(trained[0]), out=str(tmp_path / "ansm"), seed=0, stage1_steps=2,
                          stage2_steps=2, batch_size=4, crop=32, pool=8, size=64, pgd_steps=2, device=str(DEVICE))
    train_ansm(cfg)
    for i in range(2):
        write_png(tmp_path / "in" / f"img{i}.png", batch[0][i])
    res = CliRunner().invoke(app, ["defend", "--ansm", str(tmp_path / "ansm" / "ansm"), "--input",
                                   str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", DEVICE.type])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "out").rglob("*.png"))) >= 2 * 2  # each image's defended copy and masks
