"""The JPEG-grid stream sees quantisation: its DCT is JPEG's, and a region once saved as JPEG stands out."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from scipy.fft import dctn
from skimage import data

from ansm.models.twostream import JPEGGridFeatures, _dct_basis


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def test_basis_is_jpegs_orthonormal_dct_in_zigzag_order() -> None:
    block = np.random.default_rng(0).random((8, 8))
    ours = (_dct_basis(64)[:, 0].double() * torch.from_numpy(block)).sum((1, 2)).numpy()
    ref = dctn(block, norm="ortho")  # ref[u, v]: u vertical, v horizontal frequency
    zigzag = [(0, 0), (1, 0), (0, 1), (0, 2), (1, 1), (2, 0)]
    assert np.allclose(ours[:6], [ref[u, v] for u, v in zigzag])


def test_a_region_saved_as_jpeg_stands_out_from_a_raw_host() -> None:
    rng = np.random.default_rng(0)
    host = np.clip(data.astronaut()[:128, :128].astype(np.float64) + rng.normal(0, 2, (128, 128, 3)), 0, 255)
    host = host.round().astype(np.uint8)
    forged = host.copy()
    forged[32:96, 32:96] = _jpeg(host, 70)[32:96, 32:96]  # an 8-aligned region with q70's quantisation
    feats = JPEGGridFeatures(window=1)(_tensor(forged)).mean(1)[0]  # 16 x 16 blocks
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:12, 4:12] = True
    assert feats[inside].mean() > feats[~inside].mean() + 0.2
    # and nothing stands out in the raw host itself
    raw = JPEGGridFeatures(window=1)(_tensor(host)).mean(1)[0]
    assert abs(raw[inside].mean() - raw[~inside].mean()) < 0.05


def test_checkpoints_saved_before_the_stream_load_without_it(tmp_path) -> None:
    import json

    from ansm.models import create_localizer, load_localizer, save_localizer

    old = create_localizer("twostream", width=8, jpeg_grid=False).eval()
    save_localizer(old, tmp_path / "old")
    meta_path = tmp_path / "old.json"
    meta = json.loads(meta_path.read_text())
    meta["config"] = {"width": 8}  # what checkpoints written before the option hold
    meta_path.write_text(json.dumps(meta))
    again = load_localizer(tmp_path / "old")
    x = torch.rand(1, 3, 24, 24)
    assert not hasattr(again, "jpeg") and torch.equal(old(x), again(x))
    assert hasattr(create_localizer("twostream", width=8), "jpeg")  # new models have it by default
