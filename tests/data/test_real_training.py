"""Real-data training: augmented crops stay aligned with their masks, batches are seeded, and the final model is
the checkpoint chosen on val (tiny folders written here, so it runs without ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ansm.data.real import RealAugment, RealTrainingSet
from ansm.errors import DataError


def _forgery_folder(root: Path, n: int = 6, size: tuple[int, int] = (72, 48)) -> Path:
    """Forged images whose tampered region is bright and everything else dark, so image and mask must agree."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids: list[str] = []
    for i in range(n):
        m = np.zeros(size[::-1], dtype=np.uint8)
        y, x = rng.integers(0, size[1] - 20), rng.integers(0, size[0] - 20)
        m[y:y + 16, x:x + 24] = 255
        Image.fromarray(np.repeat(m[..., None], 3, axis=2)).save(root / f"f{i}.png")
        Image.fromarray(m).save(root / f"f{i}_gt.png")
        ids.append(f"f{i}")
    (root / "authentic").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((*size[::-1], 3), dtype=np.uint8)).save(root / "authentic" / f"a{i}.png")
    splits = {"train": ids[:4] + ["a0"], "val": ids[4:] + ["a1"], "test": []}
    (root / "splits.json").write_text(json.dumps(splits))
    return root


def test_crops_and_masks_stay_aligned_through_flips_and_crops(tmp_path: Path) -> None:
    ds = RealTrainingSet(_forgery_folder(tmp_path / "d"), "train", augment=RealAugment(rescale=0, jpeg=0, blur=0, noise=0))
    assert len(ds.forged) == 4 and len(ds.authentic) == 1
    x, m = ds.batch(16, 40, seed=0, step=3)
    assert x.shape == (16, 3, 40, 40) and m.shape == (16, 1, 40, 40)
    assert torch.equal(x[:, :1], m)  # the bright pixels are exactly the mask's
    # crops larger than the image are padded, not resized
    x, m = ds.batch(2, 96, seed=0, step=0)
    assert x.shape[-1] == 96 and torch.equal(x[:, :1], m)


def test_batches_are_seeded_and_augmentations_change_pixels(tmp_path: Path) -> None:
    ds = RealTrainingSet(_forgery_folder(tmp_path / "d"), "train",
                         augment=RealAugment(rescale=1, jpeg=1, blur=1, noise=1))
    a, b = ds.batch(4, 32, seed=1, step=5), ds.batch(4, 32, seed=1, step=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], ds.batch(4, 32, seed=1, step=6)[0])
    x, m = a
    assert 0 <= x.min() and x.max() <= 1
    # the blur alone on white: a weighted mean of ones rounds to 1 + 2.4e-7 at sigma 0.39, which once stopped a real
    # run at the attack's [0, 1] check
    white = RealTrainingSet(_forgery_folder(tmp_path / "w"), "train", augment=RealAugment(rescale=0, jpeg=0, blur=1, noise=0))
    white.forged = [(torch.full_like(img, 255), mask) for img, mask in white.forged]
    white.authentic = [torch.full_like(img, 255) for img in white.authentic]
    assert max(float(white.batch(4, 32, seed=1, step=s)[0].max()) for s in range(40)) <= 1
    assert not torch.equal(x[:, :1], m)  # JPEG and blur moved the pixels away from the clean mask
    assert ((x[:, :1] > 0.5) == (m > 0.5)).float().mean() > 0.8  # ... but the mask still marks the bright region


def test_a_split_without_forgeries_is_refused(tmp_path: Path) -> None:
    root = _forgery_folder(tmp_path / "d")
    (root / "splits.json").write_text(json.dumps({"train": ["a0"], "val": [], "test": []}))
    with pytest.raises(DataError, match="no forged image"):
        RealTrainingSet(root, "train")


def test_final_model_is_the_one_chosen_on_val(tmp_path: Path) -> None:
    from ansm.models.registry import load_localizer
    from ansm.models.train import TrainLocalizerConfig, train_localizer

    root = _forgery_folder(tmp_path / "d")
    cfg = dict(arch="unet-small", data=str(root), crop=32, batch_size=4, steps=6, val_every=2, ckpt_every=2, warmup=1,
               lr=3e-3, out=str(tmp_path / "run"))
    model, summary = train_localizer(TrainLocalizerConfig(**cfg))
    steps = [h["step"] for h in summary["val_history"]]
    assert steps == [2, 4, 6]
    best = max(summary["val_history"], key=lambda h: h["f1"])
    assert summary["chosen_step"] == best["step"]
    chosen = load_localizer(tmp_path / "run" / "best_on_val")
    x = torch.rand(1, 3, 48, 72)
    assert torch.equal(chosen(x), model(x))
    # a finished run started again resumes with its history, not a second one
    _, again = train_localizer(TrainLocalizerConfig(**cfg))
    assert [h["step"] for h in again["val_history"]] == steps
