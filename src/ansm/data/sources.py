"""Where authentic photos come from: the photos bundled with scikit-image (offline, the default) or a folder.

Train, val and test splits use *different photos of different scenes*, so "held-out" really means unseen
content, not new crops (or another view) of a scene seen in training. Every choice (recipes, step counts,
checkpoints) is made on ``val``; ``test`` is reported once.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ansm.data.io import IMAGE_EXTENSIONS, read_image, tensor_to_uint8
from ansm.errors import DataError

# Natural photographs shipped inside the scikit-image wheel (no download). Synthetic drawings are left out, and so
# is ``cat`` (the same array as ``chelsea``). The two views of ``stereo_motorcycle`` are one scene, so both sit in
# train. 19 photos of 18 scenes: train 12 photos (11 scenes), val 3, test 4; no photo or scene crosses splits
# (tests/data/test_sources.py checks it).
SKIMAGE_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "chelsea", "rocket", "retina", "immunohistochemistry", "hubble_deep_field", "moon",
              "clock", "grass", "cell", "stereo_motorcycle:0", "stereo_motorcycle:1"),
    "val": ("text", "brick", "coins"),
    "test": ("coffee", "camera", "gravel", "page"),
}
SPLITS = tuple(SKIMAGE_SPLITS)


def _load_skimage(name: str) -> np.ndarray:
    import skimage.data

    base, _, idx = name.partition(":")
    img = getattr(skimage.data, base)()
    if isinstance(img, tuple):
        img = img[int(idx or 0)]
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64) / max(float(img.max()), 1e-8), 0, 1) * 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


@functools.lru_cache(maxsize=4)
def skimage_photos(split: str) -> tuple[np.ndarray, ...]:
    """The bundled photos of one split, as HxWx3 uint8 arrays."""
    names = SKIMAGE_SPLITS.get(split)
    if names is None:
        raise DataError(f"unknown split {split!r} (use one of {', '.join(SPLITS)})")
    return tuple(_load_skimage(n) for n in names)


@functools.lru_cache(maxsize=4)
def folder_photos(folder: str, split: str) -> tuple[np.ndarray, ...]:
    """Photos from a user folder, split deterministically by sorted file name: of every 5 files the first is
    test, the second val, the other three train. A folder cannot tell us which photos show one scene: keep a
    scene's photos in one split yourself (e.g. one folder per split) if that matters."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (use one of {', '.join(SPLITS)})")
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: authentic image folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if len(files) < 3:
        raise DataError(f"{root}: need at least 3 images (one per split), found {len(files)}")
    slot = {"test": (0,), "val": (1,), "train": (2, 3, 4)}[split]
    chosen = [f for i, f in enumerate(files) if i % 5 in slot]
    return tuple(tensor_to_uint8(read_image(f)) for f in chosen)


def photos(source: str | os.PathLike | None, split: str) -> tuple[np.ndarray, ...]:
    """``None`` or ``"skimage"``: the bundled photos; anything else: a folder of authentic images."""
    if source is None or str(source) == "skimage":
        return skimage_photos(split)
    return folder_photos(str(Path(source).resolve()), split)
