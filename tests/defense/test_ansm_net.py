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


@pytest.mark.parametrize("norm", ["none", "group"])
def test_full_arch_is_the_written_formula(norm: str) -> None:
    """The forward (convolutions over the parts instead of concatenations, tanh as a sigmoid) computes
    ``clamp(x + eps_d * tanh(tail(cat[body(head(cat[(x - 0.5) * 4, hp])), hp])), 0, 1)``, gradients included
    (in float64, so a wrong weight slice shows and float32 summation order does not)."""
    torch.manual_seed(0)
    net = ANSM(eps_d=8 / 255, width=8, dilations=(1, 3), norm=norm).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x = torch.rand(2, 3, 19, 14, dtype=torch.float64, requires_grad=True)
    hp = net.high_pass(x)
    g = net.tail(torch.cat([net.body(net.head(torch.cat([(x - 0.5) * 4, hp], dim=1))), hp], dim=1))
    ref = (x + net.eps_d * torch.tanh(g)).clamp(0, 1)
    assert ref.sub(x).abs().max() > 0.5 * net.eps_d  # the weights move the image: the check is not vacuous
    out = net(x)
    assert torch.allclose(out, ref, atol=1e-10)
    w = torch.rand_like(ref)
    (grad_ref,) = torch.autograd.grad((ref * w).sum(), x)
    (grad_out,) = torch.autograd.grad((out * w).sum(), x)
    assert torch.allclose(grad_out, grad_ref, atol=1e-9)


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


# --- the fast arch (body at half resolution) -------------------------------------------------------------------


def _scrambled_fast(eps_d: float = 16 / 255, norm: str = "none") -> ANSM:
    torch.manual_seed(0)
    net = ANSM(eps_d=eps_d, width=8, dilations=(1, 2), norm=norm, arch="fast")
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 3)
    return net.eval()


@pytest.mark.parametrize("norm", ["none", "group"])
def test_fast_identity_at_initialisation(norm: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 17, 23)
    net = ANSM(norm=norm, arch="fast")
    assert torch.equal(net(x), x)
    assert net.config["arch"] == "fast"


@pytest.mark.parametrize("eps_d", [4 / 255, 0.5])
def test_fast_perturbation_is_bounded(eps_d: float) -> None:
    net = _scrambled_fast(eps_d)
    torch.manual_seed(1)
    x = torch.rand(3, 3, 21, 17)
    x[0], x[1] = 0.0, 1.0
    with torch.no_grad():
        y, raw = net(x), net.perturbation(x)
    assert (y - x).abs().max() <= eps_d + 1e-6
    assert y.min() >= 0 and y.max() <= 1
    assert raw.abs().max() > 0.9 * eps_d


@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (5, 3), (9, 12), (31, 33)])
def test_fast_any_size(hw: tuple[int, int]) -> None:
    net = _scrambled_fast(norm="none")
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and (y - x).abs().max() <= 16 / 255 + 1e-6
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_fast_stem_is_centred_image_and_high_pass() -> None:
    net = ANSM(arch="fast")
    x = torch.rand(1, 3, 10, 9, generator=torch.Generator().manual_seed(0))
    ref = torch.cat([(x - 0.5) * 4, net.high_pass(x)], dim=1)
    assert torch.allclose(net.stem(x), ref, atol=1e-5)


def test_fast_trains_from_identity() -> None:
    """Gradients reach every parameter from the zero-init output layers (one Adam step moves the output)."""
    torch.manual_seed(0)
    net = ANSM(width=8, dilations=(1, 2), arch="fast")
    x = torch.rand(2, 3, 15, 16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):  # step 1 moves the zero-init output layers, step 2 reaches the body through them
        loss = (net(x) - x.flip(-1)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with torch.no_grad():
        assert not torch.equal(net(x), x)


def test_fast_checkpoint_round_trip(tmp_path: Path) -> None:
    net = _scrambled_fast(8 / 255)
    save_ansm(net, tmp_path / "fast")
    loaded, meta = load_ansm(tmp_path / "fast")
    assert meta["config"]["arch"] == "fast" and loaded.arch == "fast"
    x = torch.rand(1, 3, 13, 11)
    assert torch.equal(loaded(x), net(x))


def test_checkpoint_without_arch_loads_as_full(tmp_path: Path) -> None:
    """Checkpoints written before ``arch`` existed carry no such key: they are today's full arch."""
    import json

    net = _scrambled(8 / 255)
    save_ansm(net, tmp_path / "old")
    meta_path = tmp_path / "old.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["arch"]
    meta_path.write_text(json.dumps(meta))
    loaded, _ = load_ansm(tmp_path / "old")
    assert loaded.arch == "full"
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(loaded(x), net(x))


def test_arch_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="arch"):
        ANSM(arch="tiny")
    from ansm.defense import TrainANSMConfig

    with pytest.raises(ConfigError, match="arch"):
        TrainANSMConfig(arch="tiny")


def test_trainer_builds_and_saves_the_fast_arch(tiny_cfg) -> None:
    from ansm.defense import TrainANSMConfig, train_ansm

    cfg = TrainANSMConfig(**tiny_cfg, arch="fast")
    net, _ = train_ansm(cfg)
    assert net.arch == "fast"
    loaded, meta = load_ansm(Path(cfg.out) / "ansm")
    assert loaded.arch == "fast" and meta["train_config"]["arch"] == "fast"
    x = torch.rand(1, 3, 19, 20)
    assert (loaded(x) - x).abs().max() <= cfg.eps_d + 1e-6
