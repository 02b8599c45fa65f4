"""Input-transformation baselines: JPEG, median filter, Gaussian blur, bit-depth reduction.

Each is an ``nn.Module`` images -> images (Bx3xHxW in [0, 1]) with no parameters. Two of them are not
differentiable (JPEG: a real codec; bit-depth: rounding). An adaptive attacker gets gradients through them with
**BPDA** (Athalye, Carlini, Wagner, ICML 2018): the forward pass is the exact transform, the backward pass the
identity, written ``x + (T(x) - x).detach()``. :func:`bpda` does that; the benchmark uses it only when it builds
the attacker's view of a defense, never when it scores one.

None of these is randomized, so EOT (expectation over transformation) reduces to one sample; the benchmark says
so in its report rather than averaging identical gradients.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ansm.errors import ConfigError


class JPEG(nn.Module):
    """Re-encode every image as a baseline JPEG of the given quality (Pillow, 4:2:0 as most cameras write).

    Exactly what a user would do with a file: quantise to 8 bits, encode, decode. Not differentiable.
    """

    differentiable = False

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        if not 1 <= int(quality) <= 100:
            raise ConfigError(f"JPEG quality must be in [1, 100], got {quality}")
        self.quality = int(quality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        arrays = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for i, arr in enumerate(arrays):
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=self.quality)
            buf.seek(0)
            decoded = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
            out[i] = torch.from_numpy(decoded).permute(2, 0, 1).to(out)
        return out


class BitDepth(nn.Module):
    """Keep ``bits`` bits per channel (feature squeezing, Xu et al. 2018). Not differentiable (rounding)."""

    differentiable = False

    def __init__(self, bits: int = 5) -> None:
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise ConfigError(f"bit depth must be in [1, 8], got {bits}")
        self.bits = int(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x.clamp(0, 1) * levels) / levels


class Median(nn.Module):
    """k x k median filter (reflect padding). Differentiable almost everywhere: the gradient goes to the median."""

    differentiable = True

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        if int(size) < 3 or int(size) % 2 == 0:
            raise ConfigError(f"median size must be an odd integer >= 3, got {size}")
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, r = self.size, self.size // 2
        b, c, h, w = x.shape
        patches = F.unfold(F.pad(x, (r, r, r, r), mode="reflect"), k)  # B x (C*k*k) x (H*W)
        return patches.view(b, c, k * k, h * w).median(dim=2).values.view(b, c, h, w)


class GaussianBlur(nn.Module):
    """Separable Gaussian blur, kernel side ``2*ceil(2*sigma)+1``, reflect padding. Differentiable."""

    differentiable = True

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        if not sigma > 0:
            raise ConfigError(f"blur sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        radius = int(np.ceil(2 * self.sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-(t**2) / (2 * self.sigma**2))
        self.register_buffer("kernel", k / k.sum(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.kernel.numel() // 2
        c = x.shape[1]
        kx = self.kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1).to(x)
        ky = self.kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1).to(x)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kx, groups=c)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), ky, groups=c)


def bpda(transform: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``transform(x)`` forward, identity backward (the straight-through / BPDA approximation)."""
    with torch.no_grad():
        y = transform(x)
    return x + (y - x).detach()
