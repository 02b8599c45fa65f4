"""Fixtures for the attack tests, built on the suite-wide ``trained_localizer`` and ``synthetic_batch``."""

from __future__ import annotations

import pytest
import torch

from ansm.eval.metrics import f1_score


@pytest.fixture(scope="session")
def attack_localizer(trained_localizer: torch.nn.Module) -> torch.nn.Module:
    return trained_localizer


@pytest.fixture(scope="session")
def attack_batch(attack_localizer: torch.nn.Module, synthetic_batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Up to 6 held-out *forged* images the localizer finds (clean F1 > 0.2), so an F1 drop is measurable."""
    images, masks = synthetic_batch["image"], synthetic_batch["mask"]
    with torch.no_grad():
        f1 = f1_score(torch.sigmoid(attack_localizer(images)), masks)
    keep = (masks.flatten(1).amax(1) > 0) & (f1 > 0.2)
    assert keep.sum() >= 3, "the fixture localizer finds too few forgeries to test attacks on"
    return {"image": images[keep][:6], "mask": masks[keep][:6]}
