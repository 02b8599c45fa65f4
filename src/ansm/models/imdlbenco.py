"""Real IMDLBenCo model-zoo architectures as ansm localizers, and their official checkpoints as data.

IMDLBenCo (``pip install imdlbenco``, imported as ``IMDLBenCo``) is the field's model zoo and benchmark. Its
models take ``forward(image=..., mask=..., ...)`` and return ``{"pred_mask": probabilities, ...}``;
:func:`~ansm.models.adapters.wrap_imdlbenco` brings them to ansm's contract. This module knows, per zoo
model, what the adapter needs (input side, normalisation, zero ground truth, FFA layers) and which
constructor options keep the build **offline**: no zoo constructor here downloads or reads pretrained
backbones, so a model is randomly initialised until an IMDLBenCo checkpoint is loaded into it.

Models (registered as localizers ``imdlbenco:<Name>``, so ``--model imdlbenco:IML_ViT --weights ckpt.pth``
works in every command that takes ``--weights``):

* ``IML_ViT``: ``vit_pretrain_path=None`` (no MAE weights); one square input of ``input_size`` (official
  1024), padded to it as IMDLBenCo does.
* ``Mesorch``: ``conv_pretrain=False`` (else timm downloads ConvNeXt-T), ``seg_pretrain_path=None`` (no
  MiT-B3 file); any side that is a multiple of 32; predicts at a fixed 512 x 512, so its zero masks are 512.
* ``PSCC_Net``: ``pretrain_path=""`` (IMDLBenCo's HRNet skips its ImageNet file when the path is not a file;
  ``None`` crashes ``os.path.isfile``); one square input of ``input_size`` (official 256).
* ``SparseViT``: ``pretrained_path=None`` (no Uniformer file); one square input of ``img_size`` (official
  512). Its sparse attention splits stage 3 (side/16) into windows of ``32 // s`` for each ``s`` of
  ``s_blocks3`` and stage 4 (side/32) into ``16 // s`` for ``s_blocks4``; at sides below 512 pass blocks that
  divide (64: ``s_blocks3=[8, 8, 8, 8], s_blocks4=[8, 8]``). They hold no weights, so official checkpoints load.

Not offered, because their constructors cannot build offline without files we do not have: ``Trufor``
(phase 2 loads Noiseprint++ and MiT-B2 files unconditionally, phase 3 a full checkpoint), ``MVSSNet`` (always
downloads ImageNet ResNet-50 from download.pytorch.org, whatever ``pretrained_base`` says), ``MSCDI_Net``
(asserts a backbone weights path), ``SPAN`` (requires its weight file), ``Cat_Net`` (a config file, and it
reads DCT coefficients and quantisation tables of JPEG files, not pixels, so pixel attacks do not apply).
``MantraNet`` builds, but rewrites its own Bayar-filter weights in place on every forward pass, so it is
never frozen and the same checkpoint gives drifting outputs (~2e-4 apart, call to call).
``ObjectFormer`` builds but is fixed to 224 with 131 M parameters (~4 s per image forward on one CPU core).
Any of them can still be wrapped by hand with :func:`~ansm.models.adapters.wrap_imdlbenco`.

Checkpoints: IMDLBenCo's trainer saves ``{"model": state_dict, "optimizer": ..., "epoch": ..., "args":
argparse.Namespace}`` with ``torch.save``, keys ``module.``-prefixed when trained under DDP.
:func:`read_imdlbenco_checkpoint` reads such a file with ``torch.load(weights_only=True)`` (never full
unpickling), allowing only :class:`argparse.Namespace` beyond tensors and containers, because the trainer
stores its arguments that way. To use one with ``ansm train``/``ansm defend`` (which rebuild the localizer
from a spec without ``--weights``), convert it once into an ansm checkpoint (safetensors + JSON)::

    python -m ansm.models.imdlbenco_convert IML_ViT checkpoint-best.pth --out runs/benco/iml_vit
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ansm.checkpoint import load_state_dict_strict
from ansm.errors import CheckpointError, ConfigError
from ansm.models.adapters import IMDLBenCoLocalizer, set_taps, wrap_imdlbenco
from ansm.models.registry import register_localizer

SPEC_PREFIX = "imdlbenco:"
_DDP_PREFIX = "module."


@dataclass(frozen=True)
class ZooEntry:
    """How to build one IMDLBenCo zoo model offline and wrap it.

    Attributes:
        offline: constructor options that stop it from downloading or reading pretrained backbones.
        size_arg: the constructor option holding the one square input side the model accepts (``None``: the
            model takes any side that is a multiple of ``multiple``).
        official_size: that side in the published checkpoints (the default, so official weights fit).
        multiple: pad the input to a multiple of this (models with ``size_arg`` are padded to the side instead).
        mask_size: side of the zero masks when the model's loss compares against a fixed-size prediction.
        taps: default FFA layers, names inside the IMDLBenCo model; each outputs B x C x h x w feature maps
            (token layers, B x N x C, would make FFA's per-channel softmax meaningless).
    """

    offline: Mapping[str, Any] = field(default_factory=dict)
    size_arg: str | None = None
    official_size: int | None = None
    multiple: int = 1
    mask_size: int | None = None
    taps: tuple[str, ...] = ()


ZOO: dict[str, ZooEntry] = {
    "IML_ViT": ZooEntry(offline={"vit_pretrain_path": None}, size_arg="input_size", official_size=1024,
                        taps=("encoder_net", "featurePyramid_net.simfp_3")),
    "Mesorch": ZooEntry(offline={"seg_pretrain_path": None, "conv_pretrain": False}, multiple=32, mask_size=512,
                        taps=("convnext.stages.1", "upsample.upsamples2")),
    "PSCC_Net": ZooEntry(offline={"pretrain_path": ""}, size_arg="input_size", official_size=256,
                         taps=("FENet.stage2", "FENet.stage3")),
    "SparseViT": ZooEntry(offline={"pretrained_path": None}, size_arg="img_size", official_size=512,
                          taps=("encoder_net.blocks2.7", "encoder_net.blocks3.9")),
}


def imdlbenco_available() -> bool:
    """Whether the ``IMDLBenCo`` package imports here (it is an optional dependency: see the README)."""
    try:
        importlib.import_module("IMDLBenCo")
    except Exception:  # ImportError, or a broken torchvision beside it (OSError/RuntimeError)
        return False
    return True


def _zoo_registry() -> Any:
    try:
        from IMDLBenCo.registry import MODELS  # the import registers the whole model zoo
        importlib.import_module("IMDLBenCo.model_zoo")
    except Exception as exc:
        raise ConfigError(
            f"IMDLBenCo models need the imdlbenco package, which does not import here ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); build the environment with `make benco-env`"
        ) from None
    return MODELS


def build_imdlbenco(name: str, *, size: int | None = None,
                    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
                    taps: Iterable[str] | str | None = None, **model_kwargs: Any) -> IMDLBenCoLocalizer:
    """Build zoo model ``name`` offline, wrap it as a localizer and optionally load an IMDLBenCo checkpoint.

    Args:
        name: a key of :data:`ZOO` (``IML_ViT``, ``Mesorch``, ``PSCC_Net``, ``SparseViT``).
        size: the square input side for models that take only one (IML-ViT, PSCC-Net, SparseViT); defaults to the
            official one so official checkpoints fit. Smaller sides make CPU experiments affordable.
        weights: an IMDLBenCo checkpoint (see :func:`read_imdlbenco_checkpoint`), or the state dict read from
            one, loaded strictly.
        taps: FFA layers (names inside the zoo model) instead of the entry's defaults.
        model_kwargs: further constructor options of the zoo model (stored in checkpoints, so JSON values only).

    The returned localizer is named ``imdlbenco:<name>`` with ``config`` holding ``size`` and
    ``model_kwargs``, so :func:`~ansm.models.registry.save_localizer` writes a checkpoint that
    :func:`~ansm.models.registry.load_localizer` rebuilds by name.
    """
    if name not in ZOO:
        import difflib

        close = difflib.get_close_matches(name, ZOO, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown IMDLBenCo model {name!r}{hint} (offered: {', '.join(ZOO)})")
    entry = ZOO[name]
    kwargs = {**entry.offline, **model_kwargs}
    if entry.size_arg is not None:
        side = int(size) if size is not None else int(entry.official_size or 0)
        if side < 1:
            raise ConfigError(f"{name}: size must be >= 1, got {size}")
        kwargs[entry.size_arg] = side
    elif size is not None:
        raise ConfigError(f"{name} takes any input side (a multiple of {entry.multiple}); drop size")
    else:
        side = None
    if name == "SparseViT":
        _check_sparse_blocks(side, kwargs)
    cls = _zoo_registry().get(name)
    try:
        module = cls(**kwargs)
    except Exception as exc:
        raise ConfigError(f"building IMDLBenCo {name}({kwargs}) failed: {exc.__class__.__name__}: {exc}") from exc
    # pass_mask=True: zoo models compute their loss in forward even where ``mask`` defaults to None (MantraNet does).
    model = wrap_imdlbenco(module, multiple=entry.multiple, input_size=side, mask_size=entry.mask_size,
                           taps=entry.taps, pass_mask=True)
    if taps is not None:
        set_taps(model, taps)
    if weights is not None:
        load_imdlbenco_checkpoint(model, weights)
    model.name = SPEC_PREFIX + name
    model.config = {**({"size": side} if side is not None else {}), **model_kwargs}
    return model.eval()


def _check_sparse_blocks(side: int | None, kwargs: Mapping[str, Any]) -> None:
    """SparseViT's windows must tile its stage-3 and stage-4 maps; IMDLBenCo would only assert at the first forward."""
    assert side is not None
    for stage, div, window, default in ((3, 16, 32, [8, 4, 2, 1]), (4, 32, 16, [2, 1])):
        blocks = list(kwargs.get(f"s_blocks{stage}", default))
        bad = [b for b in blocks if b < 1 or window % b or (side // div) % (window // b)]
        if side % div or bad:
            raise ConfigError(f"SparseViT at side {side}: s_blocks{stage}={blocks} do not tile its stage-{stage} map "
                              f"({side // div} px): each s needs ({side}/{div}) % ({window}//s) == 0 "
                              "(side 64: s_blocks3=[8, 8, 8, 8], s_blocks4=[8, 8])")


def read_imdlbenco_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of an IMDLBenCo checkpoint, ``module.`` prefixes removed.

    Accepts ``{"model": state_dict, ...}`` (what IMDLBenCo's trainer writes), a bare state dict, or a
    ``.safetensors`` file. Loaded with ``torch.load(weights_only=True)``: tensors, containers and
    :class:`argparse.Namespace` (the trainer's ``args``) only; anything else is refused, not executed.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{p}: IMDLBenCo checkpoint not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p))
        except Exception as exc:
            raise CheckpointError(f"{p}: not a readable safetensors file ({exc.__class__.__name__})") from None
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError names the refused global; EOFError/RuntimeError: not a torch file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CheckpointError(f"{p}: cannot be loaded safely with torch.load(weights_only=True) "
                                  f"({exc.__class__.__name__}: {first[:200]})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{p}: expected {{'model': state_dict}} or a state dict of tensors")
    return {(k[len(_DDP_PREFIX):] if k.startswith(_DDP_PREFIX) else k): v for k, v in obj.items()}


def load_imdlbenco_checkpoint(model: IMDLBenCoLocalizer, path: str | os.PathLike | Mapping[str, torch.Tensor],
                              source: str | None = None) -> IMDLBenCoLocalizer:
    """Load an IMDLBenCo checkpoint (a path, or a state dict already read) strictly into the zoo model inside
    ``model`` (the adapter's ``.model``); ``source`` names it in errors."""
    state = dict(path) if isinstance(path, Mapping) else read_imdlbenco_checkpoint(path)
    source = source or (str(path) if not isinstance(path, Mapping) else "checkpoint")
    try:
        load_state_dict_strict(model.model, state, source)
    except CheckpointError as exc:
        size_hint = ""
        if getattr(model, "input_size", None) is not None:
            size_hint = f" (built for side {model.input_size}: a checkpoint trained at another side needs that size)"
        raise CheckpointError(f"{exc}{size_hint}") from None
    return model


def _registered(name: str) -> Any:
    def make(weights: str | os.PathLike | None = None, size: int | None = None, **model_kwargs: Any) -> IMDLBenCoLocalizer:
        if weights is not None and str(weights) == "auto":
            # resolve_localizer passes "auto" when no --weights is given: there is no default file to find,
            # and a silently random zoo model would make every number meaningless.
            raise ConfigError(f"{SPEC_PREFIX}{name} needs --weights CHECKPOINT (an IMDLBenCo .pth); for `ansm train` "
                              f"and `ansm defend` convert it once: python -m ansm.models.imdlbenco_convert {name} "
                              "CHECKPOINT --out runs/benco/model, then pass --model runs/benco/model")
        return build_imdlbenco(name, size=size, weights=weights, **model_kwargs)

    make.__name__ = f"imdlbenco_{name}"
    make.__doc__ = f"IMDLBenCo's {name}, built offline and wrapped (see :mod:`ansm.models.imdlbenco`)."
    return make


for _name in ZOO:
    register_localizer(SPEC_PREFIX + _name)(_registered(_name))


__all__ = ["SPEC_PREFIX", "ZOO", "ZooEntry", "build_imdlbenco", "imdlbenco_available", "load_imdlbenco_checkpoint",
           "read_imdlbenco_checkpoint"]
