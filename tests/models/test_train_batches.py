"""Training batches: crops on the 8x8 JPEG grid, and benign-noise augmentation that stays a valid 8-bit image."""

from __future__ import annotations

import pytest
import torch

from ansm.errors import ConfigError
from ansm.models.train import TrainLocalizerConfig, augmented_batch


def _pool(n: int = 6, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return images, torch.zeros(n, 1, size, size, dtype=torch.bool)


def test_crops_start_on_the_jpeg_grid() -> None:
    images, masks = _pool()
    # Mark each pixel with its position modulo 8 so a crop's first pixel tells where the crop started.
    rows = (torch.arange(40) % 8).view(1, 1, 40, 1).expand(6, 3, 40, 40)
    images = (rows * 8).to(torch.uint8)
    cfg = TrainLocalizerConfig(size=40, crop=24, batch_size=6, pool=6)
    for step in range(5):
        x, _ = augmented_batch(images, masks, step, cfg)
        # Flips and 90-degree turns move a crop's corners onto each other: an aligned 24x24 crop has row phase 0
        # (its first row) or 7 (its last) at every corner; a crop starting at row 3 would show 3 or 2.
        phase = (x[:, 0] * 255 / 8).round()
        assert set(phase[:, 0, 0].tolist()) <= {0.0, 7.0}


def test_noise_augmentation_is_seeded_bounded_and_8_bit() -> None:
    images, masks = _pool()
    plain = TrainLocalizerConfig(size=40, crop=None, batch_size=6, pool=6)
    noisy = TrainLocalizerConfig(size=40, crop=None, batch_size=6, pool=6, noise_std="4/255", noise_prob=1.0)
    x0, _ = augmented_batch(images, masks, 3, plain)
    x1, _ = augmented_batch(images, masks, 3, noisy)
    x2, _ = augmented_batch(images, masks, 3, noisy)
    assert torch.equal(x1, x2)  # a function of (seed, step)
    assert torch.equal(x1 * 255, (x1 * 255).round()) and x1.min() >= 0 and x1.max() <= 1
    residual = (x1 - x0) * 255
    assert 0.3 < residual.std() < 4.5 and residual.abs().max() < 40  # std uniform in [0, 4] grey levels


def test_noise_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="noise_std"):
        TrainLocalizerConfig(noise_std="loud")
    with pytest.raises(ConfigError, match="noise_prob"):
        TrainLocalizerConfig(noise_prob=1.5)


def test_a_run_does_not_resume_with_other_noise(tmp_path) -> None:
    from ansm.errors import CheckpointError
    from ansm.models.train import train_localizer

    cfg = dict(out=str(tmp_path), size=32, crop=None, steps=2, batch_size=2, pool=4, warmup=1, ckpt_every=1, eval_n=0)
    train_localizer(TrainLocalizerConfig(**cfg))
    with pytest.raises(CheckpointError, match="noise_std"):
        train_localizer(TrainLocalizerConfig(**cfg, noise_std="4/255"))
