"""FFA and MgR against values computed by hand, plus their input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ansm.defense.losses import ffa_loss, mgr_loss, smoothed_kl, spatial_softmax
from ansm.errors import ConfigError


def test_ffa_equals_hand_computed_value() -> None:
    # one image, one channel, two positions: softmax([0, ln 3]) = [1/4, 3/4], softmax([0, 0]) = [1/2, 1/2]
    fd = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    fo = torch.zeros(1, 1, 1, 2)
    a = 0.01
    expected = 0.25 * math.log((0.25 + a) / (0.5 + a)) + 0.75 * math.log((0.75 + a) / (0.5 + a))
    got = ffa_loss({"l": fd}, {"l": fo}, alpha=a)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ffa_reductions_and_layer_mean_by_hand() -> None:
    # layer "a": 2 channels, one aligned (KL 0) and one the case above; layer "b": aligned everywhere
    a = 1e-3
    k = 0.25 * math.log((0.25 + a) / (0.5 + a)) + 0.75 * math.log((0.75 + a) / (0.5 + a))
    fd_a = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]]).view(1, 2, 1, 2)
    fo_a = torch.zeros(1, 2, 1, 2)
    fb = torch.randn(1, 3, 2, 2)
    feats_d, feats_o = {"a": fd_a, "b": fb}, {"a": fo_a, "b": fb.clone()}
    assert ffa_loss(feats_d, feats_o, alpha=a, reduction="mean").item() == pytest.approx((k / 2 + 0) / 2, rel=1e-5)
    assert ffa_loss(feats_d, feats_o, alpha=a, reduction="sum").item() == pytest.approx((k + 0) / 2, rel=1e-5)


def test_ffa_gradient_reaches_only_the_defended_side() -> None:
    fd = torch.randn(2, 4, 3, 3, requires_grad=True)
    fo = torch.randn(2, 4, 3, 3, requires_grad=True)
    ffa_loss({"x": fd}, {"x": fo}).backward()
    assert fd.grad is not None and fd.grad.abs().sum() > 0
    assert fo.grad is None


def test_spatial_softmax_sums_to_one_per_channel() -> None:
    d = spatial_softmax(torch.randn(2, 5, 4, 3))
    assert d.shape == (2, 5, 12)
    assert torch.allclose(d.sum(-1), torch.ones(2, 5))
    assert smoothed_kl(d, d, 1e-6).abs().max() < 1e-6


@pytest.mark.parametrize("kwargs, feats_o, message", [
    ({"reduction": "max"}, None, "reduction"),
    ({"alpha": 0.0}, None, "alpha"),
    ({}, {"other": torch.zeros(1, 1, 2, 2)}, "same non-empty layers"),
    ({}, {"l": torch.zeros(1, 1, 3, 3)}, "shapes differ"),
])
def test_ffa_input_errors(kwargs: dict, feats_o: dict | None, message: str) -> None:
    fd = {"l": torch.zeros(1, 1, 2, 2)}
    with pytest.raises(ConfigError, match=message):
        ffa_loss(fd, feats_o or {"l": torch.zeros(1, 1, 2, 2)}, **kwargs)


def test_mgr_is_dual_mask_bce_by_hand() -> None:
    m = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    za = torch.tensor([2.0, -1.0]).view(1, 1, 1, 2)
    zo = torch.tensor([0.0, 3.0]).view(1, 1, 1, 2)

    def bce(z: float, y: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    la = (bce(2, 1) + bce(-1, 0)) / 2
    lo = (bce(0, 1) + bce(3, 0)) / 2
    assert mgr_loss(za, zo, m, lam=0.5).item() == pytest.approx(la + 0.5 * lo, rel=1e-6)
    assert mgr_loss(za, zo, m, lam=0.0).item() == pytest.approx(la, rel=1e-6)
    with_dice = mgr_loss(za, zo, m, lam=1.0, dice_weight=1.0).item()
    assert with_dice > la + lo  # Dice adds a positive term for imperfect predictions
    assert F.binary_cross_entropy_with_logits(za, m).item() == pytest.approx(la, rel=1e-6)
    with pytest.raises(ConfigError, match="MgR weights"):
        mgr_loss(za, zo, m, lam=-1.0)


def test_pixel_denoiser_loss_is_mean_l1_to_the_original():
    from ansm.defense.losses import pixel_denoiser_loss

    x_o = torch.zeros(1, 3, 2, 2)
    d_adv = torch.full((1, 3, 2, 2), 0.5)
    d_orig = torch.full((1, 3, 2, 2), 0.25)
    assert pixel_denoiser_loss(d_adv, d_orig, x_o).item() == pytest.approx(0.75)


def test_feature_l1_loss_averages_layers_and_rejects_mismatched_layers():
    from ansm.defense.losses import feature_l1_loss

    a = {"l1": torch.ones(1, 2, 2, 2), "l2": torch.zeros(1, 1, 3, 3)}
    b = {"l1": torch.zeros(1, 2, 2, 2), "l2": torch.full((1, 1, 3, 3), 3.0)}
    assert feature_l1_loss(a, b).item() == pytest.approx((1.0 + 3.0) / 2)
    with pytest.raises(ConfigError):
        feature_l1_loss(a, {"l1": b["l1"]})
