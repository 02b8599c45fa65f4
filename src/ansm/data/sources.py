"""Where authentic photos come from: the photos bundled with scikit-image (offline, the default) or a folder.

Train and test splits use *different photos*, so "held-out" really means unseen content, not just new
crops of the same scenes.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ansm.data.io import IMAGE_EXTENSIONS, read_image, tensor_to_uint8
from ansm.errors import DataError

# Natural photographs shipped inside the scikit-image wheel (no download). Synthetic drawings are left out.
SKIMAGE_TRAIN = (
    "astronaut", "cat", "chelsea", "rocket", "retina", "immunohistochemistry", "hubble_deep_field",
    "moon", "coins", "clock", "grass", "brick", "cell", "stereo_motorcycle:0",
)
SKIMAGE_TEST = ("coffee", "camera", "gravel", "stereo_motorcycle:1", "page")


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
    names = {"train": SKIMAGE_TRAIN, "test": SKIMAGE_TEST}.get(split)
    if names is None:
        raise DataError(f"unknown split {split!r} (use 'train' or 'test')")
    return tuple(_load_skimage(n) for n in names)


@functools.lru_cache(maxsize=4)
def folder_photos(folder: str, split: str, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """Photos from a user folder, split deterministically by sorted file name (every 1/test_fraction-th is test)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: authentic image folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if len(files) < 2:
        raise DataError(f"{root}: need at least 2 images, found {len(files)}")
    period = max(2, round(1 / test_fraction))
    chosen = [f for i, f in enumerate(files) if (i % period == 0) == (split == "test")]
    return tuple(tensor_to_uint8(read_image(f)) for f in chosen)


def photos(source: str | os.PathLike | None, split: str) -> tuple[np.ndarray, ...]:
    """``None`` or ``"skimage"``: the bundled photos; anything else: a folder of authentic images."""
    if source is None or str(source) == "skimage":
        return skimage_photos(split)
    return folder_photos(str(Path(source).resolve()), split)
