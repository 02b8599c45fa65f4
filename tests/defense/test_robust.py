"""The robust recipe (adversarially trained ANSM): its attack really goes through ANSM, its budget curriculum
ramps, its clean-preservation KL is the Bernoulli KL by hand, and its settings are resume keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from ansm.defense import TrainANSMConfig, train_ansm
from ansm.defense.data import Pool
from ansm.defense.ddp import DistContext
from ansm.defense.losses import clean_kl_loss
from ansm.defense.trainer import eps_max_at, make_batch
from ansm.errors import CheckpointError, ConfigError


class Wall(nn.Module):
    """A 'defense' that passes no gradient: it returns the image detached (same values, no path back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x.detach() - x)  # the values of x, with an exactly-zero gradient


def _pool(n: int = 8, size: int = 32) -> Pool:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, 1, size, size, dtype=torch.bool)
    masks[:, :, 8:20, 8:20] = True
    return Pool(images, masks, [f"p{i}" for i in range(n)])


def test_defended_steps_attack_through_ansm(trained_localizer) -> None:
    """FGSM through a gradient-blocking ANSM cannot move the image; the oblivious FGSM on the same step does."""
    cfg = dict(localizer="x", batch_size=4, crop=None, size=32, attacks=["fgsm"], eps_min=8 / 255, eps_max=8 / 255)
    robust = TrainANSMConfig(**cfg, defended_fraction=1.0)
    plain = TrainANSMConfig(**cfg)
    pool, ctx = _pool(), DistContext()
    through = make_batch(0, robust, ctx, trained_localizer, pool, None, Wall())
    oblivious = make_batch(0, plain, ctx, trained_localizer, pool, None, Wall())
    assert through.source.endswith("/defended") and not oblivious.source.endswith("/defended")
    assert torch.equal(through.x_o, oblivious.x_o)  # the same images: only the attacker's target differs
    assert torch.equal(through.x_a, through.x_o)  # sign(0) = 0: no gradient came back through the wall
    assert (oblivious.x_a - oblivious.x_o).abs().max() > 7.9 / 255
    with pytest.raises(ConfigError, match="pass ansm"):
        make_batch(0, robust, ctx, trained_localizer, pool, None)


def test_curriculum_ramps_the_largest_budget() -> None:
    cfg = TrainANSMConfig(localizer="x", eps_min=2 / 255, eps_max=10 / 255, curriculum=100)
    assert eps_max_at(0, cfg) == pytest.approx(2 / 255)
    assert eps_max_at(50, cfg) == pytest.approx(6 / 255)
    assert eps_max_at(100, cfg) == eps_max_at(5000, cfg) == pytest.approx(10 / 255)
    assert eps_max_at(0, TrainANSMConfig(localizer="x", eps_max=10 / 255)) == pytest.approx(10 / 255)


def test_clean_kl_is_the_bernoulli_kl_by_hand() -> None:
    lp = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    lq = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])
    p, q = torch.sigmoid(lp), torch.sigmoid(lq)
    by_hand = (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).mean()
    assert clean_kl_loss(lq, lp).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert clean_kl_loss(lp, lp).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="differ"):
        clean_kl_loss(lq, lp[..., :1])


@pytest.mark.parametrize("kwargs, message", [
    ({"defended_fraction": 1.5}, "defended_fraction"),
    ({"defended_fraction": math.nan}, "defended_fraction"),
    ({"curriculum": -1}, "curriculum"),
    ({"clean_kl": -0.1}, "clean_kl"),
])
def test_config_errors(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainANSMConfig(localizer="x", **kwargs)


def test_robust_run_trains_and_its_settings_are_resume_keys(tiny_cfg, trained_localizer) -> None:
    cfg = {**tiny_cfg, "defended_fraction": 1.0, "curriculum": 2, "clean_kl": 1.0}
    losses: list[float] = []
    train_ansm(TrainANSMConfig(**cfg), trained_localizer, on_step=lambda s, st, l: losses.append(l))
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    with pytest.raises(CheckpointError, match="defended_fraction"):
        train_ansm(TrainANSMConfig(**{**cfg, "defended_fraction": 0.5}), trained_localizer)


def test_perturbation_profile_tells_a_collapsed_ansm_from_a_denoiser() -> None:
    from ansm.defense.ansm_net import ANSM
    from ansm.defense.evaluate import perturbation_profile

    g = torch.Generator().manual_seed(0)
    x = torch.randint(32, 224, (2, 3, 24, 24), generator=g).float() / 255  # away from 0 and 1: no clamping
    identity = ANSM(16 / 255, width=4, dilations=[1])  # untrained: zero output layer
    assert perturbation_profile(identity, x) == pytest.approx({"mean_abs": 0.0, "at_bound": 0.0, "let_through": 1.0})
    shifted = ANSM(16 / 255, width=4, dilations=[1])
    with torch.no_grad():
        shifted.tail.bias.fill_(20.0)  # tanh saturated everywhere: x + eps_d, a constant colour shift
    collapsed = perturbation_profile(shifted, x)
    assert collapsed["mean_abs"] == pytest.approx(16.0, abs=1e-3) and collapsed["at_bound"] == 1.0
    assert collapsed["let_through"] == pytest.approx(1.0, abs=1e-4)

    class Smoother(nn.Module):  # removes every pixel's deviation from its 3x3 neighbourhood mean
        eps_d = 1.0

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return nn.functional.avg_pool2d(z, 3, stride=1, padding=1, count_include_pad=False)

    assert perturbation_profile(Smoother(), x)["let_through"] < 0.2
