"""Small helpers shared across the package: seeding, atomic writes, parsing user numbers, devices."""

from __future__ import annotations

import contextlib
import fractions
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ansm.errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch from one integer (the CLI's ``--seed``)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of integers (e.g. ``(seed, step, rank)``): every random draw of a run is a
    function of where it happens, so a resumed or re-run job draws exactly the same numbers."""
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def parse_eps(value: float | str) -> float:
    """Parse a budget written as a float or a fraction such as ``"8/255"`` (the usual way to write it)."""
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        text = str(value).strip()
        try:
            out = float(fractions.Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError) as exc:
            raise ConfigError(f"cannot read budget {value!r}: write a number such as 0.03 or 8/255") from exc
    if not np.isfinite(out) or out < 0:
        raise ConfigError(f"budget must be a finite number >= 0, got {value!r}")
    return out


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}") from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A process killed mid-write leaves at most a hidden ``.tmp`` file, never a truncated output,
    which is what makes resumable jobs safe ("the file exists" means "the file is complete").
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
