"""The default built-in localizer: a compact two-stream encoder-decoder.

* RGB stream: plain convolutions on the image (sees semantic and boundary cues).
* Noise stream: fixed SRM high-pass filters plus a Bayar constrained convolution (learned prediction-error
  filter), the classic way forensic networks expose noise-level, resampling and compression traces that the
  RGB content hides. SRM residuals are squashed with ``tanh`` rather than hard-truncated: hard clipping would
  zero gradients and make attacks look weaker than they are (gradient masking).
* A JPEG-grid stream: 8x8 block DCT coefficients of the luminance, tested for quantisation by periodicity
  (see :class:`JPEGGridFeatures`). A pasted region saved as JPEG at another quality keeps that quality's
  quantisation steps; sensor noise and blur traces are often gone after it, so this is the cue left.
* A global-context block compares local features to image-wide statistics: a spliced region is one whose
  noise differs from the rest of *this* image.

GroupNorm, not BatchNorm: in our trials a small BatchNorm localizer trained on CPU scored F1 0.90 in train
mode and 0.34 in eval mode (batch statistics of forged/unforged mixes are not stationary).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ansm.models.base import InputConfig, Localizer
from ansm.models.layers import ConvNormAct, DownBlock, UpBlock
from ansm.models.registry import register_localizer

_SRM = torch.tensor(
    [
        [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
        [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
        [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    ],
    dtype=torch.float32,
) / torch.tensor([4.0, 12.0, 2.0]).view(3, 1, 1)


class SRMFilter(nn.Module):
    """Three fixed SRM residual filters applied to each colour channel -> 9 channels in about [-1, 1]."""

    def __init__(self, gain: float = 255.0 / 3.0) -> None:
        super().__init__()
        self.register_buffer("weight", _SRM.unsqueeze(1).repeat(3, 1, 1, 1), persistent=False)  # 9x1x5x5
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = F.conv2d(x.repeat_interleave(3, dim=1), self.weight, padding=2, groups=9)
        return torch.tanh(res * self.gain)


class BayarConv(nn.Module):
    """Constrained convolution (Bayar & Stamm 2018): centre tap -1, other taps sum to 1 per filter."""

    def __init__(self, cin: int = 3, cout: int = 3, kernel: int = 5) -> None:
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel) * 0.1)
        centre = torch.zeros(kernel * kernel)
        centre[kernel * kernel // 2] = 1
        self.register_buffer("centre", centre.view(1, 1, kernel, kernel), persistent=False)

    def constrained_weight(self) -> torch.Tensor:
        # Off-centre taps: a softmax over the kernel, so they are positive and sum to 1 (well-conditioned,
        # unlike dividing by a learned sum that can cross zero); centre tap: exactly -1.
        cout, cin, k, _ = self.weight.shape
        logits = self.weight.view(cout, cin, k * k).masked_fill(self.centre.view(1, 1, k * k) > 0, float("-inf"))
        return logits.softmax(dim=-1).view(cout, cin, k, k) - self.centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.constrained_weight(), padding=self.kernel // 2) * 10.0


def _dct_basis(n_coefs: int) -> torch.Tensor:
    """The first ``n_coefs`` orthonormal 8x8 DCT-II basis images in JPEG zigzag order, as conv weights Kx1x8x8."""
    k = torch.arange(8, dtype=torch.float64)
    c = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5  # c[u, x]
    c[0] /= math.sqrt(2)
    zigzag = sorted(((u, v) for u in range(8) for v in range(8)),
                    key=lambda uv: (uv[0] + uv[1], uv[1] if (uv[0] + uv[1]) % 2 else uv[0]))
    basis = torch.stack([torch.outer(c[u], c[v]) for u, v in zigzag[:n_coefs]])
    return basis.unsqueeze(1).float()


class JPEGGridFeatures(nn.Module):
    """Quantisation traces on the 8x8 JPEG grid, as a fixed (parameter-free) feature map at 1/8 resolution.

    JPEG stores ``round(F_k / Q_k)`` for each DCT coefficient ``F_k`` of each 8x8 luminance block, so a decoded
    block's coefficients sit near multiples of its quality's steps ``Q_k``. ``cos(2 pi F_k / q)`` is then near 1
    for every step ``q`` that divides ``Q_k``, and averages out otherwise; averaged over a ``window`` of
    neighbouring blocks it shows which quantisation a region went through (the idea behind CAT-Net's DCT
    stream, without its one-hot histograms). It relies on the grid starting at the top-left pixel: crops that
    train on it must start at multiples of 8, and resizing an image destroys it (as it destroys the trace).
    """

    def __init__(self, n_coefs: int = 15, max_step: int = 16, window: int = 3) -> None:
        super().__init__()
        self.register_buffer("basis", _dct_basis(n_coefs), persistent=False)
        self.register_buffer("steps", torch.arange(2, max_step + 1, dtype=torch.float32), persistent=False)
        self.window = window
        self.channels = n_coefs * (max_step - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        luma = (x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114) * 255 - 128  # JFIF's Y, level-shifted
        coef = F.conv2d(luma, self.basis, stride=8)  # B x K x H/8 x W/8
        phase = coef.unsqueeze(2) * (2 * math.pi / self.steps.view(1, 1, -1, 1, 1))
        feats = torch.cos(phase).flatten(1, 2)
        return F.avg_pool2d(feats, self.window, stride=1, padding=self.window // 2, count_include_pad=False)


class GlobalContext(nn.Module):
    """Concatenate each position's features with the image-wide mean, then fuse."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fuse = ConvNormAct(2 * channels, channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        return x + self.fuse(torch.cat([x, g], dim=1))


@register_localizer("twostream")
class TwoStreamLocalizer(Localizer):
    """RGB + noise-residual two-stream encoder-decoder. Tappable layers: rgb_stem, noise_stem, enc1, enc2,
    enc3, context, dec2, dec1, dec0. Default FFA taps: the intermediate ones (enc2, enc3, context)."""

    name = "twostream"
    input_cfg = InputConfig(multiple=8)
    default_taps = ("enc2", "enc3", "context")
    config_before_options = {"jpeg_grid": False}  # checkpoints saved before the JPEG-grid stream existed

    def __init__(self, width: int = 16, jpeg_grid: bool = True) -> None:
        super().__init__(width=width, jpeg_grid=jpeg_grid)
        w = width
        self.srm = SRMFilter()
        self.bayar = BayarConv(3, 3)
        # Full-resolution layers are kept thin: on a CPU they cost the most per channel.
        self.rgb_stem = ConvNormAct(3, w // 2)
        self.noise_stem = ConvNormAct(12, w // 2)
        self.enc1 = DownBlock(w, 2 * w)
        self.enc2 = DownBlock(2 * w, 4 * w)
        self.enc3 = DownBlock(4 * w, 6 * w)
        if jpeg_grid:
            self.jpeg = JPEGGridFeatures()
            self.jpeg_proj = ConvNormAct(self.jpeg.channels, 6 * w, kernel=1)
        self.context = GlobalContext(6 * w)
        self.dec2 = UpBlock(6 * w, 4 * w, 4 * w)
        self.dec1 = UpBlock(4 * w, 2 * w, 2 * w)
        self.dec0 = UpBlock(2 * w, w, w, depth=1)
        self.head = nn.Conv2d(w, 1, 1)

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.cat([self.srm(x), self.bayar(x)], dim=1)
        s0 = torch.cat([self.rgb_stem(x), self.noise_stem(noise)], dim=1)
        s1 = self.enc1(s0)
        s2 = self.enc2(s1)
        s3 = self.enc3(s2)
        if hasattr(self, "jpeg"):
            s3 = s3 + self.jpeg_proj(self.jpeg(x))
        s3 = self.context(s3)
        d = self.dec2(s3, s2)
        d = self.dec1(d, s1)
        d = self.dec0(d, s0)
        return self.head(d)
