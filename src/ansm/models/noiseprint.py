"""Noiseprint++ (TruFor, Guillaro et al., CVPR 2023) in plain PyTorch, and a localizer built on it.

**The backbone.** Noiseprint++ is TruFor's learned noise-residual extractor: a DnCNN-style stack of 17
convolutions 3x3 (stride 1, padding 1). :class:`NoiseprintPP` is an ``nn.Sequential`` whose state-dict keys
are exactly those of the official checkpoint (``{'network': state_dict, 'global_step': 39}``):

* index 0: conv 3->64 with bias, index 1: ReLU;
* 15 blocks at indices 2..46: conv 64->64 without bias, BatchNorm2d(64), ReLU;
* index 47: conv 64->1 with bias.

Input convention, checked against the official ONNX export (``noiseprint_pp.onnx``, input RGB in [0, 1]):
the torch network takes **RGB in [0, 1] with no transform at all** (no BGR swap, no 0..255 scaling, no mean
shift). On a CASIA image those variants differ from the ONNX output by 0.34, 2.5 and 0.92 (max abs), whereas
the plain RGB [0, 1] input matches to about 2e-4 (the ONNX graph has batch norm folded into the convs, hence
float rounding differences). ``tests/models/test_noiseprint.py`` checks this on real images of several sizes.

The official weights are *not* part of ansm (GRIP-UNINA licence: informational and nonprofit use only; cite
the authors). Users supply their copy by path; see :func:`default_noiseprint_weights` for where we look.

**The localizer** (``"noiseprint-head"``): the frozen Noiseprint++ residual, optionally concatenated with the
RGB image, feeds a small trainable head. A splice is a region whose noiseprint differs from the rest of *this*
image, so the head downsamples (larger context, cheaper) and then compares every position with image-wide
statistics (mean and standard deviation over the image) before decoding back to input resolution.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
import torch
import torch.nn as nn

from ansm.checkpoint import load_state_dict_strict, load_third_party_state_dict, locate_weights_file
from ansm.errors import CheckpointError, ConfigError
from ansm.models.base import InputConfig, Localizer
from ansm.models.layers import ConvNormAct, DownBlock, UpBlock
from ansm.models.registry import register_localizer

#: Environment variables consulted by :func:`default_noiseprint_weights`, in order.
WEIGHTS_ENV = "ANSM_NOISEPRINT_WEIGHTS"
WEIGHTS_FILENAME = "noiseprint++.th"

_DEPTH = 17
_FEATURES = 64


class NoiseprintPP(nn.Sequential):
    """The Noiseprint++ network: RGB in [0, 1] (B x 3 x H x W, any size) -> noise residual B x 1 x H x W.

    ReLUs are not in-place, so every index can be tapped by name (``"0"`` ... ``"47"``) without a later
    layer overwriting a recorded feature.

    On GPUs PyTorch runs float32 convolutions in TF32 by default (``torch.backends.cudnn.conv.fp32_precision``
    is ``"tf32"``), which rounds inputs to a 10-bit mantissa; over 17 layers that can move this fine-grained
    residual far more than the 2e-4 float32 agreement measured on the CPU. We leave the global setting alone
    (it is the caller's choice and affects every model); set it to ``"ieee"`` when exact float32 matters.
    """

    def __init__(self) -> None:
        layers: list[nn.Module] = [nn.Conv2d(3, _FEATURES, 3, padding=1, bias=True), nn.ReLU()]
        for _ in range(_DEPTH - 2):
            layers += [nn.Conv2d(_FEATURES, _FEATURES, 3, padding=1, bias=False), nn.BatchNorm2d(_FEATURES), nn.ReLU()]
        layers.append(nn.Conv2d(_FEATURES, 1, 3, padding=1, bias=True))
        super().__init__(*layers)

    @classmethod
    def from_weights(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> "NoiseprintPP":
        """Build the network and load official weights from ``path`` (on ``device``), in eval mode."""
        net = cls()
        load_noiseprint_weights(net, path)
        if device is not None:
            net = net.to(device)
        return net.eval()


def load_noiseprint_weights(net: NoiseprintPP, path: str | os.PathLike) -> None:
    """Load an official Noiseprint++ checkpoint into ``net`` (strictly).

    Accepts TruFor's ``{'network': state_dict, ...}`` layout or a bare state dict. The file is read with
    ``torch.load(weights_only=True)`` mapped to CPU (the official tensors were saved on CUDA), so it loads on
    a machine without a GPU and never unpickles arbitrary objects. A file that does not fit raises one
    :class:`CheckpointError` listing missing, unexpected and shape-mismatched keys.
    """
    obj = load_third_party_state_dict(path)
    state = obj.get("network", obj)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (or {{'network': state_dict}})")
    load_state_dict_strict(net, state, path)


def default_noiseprint_weights() -> Path:
    """Find the Noiseprint++ weights when the user gave no path.

    Looked up in this order: ``$ANSM_NOISEPRINT_WEIGHTS`` (a file), ``$ANSM_SHARED/weights/noiseprint++.th``,
    ``../shared/weights/noiseprint++.th`` beside the working directory or the checkout (the layout of our
    development machines). Raises one :class:`ConfigError` that names every place looked at.
    """
    return locate_weights_file(
        WEIGHTS_ENV, ("weights", WEIGHTS_FILENAME), "Noiseprint++ weights",
        f"pass --weights PATH/{WEIGHTS_FILENAME} or set ${WEIGHTS_ENV}. The official file is TruFor's "
        "pretrained_models/noiseprint++/noiseprint++.th (GRIP-UNINA licence, non-commercial).")


class ContextCompare(nn.Module):
    """Compare each position with image-wide statistics of the same features.

    Input ``x`` (B x C x h x w) is concatenated with the per-image channel mean, standard deviation and the
    standardised deviation ``(x - mean) / std``, then fused by a 1x1 conv (residual). The standardised
    deviation is the explicit "how unlike the rest of this image is this place" cue splicing leaves.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fuse = ConvNormAct(4 * channels, channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + 1e-5).sqrt()
        z = (x - mean) / std
        return x + self.fuse(torch.cat([x, mean.expand_as(x), std.expand_as(x), z], dim=1))


@register_localizer("noiseprint-head")
class NoiseprintHeadLocalizer(Localizer):
    """Frozen Noiseprint++ residual (+ optional RGB) -> small trainable GroupNorm head -> mask logits.

    Args:
        weights: path to the official ``noiseprint++.th``; ``"auto"`` looks it up with
            :func:`default_noiseprint_weights`; ``None`` leaves the backbone randomly initialised, which is what
            :func:`~ansm.models.registry.load_localizer` wants (our checkpoints hold the backbone tensors, so
            the path is never stored in ``config`` and a checkpoint loads on any machine).
        with_rgb: also feed the RGB image to the head (semantic/boundary cues next to the noise residual).
        width: base channel count of the head.

    The backbone's parameters never require gradients and the backbone stays in eval mode even while the head
    trains (:meth:`train` is overridden): its BatchNorm statistics are the official ones. Gradients still flow
    through it to the input, so white-box attacks see the whole model.

    Tappable layers: ``backbone.0`` ... ``backbone.47`` (ReLU outputs at 1, 4, 7, ..., 46), ``stem``,
    ``down1``, ``down2``, ``context``, ``up1``, ``up0``, ``head``. Default FFA taps: a middle backbone
    activation and the head's two intermediate stages.
    """

    name = "noiseprint-head"
    input_cfg = InputConfig(multiple=4)  # Noiseprint++ takes RGB in [0, 1] as is; two 2x downsamplings.
    default_taps = ("backbone.25", "down2", "context")
    # The frozen backbone makes a step ~5x costlier than twostream's on a CPU: 600 steps keep
    # `ansm train-localizer --arch noiseprint-head` under 10 minutes on 2 cores (measured: 567 s in all).
    default_train_steps = 600

    def __init__(self, weights: str | os.PathLike | None = None, with_rgb: bool = False, width: int = 16) -> None:
        if width < 4:
            raise ConfigError(f"width must be >= 4, got {width}")
        super().__init__(with_rgb=bool(with_rgb), width=int(width))
        self.with_rgb = bool(with_rgb)
        self.backbone = NoiseprintPP()
        # Persistent flag: 1 once official weights are in the backbone. It travels inside our checkpoints,
        # so a reloaded model knows its backbone is real without storing a machine-specific path.
        self.register_buffer("backbone_pretrained", torch.zeros((), dtype=torch.uint8))
        if weights is not None:
            self.load_backbone(default_noiseprint_weights() if str(weights) == "auto" else weights)
        self.backbone.requires_grad_(False)
        self.backbone.eval()

        w = width
        cin = 1 + (3 if self.with_rgb else 0)
        self.stem = nn.Sequential(ConvNormAct(cin, w), ConvNormAct(w, w))
        self.down1 = DownBlock(w, 2 * w)
        self.down2 = DownBlock(2 * w, 4 * w)
        self.context = ContextCompare(4 * w)
        self.up1 = UpBlock(4 * w, 2 * w, 2 * w)
        self.up0 = UpBlock(2 * w, w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def load_backbone(self, path: str | os.PathLike) -> None:
        """Load official Noiseprint++ weights into the frozen backbone."""
        load_noiseprint_weights(self.backbone, path)
        self.backbone.requires_grad_(False)
        self.backbone_pretrained.fill_(1)

    def train(self, mode: bool = True) -> "NoiseprintHeadLocalizer":
        """Train the head only: the backbone keeps its official BatchNorm statistics (eval mode)."""
        super().train(mode)
        self.backbone.eval()
        if mode and not bool(self.backbone_pretrained):
            warnings.warn(
                "training noiseprint-head on a randomly initialised Noiseprint++ backbone; "
                "pass weights=PATH (or 'auto') to use the official weights",
                stacklevel=2,
            )
        return self

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.backbone(x)
        feats = torch.cat([residual, x], dim=1) if self.with_rgb else residual
        s0 = self.stem(feats)
        s1 = self.down1(s0)
        s2 = self.context(self.down2(s1))
        d = self.up1(s2, s1)
        d = self.up0(d, s0)
        return self.head(d)


__all__ = [
    "NoiseprintPP",
    "NoiseprintHeadLocalizer",
    "ContextCompare",
    "default_noiseprint_weights",
    "load_noiseprint_weights",
]
