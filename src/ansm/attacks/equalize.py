"""Noise-level equalization and region denoising: the forger's own anti-forensics, with no model and no gradient.

A spliced or retouched region rarely carries the host's camera noise: its noise level is higher (a noisier donor,
re-noising) or lower (blur, inpainting). Adding noise to the quieter side closes that gap, a classic
anti-forensic move, and the forger knows the mask. This attack estimates each side's noise as the energy of the
high-pass residual ``x - blur(x)`` (the band ANSM and the attack detector read), then adds random signs of size
``eps`` on the quieter side only: ``x_a = clip(x + eps * s * side)``, ``s`` uniform in {-1, +1} per pixel and
channel. Authentic images (empty mask) are left as they are.

Why it is here: where it closes the gap, no defense can undo it, since the noise-level evidence is then gone from
the image itself; so it measures how much evidence a budget can erase without a model. On the synthetic forgeries
(region noise 4-10 /255 away from the host's) the answer is: little, F1 0.72 -> 0.68 at 8/255 where a white-box
PGD reaches 0.00 at 2/255 (docs/benchmark.md). Its ``model`` is used only to label images when no mask is given.

``region-denoise`` is the other half of the same move: smooth the manipulated region itself, as far as the budget
allows, ``x_a = clip(x + clip(blur(x) - x, -eps, eps) * mask)`` (Gaussian blur, sigma 1), which removes the
donor's noise, resampling and JPEG residue where they are strongest. It is deterministic and touches nothing
outside the mask.

``noise-match`` does both at once, as a forger who measures both sides would: the louder side smoothed part of the
way, the quieter side given Gaussian (camera-like) noise, the pair chosen per image so the two levels end closest.
It is the strongest of the three at erasing the noise-level trace, and ``experiments/erasability.py`` asks whether
a localizer trained on its outputs can still find the region.
"""

from __future__ import annotations

import torch

from ansm.attacks.base import Attack, Model, random_signs
from ansm.attacks.objectives import Objective
from ansm.attacks.registry import register_attack


def side_energies(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the mean high-pass residual energy (``x - blur(x)``, squared, mean over channels) inside and
    outside ``mask``: the forger's estimate of each side's noise level."""
    from ansm.defense.ansm_net import blur_kernel, high_pass

    energy = high_pass(x, blur_kernel().to(x), 1.0).pow(2).mean(1, keepdim=True)
    region = mask > 0.5
    inside = (energy * region).sum((1, 2, 3)) / region.sum((1, 2, 3)).clamp_min(1)
    outside = (energy * ~region).sum((1, 2, 3)) / (~region).sum((1, 2, 3)).clamp_min(1)
    return inside, outside


def quieter_side(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bx1xHxW {0, 1}: per image, the side (inside or outside ``mask``) whose high-pass residual has less energy;
    all zeros for an image with an empty mask."""
    inside, outside = side_energies(x, mask)
    region = mask > 0.5
    region_quieter = (inside < outside) | ~region.flatten(1).any(1)
    return torch.where(region_quieter.view(-1, 1, 1, 1), region, ~region).to(x.dtype)


@register_attack("noise-equalize")
class NoiseEqualize(Attack):
    """Random signs of size ``eps`` on the quieter side of the mask (L-inf). Defaults: ``eps=8/255``."""

    name = "noise-equalize"
    norm = "linf"
    param_names = ("eps",)

    def __init__(self, model: Model, eps: float | str = 8 / 255, objective: str | Objective = "untargeted",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(model, eps=eps, objective=objective, generator=generator)

    def perturb(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if isinstance(generator, (list, tuple)):  # one generator per image: each image's signs from its own
            return torch.cat([self.perturb(x[i:i + 1], mask[i:i + 1], g) for i, g in enumerate(generator)])
        return self.project(x + self.eps * random_signs(x.shape, x, generator) * quieter_side(x, mask), x)


@register_attack("region-denoise")
class RegionDenoise(Attack):
    """Move each pixel inside the mask towards a Gaussian blur of the image (sigma ``sigma``), by at most ``eps``
    (L-inf). Defaults: ``eps=8/255, sigma=1``."""

    name = "region-denoise"
    norm = "linf"
    param_names = ("eps", "sigma")

    def __init__(self, model: Model, eps: float | str = 8 / 255, sigma: float = 1.0,
                 objective: str | Objective = "untargeted", generator: torch.Generator | None = None) -> None:
        from ansm.benchmark.transforms import GaussianBlur

        super().__init__(model, eps=eps, objective=objective, generator=generator)
        self.blur = GaussianBlur(sigma)  # refuses sigma <= 0 in one line
        self.sigma = self.blur.sigma

    def perturb(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        step = (self.blur(x) - x).clamp(-self.eps, self.eps)
        return self.project(x + step * (mask > 0.5).to(x.dtype), x)


@register_attack("noise-match")
class NoiseMatch(Attack):
    """Both sides of the mask brought to one noise level, within ``eps`` (L-inf). Defaults: ``eps=8/255, sigma=1``.

    The forger's full level-matching move, of which ``noise-equalize`` and ``region-denoise`` are each one half:
    the louder side is smoothed a share ``alpha`` of the way towards its Gaussian blur (sigma ``sigma``, at most
    ``eps`` per value), and the quieter side gets Gaussian noise of std ``k * eps`` clipped to +-eps. Per image,
    the (alpha, k) pair of a small grid whose two sides' high-pass energies end closest (in log ratio) wins.
    Gaussian noise, not random signs: camera noise is Gaussian, so the added noise is not told apart by its
    distribution, and matching (not overshooting) leaves no side noisier than the other. Authentic images are
    left as they are.
    """

    name = "noise-match"
    norm = "linf"
    param_names = ("eps", "sigma")
    ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
    NOISE_STDS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)  # x eps; 1.5 is clipped often: nearly signs of size eps

    def __init__(self, model: Model, eps: float | str = 8 / 255, sigma: float = 1.0,
                 objective: str | Objective = "untargeted", generator: torch.Generator | None = None) -> None:
        from ansm.benchmark.transforms import GaussianBlur

        super().__init__(model, eps=eps, objective=objective, generator=generator)
        self.blur = GaussianBlur(sigma)
        self.sigma = self.blur.sigma

    def perturb(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if isinstance(generator, (list, tuple)):
            return torch.cat([self.perturb(x[i:i + 1], mask[i:i + 1], g) for i, g in enumerate(generator)])
        forged = (mask > 0.5).flatten(1).any(1).view(-1, 1, 1, 1).to(x.dtype)
        quiet = quieter_side(x, mask)
        loud = (1 - quiet) * forged
        gen_device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(x.shape, generator=generator, device=gen_device).to(x)
        smooth = self.blur(x) - x
        # each side's clipped term once per grid value, not once per (alpha, k) pair
        smoothing = [(alpha * smooth).clamp(-self.eps, self.eps) * loud for alpha in self.ALPHAS]
        noising = [(k * self.eps * noise).clamp(-self.eps, self.eps) * quiet for k in self.NOISE_STDS]
        best, best_gap = x.clone(), torch.full((x.shape[0],), float("inf"), device=x.device)
        for smoothed in smoothing:
            for noised in noising:
                cand = self.project(x + smoothed + noised, x)
                inside, outside = side_energies(cand, mask)
                gap = (inside.clamp_min(1e-12).log() - outside.clamp_min(1e-12).log()).abs()
                better = gap < best_gap
                best = torch.where(better.view(-1, 1, 1, 1), cand, best)
                best_gap = torch.where(better, gap, best_gap)
        return torch.where(forged > 0, best, x)
