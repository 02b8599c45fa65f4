"""Building blocks shared by the built-in localizers (GroupNorm everywhere: see why in twostream.py)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def norm(channels: int) -> nn.GroupNorm:
    groups = 8 if channels % 8 == 0 else (4 if channels % 4 == 0 else 1)
    return nn.GroupNorm(groups, channels)


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1, kernel: int = 3) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            norm(cout),
            nn.ReLU(inplace=True),
        )


class DownBlock(nn.Sequential):
    """Halve the resolution (strided conv), then refine."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(ConvNormAct(cin, cout, stride=2), ConvNormAct(cout, cout))


class UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate, fuse."""

    def __init__(self, cin: int, cskip: int, cout: int, depth: int = 2) -> None:
        super().__init__()
        self.fuse = nn.Sequential(ConvNormAct(cin + cskip, cout), *[ConvNormAct(cout, cout) for _ in range(depth - 1)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, skip], dim=1))
