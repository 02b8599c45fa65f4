"""The localizer contract every part of ansm relies on.

A localizer is an ``nn.Module`` that takes images B x 3 x H x W, float RGB in [0, 1], of *any* H and W, and
returns mask logits B x 1 x H x W at input resolution (sigmoid gives the tampering probability).
Normalisation and padding live inside the model (RobustBench's rule), so attacks and defenses never
need to know a model's mean/std, and budgets are always measured in [0, 1] pixel units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class InputConfig:
    """How a localizer wants its input: per-channel mean/std and a size multiple it pads to."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    multiple: int = 1


class Localizer(nn.Module):
    """Base class: subclasses implement :meth:`forward_normalized` on a normalised, padded batch.

    Attributes:
        input_cfg: normalisation and size multiple.
        default_taps: names of intermediate modules whose outputs FFA aligns by default.
        config: constructor arguments, stored next to checkpoints so a model can be rebuilt by name.
        config_before_options: for options added later, the value that reproduces the architecture of checkpoints
            saved before them (their JSON does not name the option).
    """

    name: str = "localizer"
    input_cfg: InputConfig = InputConfig()
    default_taps: tuple[str, ...] = ()
    config_before_options: dict[str, Any] = {}

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(config)
        mean = torch.tensor(self.input_cfg.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.input_cfg.std).view(1, 3, 1, 1)
        self.register_buffer("_mean", mean, persistent=False)
        self.register_buffer("_std", std, persistent=False)

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        m = self.input_cfg.multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        x = (images - self._mean) / self._std
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        logits = self.forward_normalized(x)
        return logits[..., :h, :w]


@dataclass
class LocalizerSpec:
    """What a checkpoint's JSON says about the model it holds."""

    arch: str
    config: dict[str, Any] = field(default_factory=dict)
