"""Named evaluation protocols: which datasets, which split, which mask convention, so a number names its setting.

``real`` is the cross-dataset protocol of the IFL field on ``shared/real`` (or a user's folder in the same
layout): train on CASIA v1 ``train``, report CASIA v1 ``test`` and every other dataset whole, each at native
resolution (large images in tiles). Mask conventions differ between datasets, and a localizer that finds only the
pasted region of a copy-move scores lower where the mask also marks the source, so the convention is reported
beside each number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ansm.data.datasets import ForgeryDataset, open_dataset
from ansm.errors import ConfigError, DataError
from ansm.utils import shared_locations


@dataclass(frozen=True)
class ProtocolDataset:
    name: str  # subfolder of the protocol's root
    split: str | None  # None: the whole dataset (never trained on)
    convention: str  # what its masks mark


REAL_PROTOCOL: tuple[ProtocolDataset, ...] = (
    ProtocolDataset("casia1", "test", "spliced/pasted region"),
    ProtocolDataset("coverage", None, "pasted region (copy-move)"),
    ProtocolDataset("imd2020", None, "manipulated region"),
    ProtocolDataset("comofod", None, "source and target (copy-move)"),
    ProtocolDataset("noso", None, "source and target (copy-move)"),
    ProtocolDataset("casia2", None, "spliced/pasted region"),
    ProtocolDataset("columbia", None, "spliced region"),
)
PROTOCOLS: dict[str, tuple[ProtocolDataset, ...]] = {"real": REAL_PROTOCOL}


def default_real_root() -> Path | None:
    """``$ANSM_SHARED/real``, else ``../shared/real`` beside the working directory or the checkout, else None."""
    return next((path for path, _ in shared_locations("real") if path.is_dir()), None)


def protocol_datasets(protocol: str, root: str | os.PathLike | None = None,
                      **kwargs: object) -> tuple[dict[str, ForgeryDataset], dict[str, str]]:
    """``({key: dataset}, {key: mask convention})`` for a named protocol rooted at ``root``.

    Keys are ``casia1:test``-style when a split applies. Datasets of the protocol missing from ``root`` are left
    out (a user may hold only some); a root with none of them is an error naming what was looked for."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    base = Path(root) if root is not None else default_real_root()
    if base is None:
        raise ConfigError(f"protocol {protocol!r}: no dataset root given and no ../shared/real found; pass --data DIR")
    datasets: dict[str, ForgeryDataset] = {}
    conventions: dict[str, str] = {}
    for entry in PROTOCOLS[protocol]:
        folder = base / entry.name
        if not folder.is_dir():
            continue
        key = f"{entry.name}:{entry.split}" if entry.split else entry.name
        datasets[key] = open_dataset(folder, split=entry.split, **kwargs)
        conventions[key] = entry.convention
    if not datasets:
        names = ", ".join(e.name for e in PROTOCOLS[protocol])
        raise DataError(f"{base}: holds none of the {protocol!r} protocol's datasets ({names})")
    return datasets, conventions
