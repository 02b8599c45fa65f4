"""Run per-pixel models over large images in overlapping tiles, so peak memory follows the tile, not the image.

A localizer's activations cost about 0.8-1 GB per megapixel on a CPU (~10-13 GB for a 12 MP photo in one
forward pass). Cutting the image into tiles of ``tile`` x ``tile`` pixels (default 512) that overlap by
``overlap`` pixels (default 64; a quarter of tiles under 256 px), running the model on each tile and keeping
only each tile's *centre* (the overlap is cut at its middle, rounded down to the alignment below, so every kept
pixel has ``overlap // 2`` = 32 px, less at most ``align - 1``, of real context on each side that is not an
image border) bounds the model's memory by one tile. What remains proportional to the image is the image
itself and the per-pixel outputs (a few bytes per pixel and channel), not the network's activations.

Why centre-crop stitching rather than blending with a smooth window: for a fully convolutional model whose
receptive field radius is at most ``overlap // 2`` (ANSM with its default dilations: 13 px), every kept pixel
sees exactly the context it would see in the whole image, so the stitched output *equals* the untiled output up to float
summation order; blending would mix in pixels computed near tile edges, where context is missing. Models with
image-wide statistics (the built-in localizers' GroupNorm and the two-stream's global-context mean) cannot be
tiled exactly by any scheme: each tile normalises with its own statistics. Their tiled predictions are close
to, not equal to, the untiled ones (measured in ``tests/test_tiling.py``); that is the price of bounded memory.

An image no larger than one tile is run whole, so small images give exactly the untiled result.

Tile starts are multiples of ``align``: the model's padding multiple (a localizer pads its input to a multiple
of ``input_cfg.multiple``; with aligned starts, a tile at the image border is padded exactly as the whole image
would be) times its output stride. A model may return its output at input resolution or at an integer
stride ``k`` (``H / k`` x ``W / k``, e.g. a head at 1/4 resolution); the stride is read from the first tile and
the stitched output has the model's resolution.

The attack counterpart, :func:`tiled_attack`, attacks each tile on its own (a bounded-memory attacker), keeps
each tile's centre of the adversarial image, then projects the stitched image onto the attack's budget ball
(an L2 budget is over the whole image, so per-tile L2 perturbations are scaled down together if they exceed it).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from ansm.errors import ConfigError

DEFAULT_TILE = 512
"""Tile side in pixels: ~0.26 MP, about 0.3 GB of localizer activations on a CPU."""
DEFAULT_OVERLAP = 64
"""Overlap between neighbouring tiles: the kept centres leave ~32 px of context on each inner side."""
MIN_TILE = 64
"""Smaller tiles would be mostly overlap (and below the localizers' coarsest feature map)."""
AUTO_TILE_PIXELS = 1024 * 1024
"""Images with more pixels than this (1 MP, ~1 GB untiled) are tiled unless the user turns tiling off."""


def default_overlap(tile: int) -> int:
    """``DEFAULT_OVERLAP``, or a quarter of the tile for tiles under 256 px (so small tiles still advance)."""
    return min(DEFAULT_OVERLAP, tile // 4)


def check_tile(tile: int | None, option: str = "--tile") -> int | None:
    """Validate a user's tile size: ``None`` (automatic), ``0`` (off) or an integer >= ``MIN_TILE``."""
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, int) or (tile != 0 and tile < MIN_TILE):
        raise ConfigError(f"{option} must be 0 (no tiling) or a tile side >= {MIN_TILE} pixels, got {tile!r}")
    return tile


def resolve_tile(tile: int | None, height: int, width: int) -> int | None:
    """The tile side to use for an ``height`` x ``width`` image, or ``None`` to run it whole.

    ``tile=None`` is automatic: ``DEFAULT_TILE`` above ``AUTO_TILE_PIXELS`` pixels, whole below; ``0`` is never;
    ``N`` tiles whenever a side exceeds ``N``."""
    check_tile(tile, "tile")
    if tile == 0:
        return None
    if tile is None:
        return DEFAULT_TILE if height * width > AUTO_TILE_PIXELS else None
    return tile if max(height, width) > tile else None


def model_align(*models: Any) -> int:
    """The least common multiple of the padding multiples of ``models`` (``input_cfg.multiple``, 1 if absent)."""
    align = 1
    for m in models:
        cfg = getattr(m, "input_cfg", None)
        align = math.lcm(align, int(getattr(cfg, "multiple", 1) or 1))
    return align


def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    """Cut one axis of ``length`` pixels into tiles: ``(start, end, keep_start, keep_end)`` per tile.

    Starts and cuts are multiples of ``align``; every tile but the last has ``tile`` pixels (rounded down to
    ``align``), the last ends at ``length`` (up to ``tile + align - 1`` pixels). Kept ranges partition
    ``[0, length)``; neighbouring tiles overlap by at least ``overlap`` pixels and are cut at the middle."""
    tile = max(align, tile - tile % align)
    if length <= tile:
        return [(0, length, 0, length)]
    step = tile - overlap
    step -= step % align
    if step < align:
        raise ConfigError(f"tile overlap {overlap} leaves no step for tiles of {tile} px "
                          f"(need overlap < tile - {align})")
    starts = [0]
    while starts[-1] + tile < length:
        nxt = starts[-1] + step
        last = (length - tile) // align * align
        if nxt >= last:  # the final tile: as late as alignment allows, and ending at the image border
            if last > starts[-1]:
                starts.append(last)
            break
        starts.append(nxt)
    ends = [s + tile for s in starts[:-1]] + [length]
    cuts = [0]
    for i in range(1, len(starts)):
        mid = (starts[i] + ends[i - 1]) // 2
        cuts.append(max(starts[i], min(ends[i - 1], mid // align * align)))
    cuts.append(length)
    return [(starts[i], ends[i], cuts[i], cuts[i + 1]) for i in range(len(starts))]


def _stride(in_size: int, out_size: int) -> int:
    """The integer stride ``k`` with ``out_size`` = ceil or floor of ``in_size / k``; ConfigError otherwise."""
    k = max(1, round(in_size / max(out_size, 1)))
    if out_size < 1 or out_size not in (-(-in_size // k), in_size // k):
        raise ConfigError(f"tiled model: output side {out_size} for input side {in_size} is not an integer stride "
                          "(tiling needs the output at input resolution or at 1/k of it)")
    return k


@torch.no_grad()
def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *, tile: int = DEFAULT_TILE,
                overlap: int | None = None, align: int = 1) -> torch.Tensor:
    """``fn(images)`` computed tile by tile (see the module docstring); gradients are off.

    Args:
        fn: per-pixel model ``B x C x H x W -> B x C' x H/k x W/k`` (a localizer, ANSM, or ANSM then localizer).
        images: the batch; every tile holds all of its images, so pass one image for the tightest bound.
        tile, overlap: tile side and overlap in pixels (overlap default: :func:`default_overlap`).
        align: tile starts are multiples of this (see :func:`model_align`); the output stride is added to it.
    """
    if images.dim() != 4:
        raise ConfigError(f"tiled_apply: expected B x C x H x W images, got {tuple(images.shape)}")
    overlap = default_overlap(tile) if overlap is None else overlap
    if overlap < 0 or overlap >= tile:
        raise ConfigError(f"tile overlap must be in [0, tile), got {overlap} for tile {tile}")
    h, w = images.shape[-2:]
    t = max(align, tile - tile % align)
    first = fn(images[..., : min(t, h), : min(t, w)])
    if h <= t and w <= t:
        return first
    k = _stride(min(t, h), first.shape[-2])
    if _stride(min(t, w), first.shape[-1]) != k:
        raise ConfigError(f"tiled model: different strides along height and width ({tuple(first.shape)} "
                          f"for a {min(t, h)}x{min(t, w)} tile)")
    align = math.lcm(align, k)
    rows, cols = tile_spans(h, tile, overlap, align), tile_spans(w, tile, overlap, align)
    out = first.new_empty(*first.shape[:2], -(-h // k), -(-w // k))
    out_h = out_w = 0
    for r0, r1, kr0, kr1 in rows:
        for c0, c1, kc0, kc1 in cols:
            if (r0, c0) == (0, 0) and (r1, c1) == (min(t, h), min(t, w)):
                y = first
            else:
                y = fn(images[..., r0:r1, c0:c1])
            # kept rows/cols of this tile, in output pixels; the last tile keeps all it returned
            yr1 = y.shape[-2] if kr1 == h else (kr1 - r0) // k
            yc1 = y.shape[-1] if kc1 == w else (kc1 - c0) // k
            oy, ox = kr0 // k, kc0 // k
            piece = y[..., (kr0 - r0) // k: yr1, (kc0 - c0) // k: yc1]
            out[..., oy: oy + piece.shape[-2], ox: ox + piece.shape[-1]] = piece
            out_h, out_w = max(out_h, oy + piece.shape[-2]), max(out_w, ox + piece.shape[-1])
            del y, piece
    return out[..., :out_h, :out_w]


def tiled_attack(attack: Callable[..., torch.Tensor], images: torch.Tensor, masks: torch.Tensor | None = None, *,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None, tile: int = DEFAULT_TILE,
                 overlap: int | None = None, align: int = 1) -> torch.Tensor:
    """Attack ``images`` tile by tile and stitch the adversarial tiles' centres; then project onto the budget.

    ``attack`` is an :class:`~ansm.attacks.base.Attack` (its model must return logits at input resolution).
    Each tile is attacked with the tile's crop of ``masks``; the generator(s) are consumed tile after tile in a
    fixed order, so a seed gives the same image. The stitched image is projected with ``attack.project`` (when
    it has one): the L-inf budget holds per pixel anyway; an L2 budget, which is over the whole image, is
    enforced on the stitched perturbation."""
    if images.dim() != 4:
        raise ConfigError(f"tiled_attack: expected B x 3 x H x W images, got {tuple(images.shape)}")
    overlap = default_overlap(tile) if overlap is None else overlap
    h, w = images.shape[-2:]
    rows, cols = tile_spans(h, tile, overlap, align), tile_spans(w, tile, overlap, align)
    adv = images.detach().clone()
    for r0, r1, kr0, kr1 in rows:
        for c0, c1, kc0, kc1 in cols:
            m = None if masks is None else masks[..., r0:r1, c0:c1]
            a = attack(images[..., r0:r1, c0:c1], m, generator=generator)
            adv[..., kr0:kr1, kc0:kc1] = a[..., kr0 - r0: kr1 - r0, kc0 - c0: kc1 - c0]
            del a
    project = getattr(attack, "project", None)
    if project is not None and (len(rows) > 1 or len(cols) > 1):
        adv = project(adv, images.detach())
    return adv.clamp(0, 1)
