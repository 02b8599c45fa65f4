"""A second, architecturally different built-in: a small RGB-only U-Net (max-pool down, bilinear up).

It exists mainly as a *surrogate* for transfer attacks: an attacker who cannot see the target localizer
crafts noise on this one instead. It normalises with ImageNet statistics inside ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ansm.models.base import InputConfig, Localizer
from ansm.models.layers import ConvNormAct, UpBlock
from ansm.models.registry import register_localizer


class _Down(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.MaxPool2d(2), ConvNormAct(cin, cout), ConvNormAct(cout, cout))


@register_localizer("unet-small")
class SmallUNet(Localizer):
    """RGB U-Net with four resolutions. Tappable layers: inc, down1, down2, down3, up2, up1, up0."""

    name = "unet-small"
    input_cfg = InputConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), multiple=8)
    default_taps = ("down1", "down2", "down3")

    def __init__(self, width: int = 16) -> None:
        super().__init__(width=width)
        w = width
        self.inc = nn.Sequential(ConvNormAct(3, w), ConvNormAct(w, w))
        self.down1 = _Down(w, 2 * w)
        self.down2 = _Down(2 * w, 4 * w)
        self.down3 = _Down(4 * w, 4 * w)
        self.up2 = UpBlock(4 * w, 4 * w, 2 * w)
        self.up1 = UpBlock(2 * w, 2 * w, w)
        self.up0 = UpBlock(w, w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.inc(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        d = self.up2(x3, x2)
        d = self.up1(d, x1)
        d = self.up0(d, x0)
        return self.head(d)
