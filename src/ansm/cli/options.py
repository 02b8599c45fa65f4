"""Command-line options shared by several commands, defined once so their names, help and checks agree.

``ansm evaluate``, ``ansm defend`` and ``ansm attack`` all read images of any size; each takes ``--max-side``
(downscale) and ``--tile`` (bounded-memory tiling, :mod:`ansm.tiling`). Each function returns a fresh
``typer.Option`` to use as a parameter default.
"""

from __future__ import annotations

from typing import Any

import typer

from ansm.tiling import AUTO_TILE_PIXELS, DEFAULT_OVERLAP, DEFAULT_TILE, MIN_TILE, check_tile

TILE_HELP = (f"Tile side for large images, in pixels. Default: automatic (images over {AUTO_TILE_PIXELS / 1e6:.1f} MP "
             f"run in {DEFAULT_TILE} px tiles with {DEFAULT_OVERLAP} px overlap, so memory stays bounded); "
             f"0: no tiling (whole images, about 1 GB per megapixel on a CPU); N >= {MIN_TILE}: tile every image "
             "with a side over N.")


def max_side_option() -> Any:
    """``--max-side``: downscale (keeping the aspect ratio) before anything else runs."""
    return typer.Option(None, "--max-side", help="Downscale images whose longer side exceeds this "
                                                 "(default: native size).")


def tile_option(extra: str = "") -> Any:
    """``--tile``: see :data:`TILE_HELP`; ``extra`` adds what tiling means for this command."""
    return typer.Option(None, "--tile", help=TILE_HELP + (f" {extra}" if extra else ""))


def validate_tile(tile: int | None) -> int | None:
    """Check ``--tile`` before any work: a one-line ``error:`` naming the option otherwise."""
    return check_tile(tile, "--tile")
