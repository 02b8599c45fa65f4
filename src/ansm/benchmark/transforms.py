"""Input-transformation baselines: JPEG, median filter, Gaussian blur, bit-depth reduction.

Each is an ``nn.Module`` images -> images (Bx3xHxW in [0, 1]) with no parameters. Two of them are not
differentiable (JPEG: a real codec; bit-depth: rounding). An adaptive attacker gets gradients through them with
**BPDA** (Athalye, Carlini, Wagner, ICML 2018): the forward pass is the exact transform, the backward pass the
identity, written ``x + (T(x) - x).detach()``. :func:`bpda` does that; the benchmark uses it only when it builds
the attacker's view of a defense, never when it scores one. The identity is the crudest backward pass a JPEG
attacker could use: :class:`DiffJPEG` is a differentiable approximation of the codec, and ``bpda(JPEG(q), x,
backward=DiffJPEG(q))`` keeps the exact codec forward while the gradient follows the approximation's (which
knows that JPEG discards high frequencies, so the attack stops spending its budget on them).

None of these is randomized, so EOT (expectation over transformation) reduces to one sample; the benchmark says
so in its report rather than averaging identical gradients.
"""

from __future__ import annotations

import io
from typing import Callable

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


# The IJG/libjpeg base quantisation tables (JPEG standard, Annex K), in natural (row-major) order.
_LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32))


def quantization_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """libjpeg's ``jpeg_set_quality`` scaling of the base table (with ``force_baseline``, as Pillow calls it): 8x8."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(_CHROMA_TABLE if chroma else _LUMA_TABLE, dtype=torch.float64)
    return ((base * scale + 50) // 100).clamp(1, 255).view(8, 8).float()


def _dct_matrix() -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix ``C`` (``C @ block @ C.T`` is JPEG's 2-D DCT of a block)."""
    k = torch.arange(8, dtype=torch.float64).view(-1, 1)
    n = torch.arange(8, dtype=torch.float64).view(1, -1)
    c = torch.cos((2 * n + 1) * k * torch.pi / 16) * (2 / 8) ** 0.5
    c[0] /= 2**0.5
    return c.float()


def soft_round(x: torch.Tensor) -> torch.Tensor:
    """Shin & Song's differentiable rounding, ``round(x) + (x - round(x))**3``: within 0.125 of ``round(x)``,
    derivative ``3 (x - round(x))**2`` (zero only on the integers themselves)."""
    r = torch.round(x)
    return r + (x - r) ** 3


class DiffJPEG(nn.Module):
    """A differentiable approximation of :class:`JPEG` at the same ``quality`` (Shin & Song, "JPEG-resistant
    adversarial images", NIPS 2017 MLSec workshop).

    The codec's steps, each written in torch: RGB -> YCbCr (JFIF), 4:2:0 chroma subsampling by 2x2 averaging
    (``subsampling=False`` keeps chroma at full resolution), edge-replicated padding to whole 16x16 macroblocks
    as libjpeg pads, level shift, 8x8 orthonormal DCT, division by libjpeg's quality-scaled tables,
    :func:`soft_round` in place of rounding, and the inverse of every step (chroma upsampled bilinearly, as
    libjpeg's "fancy" upsampling does). What it leaves out: the 8-bit rounding of the input and output pixels
    and libjpeg's integer DCT, so its output stays within a few grey levels of Pillow's (``test_transforms``
    measures the PSNR between the two on a photo).
    """

    differentiable = True

    def __init__(self, quality: int = 75, subsampling: bool = True) -> None:
        super().__init__()
        if not 1 <= int(quality) <= 100:
            raise ConfigError(f"DiffJPEG quality must be in [1, 100], got {quality}")
        self.quality = int(quality)
        self.subsampling = bool(subsampling)
        self.register_buffer("dct", _dct_matrix(), persistent=False)
        self.register_buffer("luma_q", quantization_table(self.quality), persistent=False)
        self.register_buffer("chroma_q", quantization_table(self.quality, chroma=True), persistent=False)

    def _code(self, plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Level-shifted plane (B x 1 x H x W, H and W multiples of 8) -> DCT, soft quantisation, inverse DCT."""
        b, _, h, w = plane.shape
        c, q = self.dct.to(plane), table.to(plane)
        blocks = plane.view(b, h // 8, 8, w // 8, 8).transpose(2, 3)  # B x h/8 x w/8 x 8 x 8
        coeff = c @ blocks @ c.T
        coeff = soft_round(coeff / q) * q
        return (c.T @ coeff @ c).transpose(2, 3).reshape(b, 1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        mcu = 16 if self.subsampling else 8
        ph, pw = -h % mcu, -w % mcu
        rgb = F.pad(x.clamp(0, 1) * 255, (0, pw, 0, ph), mode="replicate") if ph or pw else x.clamp(0, 1) * 255
        r, g, bl = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
        y = 0.299 * r + 0.587 * g + 0.114 * bl
        cb = -0.168736 * r - 0.331264 * g + 0.5 * bl
        cr = 0.5 * r - 0.418688 * g - 0.081312 * bl
        y = self._code(y - 128, self.luma_q) + 128
        if self.subsampling:
            cb, cr = (F.interpolate(self._code(F.avg_pool2d(p, 2), self.chroma_q), scale_factor=2, mode="bilinear",
                                    align_corners=False) for p in (cb, cr))
        else:
            cb, cr = self._code(cb, self.chroma_q), self._code(cr, self.chroma_q)
        out = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1) / 255
        return out[..., :h, :w].clamp(0, 1)


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


def bpda(transform: nn.Module, x: torch.Tensor,
         backward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``transform(x)`` forward; the gradient of ``backward(x)`` backward (``None``: the identity, i.e. the
    straight-through / BPDA approximation). Written ``b + (T(x) - b).detach()`` with ``b = backward(x)``."""
    with torch.no_grad():
        y = transform(x)
    b = x if backward is None else backward(x)
    return b + (y - b).detach()
