"""Localizer registry and factory: ``create_localizer("twostream")``, ``list_localizers("*")``,
``load_localizer(checkpoint)``, ``save_localizer(model, path)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from ansm.checkpoint import build_from_config, load_checkpoint, load_state_dict_strict, save_checkpoint
from ansm.errors import CheckpointError
from ansm.registry import Registry

LOCALIZERS: Registry[nn.Module] = Registry("localizer")
register_localizer = LOCALIZERS.register


def create_localizer(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered localizer by name (random init unless the entry loads weights itself)."""
    return LOCALIZERS.create(name, **kwargs)


def list_localizers(pattern: str = "*") -> list[str]:
    return LOCALIZERS.names(pattern)


def save_localizer(model: nn.Module, path: str | os.PathLike, **extra: Any) -> Path:
    """Save weights (safetensors) and ``{"arch", "config", ...extra}`` (JSON) so it can be rebuilt by name."""
    arch = getattr(model, "name", None)
    if arch not in LOCALIZERS:
        raise CheckpointError(f"cannot save {type(model).__name__}: it is not a registered localizer")
    meta = {"kind": "localizer", "arch": arch, "config": getattr(model, "config", {}), **extra}
    return save_checkpoint(path, model.state_dict(), meta)


def load_localizer(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Rebuild a localizer from ``<path>.json`` and load ``<path>.safetensors`` strictly, in eval mode."""
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "localizer" or "arch" not in meta:
        raise CheckpointError(f"{path}: not a localizer checkpoint (kind={meta.get('kind')!r})")
    if not isinstance(meta["arch"], str):
        raise CheckpointError(f"{path}: arch must be a registered name, got {type(meta['arch']).__name__}")
    # Options added to an architecture after a checkpoint was saved take the value that checkpoint was trained with.
    before = getattr(LOCALIZERS.get(meta["arch"]), "config_before_options", {}) if meta["arch"] in LOCALIZERS else {}
    config = meta.get("config", {})
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the checkpoint's config must be an object, got {type(config).__name__}")
    model = build_from_config(lambda **kw: create_localizer(meta["arch"], **kw), {**before, **config, **overrides}, path,
                              what=f"localizer {meta['arch']!r}")
    load_state_dict_strict(model, tensors, path)
    return model.eval()
