"""resolve_localizer: every kind of model spec a command accepts, and one clear error per failure."""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ansm.errors import CheckpointError, ConfigError
from ansm.models import Localizer, create_localizer, save_localizer
from ansm.models.adapters import ModuleLocalizer
from ansm.models.resolve import resolve_localizer

REPO = Path(__file__).resolve().parents[2]
X = torch.rand(1, 3, 24, 40)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(X), b.eval()(X))


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = create_localizer("unet-small", width=8)
    save_localizer(model, tmp_path / "run" / "localizer")
    return model, tmp_path / "run" / "localizer"


def test_our_checkpoint_by_stem_and_by_file(saved: tuple[torch.nn.Module, Path]) -> None:
    model, path = saved
    for spec in (str(path), str(path) + ".safetensors", path.with_suffix(".json")):
        got = resolve_localizer(spec)
        assert not got.training
        _same(got, model)


def test_checkpoint_with_weights_is_refused(saved: tuple[torch.nn.Module, Path]) -> None:
    _, path = saved
    with pytest.raises(ConfigError, match="already holds its weights"):
        resolve_localizer(str(path), weights=str(path) + ".safetensors")


def test_missing_checkpoint_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resolve_localizer(str(tmp_path / "runs" / "nothing"))
    with pytest.raises(ConfigError, match="did you mean twostream"):
        resolve_localizer("twostrem")
    with pytest.raises(ConfigError, match="empty model spec"):
        resolve_localizer("  ")
    with pytest.raises(CheckpointError, match="weights file not found"):
        resolve_localizer("twostream", weights=str(tmp_path / "none.pth"))


def test_registered_name_with_full_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ref = create_localizer("twostream")
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    _same(resolve_localizer("twostream", weights=str(tmp_path / "w.pth")), ref)
    _same(resolve_localizer("twostream", weights=str(tmp_path / "w.safetensors")), ref)
    plain = resolve_localizer("twostream")
    assert isinstance(plain, Localizer) and not plain.training


def test_registered_name_with_misfit_weights_lists_keys(tmp_path: Path) -> None:
    sd = create_localizer("unet-small", width=8).state_dict()
    torch.save(sd, tmp_path / "small.pth")
    with pytest.raises(CheckpointError, match="does not fit .*shape mismatch"):
        resolve_localizer("unet-small", weights=str(tmp_path / "small.pth"))
    torch.save({"a": torch.zeros(1)}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="missing keys: .*unexpected keys: a"):
        resolve_localizer("twostream", weights=str(tmp_path / "odd.pth"))


def test_noiseprint_head_gets_backbone_weights() -> None:
    weights = Path(os.environ.get("ANSM_SHARED") or REPO.parent / "shared") / "weights" / "noiseprint++.th"
    if not weights.is_file():
        pytest.skip(f"{weights} not available")
    model = resolve_localizer("noiseprint-head", weights=str(weights))
    assert bool(model.backbone_pretrained) and not model.training


def test_taps_override_is_validated() -> None:
    model = resolve_localizer("unet-small", taps=["down2"])
    assert model.default_taps == ("down2",)
    with pytest.raises(ConfigError, match="Close matches: .*down2"):
        resolve_localizer("unet-small", taps=["down22"])


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's model file on sys.path, under a unique module name (no cross-test import caching)."""
    name = f"user_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent('''
        import torch
        import torch.nn as nn
        from ansm.models.adapters import wrap_module

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
                self.out = nn.Conv2d(4, 1, 1)

            def forward(self, x):
                return self.out(self.features(x))

        def build():
            torch.manual_seed(0)
            return Net()

        def build_probs(weights=None):
            net = build()
            if weights is not None:
                net.load_state_dict(torch.load(weights, weights_only=True))
            return wrap_module(nn.Sequential(net, nn.Sigmoid()), "probs", taps=["0.features"])

        class Factories:
            make = staticmethod(build)

        not_callable = 3

        def returns_int():
            return 3

        def broken():
            raise RuntimeError("no GPU here")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_module_callable_plain_module_is_wrapped(user_module: str) -> None:
    model = resolve_localizer(f"{user_module}:build", taps=["features.0"])
    assert isinstance(model, ModuleLocalizer) and model.default_taps == ("model.features.0",)
    assert model(X).shape == (1, 1, 24, 40)
    assert isinstance(resolve_localizer(f"{user_module}:Factories.make"), ModuleLocalizer)


def test_module_callable_returning_localizer_with_weights(user_module: str, tmp_path: Path) -> None:
    import importlib

    net = importlib.import_module(user_module).build()
    torch.nn.init.constant_(net.out.bias, 0.25)
    torch.save(net.state_dict(), tmp_path / "user.pth")
    model = resolve_localizer(f"{user_module}:build_probs", weights=str(tmp_path / "user.pth"))
    assert model.default_taps == ("model.0.features",) and model.output == "probs"
    with torch.no_grad():
        torch.testing.assert_close(model(X), net(X), atol=1e-4, rtol=1e-4)


def test_file_path_callable(tmp_path: Path, user_module: str) -> None:
    model = resolve_localizer(f"{tmp_path / user_module}.py:build")
    assert isinstance(model, ModuleLocalizer)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (":nothing", "has no attribute 'nothing'"),
        (":not_callable", "not a callable"),
        (":returns_int", "returned int, expected an nn.Module"),
        (":broken", "the factory raised RuntimeError: no GPU here"),
    ],
)
def test_module_callable_errors(user_module: str, suffix: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_localizer(user_module + suffix)


def test_module_callable_import_and_argument_errors(user_module: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        resolve_localizer("no_such_module_xyz:build")
    torch.save({}, tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="takes no 'weights' argument"):
        resolve_localizer(f"{user_module}:build", weights=str(tmp_path / "w.pth"))
    with pytest.raises(ConfigError, match="file .* not found"):
        resolve_localizer(f"{tmp_path}/missing.py:build")
