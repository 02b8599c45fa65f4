"""One way for every command to turn a user's ``--model`` string into a localizer.

``resolve_localizer(spec, weights=None, taps=None)`` accepts, tried in this order:

1. **our checkpoint**: ``runs/x/localizer`` or ``runs/x/localizer.safetensors`` (or ``.json``) written by
   :func:`~ansm.models.registry.save_localizer`; the architecture comes from the JSON beside it.
2. **a registered name** (``twostream``, ``unet-small``, ``noiseprint-head``, ...), plus optional third-party
   ``weights``: if the constructor takes a ``weights`` argument (``noiseprint-head``: the Noiseprint++ backbone)
   the path goes there, and when none is given it receives ``"auto"`` (the model's own default lookup);
   otherwise ``weights`` is a full state dict (``.safetensors``, or ``.pth``/``.pt``/``.th`` read with
   ``torch.load(weights_only=True)``, optionally nested under ``state_dict``/``model``/``network``) loaded
   strictly. Without weights a model such as ``twostream`` is randomly initialised.
3. **user code**: ``package.module:factory`` or ``path/to/file.py:factory``. This *imports and runs your code*
   (like ``uvicorn app:app``), so only pass modules you trust. A module name is looked up on ``sys.path`` as
   Python has it (``PYTHONPATH``, installed packages); the current directory is *not* added, so a stray
   ``helpers.py`` where you happen to run ansm is never imported by accident: write ``./my_models.py:build``
   to name a file there. ``factory`` (a dotted attribute path is fine)
   is called as ``factory()``, or ``factory(weights=PATH)`` when ``weights`` is given. It may return a
   :class:`~ansm.models.base.Localizer` (used as is, e.g. one built with
   :func:`~ansm.models.adapters.wrap_module`) or a plain ``nn.Module``, which is taken to output mask *logits*
   for [0, 1] RGB input and is wrapped with :func:`~ansm.models.adapters.wrap_module`. A model that outputs
   probabilities or needs normalisation should return ``wrap_module(...)`` itself.

``taps`` (layer names) replaces the model's ``default_taps`` after validation. For an nn.Module wrapped here the
names are those inside the user's module. The model is returned in eval mode, on CPU.

**Checkpoints are data.** A spec read from a file (an ANSM checkpoint naming its localizer, a config) is passed
with ``named_in=<that file>``; it may then only be a registered name or a checkpoint path, never user code: a
downloaded checkpoint must not be able to run anything. Importing code happens only for a spec the user typed
(``named_in=None``, the default for the command line and the Python API).

Every failure is one :class:`ConfigError` or :class:`CheckpointError` line that names the spec.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from ansm.checkpoint import checkpoint_paths, load_state_dict_strict, load_third_party_state_dict
from ansm.errors import AnsmError, CheckpointError, ConfigError
from ansm.models.adapters import set_taps, wrap_module
from ansm.models.base import Localizer
from ansm.models.registry import LOCALIZERS, create_localizer, load_localizer

_NESTED_KEYS = ("state_dict", "model", "network", "net")


def resolve_localizer(spec: str | os.PathLike, weights: str | os.PathLike | None = None,
                      taps: Iterable[str] | str | None = None, *,
                      named_in: str | os.PathLike | None = None) -> nn.Module:
    """Build the localizer ``spec`` names (checkpoint path, registered name, or ``module:callable``).

    Args:
        named_in: the file ``spec`` was read from, when it was not typed by the user. Such a spec may only be a
            registered name or a checkpoint path; user code (``module:callable``) is refused, naming the file.
    """
    if named_in is not None and not isinstance(spec, (str, os.PathLike)):
        raise CheckpointError(f"{named_in}: the localizer must be a registered name or a checkpoint path, "
                              f"got {type(spec).__name__}; pass --model")
    text = str(spec).strip()
    if not text:
        raise ConfigError("empty model spec: give a checkpoint path, a registered name or module:callable")
    if weights is not None and not Path(weights).expanduser().is_file():
        raise CheckpointError(f"{weights}: weights file not found")

    st_path, json_path = checkpoint_paths(text)
    if st_path.is_file() or json_path.is_file():
        if weights is not None:
            raise ConfigError(f"{text} is an ansm checkpoint and already holds its weights; drop --weights")
        model = load_localizer(text)
        user_module = False
    elif text in LOCALIZERS:
        model = _from_registry(text, weights)
        user_module = False
    elif ":" in text and not _looks_like_drive(text):
        if named_in is not None:
            raise CheckpointError(
                f"{named_in}: names the localizer {text!r}, which is code to import; a model named in a file may "
                f"only be a registered name or a checkpoint path (to run that code, pass --model {text} yourself)")
        model, user_module = _from_factory(text, weights, taps)
    elif _looks_like_path(text):
        raise CheckpointError(f"{st_path}: checkpoint not found (expected {st_path.name} and {json_path.name})")
    else:
        LOCALIZERS.get(text)  # raises ConfigError "unknown localizer ... did you mean ..."
        raise AssertionError("unreachable")  # pragma: no cover

    if taps is not None and not user_module:
        set_taps(model, taps)
    return model.eval()


def _looks_like_drive(text: str) -> bool:
    """``C:\\runs\\x`` is a Windows path, not ``module:callable``."""
    return len(text) > 2 and text[1] == ":" and text[0].isalpha() and text[2] in "\\/"


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.endswith((".safetensors", ".json")) or text.startswith(".")


def _from_registry(name: str, weights: str | os.PathLike | None) -> nn.Module:
    ctor = LOCALIZERS.get(name)
    if _accepts_weights(ctor):
        return create_localizer(name, weights=str(weights) if weights is not None else "auto")
    model = create_localizer(name)
    if weights is not None:
        load_state_dict_strict(model, _read_state_dict(weights), weights)
    return model


def _accepts_weights(ctor: Callable[..., Any]) -> bool:
    try:
        return "weights" in inspect.signature(ctor).parameters
    except (TypeError, ValueError):
        return False


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A full state dict from safetensors or a weights-only torch file (nested under a usual key or not)."""
    p = Path(path).expanduser()
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{p}: not a readable safetensors file ({exc})") from None
    obj: Any = load_third_party_state_dict(p)
    for key in _NESTED_KEYS:
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{p}: expected a state dict of tensors (optionally under {'/'.join(_NESTED_KEYS)})")
    return obj


def _import_target(module_part: str, spec: str) -> Any:
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise ConfigError(f"{spec}: file {path} not found")
        name = f"_ansm_user_{abs(hash(str(path.resolve())))}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ConfigError(f"{spec}: cannot import {path} as a Python module")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ConfigError(f"{spec}: importing {path} failed ({exc.__class__.__name__}: {exc})") from exc
        return module
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{spec}: cannot import module {module_part!r} ({exc}); the current directory is not "
                          f"searched: name a file (./{module_part.replace('.', '/')}.py:{spec.rpartition(':')[2]}) "
                          "or set PYTHONPATH") from exc
    except Exception as exc:
        raise ConfigError(f"{spec}: importing {module_part!r} failed ({exc.__class__.__name__}: {exc})") from exc


def _from_factory(spec: str, weights: str | os.PathLike | None,
                  taps: Iterable[str] | str | None) -> tuple[nn.Module, bool]:
    module_part, _, attr_path = spec.rpartition(":")
    if not module_part or not attr_path:
        raise ConfigError(f"{spec}: expected module:callable, e.g. my_models:build")
    target: Any = _import_target(module_part, spec)
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise ConfigError(f"{spec}: {module_part!r} has no attribute {attr_path!r}")
        target = getattr(target, attr)
    if not callable(target):
        raise ConfigError(f"{spec}: {attr_path!r} is a {type(target).__name__}, not a callable returning a model")
    try:
        made = target(weights=str(weights)) if weights is not None else target()
    except AnsmError:
        raise
    except TypeError as exc:
        if weights is not None and "weights" in str(exc):
            raise ConfigError(f"{spec}: the factory takes no 'weights' argument; drop --weights") from exc
        raise ConfigError(f"{spec}: calling the factory failed ({exc})") from exc
    except Exception as exc:
        raise ConfigError(f"{spec}: the factory raised {exc.__class__.__name__}: {exc}") from exc
    if isinstance(made, Localizer):
        return made, False
    if isinstance(made, nn.Module):
        return wrap_module(made, "logits", taps=taps), True
    raise ConfigError(f"{spec}: the factory returned {type(made).__name__}, expected an nn.Module")


__all__ = ["resolve_localizer"]
