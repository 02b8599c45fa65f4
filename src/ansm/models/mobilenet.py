"""ImageNet-pretrained MobileNetV2 1.0 (Sandler et al., CVPR 2018) in plain PyTorch, and a localizer on it.

**Weights.** The official TensorFlow model ``mobilenet_v2_1.0_224_quant.tflite`` (Apache-2.0; quantisation-aware
trained, uint8 per tensor, batch norm folded into the conv weights and biases, ReLU6 fused). It is read with
:mod:`ansm.models.tflite` (our FlatBuffers reader on the pure-python ``flatbuffers`` package -- see that module
for why not the ``tflite`` package) and dequantised, ``(q - zero_point) * scale``, into float32 convs *with
bias*; activations run in float32 (activation quantisation is ignored). Tensors are mapped to modules by graph
order (the 53 CONV_2D / DEPTHWISE_CONV_2D operators: stem, 17 inverted-residual blocks, the 320->1280 conv,
the 1280->1001 logits conv); every weight and bias shape, stride, dilation and fused activation is checked, and
a file that is not this model raises one :class:`~ansm.errors.CheckpointError`.

Input: RGB in [-1, 1] (the file's uint8 input quantisation, scale 1/128, zero point 128). Padding is TF's
``SAME`` computed for each input size, asymmetric for stride 2 (extra row/column at the bottom/right), so any
H, W works and 224x224 reproduces the TFLite graph. Checked in ``tests/models/test_mobilenet.py`` on the
reference images: grace_hopper "military uniform" 0.927, cat "Egyptian cat" 0.780, parrot "macaw" 0.998 (the
published 0.93 / 0.78 / 0.998). The same reader and :func:`ansm.models.tflite.run_tflite` run the DeepLabv3
graph (``deeplabv3_mnv2_pascal_quant.tflite``; dilated depthwise convs, image pooling, align-corners
resize-bilinear, concatenation, arg-max): bird foreground IoU 0.915 against its mask (published 0.91).

The weights are not part of ansm; see :func:`default_mobilenet_weights` for where we look.

**The localizer** (``"mobilenet-unet"``): the pretrained encoder (trainable) gives features at strides 2, 4, 8,
16, 32 (16, 24, 32, 96, 320 channels); a light full-resolution noise stream (fixed SRM filters + a constrained
Bayar conv, three GroupNorm convs) joins the decoder at strides 4 and 2; a U-Net decoder (GroupNorm) goes from
stride 32 to stride 2 with :class:`~ansm.models.noiseprint.ContextCompare` at stride 16, and a 1x1 conv gives
logits at stride 2, upsampled bilinearly to the input size.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ansm.checkpoint import locate_weights_file
from ansm.errors import CheckpointError, ConfigError
from ansm.models.base import InputConfig, Localizer
from ansm.models.layers import ConvNormAct, UpBlock
from ansm.models.noiseprint import ContextCompare
from ansm.models.registry import register_localizer
from ansm.models.tflite import pad_same, read_tflite
from ansm.models.twostream import BayarConv, SRMFilter

#: Environment variables consulted by :func:`default_mobilenet_weights`, in order.
WEIGHTS_ENV = "ANSM_MOBILENET_WEIGHTS"
WEIGHTS_FILENAME = "mobilenet_v2_1.0_224_quant.tflite"
WEIGHTS_SUBDIR = ("weights", "mobilenet")

#: (expansion t, output channels c, repeats n, first stride s) of MobileNetV2 1.0.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
#: Index of the last block at strides 2, 4, 8, 16, 32 (the standard DeepLab/U-Net tap points).
TAP_BLOCKS = (0, 2, 5, 12, 16)
FEATURE_CHANNELS = (16, 24, 32, 96, 320)
NUM_CLASSES = 1001


class TFConv2d(nn.Conv2d):
    """Conv2d with TF 'SAME' padding for the actual input size (asymmetric for even totals: bottom/right)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        if self.stride == (1, 1):  # odd kernel, stride 1: SAME is symmetric, let the conv pad
            return F.conv2d(x, self.weight, self.bias, 1, (k[0] // 2, k[1] // 2), 1, self.groups)
        return F.conv2d(pad_same(x, k, self.stride), self.weight, self.bias, self.stride, 0, 1, self.groups)


def _conv_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(TFConv2d(cin, cout, kernel, stride, groups), nn.ReLU6())


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6; absent for t = 1), 3x3 depthwise (ReLU6), 1x1 linear projection, residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_act(cin, hidden, 1) if expand != 1 else None
        self.dw = _conv_act(hidden, hidden, 3, stride, groups=hidden)
        self.project = TFConv2d(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 1.0 feature extractor: x in [-1, 1] (B x 3 x H x W, any H, W) -> 5 feature maps.

    Returns ``[f2, f4, f8, f16, f32]`` (strides 2..32, channels 16, 24, 32, 96, 320): the outputs of blocks
    0, 2, 5, 12 and 16. Each map is ``ceil(H / s) x ceil(W / s)`` (TF 'SAME'). Tappable names: ``stem``,
    ``blocks.0`` ... ``blocks.16`` (and their ``expand`` / ``dw`` / ``project`` parts).
    """

    channels = FEATURE_CHANNELS
    strides = (2, 4, 8, 16, 32)

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_act(3, 32, 3, stride=2)
        blocks: list[nn.Module] = []
        cin = 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in TAP_BLOCKS:
                feats.append(x)
        return feats

    def load_tflite(self, path: str | os.PathLike) -> None:
        """Fill the encoder from the official ``mobilenet_v2_1.0_224_quant.tflite`` (whole file checked)."""
        state = read_mobilenet_tflite(path)
        prefix = "encoder."
        self.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)


class MobileNetV2Classifier(nn.Module):
    """The ImageNet classifier: encoder, 1x1 conv 320->1280 (ReLU6), global average pool, 1x1 conv -> 1001 logits
    (index 0 is TF's "background" class). Input RGB in [-1, 1], any size (the pool is global)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = MobileNetV2Encoder()
        self.head = _conv_act(320, 1280, 1)
        self.fc = nn.Conv2d(1280, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(self.encoder(x)[-1]).mean(dim=(2, 3), keepdim=True)
        return self.fc(f).flatten(1)

    def load_tflite(self, path: str | os.PathLike) -> None:
        self.load_state_dict(read_mobilenet_tflite(path), strict=True)

    @classmethod
    def from_tflite(cls, path: str | os.PathLike) -> "MobileNetV2Classifier":
        net = cls()
        net.load_tflite(path)
        return net.eval()


def _graph_convs(net: MobileNetV2Classifier) -> list[tuple[str, TFConv2d | nn.Conv2d, bool, str | None]]:
    """(state-dict prefix, module, depthwise, fused activation) for every conv, in TFLite graph order."""
    out: list[tuple[str, nn.Conv2d, bool, str | None]] = [("encoder.stem.0", net.encoder.stem[0], False, "RELU6")]
    for i, b in enumerate(net.encoder.blocks):
        p = f"encoder.blocks.{i}"
        if b.expand is not None:
            out.append((f"{p}.expand.0", b.expand[0], False, "RELU6"))
        out.append((f"{p}.dw.0", b.dw[0], True, "RELU6"))
        out.append((f"{p}.project", b.project, False, None))
    out.append(("head.0", net.head[0], False, "RELU6"))
    out.append(("fc", net.fc, False, None))
    return out


def read_mobilenet_tflite(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the official MobileNetV2 1.0 TFLite classifier into a :class:`MobileNetV2Classifier` state dict.

    Every conv of the graph is matched, in order, against the architecture: operator kind, weight and bias
    shapes, stride, dilation and fused activation; residual ADDs are counted. Anything else -> one
    CheckpointError saying what differs (first mismatch) and what file was expected.
    """
    model = read_tflite(path)
    expected = _graph_convs(MobileNetV2Classifier())
    convs = [op for op in model.ops if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    hint = f"; expected the official {WEIGHTS_FILENAME} (MobileNetV2 1.0, 224, ImageNet 1001 classes)"
    if len(convs) != len(expected):
        raise CheckpointError(f"{path}: {len(convs)} conv operators, MobileNetV2 1.0 has {len(expected)}{hint}")
    n_add = sum(op.op == "ADD" for op in model.ops)
    n_res = sum(b.residual for b in MobileNetV2Encoder().blocks)
    if n_add != n_res:
        raise CheckpointError(f"{path}: {n_add} ADD operators, MobileNetV2 1.0 has {n_res} residuals{hint}")
    state: dict[str, torch.Tensor] = {}
    for k, (op, (prefix, module, depthwise, act)) in enumerate(zip(convs, expected)):
        where = f"{path}: conv #{k} (TFLite op {op.index}, {prefix})"
        if (op.op == "DEPTHWISE_CONV_2D") != depthwise:
            raise CheckpointError(f"{where} is {op.op}, expected {'DEPTHWISE_CONV_2D' if depthwise else 'CONV_2D'}{hint}")
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            raise CheckpointError(f"{where} has no bias{hint}")
        w_t, b_t = model.tensors[op.inputs[1]], model.tensors[op.inputs[2]]
        if w_t.value is None or b_t.value is None or w_t.value.dim() != 4:
            raise CheckpointError(f"{where}: no stored 4-D weight and bias (weight shape {w_t.shape}){hint}")
        w = w_t.value.permute(3, 0, 1, 2) if depthwise else w_t.value.permute(0, 3, 1, 2)  # -> [O, I, H, W]
        if tuple(w.shape) != tuple(module.weight.shape) or tuple(b_t.value.shape) != tuple(module.bias.shape):
            raise CheckpointError(f"{where}: weight {tuple(w.shape)} / bias {tuple(b_t.value.shape)}, expected "
                                  f"{tuple(module.weight.shape)} / {tuple(module.bias.shape)}{hint}")
        o = op.options
        if (o["stride_h"], o["stride_w"]) != tuple(module.stride) or (o["dilation_h_factor"], o["dilation_w_factor"]) != (1, 1):
            raise CheckpointError(f"{where}: stride {(o['stride_h'], o['stride_w'])} dilation "
                                  f"{(o['dilation_h_factor'], o['dilation_w_factor'])}, expected {tuple(module.stride)} (1, 1){hint}")
        if o["fused_activation_function"] != act or (w.shape[-1] > 1 and o["padding"] != "SAME"):
            raise CheckpointError(f"{where}: activation {o['fused_activation_function']} padding {o['padding']}, "
                                  f"expected {act} SAME{hint}")
        state[f"{prefix}.weight"] = w.contiguous().clone()
        state[f"{prefix}.bias"] = b_t.value.clone()
    return state


def default_mobilenet_weights() -> Path:
    """Find ``mobilenet_v2_1.0_224_quant.tflite`` when the user gave no path.

    Looked up in this order: ``$ANSM_MOBILENET_WEIGHTS`` (a file), ``$ANSM_SHARED/weights/mobilenet/<file>``,
    ``../shared/weights/mobilenet/<file>``. Raises one :class:`ConfigError` naming every place looked at.
    """
    return locate_weights_file(
        WEIGHTS_ENV, (*WEIGHTS_SUBDIR, WEIGHTS_FILENAME), "MobileNetV2 weights",
        f"pass weights=PATH/{WEIGHTS_FILENAME} or set ${WEIGHTS_ENV}. The official file is TensorFlow's "
        "mobilenet_v2_1.0_224_quant.tflite (Apache-2.0; e.g. google-coral/test_data).")


class NoiseStream(nn.Module):
    """Full-resolution noise residuals (fixed SRM + constrained Bayar) -> stride 2 (16 ch) and stride 4 (32 ch)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.srm = SRMFilter()
        self.bayar = BayarConv(3, 3)
        self.stem = ConvNormAct(9 + 3, width)
        self.down2 = ConvNormAct(width, width, stride=2)
        self.down4 = ConvNormAct(width, 2 * width, stride=2)

    def forward(self, rgb01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(torch.cat([self.srm(rgb01), self.bayar(rgb01)], dim=1))
        n2 = self.down2(x)
        return n2, self.down4(n2)


@register_localizer("mobilenet-unet")
class MobileNetUNetLocalizer(Localizer):
    """ImageNet-pretrained MobileNetV2 encoder (trainable) + noise stream + U-Net decoder -> mask logits.

    Args:
        weights: path to the official ``mobilenet_v2_1.0_224_quant.tflite``; ``"auto"`` looks it up with
            :func:`default_mobilenet_weights`; ``None`` leaves the encoder randomly initialised, which is what
            :func:`~ansm.models.registry.load_localizer` wants (our checkpoints hold the encoder tensors, so the
            path is never stored in ``config``).
        width: decoder base width (channels at stride 2; 2x at 4 and 8, 4x at 16 and 32).
        noise_stream: add the SRM/Bayar noise stream, fused at strides 4 and 2.

    Tappable layers: ``encoder.stem``, ``encoder.blocks.0`` ... ``encoder.blocks.16``, ``noise.*``, ``lateral``,
    ``up16``, ``context``, ``up8``, ``up4``, ``up2``, ``head``. Default FFA taps: ``encoder.blocks.5`` (stride 8,
    the last 32-channel block), ``context`` (stride 16, decoder after the image-wide comparison) and ``up4``
    (stride 4, where RGB and noise features meet).
    """

    name = "mobilenet-unet"
    input_cfg = InputConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), multiple=32)
    default_taps = ("encoder.blocks.5", "context", "up4")

    def __init__(self, weights: str | os.PathLike | None = None, width: int = 32, noise_stream: bool = True) -> None:
        if int(width) < 8:
            raise ConfigError(f"width must be >= 8, got {width}")
        super().__init__(width=int(width), noise_stream=bool(noise_stream))
        w = int(width)
        self.encoder = MobileNetV2Encoder()
        self.register_buffer("backbone_pretrained", torch.zeros((), dtype=torch.uint8))
        if weights is not None:
            self.load_backbone(default_mobilenet_weights() if str(weights) == "auto" else weights)
        self.noise = NoiseStream(16) if noise_stream else None
        n2, n4 = (16, 32) if noise_stream else (0, 0)
        c2, c4, c8, c16, c32 = FEATURE_CHANNELS
        self.lateral = ConvNormAct(c32, 4 * w, kernel=1)
        self.up16 = UpBlock(4 * w, c16, 4 * w)
        self.context = ContextCompare(4 * w)
        self.up8 = UpBlock(4 * w, c8, 2 * w)
        self.up4 = UpBlock(2 * w, c4 + n4, 2 * w)
        self.up2 = UpBlock(2 * w, c2 + n2, w, depth=1)
        self.head = nn.Conv2d(w, 1, 1)

    def load_backbone(self, path: str | os.PathLike) -> None:
        """Load the official ImageNet weights into the encoder."""
        self.encoder.load_tflite(path)
        self.backbone_pretrained.fill_(1)

    def train(self, mode: bool = True) -> "MobileNetUNetLocalizer":
        super().train(mode)
        if mode and not bool(self.backbone_pretrained):
            warnings.warn(
                "training mobilenet-unet on a randomly initialised encoder; pass weights=PATH (or 'auto') "
                "to start from the ImageNet weights",
                stacklevel=2,
            )
        return self

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        f2, f4, f8, f16, f32 = self.encoder(x)
        if self.noise is not None:
            n2, n4 = self.noise((x + 1) * 0.5)  # SRM/Bayar work on [0, 1] pixels
            f2, f4 = torch.cat([f2, n2], dim=1), torch.cat([f4, n4], dim=1)
        d = self.context(self.up16(self.lateral(f32), f16))
        d = self.up8(d, f8)
        d = self.up4(d, f4)
        d = self.up2(d, f2)
        return F.interpolate(self.head(d), size=x.shape[-2:], mode="bilinear", align_corners=False)


__all__ = [
    "MobileNetV2Encoder",
    "MobileNetV2Classifier",
    "MobileNetUNetLocalizer",
    "InvertedResidual",
    "TFConv2d",
    "default_mobilenet_weights",
    "read_mobilenet_tflite",
]
