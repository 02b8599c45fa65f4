"""The ANSM network: a small generator that adds a bounded *defensive perturbation* to every input image.

``ANSM(x) = clamp(x + eps_d * tanh(g(x)), 0, 1)``

* ``tanh`` bounds the perturbation smoothly (a hard clip would zero the gradient wherever it saturates), and
  the final clamp keeps a valid image; since clamping to [0, 1] only moves a value towards an ``x`` already in
  [0, 1], ``|ANSM(x) - x| <= eps_d`` holds exactly, pixel by pixel.
* ``g`` is a full-resolution residual conv net with dilated blocks, so the receptive field covers the
  neighbourhood an adversarial pattern is spread over without any downsampling (downsampling would blur exactly
  the high-frequency noise traces the localizer reads). A fixed high-pass band ``x - blur(x)`` goes to the first
  and to the last layer (see :meth:`ANSM.high_pass`). No normalisation by default: GroupNorm divides out the
  per-image amplitude of that band, the very cue that separates an attacked image from a clean one (measured in
  docs/ansm.md); ``norm="group"`` is kept as an option.
* The last convolution starts at zero, so an untrained ANSM is the identity: training starts from "do no
  harm" and the clean F1 is preserved from step 0.

It is deliberately light next to the localizer (see ``bench/defense_cost.py`` for parameters and MACs at
512x512): a preprocessing defense that costs more than the model it protects is hard to deploy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from ansm.checkpoint import build_from_config, load_checkpoint, load_state_dict_strict, save_checkpoint
from ansm.errors import CheckpointError, ConfigError, DataError
from ansm.utils import parse_eps


NORMS = ("none", "group")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    groups = 8 if channels % 8 == 0 else (4 if channels % 4 == 0 else 1)
    return nn.GroupNorm(groups, channels)


class ResidualBlock(nn.Module):
    """conv-(norm)-ReLU-conv-(norm) plus identity, with a dilation that widens the receptive field for free."""

    def __init__(self, channels: int, dilation: int = 1, norm: str = "none") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=norm == "none"),
            _norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            _norm(norm, channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ANSM(nn.Module):
    """Active adversarial Noise Suppression Module.

    Args:
        eps_d: L-inf bound of the defensive perturbation, in [0, 1] pixel units (``"12/255"`` accepted).
        width: channels of the hidden layers.
        dilations: one residual block per entry, with that dilation.

    Input and output: Bx3xHxW float in [0, 1], any H and W (fully convolutional, no padding multiple).
    """

    def __init__(self, eps_d: float | str = 16 / 255, width: int = 16, dilations: Sequence[int] = (1, 2, 4),
                 norm: str = "none") -> None:
        super().__init__()
        try:
            eps = parse_eps(eps_d)
        except ConfigError as exc:
            raise ConfigError(f"eps_d: {exc}") from None
        if not 0 < eps <= 1:
            raise ConfigError(f"eps_d must be in (0, 1], got {eps_d!r}")
        if width < 1 or not dilations or any(int(d) < 1 for d in dilations):
            raise ConfigError(f"ANSM needs width >= 1 and dilations >= 1, got width={width}, dilations={list(dilations)}")
        if norm not in NORMS:
            raise ConfigError(f"ANSM norm must be one of {', '.join(NORMS)}, got {norm!r}")
        self.eps_d = float(eps)
        self.config: dict[str, Any] = {"eps_d": self.eps_d, "width": int(width), "dilations": [int(d) for d in dilations],
                                       "norm": norm}
        blur = torch.tensor([1.0, 2.0, 1.0])
        blur = (blur[:, None] * blur[None, :] / 16).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        self.register_buffer("blur", blur, persistent=False)
        self.head = nn.Sequential(nn.Conv2d(6, width, 3, padding=1, bias=norm == "none"), _norm(norm, width),
                                  nn.ReLU(inplace=True))
        self.body = nn.Sequential(*[ResidualBlock(width, int(d), norm) for d in dilations])
        self.tail = nn.Conv2d(width + 3, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def high_pass(self, x: torch.Tensor) -> torch.Tensor:
        """``x - blur(x)`` scaled so a residual of size ``eps_d`` reads about 1.

        Adversarial noise lives mostly in this band (a 3x3 blur alone undoes part of a PGD attack on the built-in
        localizer, at a high price on clean images). Feeding it to the first layer *and* to the last one gives
        ``g`` a linear path from the noise band to the output, so "suppress the band where it looks adversarial"
        is learnable in few steps; the body learns where and how much.
        """
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        return (x - nn.functional.conv2d(padded, self.blur, groups=3)) / self.eps_d

    def g(self, x: torch.Tensor) -> torch.Tensor:
        """Unbounded perturbation logits; the image is centred so the first layer sees zero-mean values."""
        hp = self.high_pass(x)
        feats = self.body(self.head(torch.cat([(x - 0.5) * 4.0, hp], dim=1)))
        return self.tail(torch.cat([feats, hp], dim=1))

    def perturbation(self, x: torch.Tensor) -> torch.Tensor:
        """The defensive perturbation before clamping, ``eps_d * tanh(g(x))``, bounded by ``eps_d``."""
        return self.eps_d * torch.tanh(self.g(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise DataError(f"ANSM expects images Bx3xHxW, got {tuple(x.shape)}")
        # channels-last activations: the same numbers (up to rounding), ~1.4x faster training steps on a CPU
        # (bench/training_step.py: a pixel-alignment step 69 vs 96 ms on 2 cores)
        x = x.contiguous(memory_format=torch.channels_last)
        return (x + self.perturbation(x)).clamp(0, 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_ansm(model: ANSM, path: str | os.PathLike, **extra: Any) -> Path:
    """Weights in ``<path>.safetensors``, ``{"kind": "ansm", "config", ...extra}`` in ``<path>.json``."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    if not isinstance(model, ANSM):
        raise CheckpointError(f"save_ansm needs an ANSM, got {type(model).__name__}")
    return save_checkpoint(path, model.state_dict(), {"kind": "ansm", "config": model.config, **extra})


def load_ansm(path: str | os.PathLike) -> tuple[ANSM, dict[str, Any]]:
    """Rebuild an ANSM from its checkpoint (strict), in eval mode; return it with the checkpoint's JSON."""
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "ansm":
        raise CheckpointError(f"{path}: not an ANSM checkpoint (kind={meta.get('kind')!r})")
    model = build_from_config(ANSM, meta.get("config", {}), path)
    load_state_dict_strict(model, tensors, path)
    return model.eval(), meta
