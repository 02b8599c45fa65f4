"""Small, fast settings shared by the defense tests (64x64 fixture localizer, 32x32 crops, a few steps)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture()
def tiny_cfg(tmp_path, trained_localizer_path) -> dict[str, Any]:
    """Keyword arguments for a TrainANSMConfig that trains in a second or two."""
    return dict(localizer=str(trained_localizer_path), out=str(tmp_path / "ansm"), seed=3, stage1_steps=2,
                stage2_steps=2, batch_size=4, crop=32, pool=8, size=64, pgd_steps=2, ckpt_every=1, device="cpu",
                width=8, dilations=[1, 2])
