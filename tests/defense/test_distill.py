"""Distillation: a cheaper ANSM learns to match a trained one's outputs (TrainANSMConfig.teacher / distill)."""

from __future__ import annotations

import math

import pytest
import torch

from ansm.defense import TrainANSMConfig
from ansm.defense.ansm_net import ANSM, load_ansm, save_ansm
from ansm.errors import ConfigError


class Zero(torch.nn.Module):
    """A localizer that always answers logit 0 (every BCE is log 2), differentiable in its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 0


def _teacher(seed: int = 0) -> ANSM:
    torch.manual_seed(seed)
    net = ANSM(width=8, dilations=(1, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return net.eval()


def test_distill_term_by_hand() -> None:
    """Stage 2 with a teacher: MgR + distill * 255 * mean |D(x) - T(x)| over [x_a; x_o], here with an identity
    student (D(x) = x), so the term is 255 * the mean size of the teacher's own perturbation."""
    from ansm.defense.trainer import Batch, ansm_losses

    x_o = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x_a = (x_o + 4 / 255).clamp(0, 1)
    batch = Batch(x_o, x_a, torch.ones(2, 1, 8, 8), "offline")
    teacher = _teacher()
    both = torch.cat([x_a, x_o])
    with torch.no_grad():
        by_hand = 255 * (both - teacher(both)).abs().mean().item()
    assert by_hand > 1  # the teacher really moves pixels, so the term is not 0 by accident
    cfg = TrainANSMConfig(localizer="x", stage1_steps=0, stage2_steps=1, teacher="t", distill=0.25)
    mgr = 2 * math.log(2)
    assert ansm_losses(ANSM(), Zero(), batch, 2, [], cfg, teacher).item() == pytest.approx(mgr + 0.25 * by_hand,
                                                                                         rel=1e-5)


def test_distillation_moves_the_student_towards_the_teacher(tmp_path, trained_localizer_path) -> None:
    """A fast ANSM trained with a weighted teacher term ends closer to the teacher than one trained without it,
    same seed, steps and data (the only difference is the term)."""
    from ansm.defense.trainer import train_ansm

    teacher = _teacher()
    save_ansm(teacher, tmp_path / "teacher")
    common = dict(localizer=str(trained_localizer_path), seed=0, stage1_steps=0, stage2_steps=30, batch_size=4,
                  crop=32, pool=8, size=64, pgd_steps=1, device="cpu", width=8, dilations=[1, 2], arch="fast",
                  lr=1e-2, ckpt_every=100)
    plain, _ = train_ansm(TrainANSMConfig(out=str(tmp_path / "plain"), **common))
    taught, _ = train_ansm(TrainANSMConfig(out=str(tmp_path / "taught"), teacher=str(tmp_path / "teacher"),
                                           distill=1.0, **common))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        target = teacher(x)
        gap_plain = (plain(x) - target).abs().mean().item()
        gap_taught = (taught(x) - target).abs().mean().item()
    assert gap_taught < 0.6 * gap_plain, (gap_taught, gap_plain)
    saved, meta = load_ansm(tmp_path / "taught" / "ansm")
    assert meta["train_config"]["teacher"] == str(tmp_path / "teacher") and meta["train_config"]["distill"] == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"teacher": "t"}, "distill > 0"),
    ({"distill": 0.5}, "teacher"),
    ({"distill": float("nan"), "teacher": "t"}, "distill"),
    ({"distill": 0.5, "teacher": "t", "loss": "pixel"}, "teacher is for the ANSM loss"),
])
def test_distill_settings_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainANSMConfig(localizer="x", stage1_steps=0, stage2_steps=1, **kwargs)


def test_missing_teacher_is_one_clear_error(tmp_path, trained_localizer_path) -> None:
    from ansm.defense.trainer import train_ansm
    from ansm.errors import AnsmError

    cfg = TrainANSMConfig(localizer=str(trained_localizer_path), out=str(tmp_path / "o"), stage1_steps=0,
                          stage2_steps=1, batch_size=2, crop=32, pool=2, size=64, device="cpu",
                          teacher=str(tmp_path / "nowhere"), distill=1.0)
    with pytest.raises(AnsmError, match="nowhere"):
        train_ansm(cfg)
