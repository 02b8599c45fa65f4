"""The ANSM network: bounded perturbation, identity at initialisation, checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ansm.defense import ANSM, count_parameters, load_ansm, save_ansm
from ansm.errors import CheckpointError, ConfigError, DataError


def _scrambled(eps_d: float) -> ANSM:
    """An ANSM with large random weights, so tanh saturates and the bound is actually exercised."""
    torch.manual_seed(0)
    net = ANSM(eps_d=eps_d, width=8, dilations=(1, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 3)
    return net.eval()


@pytest.mark.parametrize("eps_d", [4 / 255, 16 / 255, 0.5])
def test_perturbation_is_bounded_and_output_is_an_image(eps_d: float) -> None:
    net = _scrambled(eps_d)
    x = torch.rand(3, 3, 21, 17)
    x[0] = 0.0  # saturated corners: the clamp must keep the bound
    x[1] = 1.0
    with torch.no_grad():
        y = net(x)
        raw = net.perturbation(x)
    assert y.shape == x.shape
    assert (y - x).abs().max() <= eps_d + 1e-6
    assert y.min() >= 0 and y.max() <= 1
    assert raw.abs().max() > 0.9 * eps_d  # the bound is reached, not trivially satisfied


@pytest.mark.parametrize("norm", ["none", "group"])
def test_identity_at_initialisation(norm: str) -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(ANSM(norm=norm)(x), x)


def test_save_load_round_trip(tmp_path: Path) -> None:
    net = _scrambled(8 / 255)
    save_ansm(net, tmp_path / "ansm", note="x")
    loaded, meta = load_ansm(tmp_path / "ansm")
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(loaded(x), net(x))
    assert meta["note"] == "x" and meta["config"]["eps_d"] == pytest.approx(8 / 255)
    assert count_parameters(loaded) == count_parameters(net)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eps_d"):
        ANSM(eps_d=0)
    with pytest.raises(ConfigError, match="eps_d"):
        ANSM(eps_d="1/0")
    with pytest.raises(ConfigError, match="norm"):
        ANSM(norm="batch")
    with pytest.raises(DataError, match="Bx3xHxW"):
        ANSM()(torch.rand(1, 1, 8, 8))
    with pytest.raises(CheckpointError, match="not found"):
        load_ansm(tmp_path / "missing")
    from ansm.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "other", {"w": torch.zeros(1)}, {"kind": "localizer"})
    with pytest.raises(CheckpointError, match="not an ANSM"):
        load_ansm(tmp_path / "other")
