"""The synthetic splits share no photo and no scene, so a number on ``test`` is about unseen content."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ansm.data.sources import SKIMAGE_SPLITS, SPLITS, folder_photos, skimage_photos
from ansm.errors import DataError


def _digest(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


def test_three_splits_share_no_scene() -> None:
    assert SPLITS == ("train", "val", "test")
    scenes = {s: {n.partition(":")[0] for n in SKIMAGE_SPLITS[s]} for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not scenes[a] & scenes[b], (a, b, scenes[a] & scenes[b])


def test_three_splits_share_no_photo_by_content() -> None:
    """By pixels, not names: scikit-image's ``cat`` is the same array as ``chelsea``."""
    owner: dict[str, str] = {}
    for split in SPLITS:
        for img in skimage_photos(split):
            d = _digest(img)
            assert owner.setdefault(d, split) == split, f"a {split} photo is also in {owner[d]}"
    assert len(owner) == sum(len(v) for v in SKIMAGE_SPLITS.values())  # no duplicate inside a split either


def test_folder_splits_are_disjoint_and_cover_the_folder(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"p{i:02d}.png")
    parts = {s: {_digest(p) for p in folder_photos(str(tmp_path), s)} for s in SPLITS}
    assert [len(parts[s]) for s in SPLITS] == [6, 2, 2]
    assert len(set().union(*parts.values())) == 10


def test_unknown_split_is_refused() -> None:
    with pytest.raises(DataError, match="unknown split"):
        skimage_photos("dev")
