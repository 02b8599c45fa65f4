"""Name -> constructor registries (timm's ``register_model`` / IMDLBenCo's ``register_module``).

One :class:`Registry` per concept (localizers, attacks, defenses). Registering a name twice is an
error, and asking for an unknown name raises with the closest matches, so typos surface at once.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, TypeVar

from ansm.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})")
        return self._entries[name]

    def create(self, name: str, **kwargs: object) -> T:
        """Build ``name``; ``None`` kwargs are dropped so CLI defaults never mask the entry's own defaults."""
        return self.get(name)(**{k: v for k, v in kwargs.items() if v is not None})

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._entries
