"""Real IMDLBenCo zoo models end to end: evaluate, PGD, ANSM training with FFA taps, defend; official-style
checkpoints (``{'model': state_dict}``, ``module.`` prefixes) loaded safely and reproducing outputs.

The zoo tests need the optional ``imdlbenco`` package (``make benco-env``, then
``.venv-benco/bin/python -m pytest -q tests/models/test_imdlbenco_zoo.py``) and skip without it. The tests at
the top use a hand-made IMDLBenCo-style module, so the adapter options and checkpoint reading the zoo relies
on are checked in every environment.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ansm.errors import CheckpointError, ConfigError
from ansm.models import FeatureTaps, list_localizers, load_localizer, save_localizer
from ansm.models.adapters import wrap_imdlbenco
from ansm.models.imdlbenco import ZOO, build_imdlbenco, imdlbenco_available, read_imdlbenco_checkpoint
from ansm.models.resolve import resolve_localizer

REPO = Path(__file__).resolve().parents[2]
SIDE = 64  # every zoo model below runs at 64 x 64 on a CPU in well under a second per forward


class FixedSideBenCo(nn.Module):
    """IMDLBenCo-style: required mask, edge_mask and label; one square input side; loss inside forward."""

    def __init__(self, side: int = 32) -> None:
        super().__init__()
        self.side = side
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
        self.seen: dict[str, torch.Tensor] = {}

    def forward(self, image: torch.Tensor, mask: torch.Tensor, edge_mask: torch.Tensor, label: torch.Tensor,
                *args: object, **kwargs: object) -> dict:
        assert image.shape[-2:] == (self.side, self.side), image.shape
        self.seen = {"image": image.detach(), "mask": mask, "edge_mask": edge_mask, "label": label}
        logits = self.body(image)
        loss = F.binary_cross_entropy_with_logits(logits, mask, weight=edge_mask) + label.float().mean()
        return {"backward_loss": loss, "pred_mask": torch.sigmoid(logits)}


def test_adapter_feeds_zero_ground_truth_and_pads_to_the_fixed_side() -> None:
    torch.manual_seed(0)
    net = FixedSideBenCo(32)
    model = wrap_imdlbenco(net, input_size=32)
    assert model.zero_masks == ("mask", "edge_mask") and model.zero_labels == ("label",)
    x = torch.rand(2, 3, 20, 28)
    out = model(x)
    assert out.shape == (2, 1, 20, 28)
    assert net.seen["mask"].shape == net.seen["edge_mask"].shape == (2, 1, 32, 32)
    assert net.seen["label"].shape == (2,) and not net.seen["label"].any() and not net.seen["mask"].any()
    # zero padding in pixel space (black), i.e. -mean/std after normalisation, bottom/right
    black = (torch.zeros(1, 3, 1, 1) - model._mean) / model._std
    torch.testing.assert_close(net.seen["image"][:, :, 25:, :], black.expand(2, 3, 7, 32))
    # the prediction on the image area is the model's own, cropped
    with torch.no_grad():
        padded = F.pad(x, (0, 4, 0, 12))
        ref = net(image=(padded - model._mean) / model._std, mask=torch.zeros(2, 1, 32, 32),
                  edge_mask=torch.zeros(2, 1, 32, 32), label=torch.zeros(2))["pred_mask"]
    torch.testing.assert_close(torch.sigmoid(out), ref.clamp(1e-6, 1 - 1e-6)[..., :20, :28])
    # larger images are downscaled to fit, and the mask comes back at the input resolution
    assert model(torch.rand(1, 3, 48, 40)).shape == (1, 1, 48, 40)
    assert net.seen["image"].shape[-2:] == (32, 32)


def test_adapter_mask_size_and_unknown_required_arguments() -> None:
    net = FixedSideBenCo(16)
    model = wrap_imdlbenco(net, input_size=16, mask_size=16)
    model(torch.rand(1, 3, 16, 16))
    assert net.seen["mask"].shape == (1, 1, 16, 16)

    class NeedsQtables(nn.Module):
        def forward(self, image: torch.Tensor, mask: torch.Tensor, qtables: torch.Tensor) -> dict:
            return {"pred_mask": torch.sigmoid(image[:, :1])}

    with pytest.raises(ConfigError, match="qtables"):
        wrap_imdlbenco(NeedsQtables())
    assert wrap_imdlbenco(NeedsQtables(), forward_kwargs={"qtables": torch.zeros(1)})(torch.rand(1, 3, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(ConfigError, match="mask_size"):
        wrap_imdlbenco(FixedSideBenCo(), mask_size=(0, 4))


def test_zoo_names_are_registered_and_need_weights_on_the_command_line() -> None:
    assert list_localizers("imdlbenco:*") == sorted(f"imdlbenco:{n}" for n in ZOO)
    # resolve_localizer passes weights="auto" when --weights is absent: a clear error, never a random zoo model
    # (it says how to get a checkpoint ansm train/defend can use; raised before IMDLBenCo is even imported)
    with pytest.raises(ConfigError, match="needs --weights.*python -m ansm.models.imdlbenco_convert"):
        resolve_localizer("imdlbenco:Mesorch")
    with pytest.raises(ConfigError, match="did you mean"):
        build_imdlbenco("Mesorc")
    with pytest.raises(ConfigError, match="s_blocks3"):  # checked before IMDLBenCo is imported
        build_imdlbenco("SparseViT", size=64)


def _official_style(state: dict[str, torch.Tensor], path: Path, **extra: object) -> Path:
    """What IMDLBenCo's trainer writes under DDP: ``module.`` keys under 'model', plus optimizer/epoch/args."""
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 7,
                "args": argparse.Namespace(model="X", lr=1e-4, output_dir="out"), **extra}, path)
    return path


def test_read_checkpoint_strips_module_prefix_and_refuses_code(tmp_path: Path) -> None:
    net = FixedSideBenCo()
    state = read_imdlbenco_checkpoint(_official_style(net.state_dict(), tmp_path / "ckpt.pth"))
    assert state.keys() == net.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    # a global outside the allow-list (here a function) is refused by weights_only unpickling, never called
    evil = _official_style(net.state_dict(), tmp_path / "evil.pth", hook=os.getcwd)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_imdlbenco_checkpoint(evil)
    torch.save({"model": {"a": 1}}, tmp_path / "notensors.pth")
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        read_imdlbenco_checkpoint(tmp_path / "notensors.pth")
    with pytest.raises(CheckpointError, match="not found"):
        read_imdlbenco_checkpoint(tmp_path / "missing.pth")


# ----------------------------------------------------------------------------------------- real zoo models
needs_benco = pytest.mark.skipif(not imdlbenco_available(), reason="imdlbenco not importable (make benco-env)")

# name -> build options at the test's side (models with one input side get it; the others take any side)
ZOO_CASES = {"IML_ViT": {"size": SIDE}, "Mesorch": {}, "PSCC_Net": {"size": SIDE},
             "SparseViT": {"size": SIDE, "s_blocks3": [8, 8, 8, 8], "s_blocks4": [8, 8]}}


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_imdlbenco(name, **ZOO_CASES[name])


def _data(n: int = 2):
    from ansm.data.synth import SyntheticForgeries

    items = [SyntheticForgeries(n, seed=0, split="test", size=SIDE)[i] for i in range(n)]
    return items, torch.stack([d["image"] for d in items]), torch.stack([d["mask"] for d in items])


# PSCC-Net is left out of the end-to-end run: IMDLBenCo's HRNet initialises its convolutions with std 0.001
# (it expects ImageNet weights), so a randomly initialised PSCC-Net ignores its input (gradient ~1e-13) and no
# attack can move it. Its checkpoint loading is tested below.
END_TO_END = ["IML_ViT", "Mesorch", "SparseViT"]


@needs_benco
@pytest.mark.slow
@pytest.mark.parametrize("name", END_TO_END)
def test_zoo_model_evaluate_attack_train_defend(name: str, tmp_path: Path) -> None:
    from ansm.attacks import create_attack
    from ansm.data.io import write_png
    from ansm.defense import TrainANSMConfig, load_ansm, train_ansm
    from ansm.defense.inference import defend_images
    from ansm.eval.evaluate import evaluate

    model = _build(name)
    assert model.name == f"imdlbenco:{name}" and model.default_taps
    items, x, m = _data()

    # evaluate: the contract holds (logits at input resolution) and metrics come out
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == m.shape and torch.isfinite(logits).all()
    clean = evaluate(model, items, batch_size=2)
    assert 0.0 <= clean["f1"] <= 1.0

    # PGD through the adapter: within budget, and it raises the loss the attack maximises
    eps = 8 / 255
    pgd = create_attack("pgd", model, eps="8/255", alpha="2/255", steps=3)
    x_adv = pgd(x, m)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and (x_adv - x).abs().max() > 0
    with torch.no_grad():
        loss_clean = F.binary_cross_entropy_with_logits(model(x), m)
        loss_adv = F.binary_cross_entropy_with_logits(model(x_adv), m)
    assert loss_adv > loss_clean
    attacked = evaluate(model, items, batch_size=2, transform=lambda im, mk: pgd(im, mk))
    assert 0.0 <= attacked["f1"] <= 1.0

    # FFA taps are named layers that give B x C x h x w maps (FFA's per-channel softmax needs them)
    taps = list(model.default_taps)
    with torch.no_grad(), FeatureTaps(model, taps) as t:
        model(x)
    assert all(t.features[n].dim() == 4 for n in taps), {n: tuple(v.shape) for n, v in t.features.items()}

    # train ANSM a few steps against the frozen zoo model, FFA on those taps, then MgR
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps: list[tuple[int, float]] = []
    cfg = TrainANSMConfig(localizer=f"imdlbenco:{name}", out=str(tmp_path / "ansm"), seed=0, stage1_steps=2,
                          stage2_steps=1, batch_size=2, crop=None, pool=2, size=SIDE, attacks=["fgsm"],
                          pgd_steps=1, ckpt_every=10, device="cpu", width=8, dilations=[1, 2], taps=taps)
    ansm, summary = train_ansm(cfg, localizer=model, on_step=lambda s, stage, loss: steps.append((stage, loss)))
    assert [s for s, _ in steps] == [1, 1, 2] and all(torch.isfinite(torch.tensor(v)) for _, v in steps)
    assert summary["taps"] == taps
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the zoo model is never changed
    saved, meta = load_ansm(tmp_path / "ansm" / "ansm")
    assert meta["localizer"] == f"imdlbenco:{name}" and meta["taps"] == taps

    # defend: masks with and without ANSM for a folder of images
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(x):
        write_png(folder / f"img{i}.png", img)
    out = tmp_path / "defended"
    result = defend_images(saved, model, folder, out)
    assert result["n_images"] == 2
    for i in range(2):
        for suffix in ("defended", "mask", "mask_nodef", "overlay"):
            assert (out / f"img{i}_{suffix}.png").is_file()


@needs_benco
@pytest.mark.parametrize("name", list(ZOO_CASES))
def test_zoo_checkpoint_with_module_prefix_reproduces_outputs(name: str, tmp_path: Path) -> None:
    source = _build(name, seed=0)
    other = _build(name, seed=1)
    _, x, _ = _data(1)
    with torch.no_grad():
        want = source(x)
        assert not torch.allclose(other(x), want)  # different random inits really differ
    ckpt = _official_style(source.model.state_dict(), tmp_path / "checkpoint-best.pth")

    loaded = build_imdlbenco(name, weights=ckpt, **ZOO_CASES[name])
    via_cli_spec = resolve_localizer(f"imdlbenco:{name}", weights=ckpt) if "size" not in ZOO_CASES[name] else None
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)
        if via_cli_spec is not None:  # `--model imdlbenco:<Name> --weights ckpt.pth` (official side: any-side models)
            torch.testing.assert_close(via_cli_spec(x), want, rtol=0, atol=0)

    # converted once into an ansm checkpoint (safetensors + JSON), it is rebuilt by name everywhere
    save_localizer(loaded, tmp_path / "converted")
    again = resolve_localizer(str(tmp_path / "converted"))
    with torch.no_grad():
        torch.testing.assert_close(again(x), want, rtol=0, atol=0)

    # a checkpoint of another architecture does not fit: one error naming the file
    with pytest.raises(CheckpointError, match="checkpoint-best.pth does not fit"):
        build_imdlbenco("Mesorch" if name != "Mesorch" else "PSCC_Net", weights=ckpt)


@needs_benco
def test_convert_command_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    source = _build("Mesorch")
    ckpt = _official_style(source.model.state_dict(), tmp_path / "mesorch.pth")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "ansm.models.imdlbenco_convert", "Mesorch", str(ckpt), "--out",
                          str(tmp_path / "benco" / "mesorch")], capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout
    converted = load_localizer(tmp_path / "benco" / "mesorch")
    _, x, _ = _data(1)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), source(x), rtol=0, atol=0)
    bad = subprocess.run([sys.executable, "-m", "ansm.models.imdlbenco_convert", "Mesorch", str(tmp_path / "nope.pth"),
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO, env=env)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "nope.pth" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
