"""Make any ``nn.Module`` an ansm localizer, so it can be attacked, defended and evaluated.

ansm's contract (:class:`~ansm.models.base.Localizer`): RGB in [0, 1], any size, in; mask **logits**
B x 1 x H x W at input resolution, out; normalisation inside ``forward``; ``default_taps`` names layers for
FFA. Two adapters bring a foreign model to that contract:

* :func:`wrap_module` / :class:`ModuleLocalizer`: ``module(x) -> mask logits or probabilities`` (a tensor, the
  first element of a tuple, or one key of a dict).
* :func:`wrap_imdlbenco` / :class:`IMDLBenCoLocalizer`: IMDLBenCo-style models whose
  ``forward(image=..., mask=..., **kw)`` returns a dict with ``"pred_mask"`` probabilities. Zoo models
  compute their training loss inside ``forward`` and so *require* ground-truth inputs even at inference
  (``mask``, ``edge_mask``, ``label``); the adapter feeds all-zero ones (their loss is computed and ignored).
  Some zoo models also only accept one square input side (IML-ViT, PSCC-Net, SparseViT): ``input_size``
  pads to it the way IMDLBenCo does. Real zoo architectures by name: :mod:`ansm.models.imdlbenco`.

Why logits: attacks maximise a BCE-with-logits loss and the defense trains with one. Both are numerically
stable only on logits, and a loss computed on saturated probabilities has vanishing gradients that make a
model look more robust than it is. Probabilities are therefore converted with
``logit(clamp(p, 1e-6, 1 - 1e-6))``, the same way everywhere, so ``sigmoid(output)`` gives back ``p`` up to the
clamp. Where a model itself saturates (``p`` below 1e-6 or above 1 - 1e-6) the clamp has zero gradient: expose
your model's logits (``output="logits"``) if you can.

Models that predict at a lower resolution (say H/4) are resized to the input resolution **bilinearly on the
logits** (``align_corners=False``), never on probabilities, so the output stays a proper logit map.

Layer names for taps are names inside *your* module, as ``your_module.named_modules()`` lists them
(``"encoder.layer2"``). The adapter holds your module as ``.model``, so its ``default_taps`` are the same
names prefixed with ``"model."``, which is what :class:`~ansm.models.taps.FeatureTaps` resolves on the adapter.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Literal, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ansm.errors import ConfigError
from ansm.models.base import InputConfig, Localizer
from ansm.models.taps import resolve_layers

OutputKind = Literal["logits", "probs"]
PROB_CLAMP = 1e-6
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PREFIX = "model."


def probs_to_logits(p: torch.Tensor, eps: float = PROB_CLAMP) -> torch.Tensor:
    """``logit(clamp(p, eps, 1 - eps))``: the one conversion ansm uses for models that output probabilities."""
    return torch.logit(p.clamp(eps, 1.0 - eps))


def _triple(value: Sequence[float] | float, what: str) -> tuple[float, float, float]:
    vals = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(vals) != 3:
        raise ConfigError(f"{what} needs 3 values (one per RGB channel), got {len(vals)}")
    return vals[0], vals[1], vals[2]


def _input_cfg(mean: Sequence[float] | float, std: Sequence[float] | float, multiple: int) -> InputConfig:
    m, s = _triple(mean, "mean"), _triple(std, "std")
    if any(v <= 0 for v in s):
        raise ConfigError(f"std must be > 0 per channel, got {s}")
    if multiple < 1:
        raise ConfigError(f"multiple must be >= 1, got {multiple}")
    return InputConfig(mean=m, std=s, multiple=int(multiple))


def _validate_taps(module: nn.Module, taps: Iterable[str] | str | None) -> tuple[str, ...]:
    """Names inside ``module`` -> names inside the adapter (``model.`` prefix); unknown names raise.

    A name already written with the ``model.`` prefix is accepted too, unless it is also a real name inside
    ``module`` (then the user's own naming wins).
    """
    if taps is None:
        return ()
    names = [taps] if isinstance(taps, str) else list(taps)
    own = dict(module.named_modules())
    inner = [n[len(_PREFIX):] if n not in own and n.startswith(_PREFIX) else n for n in names]
    if inner:
        resolve_layers(module, inner)  # ConfigError with close matches on a miss
    return tuple(_PREFIX + n for n in inner)


def _to_mask_tensor(out: Any, key: str | None, who: str) -> torch.Tensor:
    """Pick the mask prediction out of whatever the wrapped module returned."""
    if isinstance(out, Mapping):
        if key is None:
            raise ConfigError(f"{who} returned a dict (keys {sorted(out)}); pass output_key= to pick the mask")
        if key not in out:
            raise ConfigError(f"{who} returned a dict without {key!r} (keys: {', '.join(sorted(map(str, out)))})")
        out = out[key]
    elif isinstance(out, (tuple, list)):
        if not out:
            raise ConfigError(f"{who} returned an empty {type(out).__name__}")
        out = out[0]
    if not torch.is_tensor(out):
        raise ConfigError(f"{who} returned {type(out).__name__}, expected a mask tensor")
    if out.dim() == 3:
        out = out.unsqueeze(1)
    if out.dim() != 4 or out.shape[1] != 1:
        raise ConfigError(
            f"{who} returned shape {tuple(out.shape)}; expected B x 1 x h x w (or B x h x w) mask scores. "
            "For a 2-class output, return the 'tampered' channel (or its logit difference) from a small wrapper."
        )
    return out


class _AdapterBase(Localizer):
    """Shared by both adapters: per-instance input config, output conversion, resizing, taps."""

    name = "adapter"

    def __init__(self, module: nn.Module, output: OutputKind, input_cfg: InputConfig, taps: tuple[str, ...],
                 **config: Any) -> None:
        if not isinstance(module, nn.Module):
            raise ConfigError(f"expected an nn.Module to wrap, got {type(module).__name__}")
        if output not in ("logits", "probs"):
            raise ConfigError(f"output must be 'logits' or 'probs', got {output!r}")
        # Instance attributes shadow the class defaults *before* Localizer.__init__ builds the mean/std buffers.
        self.input_cfg = input_cfg
        super().__init__(output=output, mean=list(input_cfg.mean), std=list(input_cfg.std),
                         multiple=input_cfg.multiple, taps=list(taps), **config)
        self.model = module
        self.output = output
        self.default_taps = taps
        self.name = f"adapter:{type(module).__name__}"

    def _call(self, x: torch.Tensor) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _key(self) -> str | None:
        return None

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        pred = _to_mask_tensor(self._call(x), self._key(), type(self.model).__name__)
        if pred.shape[0] != x.shape[0]:
            raise ConfigError(f"{type(self.model).__name__} returned batch {pred.shape[0]} for input batch {x.shape[0]}")
        logits = probs_to_logits(pred) if self.output == "probs" else pred
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def extra_repr(self) -> str:
        return f"output={self.output}, input_cfg={self.input_cfg}, default_taps={self.default_taps}"


class ModuleLocalizer(_AdapterBase):
    """A localizer around ``module(x)``; see :func:`wrap_module`."""

    def __init__(self, module: nn.Module, output: OutputKind = "logits",
                 mean: Sequence[float] | float = 0.0, std: Sequence[float] | float = 1.0, multiple: int = 1,
                 taps: Iterable[str] | str | None = None, output_key: str | None = None) -> None:
        super().__init__(module, output, _input_cfg(mean, std, multiple), _validate_taps(module, taps),
                         output_key=output_key)
        self.output_key = output_key

    def _key(self) -> str | None:
        return self.output_key

    def _call(self, x: torch.Tensor) -> Any:
        return self.model(x)


# Ground-truth inputs IMDLBenCo zoo models take in ``forward`` (for their loss) and what the adapter feeds them.
_ZERO_MASK_ARGS = ("mask", "edge_mask")
_ZERO_LABEL_ARGS = ("label",)


def _size2(value: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    vals = [int(value)] * 2 if isinstance(value, int) else [int(v) for v in value]
    if len(vals) != 2 or min(vals) < 1:
        raise ConfigError(f"{what} must be a positive side or (height, width), got {value!r}")
    return vals[0], vals[1]


class IMDLBenCoLocalizer(_AdapterBase):
    """A localizer around an IMDLBenCo-style model; see :func:`wrap_imdlbenco`."""

    def __init__(self, module: nn.Module, mean: Sequence[float] | float = IMAGENET_MEAN,
                 std: Sequence[float] | float = IMAGENET_STD, multiple: int = 1,
                 taps: Iterable[str] | str | None = None, pred_key: str = "pred_mask", output: OutputKind = "probs",
                 pass_mask: bool | None = None, forward_kwargs: Mapping[str, Any] | None = None,
                 input_size: int | None = None, mask_size: int | Sequence[int] | None = None) -> None:
        params = inspect.signature(module.forward).parameters
        takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if "image" not in params and not takes_var_kw:
            raise ConfigError(f"{type(module).__name__}.forward takes no 'image' argument; use wrap_module instead")
        fixed = dict(forward_kwargs or {})
        required = [n for n, p in params.items() if n != "image" and p.default is inspect.Parameter.empty
                    and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if pass_mask is None:
            # IMDLBenCo models compute their loss in forward and so often *require* a mask even at inference.
            pass_mask = "mask" in required
        zero_masks = [n for n in required if n in _ZERO_MASK_ARGS and n != "mask" and n not in fixed]
        if pass_mask:
            zero_masks.insert(0, "mask")
        zero_labels = [n for n in required if n in _ZERO_LABEL_ARGS and n not in fixed]
        unknown = [n for n in required if n not in _ZERO_MASK_ARGS + _ZERO_LABEL_ARGS and n not in fixed]
        if unknown:
            raise ConfigError(f"{type(module).__name__}.forward requires {', '.join(unknown)}; "
                              "pass them with forward_kwargs=")
        if input_size is not None and int(input_size) < 1:
            raise ConfigError(f"input_size must be >= 1, got {input_size}")
        size2 = _size2(mask_size, "mask_size")
        super().__init__(module, output, _input_cfg(mean, std, multiple), _validate_taps(module, taps),
                         pred_key=pred_key, pass_mask=bool(pass_mask),
                         input_size=None if input_size is None else int(input_size),
                         mask_size=None if size2 is None else list(size2))
        self.pred_key = pred_key
        self.pass_mask = bool(pass_mask)
        self.forward_kwargs = fixed
        self.zero_masks = tuple(zero_masks)
        self.zero_labels = tuple(zero_labels)
        self.input_size = None if input_size is None else int(input_size)
        self.mask_size = size2

    def _key(self) -> str | None:
        return self.pred_key

    def _call(self, x: torch.Tensor) -> Any:
        kwargs = dict(self.forward_kwargs)
        # All-zero ground truth: the model's own loss term is meaningless but harmless; we only read pred_key.
        mask_hw = self.mask_size or tuple(x.shape[-2:])
        for name in self.zero_masks:
            kwargs.setdefault(name, x.new_zeros(x.shape[0], 1, *mask_hw))
        for name in self.zero_labels:
            kwargs.setdefault(name, x.new_zeros(x.shape[0]))
        return self.model(image=x, **kwargs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """With ``input_size``: fit the image into one ``input_size`` square, as IMDLBenCo's padding mode does.

        An image with a longer side above ``input_size`` is first downscaled (bilinear, aspect kept); then
        it is zero-padded bottom/right in [0, 1] pixel space (black, as IMDLBenCo pads before normalising).
        The logits are cropped to the image and resized back to the input resolution, so the contract holds.
        """
        if self.input_size is None:
            return super().forward(images)
        h, w = images.shape[-2:]
        side = self.input_size
        x = images
        if max(h, w) > side:
            scale = side / max(h, w)
            x = F.interpolate(images, size=(max(1, round(h * scale)), max(1, round(w * scale))),
                              mode="bilinear", align_corners=False)
        hh, ww = x.shape[-2:]
        x = F.pad(x, (0, side - ww, 0, side - hh), value=0.0)
        logits = self.forward_normalized((x - self._mean) / self._std)[..., :hh, :ww]
        if (hh, ww) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits


def wrap_module(module: nn.Module, output: OutputKind = "logits", *, mean: Sequence[float] | float = 0.0,
                std: Sequence[float] | float = 1.0, multiple: int = 1, taps: Iterable[str] | str | None = None,
                output_key: str | None = None) -> ModuleLocalizer:
    """Adapt ``module`` (``module(x) -> mask logits or probabilities``) to the localizer contract.

    Args:
        module: takes a normalised B x 3 x H x W batch; returns B x 1 x h x w (or B x h x w) scores, or a tuple
            whose first element is that, or a dict (name the entry with ``output_key``).
        output: ``"logits"`` or ``"probs"`` (converted with ``logit(clamp(p, 1e-6, 1 - 1e-6))``).
        mean, std: the normalisation your model was trained with, applied inside the adapter to [0, 1] input.
        multiple: pad the input (reflect) to a multiple of this; the output is cropped back.
        taps: layer names inside ``module`` for FFA; validated now, unknown names raise with close matches.
        output_key: which dict entry holds the mask when ``module`` returns a dict.

    Predictions at lower resolution are resized bilinearly on logits to the input size.
    """
    return ModuleLocalizer(module, output=output, mean=mean, std=std, multiple=multiple, taps=taps,
                           output_key=output_key)


def wrap_imdlbenco(module: nn.Module, *, mean: Sequence[float] | float = IMAGENET_MEAN,
                   std: Sequence[float] | float = IMAGENET_STD, multiple: int = 1,
                   taps: Iterable[str] | str | None = None, pred_key: str = "pred_mask", output: OutputKind = "probs",
                   pass_mask: bool | None = None, forward_kwargs: Mapping[str, Any] | None = None,
                   input_size: int | None = None, mask_size: int | Sequence[int] | None = None) -> IMDLBenCoLocalizer:
    """Adapt an IMDLBenCo-style model: ``forward(image=..., mask=..., **kw) -> {"pred_mask": probs, ...}``.

    Args:
        mean, std: IMDLBenCo's transforms normalise with ImageNet statistics, hence the defaults; the adapter
            applies them to ansm's [0, 1] images.
        multiple: many IMDLBenCo models need sides divisible by 16 or 32; the adapter pads and crops back.
        pred_key: dict entry holding the mask (IMDLBenCo: ``"pred_mask"``, probabilities after sigmoid).
        output: set ``"logits"`` if your model's ``pred_key`` holds logits.
        pass_mask: give the model an all-zero ``mask=`` (B x 1 x H x W). ``None``: only when ``forward`` has a
            required ``mask`` parameter. Other *required* ground-truth parameters are fed zeros as well:
            ``edge_mask`` (a zero mask) and ``label`` (zeros of shape B); any other required parameter must come
            from ``forward_kwargs``, or wrapping raises.
        forward_kwargs: extra keyword arguments passed on every call (e.g. ``label``, ``edge_mask``).
        input_size: the one square side the model accepts (IML-ViT: its ``input_size``, 1024 officially);
            images are downscaled to fit if larger and zero-padded to it (see :meth:`IMDLBenCoLocalizer.forward`).
        mask_size: side (or height, width) of the zero masks, for models whose loss compares against a
            prediction of fixed size whatever the input (Mesorch: 512); default: the model's input size.
        taps: layer names inside ``module`` (validated now).
    """
    return IMDLBenCoLocalizer(module, mean=mean, std=std, multiple=multiple, taps=taps, pred_key=pred_key,
                              output=output, pass_mask=pass_mask, forward_kwargs=forward_kwargs,
                              input_size=input_size, mask_size=mask_size)


def set_taps(model: nn.Module, taps: Iterable[str] | str) -> nn.Module:
    """Override ``model.default_taps`` after checking every name exists (for localizers we did not wrap)."""
    names = (taps,) if isinstance(taps, str) else tuple(taps)
    if isinstance(model, _AdapterBase):
        model.default_taps = _validate_taps(model.model, names)
    else:
        resolve_layers(model, names)
        model.default_taps = names
    return model


__all__ = [
    "IMDLBenCoLocalizer",
    "ModuleLocalizer",
    "PROB_CLAMP",
    "probs_to_logits",
    "set_taps",
    "wrap_imdlbenco",
    "wrap_module",
]
