"""Fixtures shared by the whole suite.

* ``trained_localizer``: the built-in two-stream localizer trained for a few seconds on 64x64 synthetic
  forgeries (session-scoped: trained once per test run). Good enough that attacks measurably lower its F1 and
  a defense measurably restores it; not a quality model.
* ``synthetic_batch``: 32 held-out synthetic samples (unseen photos, seed 0) at 64x64.
* ``shared_dir``: ``$ANSM_SHARED`` or ``../shared`` next to the repository, where the real images and official
  weights live; tests needing it skip cleanly when it is absent (a user's clone does not have it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ansm.data.synth import SyntheticForgeries
from ansm.utils import seed_everything

REPO = Path(__file__).resolve().parents[1]
FIXTURE_SIZE = 64
# the fixture localizer's recipe (tests/test_cuda.py trains the same one on a GPU, through ``localizer_recipe``)
FIXTURE_RECIPE = dict(size=FIXTURE_SIZE, steps=80, batch_size=8, pool=160, warmup=10, lr=5e-3, eval_n=0)


@pytest.fixture(scope="session")
def trained_localizer(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    from ansm.models.train import TrainLocalizerConfig, train_localizer

    seed_everything(0)
    out = tmp_path_factory.mktemp("trained_localizer")
    cfg = TrainLocalizerConfig(out=str(out), **FIXTURE_RECIPE)
    model, _ = train_localizer(cfg)
    return model.eval()


@pytest.fixture(scope="session")
def localizer_recipe() -> dict:
    """``TrainLocalizerConfig`` keywords of ``trained_localizer`` (a copy: a test may add to it)."""
    return dict(FIXTURE_RECIPE)


@pytest.fixture(scope="session")
def trained_localizer_path(trained_localizer: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture localizer saved as a checkpoint (``.safetensors`` + ``.json``), for CLI tests."""
    from ansm.models.registry import save_localizer

    path = tmp_path_factory.mktemp("trained_localizer_ckpt") / "localizer"
    save_localizer(trained_localizer, path)
    return path


@pytest.fixture(scope="session")
def synthetic_batch() -> dict[str, torch.Tensor]:
    ds = SyntheticForgeries(32, seed=0, split="test", size=FIXTURE_SIZE)
    items = [ds[i] for i in range(len(ds))]
    return {"image": torch.stack([it["image"] for it in items]), "mask": torch.stack([it["mask"] for it in items])}


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = Path(os.environ.get("ANSM_SHARED") or REPO.parent / "shared")
    if not (path / "data").is_dir():
        pytest.skip(f"{path}/data not available (real data lives outside the repository)")
    return path
