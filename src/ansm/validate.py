"""Number checks at the boundary, written once: the CLI's options and the config dataclasses use the same rules.

Why a module of its own: a comparison such as ``if lam < 0: raise`` lets NaN through (every comparison with NaN
is false), so ``--mgr-lambda nan`` trained a network of NaNs and wrote it as a checkpoint; and a size of -5 went
on to produce 1x1 images. Each rule here refuses NaN and infinity first, then the range, and raises one
:class:`~ansm.errors.ConfigError` naming the option or field, which the CLI prints as one ``error:`` line.

``None`` always passes (it means "not given: use the default"), so a rule can wrap an optional option directly::

    positive_int(max_side, "--max-side")
    check_fields(self, positive=("lr",), non_negative=("mgr_lambda", "mgr_dice"), fraction=("adv_fraction",))

:func:`check_fields` also refuses a non-finite value in *every* float field of a dataclass (lists and tuples of
floats too), so a field added later is covered without being listed.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterable

from ansm.errors import ConfigError, OutputError


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> Any:
    """``value`` if it is a finite real number inside the range (closed unless ``*_open``), else ConfigError."""
    if value is None:
        return None
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    want = f"a finite number{' ' + ' and '.join(bounds) if bounds else ''}"
    if not _is_number(value) or not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be {want}, got {value!r}")
    v = float(value)
    if low is not None and (v < low or (low_open and v == low)):
        raise ConfigError(f"{name} must be {want}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ConfigError(f"{name} must be {want}, got {value!r}")
    return value


def finite(value: Any, name: str) -> Any:
    """Any finite number (NaN and infinity refused)."""
    return number(value, name)


def positive(value: Any, name: str) -> Any:
    """A finite number > 0: learning rates, budgets that must bite, scales."""
    return number(value, name, low=0, low_open=True)


def non_negative(value: Any, name: str) -> Any:
    """A finite number >= 0: loss weights (0 switches a term off), smoothing constants."""
    return number(value, name, low=0)


def fraction(value: Any, name: str, *, open_low: bool = False) -> Any:
    """A finite number in [0, 1] (or (0, 1] with ``open_low``): shares and probabilities."""
    return number(value, name, low=0, high=1, low_open=open_low)


def integer(value: Any, name: str, minimum: int | None = None) -> Any:
    """An integer (not a bool, not a float) >= ``minimum``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer{f' >= {minimum}' if minimum is not None else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def positive_int(value: Any, name: str) -> Any:
    """An integer >= 1: sizes, counts, steps, batch sizes."""
    return integer(value, name, minimum=1)


def non_negative_int(value: Any, name: str) -> Any:
    """An integer >= 0: step counts where 0 skips a stage."""
    return integer(value, name, minimum=0)


def _floats(value: Any) -> Iterable[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _floats(v)


def check_fields(obj: Any, option: str | None = "--{dashed}", **rules: Iterable[str]) -> None:
    """Validate a config dataclass in its ``__post_init__``: every float field (and float inside a list or tuple
    field) finite, then each named field against its rule, the keyword naming the rule
    (``positive=("lr",), non_negative=("mgr_lambda",)``; see :data:`RULES`). Errors name the field as written in
    Python and, through the ``option`` template (``{name}``, ``{dashed}``; None: none), how the CLI spells it:
    by default the same name with dashes (``mgr_lambda (--mgr-lambda)``), ``"--set {name}"`` for the benchmark."""
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise TypeError(f"check_fields: unknown rule(s) {unknown} (known: {sorted(RULES)})")
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for v in _floats(value):
            if not math.isfinite(v):
                raise ConfigError(f"{_label(f.name, option)} must be finite, got {value!r}")
    for rule, names in rules.items():
        for name in names:
            RULES[rule](getattr(obj, name), _label(name, option))


def _label(field_name: str, option: str | None) -> str:
    if option is None:
        return field_name
    spelled = option.format(name=field_name, dashed=field_name.replace("_", "-"))
    return field_name if spelled == field_name else f"{field_name} ({spelled})"


RULES = {"positive": positive, "non_negative": non_negative, "fraction": fraction, "positive_int": positive_int,
         "non_negative_int": non_negative_int, "finite": finite}


def output_file(path: str | os.PathLike | None, option: str) -> Path | None:
    """An output *file* the user named, checked before any work: not a folder, and no file where its folder
    should be. (Write permission and free space are found out by writing; the writer names the path then.)"""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{option} {p}: is a folder, give a file path")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{option} {p}: {parent} is a file, not a folder")
            break
    return p


def output_dir(path: str | os.PathLike | None, option: str) -> Path | None:
    """An output *folder* the user named, checked before any work: not an existing file (nor under one)."""
    if path is None:
        return None
    p = Path(path)
    for candidate in (p, *p.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is a file" if candidate == p else f"is under {candidate}, which is a file"
                raise OutputError(f"{option} {p}: {what}; give a folder path")
            break
    return p


__all__ = ["check_fields", "finite", "fraction", "integer", "non_negative", "non_negative_int", "number",
           "output_dir", "output_file", "positive", "positive_int"]
