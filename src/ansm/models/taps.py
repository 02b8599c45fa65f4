"""Read intermediate features of any ``nn.Module`` by layer name (forward hooks).

FFA needs the outputs of named layers of the frozen localizer, with gradients flowing back to the
input. :class:`FeatureTaps` validates the names once (an unknown name lists close matches) and then
records the named outputs on every forward pass while it is active.
"""

from __future__ import annotations

import difflib
from typing import Iterable

import torch
import torch.nn as nn

from ansm.errors import ConfigError


def resolve_layers(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """Map each name to its submodule; an unknown name raises with the closest module names."""
    modules = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.3)
            hint = f" Close matches: {', '.join(close)}." if close else ""
            raise ConfigError(f"model has no layer named {name!r}.{hint}")
        out[name] = modules[name]
    if not out:
        raise ConfigError("no layers given to tap")
    return out


class FeatureTaps:
    """Context manager recording the outputs of named layers.

    >>> with FeatureTaps(model, ["enc2", "enc3"]) as taps:
    ...     logits = model(x)
    ...     feats = taps.features          # {"enc2": tensor, "enc3": tensor}
    """

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.layers = resolve_layers(model, list(names))
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            if isinstance(output, dict):
                output = next(iter(output.values()))
            self.features[name] = output

        return record

    def __enter__(self) -> "FeatureTaps":
        self.features = {}
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def extract_features(model: nn.Module, images: torch.Tensor, names: Iterable[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model(images)`` once and return (output, {layer name: feature})."""
    with FeatureTaps(model, names) as taps:
        out = model(images)
    return out, dict(taps.features)
