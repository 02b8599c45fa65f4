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

Two architectures (``arch``), the same ``ANSM(x)`` formula, bound and zero-init identity:

* ``"full"`` (the default, and what a checkpoint without ``arch`` is): the body above at full resolution.
* ``"fast"``: the same residual body at half resolution. The first layer reads the centred image and the
  high-pass band (:meth:`ANSM.stem`, a fixed linear map) through a stride-2 3x3 convolution; the dilated blocks
  run at ceil(H/2) x ceil(W/2) (their receptive field, in input pixels, doubles), and a 4x4 stride-2 transposed
  convolution brings ``g`` back to 3 channels at full resolution, cropped to H x W (odd sizes work). A 3x3
  convolution of the stem is added there: the full-resolution linear path from the noise band to the output that
  the ``"full"`` tail also has. Both output layers start at zero. The two convolutions reading the stem are
  composed with it into 5x5 kernels on the image, so the 6-channel full-resolution stem is never materialised.
  Cost at 512x512 on a CPU: ``bench/ansm_latency.py`` (~1/4 of ``"full"``). Plain convolutions, not
  depthwise-separable: at these widths the depthwise variant was slower on a CPU for fewer MACs (measured while
  choosing; the numbers are in docs/ansm.md).

**Stochastic ANSM** (``noise_std`` > 0, off by default): Gaussian noise of that std is added to what ``g`` reads,
never to the output, ``ANSM(x) = clamp(x + eps_d * tanh(g(x + noise_std * n)), 0, 1)`` with a fresh
``n ~ N(0, I)`` on every call. The bound ``|ANSM(x) - x| <= eps_d`` still holds and the localizer never sees the
noise (a forensic localizer reads noise residuals: noise on its input would cost clean F1); the defensive
perturbation becomes random, so an attacker's gradient through one call is a sample. Such a defense is only
evaluated under attacks that average over the randomness (EOT) or fix it (``ansm.benchmark.defenses``), and scored
as the mean over several calls. The noise comes from ``noise_generator`` when it is set (the trainer sets one per
step, so a resumed run draws the same noise), else from torch's global generator.
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
ARCHS = ("full", "fast")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    groups = 8 if channels % 8 == 0 else (4 if channels % 4 == 0 else 1)
    return nn.GroupNorm(groups, channels)


def blur_kernel() -> torch.Tensor:
    """The fixed 3x3 binomial blur ([1, 2, 1] outer itself, / 16), one per RGB channel (3x1x3x3, depthwise)."""
    b = torch.tensor([1.0, 2.0, 1.0])
    return (b[:, None] * b[None, :] / 16).view(1, 1, 3, 3).repeat(3, 1, 1, 1)


def high_pass(x: torch.Tensor, blur: torch.Tensor, scale: float) -> torch.Tensor:
    """``(x - blur(x)) / scale`` with replicate padding: the band adversarial noise lives in (ANSM's input and
    the attack detector's)."""
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    return torch.sub(x, nn.functional.conv2d(padded, blur, groups=3)).div_(scale)


def _half_tanh(g: torch.Tensor) -> torch.Tensor:
    """``tanh(g) / 2``, computed as ``sigmoid(2 g) - 1/2`` (the same function): on a CPU torch's tanh took 2.0 ms
    on 3x512x512 against 0.3 ms for sigmoid, a sixth of a small ANSM's forward. Exactly 0 at ``g = 0`` (the
    zero-init identity stays exact)."""
    return torch.sigmoid(2 * g) - 0.5


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
        # in place into the block's fresh output (the same numbers): a new tensor per add costs page faults, and
        # at 16x256x256 on a CPU the out-of-place add + ReLU took longer than the convolution before it
        out = self.body(x)
        out += x
        return self.act(out)


class ANSM(nn.Module):
    """Active adversarial Noise Suppression Module.

    Args:
        eps_d: L-inf bound of the defensive perturbation, in [0, 1] pixel units (``"12/255"`` accepted).
        width: channels of the hidden layers.
        dilations: one residual block per entry, with that dilation.
        norm: ``"none"`` or ``"group"`` (GroupNorm after the hidden convolutions).
        arch: ``"full"`` (body at full resolution) or ``"fast"`` (body at half resolution; module docstring).
        noise_std: std of the Gaussian noise on ``g``'s input (0: deterministic; module docstring).

    Input and output: Bx3xHxW float in [0, 1], any H and W (fully convolutional, no padding multiple).
    """

    def __init__(self, eps_d: float | str = 16 / 255, width: int = 16, dilations: Sequence[int] = (1, 2, 4),
                 norm: str = "none", arch: str = "full", noise_std: float = 0.0) -> None:
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
        if arch not in ARCHS:
            raise ConfigError(f"ANSM arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        if not 0 <= noise_std <= 1:
            raise ConfigError(f"ANSM noise_std must be in [0, 1], got {noise_std!r}")
        self.eps_d = float(eps)
        self.arch = arch
        self.noise_std = float(noise_std)
        self.noise_generator: torch.Generator | None = None
        self.config: dict[str, Any] = {"eps_d": self.eps_d, "width": int(width), "dilations": [int(d) for d in dilations],
                                       "norm": norm, "arch": arch}
        if self.noise_std:  # a deterministic ANSM's config stays what it was (older checkpoints load unchanged)
            self.config["noise_std"] = self.noise_std
        blur = blur_kernel()
        self.register_buffer("blur", blur, persistent=False)
        stride = 2 if arch == "fast" else 1
        self.head = nn.Sequential(nn.Conv2d(6, width, 3, stride=stride, padding=1, bias=norm == "none"),
                                  _norm(norm, width), nn.ReLU(inplace=True))
        self.body = nn.Sequential(*[ResidualBlock(width, int(d), norm) for d in dilations])
        if arch == "full":
            self.tail = nn.Conv2d(width + 3, 3, 3, padding=1)
            tails: list[nn.Module] = [self.tail]
        else:
            # [(x - 0.5) * 4, high_pass(x)] as one fixed conv: centre tap 4 (bias -2), then (delta - blur) / eps_d
            delta = torch.zeros(3, 1, 3, 3)
            delta[:, :, 1, 1] = 1.0
            kernel = torch.zeros(6, 3, 3, 3)
            for c in range(3):
                kernel[c, c] = 4.0 * delta[c, 0]
                kernel[3 + c, c] = (delta[c, 0] - blur[c, 0]) / self.eps_d
            self.register_buffer("stem_kernel", kernel, persistent=False)
            self.register_buffer("stem_bias", torch.tensor([-2.0] * 3 + [0.0] * 3), persistent=False)
            self.up = nn.ConvTranspose2d(width, 3, 4, stride=2, padding=1)  # H/2 -> 2 * ceil(H/2), cropped to H
            # the full-resolution path: a 3x3 conv of the stem (image and high-pass band; over all 6 channels it
            # was faster on a CPU than over the 3 high-pass ones, a strided view that oneDNN copies first)
            self.hp_tail = nn.Conv2d(6, 3, 3, padding=1)
            tails = [self.up, self.hp_tail]
        for layer in tails:  # zero output layers: an untrained ANSM is the identity
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def high_pass(self, x: torch.Tensor) -> torch.Tensor:
        """``x - blur(x)`` scaled so a residual of size ``eps_d`` reads about 1.

        Adversarial noise lives mostly in this band (a 3x3 blur alone undoes part of a PGD attack on the built-in
        localizer, at a high price on clean images). Feeding it to the first layer *and* to the last one gives
        ``g`` a linear path from the noise band to the output, so "suppress the band where it looks adversarial"
        is learnable in few steps; the body learns where and how much.
        """
        return high_pass(x, self.blur, self.eps_d)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """``cat([(x - 0.5) * 4, high_pass(x)])`` (the first layer's input) in one fixed convolution (``"fast"``):
        the same values up to rounding, one pass over the image instead of six."""
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        return nn.functional.conv2d(padded, self.stem_kernel, self.stem_bias)

    def _through_stem(self, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
        """``conv`` composed with the fixed stem: one 5x5 kernel (and bias) on the image, the same linear map."""
        # full convolution of the 3x3 kernels: conv2d of the stem kernel (as images) with the flipped conv kernel
        k = nn.functional.conv2d(self.stem_kernel.transpose(0, 1), conv.weight.flip(2, 3), padding=2)
        bias = (conv.weight.sum((2, 3)) * self.stem_bias).sum(1)
        return k.transpose(0, 1), bias if conv.bias is None else bias + conv.bias

    def g(self, x: torch.Tensor) -> torch.Tensor:
        """Unbounded perturbation logits; the image is centred so the first layer sees zero-mean values."""
        if self.arch == "fast":
            h, w = x.shape[-2:]
            # the two convolutions that read the stem are composed with it, so the 6-channel full-resolution stem
            # is never materialised (on a CPU it cost more than the head conv reading it); at the 2-pixel border
            # the stem is extended by replicate padding of the image instead of zeros
            padded = nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
            k, b = self._through_stem(self.head[0])
            feats = self.body(self.head[2](self.head[1](nn.functional.conv2d(padded, k, b, stride=2))))
            k, b = self._through_stem(self.hp_tail)
            out = nn.functional.conv2d(padded, k, b)
            out += self.up(feats)[..., :h, :w]
            return out
        # head(cat([centred x, hp])) and tail(cat([feats, hp])) as sums of convolutions over the parts, with the
        # same weights: a channel concatenation of channels-last tensors is a slow interleaving copy on a CPU
        # (1.7 ms for 6x512x512 against 0.2 ms in NCHW), and each part's convolution costs less than the whole
        hp = self.high_pass(x)
        head_conv = self.head[0]
        h = nn.functional.conv2d(torch.sub(x, 0.5).mul_(4.0), head_conv.weight[:, :3], head_conv.bias, padding=1)
        h += nn.functional.conv2d(hp, head_conv.weight[:, 3:], padding=1)
        feats = self.body(self.head[2](self.head[1](h)))
        width = feats.shape[1]
        out = nn.functional.conv2d(feats, self.tail.weight[:, :width], self.tail.bias, padding=1)
        out += nn.functional.conv2d(hp, self.tail.weight[:, width:], padding=1)
        return out

    def perturbation(self, x: torch.Tensor) -> torch.Tensor:
        """The defensive perturbation before clamping, ``eps_d * tanh(g(x))``, bounded by ``eps_d``."""
        return 2 * self.eps_d * _half_tanh(self.g(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise DataError(f"ANSM expects images Bx3xHxW, got {tuple(x.shape)}")
        # channels-last activations: the same numbers (up to rounding), ~1.4x faster training steps on a CPU
        # (bench/training_step.py: a pixel-alignment step 69 vs 96 ms on 2 cores)
        x = x.contiguous(memory_format=torch.channels_last)
        # x + eps_d * tanh(g) in one op, clamped in place (autograd's clamp_ gradient is the out-of-place one)
        return torch.add(x, _half_tanh(self.g(self._noisy(x))), alpha=2 * self.eps_d).clamp_(0, 1)

    @property
    def stochastic(self) -> bool:
        return self.noise_std > 0

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        """What ``g`` reads: ``x`` itself, or ``x + noise_std * n`` for the stochastic ANSM (module docstring)."""
        if not self.noise_std:
            return x
        gen = self.noise_generator
        if gen is not None and gen.device != x.device:  # the trainer's per-step generators live on the CPU
            noise = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
        else:
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return x + self.noise_std * noise.contiguous(memory_format=torch.channels_last)


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
