"""Checkpoints: tensors in safetensors, everything else in a JSON file beside them.

``save_checkpoint("runs/x/model", tensors, meta)`` writes ``model.safetensors`` and ``model.json``,
each atomically, JSON last, so a JSON file's presence means the pair is complete. Nothing here
unpickles: third-party ``.pth``/``.th`` files go through :func:`load_third_party_state_dict`, which
uses ``torch.load(weights_only=True)`` only.

Training state (optimizer moments, step, RNG) is stored the same way so runs resume exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ansm.errors import CheckpointError
from ansm.utils import atomic_path, read_json, write_json_atomic

T = TypeVar("T")


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``runs/x/model`` or ``runs/x/model.safetensors`` -> (tensor file, JSON file)."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    st_path, json_path = checkpoint_paths(path)
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(st_path) as tmp:
        save_file(flat, str(tmp))
    write_json_atomic(json_path, meta)
    return st_path


def load_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the JSON half of a checkpoint (what it is), without reading the weights."""
    st_path, json_path = checkpoint_paths(path)
    if not json_path.is_file() or not st_path.is_file():
        raise CheckpointError(f"{st_path}: checkpoint not found (expected {st_path.name} and {json_path.name})")
    meta = read_json(json_path, CheckpointError, "checkpoint JSON")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{json_path}: checkpoint JSON must be an object, got {type(meta).__name__}")
    return meta


def build_from_config(ctor: Callable[..., T], config: Any, path: object, what: str | None = None) -> T:
    """``ctor(**config)`` for a config read from a checkpoint's JSON: a config that is not an object, names an
    unknown option or holds a bad value is the checkpoint's fault, so it is one :class:`CheckpointError` naming
    ``path`` rather than a TypeError from deep inside a constructor."""
    from ansm.errors import AnsmError

    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the checkpoint's config must be an object, got {type(config).__name__}")
    try:
        return ctor(**config)
    except AnsmError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's config does not fit {what or getattr(ctor, '__name__', ctor)} "
                              f"({exc.__class__.__name__}: {exc})") from None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    meta = load_checkpoint_meta(path)
    st_path, _ = checkpoint_paths(path)
    try:
        tensors = load_file(str(st_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{st_path}: not a readable safetensors file ({exc})") from None
    return tensors, meta


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: object) -> None:
    """Load ``state`` into ``model``; on any mismatch raise one error listing the offending keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)

    def _few(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if shapes:
        problems.append("shape mismatch: " + _few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes]))
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_third_party_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load an official third-party checkpoint safely (``weights_only=True``, mapped to CPU)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: weights file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise CheckpointError(f"{p}: cannot be loaded safely with weights_only=True ({exc.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def optimizer_to_tensors(opt: torch.optim.Optimizer, prefix: str = "optim.") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into safetensors-storable tensors and JSON-able metadata."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "optim.") -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix):
            pid, k = key[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[k] = v
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    return {"rng.torch": torch.get_rng_state()}


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))


def locate_weights_file(env_var: str, shared_parts: tuple[str, ...], what: str, hint: str) -> Path:
    """Find a third-party weights file the user gave no path for: the one lookup every pretrained backbone uses.

    Order: ``$<env_var>`` (must be a file), then :func:`ansm.utils.shared_locations` (``$ANSM_SHARED/<shared_parts>``,
    ``../shared/<shared_parts>``). Not found: one :class:`~ansm.errors.ConfigError` naming every place looked at,
    then ``hint`` (how to pass the file, and where the official one comes from)."""
    from ansm.errors import ConfigError
    from ansm.utils import shared_locations

    if os.environ.get(env_var):
        explicit = Path(os.environ[env_var]).expanduser()
        if not explicit.is_file():
            raise ConfigError(f"${env_var} points to {explicit}, which is not a file")
        return explicit
    candidates = [path for path, _ in shared_locations(*shared_parts)]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"{what} not found (looked at " + ", ".join(str(c) for c in candidates) + f"); {hint}")
