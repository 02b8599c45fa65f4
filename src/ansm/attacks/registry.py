"""Attack registry and factory: ``create_attack("pgd", model, eps="8/255")``, ``list_attacks()``."""

from __future__ import annotations

import inspect
from typing import Any

from ansm.attacks.base import Attack, Model
from ansm.errors import ConfigError
from ansm.registry import Registry

ATTACKS: Registry[Attack] = Registry("attack")
register_attack = ATTACKS.register


def list_attacks(pattern: str = "*") -> list[str]:
    """Registered attack names matching a shell-style pattern."""
    return ATTACKS.names(pattern)


def create_attack(name: str, model: Model, **kwargs: Any) -> Attack:
    """Build attack ``name`` on ``model``. ``None`` values are dropped (the attack's own default applies);
    a parameter the attack does not take is a :class:`ConfigError` listing the ones it does."""
    cls = ATTACKS.get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    accepted = [p for p in inspect.signature(cls).parameters if p != "model"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"attack {name!r} takes no parameter {', '.join(unknown)} (it takes: {', '.join(accepted)})")
    return cls(model=model, **kwargs)
