"""Image/mask file conventions: masks binarised at >127 in any mode, clear errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ansm.data.datasets import open_dataset
from ansm.data.io import read_image, read_mask, write_mask, write_png
from ansm.errors import DataError

LEVELS = np.array([[0, 127, 128, 255]], dtype=np.uint8)  # 127 is authentic, 128 tampered
EXPECTED = np.array([[0, 0, 1, 1]], dtype=np.float32)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_mask_binarised_above_127_in_8bit_modes(tmp_path: Path, mode: str) -> None:
    img = Image.fromarray(LEVELS, "L")
    if mode == "RGBA":
        rgba = np.stack([LEVELS] * 3 + [np.full_like(LEVELS, 255)], axis=-1)  # alpha fully opaque: not the mask
        img = Image.fromarray(rgba, "RGBA")
    else:
        img = img.convert(mode)
    img.save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png")[0].numpy(), EXPECTED)


def test_colour_mask_counts_any_bright_channel(tmp_path: Path) -> None:
    red = np.zeros((1, 2, 3), dtype=np.uint8)
    red[0, 1, 0] = 200  # a red edge pixel, as some datasets draw them
    Image.fromarray(red).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png")[0].tolist() == [[0.0, 1.0]]


def test_16bit_mask_rescaled_before_threshold(tmp_path: Path) -> None:
    arr = np.array([[0, 32639, 32768, 65535]], dtype=np.uint16)  # 126.99 and 127.5 on the 8-bit scale
    Image.fromarray(arr).save(tmp_path / "m16.png")
    assert np.array_equal(read_mask(tmp_path / "m16.png")[0].numpy(), np.array([[0, 0, 1, 1]], dtype=np.float32))


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    Image.new("L", (10, 20)).save(tmp_path / "a_gt.png")
    ds = open_dataset(tmp_path)
    with pytest.raises(DataError) as err:
        ds[0]
    msg = str(err.value)
    assert "a.png" in msg and "a_gt.png" in msg and "\n" not in msg
    # The explicit option resizes the mask instead (nearest neighbour), never silently.
    item = open_dataset(tmp_path, resize_masks=True)[0]
    assert item["mask"].shape == (1, 10, 20)


def test_corrupt_image_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError, match="broken.jpg: not a readable image"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "missing.png")


def test_png_roundtrip_is_lossless_and_atomic(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 9, 7), generator=g).float() / 255
    write_png(tmp_path / "x.png", img)
    assert torch.equal(read_image(tmp_path / "x.png"), img)
    write_mask(tmp_path / "x_gt.png", (img[:1] > 0.5).float())
    assert torch.equal(read_mask(tmp_path / "x_gt.png"), (img[:1] > 0.5).float())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "x_gt.png"]  # no temp files left behind
