"""Synthetic forgeries: deterministic per seed, exact masks, every kind, streamed == written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ansm.data.datasets import open_dataset
from ansm.data.synth import KINDS, SynthConfig, SyntheticForgeries, render_forgery, synthesize_folder
from ansm.errors import ConfigError


def test_same_seed_same_sample_any_order() -> None:
    a = [render_forgery(i, seed=3, cfg=SynthConfig(size=48)) for i in (0, 1, 2)]
    b = [render_forgery(i, seed=3, cfg=SynthConfig(size=48)) for i in (2, 1, 0)][::-1]
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) and x.params == y.params
    other = render_forgery(0, seed=4, cfg=SynthConfig(size=48))
    assert not np.array_equal(a[0].image, other.image)


def test_kinds_masks_and_authentic_negatives() -> None:
    ds = SyntheticForgeries(60, seed=0, size=48)
    kinds, areas = set(), []
    for i in range(len(ds)):
        item = ds[i]
        kinds.add(item["kind"])
        assert item["image"].shape == (3, 48, 48) and item["mask"].shape == (1, 48, 48)
        assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
        frac = float(item["mask"].mean())
        if item["kind"] == "authentic":
            assert frac == 0 and item["label"] == 0
        else:
            assert item["label"] == 1
            areas.append(frac)
    assert kinds == set(KINDS)
    assert 0.005 < min(areas) and max(areas) < 0.45 and np.std(areas) > 0.02  # varied sizes


def test_forged_region_differs_from_host_statistics() -> None:
    """The traces are real: inside the mask the high-frequency noise level differs from outside."""
    gaps = []
    for i in range(40):
        r = render_forgery(i, seed=1, cfg=SynthConfig(size=96, final_jpeg_prob=0.0))
        if r.kind in ("splice", "removal") and r.mask.sum() > 200:
            img = r.image.astype(np.float64).mean(axis=2)
            hp = img - (np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 4
            gaps.append(abs(np.median(np.abs(hp[r.mask])) - np.median(np.abs(hp[~r.mask]))))
    assert len(gaps) >= 5 and np.median(gaps) > 0.3


def test_written_folder_equals_streamed_and_resumes(tmp_path: Path) -> None:
    out = synthesize_folder(tmp_path / "s", 12, seed=2, split="test", size=40)
    ds = open_dataset(out)
    streamed = {it["name"]: it for it in (SyntheticForgeries(12, seed=2, split="test", size=40)[i] for i in range(12))}
    assert len(ds) == 12
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item["image"], streamed[item["name"]]["image"])  # JPEG bytes decode to the same pixels
        assert torch.equal(item["mask"], streamed[item["name"]]["mask"])
    index = json.loads((out / "synth.json").read_text())
    assert len(index["samples"]) == 12 and index["seed"] == 2
    victim = next(p for p in out.iterdir() if p.name.endswith("_gt.png"))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "synth.json"}
    victim.unlink()  # as if killed before this file was written
    synthesize_folder(out, 12, seed=2, split="test", size=40)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "synth.json"}
    assert after == before


def test_bad_config_is_clear() -> None:
    with pytest.raises(ConfigError, match="size must be >= 16"):
        SynthConfig(size=8)
    with pytest.raises(ConfigError, match="unknown split"):
        render_forgery(0, split="dev")
    with pytest.raises(ConfigError, match=">= 1"):
        SyntheticForgeries(0)
