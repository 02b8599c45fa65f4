"""The input-transformation baselines and the BPDA gradient the adaptive attacker uses through them."""

from __future__ import annotations

import pytest
import torch

from ansm.benchmark.transforms import JPEG, BitDepth, GaussianBlur, Median, bpda
from ansm.errors import ConfigError


def _image(seed: int = 0, size: int = 24) -> torch.Tensor:
    return torch.rand(2, 3, size, size + 5, generator=torch.Generator().manual_seed(seed))


def test_jpeg_is_a_real_codec_whose_error_shrinks_with_quality() -> None:
    x = _image()
    err = {q: (JPEG(q)(x) - x).abs().mean().item() for q in (30, 75, 95)}
    assert err[30] > err[75] > err[95] > 0
    y = JPEG(75)(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, JPEG(75)(x))  # deterministic: EOT would average identical samples


def test_bit_depth_keeps_exactly_2_to_the_bits_levels() -> None:
    y = BitDepth(3)(torch.linspace(0, 1, 300).view(1, 3, 10, 10))
    assert len(torch.unique(y)) == 8
    assert (y - torch.linspace(0, 1, 300).view(1, 3, 10, 10)).abs().max() <= 0.5 / 7 + 1e-6


def test_median_removes_an_impulse_and_blur_keeps_a_constant() -> None:
    x = torch.full((1, 3, 9, 9), 0.5)
    x[0, :, 4, 4] = 1.0
    assert torch.allclose(Median(3)(x), torch.full_like(x, 0.5))
    c = torch.full((1, 3, 9, 11), 0.3)
    assert torch.allclose(GaussianBlur(1.5)(c), c, atol=1e-6)
    assert GaussianBlur(1.0)(x)[0, 0, 4, 4] < 1.0


def test_bpda_is_exact_forward_identity_backward() -> None:
    x = _image().requires_grad_(True)
    y = bpda(JPEG(50), x)
    assert torch.allclose(y, JPEG(50)(x.detach()))
    (g,) = torch.autograd.grad((y * 3).sum(), x)
    assert torch.allclose(g, torch.full_like(g, 3.0))


@pytest.mark.parametrize("make", [lambda: JPEG(0), lambda: BitDepth(9), lambda: Median(4), lambda: GaussianBlur(0)])
def test_bad_parameters_are_config_errors(make) -> None:
    with pytest.raises(ConfigError):
        make()
