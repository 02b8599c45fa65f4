"""The model-free anti-forensic attacks: noise-level equalization (inside its budget, only on the quieter side,
authentic images untouched, and it really closes a noise-level gap) and region denoising (inside its budget and
the mask, and it really removes the region's noise)."""

from __future__ import annotations

import torch

from ansm.attacks import create_attack
from ansm.attacks.equalize import quieter_side
from ansm.defense.ansm_net import blur_kernel, high_pass


def _noise_gap_image(region_noisier: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat grey 8-bit image whose 16x16 square carries noise of std 10/255 and the rest 1/255, or the reverse."""
    g = torch.Generator().manual_seed(0)
    m = torch.zeros(1, 1, 48, 48)
    m[..., 16:32, 16:32] = 1
    loud, quiet = 10 / 255, 1 / 255
    std = m * loud + (1 - m) * quiet if region_noisier else m * quiet + (1 - m) * loud
    x = (0.5 + torch.randn(1, 3, 48, 48, generator=g) * std).clamp(0, 1).mul(255).round().div(255)
    return x, m


def _energy(x: torch.Tensor, where: torch.Tensor) -> float:
    e = high_pass(x, blur_kernel(), 1.0).pow(2).mean(1, keepdim=True)
    return float((e * where).sum() / where.sum())


def test_noise_goes_on_the_quieter_side_within_budget_and_closes_the_gap() -> None:
    for region_noisier in (True, False):
        x, m = _noise_gap_image(region_noisier)
        side = quieter_side(x, m)
        assert torch.equal(side, 1 - m if region_noisier else m)
        adv = create_attack("noise-equalize", lambda z: z[:, :1], eps="8/255")(x, m, generator=torch.Generator().manual_seed(1))
        delta = adv - x
        assert delta.abs().max() <= 8 / 255 + 1e-6
        assert torch.all(delta * (1 - side) == 0)  # the louder side is left exactly as it was
        # the ratio of the loud side's high-pass energy to the quiet side's falls from ~100 to a few
        before = _energy(x, 1 - side) / _energy(x, side)
        after = _energy(adv, 1 - side) / _energy(adv, side)
        assert before > 30 and after < 3, (region_noisier, before, after)


def test_authentic_images_are_left_alone_and_a_seed_gives_the_same_noise() -> None:
    x, m = _noise_gap_image(True)
    attack = create_attack("noise-equalize", lambda z: z[:, :1], eps="4/255")
    assert torch.equal(attack(x, torch.zeros_like(m)), x)
    a = attack(x, m, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, attack(x, m, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(a, attack(x, m, generator=torch.Generator().manual_seed(4)))


def test_region_denoise_stays_in_the_mask_and_budget_and_quiets_the_region() -> None:
    x, m = _noise_gap_image(region_noisier=True)
    for eps, most in (("4/255", 0.6), ("16/255", 0.1)):
        adv = create_attack("region-denoise", lambda z: z[:, :1], eps=eps)(x, m)
        delta = adv - x
        assert delta.abs().max() <= float(eps.split("/")[0]) / 255 + 1e-6
        assert torch.all(delta * (1 - m) == 0)  # outside the region, not one pixel value moved
        # the region's high-pass energy falls (noise std 10/255: a 4/255 step removes part of it, 16/255 most)
        ratio = _energy(adv, m) / _energy(x, m)
        assert ratio < most, (eps, ratio)
    assert torch.equal(create_attack("region-denoise", lambda z: z[:, :1], eps="8/255")(x, torch.zeros_like(m)), x)


def _log_gap(x: torch.Tensor, m: torch.Tensor) -> float:
    return abs(float(torch.log(torch.tensor(_energy(x, m) / _energy(x, 1 - m)))))


def test_noise_match_stays_in_budget_and_closes_the_gap_more_than_either_half() -> None:
    for region_noisier in (True, False):
        x, m = _noise_gap_image(region_noisier)
        match = create_attack("noise-match", lambda z: z[:, :1], eps="8/255")
        adv = match(x, m, generator=torch.Generator().manual_seed(1))
        assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        equalized = create_attack("noise-equalize", lambda z: z[:, :1], eps="8/255")(x, m, generator=torch.Generator().manual_seed(1))
        denoised = create_attack("region-denoise", lambda z: z[:, :1], eps="8/255")(x, m)
        before, after = _log_gap(x, m), _log_gap(adv, m)
        # ~50-100x apart before (log ~4); matched to within 15% of each other's energy after, closer than either half
        assert before > 3.5 and after < 0.15, (region_noisier, before, after)
        assert after < _log_gap(equalized, m) and after < _log_gap(denoised, m)


def test_noise_match_leaves_authentic_images_alone_and_is_seeded() -> None:
    x, m = _noise_gap_image(True)
    attack = create_attack("noise-match", lambda z: z[:, :1], eps="4/255")
    assert torch.equal(attack(x, torch.zeros_like(m), generator=torch.Generator().manual_seed(0)), x)
    a = attack(x, m, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, attack(x, m, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(a, attack(x, m, generator=torch.Generator().manual_seed(4)))
