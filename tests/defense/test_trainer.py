"""Two-stage training: the localizer is never modified, runs resume exactly, attack sets are read, and a short
run measurably defends."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ansm.attacks import create_attack
from ansm.attacks.builder import build_adversarial_dataset
from ansm.data.synth import SyntheticForgeries
from ansm.defense import TrainANSMConfig, load_ansm, train_ansm
from ansm.defense.evaluate import AttackSpec, evaluate_defenses, recovery
from ansm.defense.trainer import lr_at
from ansm.errors import CheckpointError, ConfigError
from ansm.utils import dumps_json, run_environment


def test_localizer_weights_bit_identical_and_the_module_left_as_it_was(trained_localizer, tiny_cfg) -> None:
    before = {k: v.clone() for k, v in trained_localizer.state_dict().items()}
    flags = [p.requires_grad for p in trained_localizer.parameters()]
    layout = [p.is_contiguous() for p in trained_localizer.parameters()]
    modes = [m.training for m in trained_localizer.modules()]
    grads = [None if p.grad is None else p.grad.clone() for p in trained_localizer.parameters()]
    train_ansm(TrainANSMConfig(**{**tiny_cfg, "mgr_ffa": 0.5}), trained_localizer)
    after = trained_localizer.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # no gradient was accumulated into the localizer either (whatever its training left there is untouched)
    for p, g in zip(trained_localizer.parameters(), grads):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
    # ANSM trained against a frozen copy: the caller's module keeps its gradient flags, modes and memory layout
    # (freezing it in place once changed the conv kernels other tests ran, and a hide test flipped with test order)
    assert [p.requires_grad for p in trained_localizer.parameters()] == flags
    assert [p.is_contiguous() for p in trained_localizer.parameters()] == layout
    assert [m.training for m in trained_localizer.modules()] == modes


def test_outputs_and_checkpoints(tiny_cfg) -> None:
    ansm, summary = train_ansm(TrainANSMConfig(**tiny_cfg))
    out = Path(tiny_cfg["out"])
    final, meta = load_ansm(out / "ansm")
    stage1, meta1 = load_ansm(out / "ansm_stage1")
    assert meta["localizer"] == tiny_cfg["localizer"] and meta["taps"] == ["enc2", "enc3", "context"]
    assert meta["stage"] == "full" and meta1["stage"] == "stage1"
    x = torch.rand(1, 3, 40, 40)
    assert torch.equal(final(x), ansm(x))
    assert not torch.equal(stage1(x), final(x))  # stage 2 changed the weights
    assert summary["world_size"] == 1 and json.loads((out / "summary.json").read_text())["steps"] == 4


def test_killed_run_resumes_to_the_same_weights(tiny_cfg, tmp_path) -> None:
    straight, _ = train_ansm(TrainANSMConfig(**{**tiny_cfg, "out": str(tmp_path / "a")}))

    class Killed(Exception):
        pass

    def kill_after_three(step: int, _stage: int, _loss: float) -> None:
        if step == 2:  # the third step finishes, its checkpoint is not written: resume redoes it
            raise Killed

    cfg = TrainANSMConfig(**{**tiny_cfg, "out": str(tmp_path / "b")})
    with pytest.raises(Killed):
        train_ansm(cfg, on_step=kill_after_three)
    resumed, summary = train_ansm(cfg)
    assert summary["resumed_from"] == 2
    assert summary["environments"] == [run_environment("cpu")]  # one environment, so the resume is exact
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="cannot resume, lr"):
        train_ansm(TrainANSMConfig(**{**tiny_cfg, "out": str(tmp_path / "b"), "lr": 1e-4}))


def test_trains_from_an_attack_set(trained_localizer, tiny_cfg, tmp_path) -> None:
    items = SyntheticForgeries(3, seed=tiny_cfg["seed"], split="train", size=tiny_cfg["size"])
    adv_dir = tmp_path / "adv"
    build_adversarial_dataset(items, trained_localizer, create_attack("fgsm", trained_localizer), adv_dir, seed=0)
    cfg = TrainANSMConfig(**{**tiny_cfg, "adv_data": [str(adv_dir)], "adv_fraction": 1.0})
    _, summary = train_ansm(cfg, trained_localizer)
    assert summary["final_loss_stage2"] is not None
    with pytest.raises(Exception, match="original of"):
        train_ansm(TrainANSMConfig(**{**cfg.__dict__, "out": str(tmp_path / "o2"), "seed": 99}), trained_localizer)
    # pool_seed renders the clean pool apart from ANSM's own seed: another ANSM seed against the same attack set
    other, _ = train_ansm(TrainANSMConfig(**{**cfg.__dict__, "out": str(tmp_path / "o3"), "seed": 99,
                                             "pool_seed": tiny_cfg["seed"]}), trained_localizer)
    first, _ = load_ansm(tmp_path / "ansm" / "ansm")
    assert any(not torch.equal(a, b) for a, b in zip(other.state_dict().values(), first.state_dict().values()))


@pytest.mark.parametrize("kwargs, message", [
    ({"stage1_steps": 0, "stage2_steps": 0}, "nothing to train"),
    ({"attacks": ["cw-l2"]}, "online attacks"),
    ({"ffa_reduction": "max"}, "ffa_reduction"),
    ({"crop": 200}, "crop"),
    ({"adv_fraction": 1.0}, "no adv_data"),
    ({"taps": ["enc9"]}, "no layer named"),
    ({"loss": "mse"}, "loss must be one of"),
    ({"loss": "pixel"}, "single-stage baseline"),
    ({"mgr_pixel": -1.0}, "mgr_pixel"),
    ({"ffa_weight": 0.0}, "stage 1 has no loss"),
    ({"stage2_lr": 0.0}, "stage2_lr"),
    ({"batch_size": 3, "crop": 33}, None),  # valid: odd sizes are fine
])
def test_config_errors(tiny_cfg, trained_localizer, kwargs, message) -> None:
    if message is None:
        TrainANSMConfig(**{**tiny_cfg, **kwargs})
        return
    with pytest.raises(ConfigError, match=message):
        train_ansm(TrainANSMConfig(**{**tiny_cfg, **kwargs}), trained_localizer)


@pytest.mark.parametrize("loss", ["pixel", "feature"])
def test_baseline_denoisers_train_and_say_what_they_are(tiny_cfg, trained_localizer, loss) -> None:
    cfg = TrainANSMConfig(**{**tiny_cfg, "loss": loss, "stage1_steps": 0, "stage2_steps": 6, "lr": 1e-2})
    losses: list[float] = []
    model, summary = train_ansm(cfg, trained_localizer, on_step=lambda s, st, l: losses.append(l))
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    _, meta = load_ansm(Path(cfg.out) / "ansm")
    assert meta["stage"] == f"baseline-{loss}"


def test_lr_schedule_restarts_per_stage() -> None:
    cfg = TrainANSMConfig(stage1_steps=50, stage2_steps=50, warmup=5, lr=1e-2)
    assert lr_at(0, cfg) == pytest.approx(2e-3) and lr_at(4, cfg) == pytest.approx(1e-2)
    assert lr_at(49, cfg) < 1e-3 and lr_at(50, cfg) == pytest.approx(2e-3)


def test_stage2_lr_sets_the_peak_of_stage_2_only() -> None:
    cfg = TrainANSMConfig(stage1_steps=50, stage2_steps=50, warmup=5, lr=1e-2, stage2_lr=1e-3)
    assert lr_at(4, cfg) == pytest.approx(1e-2) and lr_at(54, cfg) == pytest.approx(1e-3)
    assert max(lr_at(s, cfg) for s in range(50, 100)) == pytest.approx(1e-3)


def test_recovery_formula() -> None:
    assert recovery(0.8, 0.2, 0.65) == pytest.approx(0.75)
    assert recovery(0.5, 0.5, 0.9) is None


def test_evaluate_identity_defense_recovers_nothing(trained_localizer, synthetic_batch) -> None:
    items = [{"image": synthetic_batch["image"][i], "mask": synthetic_batch["mask"][i], "name": str(i)} for i in range(8)]
    identity = torch.nn.Identity()
    res = evaluate_defenses(trained_localizer, items, [AttackSpec("fgsm", "fgsm", {"eps": 8 / 255})], {"id": identity})
    a = res["attacks"]["fgsm"]
    assert a["defenses"]["id"]["f1_def"] == pytest.approx(a["f1_adv"])
    assert a["defenses"]["id"]["f1_clean_def"] == pytest.approx(a["f1_clean"])


def test_evaluation_killed_midway_resumes_to_the_unbroken_numbers(trained_localizer, synthetic_batch, tmp_path) -> None:
    """A progress file keeps the finished batches: killed after two of four batches, the same call finishes the
    other two and returns exactly what one unbroken run returns (the PGD random starts included)."""
    items = [{"image": synthetic_batch["image"][i], "mask": synthetic_batch["mask"][i], "name": str(i)} for i in range(8)]
    attacks = [AttackSpec("pgd", "pgd", {"eps": 8 / 255, "steps": 2}), AttackSpec("fgsm", "fgsm", {"eps": 8 / 255})]
    blur = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def evaluate(**kw):
        res = evaluate_defenses(trained_localizer, items, attacks, {"blur": blur}, batch_size=2, seed=5, **kw)
        res.pop("examples")
        return res

    unbroken = evaluate()
    progress, seen = tmp_path / "progress.json", []

    class Killed(Exception):
        pass

    def kill_after_two(n: int) -> None:
        seen.append(n)
        if len(seen) == 2:
            raise Killed

    with pytest.raises(Killed):
        evaluate(progress_file=progress, on_item=kill_after_two)
    assert len(json.loads(progress.read_text())["batches"]) == 2
    resumed, timed = [], []  # the two finished batches are reported apart from the two scored now (progress bars)
    assert dumps_json(evaluate(progress_file=progress, on_item=timed.append, on_resumed=resumed.append)) == \
        dumps_json(unbroken)  # (NaN-safe comparison)
    assert resumed == [2, 2] and timed == [2, 2]
    assert unbroken["attacks"]["pgd"]["f1_adv"] < unbroken["clean"]["f1"] - 0.05  # numbers that mean something
    # a file from other settings, or from other images, is refused by name instead of mixing two evaluations
    with pytest.raises(ConfigError, match="progress.json.*other attacks"):
        evaluate_defenses(trained_localizer, items, attacks[:1], {"blur": blur}, batch_size=2, seed=5,
                          progress_file=progress)
    with pytest.raises(ConfigError, match="progress.json: batch 0 was finished on other images"):
        evaluate_defenses(trained_localizer, items[::-1], attacks, {"blur": blur}, batch_size=2, seed=5,
                          progress_file=progress)


def test_stage2_pixel_term_by_hand() -> None:
    """Stage 2 with ``mgr_pixel``: MgR + w * 255 * (mean |D(x_a) - x_o| + mean |D(x_o) - x_o|), checked on a tiny
    case: an identity ANSM and a localizer that always answers logit 0 (so each BCE is log 2)."""
    from ansm.defense.ansm_net import ANSM
    from ansm.defense.trainer import Batch, ansm_losses

    class Zero(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * 0

    x_o = torch.full((2, 3, 4, 4), 0.5)
    x_a = x_o.clone()
    x_a[0] += 8 / 255  # one image attacked by 8/255 everywhere, the other left clean
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1
    batch = Batch(x_o, x_a, mask, "offline")
    cfg = TrainANSMConfig(localizer="x", stage1_steps=0, stage2_steps=1, mgr_lambda=0.5, mgr_pixel=0.1)
    loss = ansm_losses(ANSM(), Zero(), batch, 2, [], cfg)
    mgr = (1 + 0.5) * math.log(2)
    pixel = 255 * ((8 / 255) / 2 + 0.0)  # mean |x_a - x_o| over both images: half of them moved by 8/255
    assert loss.item() == pytest.approx(mgr + 0.1 * pixel, rel=1e-5)
    cfg0 = TrainANSMConfig(localizer="x", stage1_steps=0, stage2_steps=1, mgr_lambda=0.5)
    assert ansm_losses(ANSM(), Zero(), batch, 2, [], cfg0).item() == pytest.approx(mgr, rel=1e-5)


def test_stage1_pixel_alignment_by_hand() -> None:
    """Stage 1 with ``ffa_pixel`` and FFA weight 0 is the pixel term alone, and never runs the localizer; with an FFA
    weight w it is w * FFA + the pixel term."""
    from ansm.defense.ansm_net import ANSM
    from ansm.defense.losses import ffa_loss
    from ansm.defense.trainer import Batch, ansm_losses
    from ansm.models.taps import FeatureTaps

    class Refuses(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise AssertionError("the localizer ran in a pixel-only stage 1")

    x_o = torch.full((2, 3, 4, 4), 0.5)
    x_a = x_o.clone()
    x_a[0] += 8 / 255
    batch = Batch(x_o, x_a, torch.zeros(2, 1, 4, 4), "offline")
    pixel = 255 * ((8 / 255) / 2)  # identity ANSM: |D(x_a) - x_o| averages 4/255, |D(x_o) - x_o| is 0
    cfg = TrainANSMConfig(localizer="x", stage1_steps=1, stage2_steps=0, ffa_weight=0.0, ffa_pixel=0.25)
    assert ansm_losses(ANSM(), Refuses(), batch, 1, [], cfg).item() == pytest.approx(0.25 * pixel, rel=1e-5)

    class Conv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.body = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)[:, :1]

    conv = Conv()
    with torch.no_grad(), FeatureTaps(conv, ["body"]) as t:
        conv(x_o)
        f_o = dict(t.features)
        conv(x_a)
        f_a = dict(t.features)
    ffa = ffa_loss(f_a, f_o, cfg.ffa_alpha, cfg.ffa_reduction).item()
    assert ffa > 0
    cfg2 = TrainANSMConfig(localizer="x", stage1_steps=1, stage2_steps=0, ffa_weight=2.0, ffa_pixel=0.25)
    assert ansm_losses(ANSM(), conv, batch, 1, ["body"], cfg2).item() == pytest.approx(2 * ffa + 0.25 * pixel, rel=1e-5)


def test_offline_pairs_are_flipped_and_rotated_together(trained_localizer, tmp_path) -> None:
    """Attack-set triples get the online images' flips and quarter turns, the same for image, attack and mask, so
    every batch row is still one original with its own attack noise."""
    from ansm.defense.data import AdversarialPool
    from ansm.defense.ddp import DistContext
    from ansm.defense.trainer import make_batch

    g = torch.Generator().manual_seed(0)
    x_o = torch.randint(0, 256, (4, 3, 8, 8), generator=g, dtype=torch.uint8)
    x_a = (x_o.int() + torch.randint(-8, 9, x_o.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    m = torch.rand(4, 1, 8, 8, generator=g) > 0.5
    adv = AdversarialPool(x_o, x_a, m, [str(i) for i in range(4)])
    cfg = TrainANSMConfig(localizer="x", batch_size=4, crop=None, adv_data=["set"], adv_fraction=1.0, size=8)
    ctx = DistContext()
    layouts = set()
    for step in range(12):
        b = make_batch(step, cfg, ctx, trained_localizer, None, adv)
        for row in range(4):
            candidates = [(i, k, f) for i in range(4) for k in range(4) for f in (False, True)
                          if torch.equal((x_o[i].flip(-1) if f else x_o[i]).rot90(k, dims=(-2, -1)).float() / 255, b.x_o[row])]
            assert candidates, "a batch row is not a flip/rotation of an attack-set original"
            i, k, f = candidates[0]
            same = lambda t: (t[i].flip(-1) if f else t[i]).rot90(k, dims=(-2, -1)).float()  # noqa: E731
            assert torch.equal(same(x_a) / 255, b.x_a[row]) and torch.equal(same(m), b.mask[row])
            layouts.add((k, f))
    assert len(layouts) > 4  # the draws really vary


def test_resume_accepts_a_state_written_before_mgr_pixel_existed(tiny_cfg) -> None:
    from ansm.checkpoint import load_checkpoint, save_checkpoint

    cfg = TrainANSMConfig(**{**tiny_cfg, "stage2_steps": 1})
    train_ansm(cfg)
    state = Path(tiny_cfg["out"]) / "train_state"
    tensors, meta = load_checkpoint(state)
    del meta["config"]["mgr_pixel"]  # as written by the trainer before the field was added
    save_checkpoint(state, tensors, meta)
    _, summary = train_ansm(TrainANSMConfig(**{**tiny_cfg, "stage2_steps": 1}))
    assert summary["resumed_from"] == cfg.total_steps
    with pytest.raises(CheckpointError, match="mgr_pixel"):
        train_ansm(TrainANSMConfig(**{**tiny_cfg, "stage2_steps": 1, "mgr_pixel": 0.5}))


def _mixed_size_folder(root: Path) -> Path:
    """Landscape and portrait forgeries (as in CASIA v1) plus an authentic photo, with a train split."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    ids = []
    for i, (w, h) in enumerate([(72, 48), (48, 72), (64, 52), (72, 48)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"f{i}.png")
        m = np.zeros((h, w), dtype=np.uint8)
        m[8:30, 10:40] = 255
        Image.fromarray(m).save(root / f"f{i}_gt.png")
        ids.append(f"f{i}")
    (root / "authentic").mkdir()
    Image.fromarray(rng.integers(0, 256, (48, 72, 3), dtype=np.uint8)).save(root / "authentic" / "a0.png")
    (root / "splits.json").write_text(json.dumps({"train": ids[:3] + ["a0"], "val": ids[3:], "test": []}))
    return root


def test_trains_on_a_real_split_with_a_mixed_size_attack_set(trained_localizer, tiny_cfg, tmp_path) -> None:
    """--data: the clean pool is the folder's train split at native resolution, and an attack set of landscape and
    portrait photos is cropped image by image, each crop still an original with its own attack noise."""
    from ansm.data.datasets import open_dataset
    from ansm.defense.data import load_adversarial_pool, real_clean_pool
    from ansm.defense.ddp import DistContext
    from ansm.defense.trainer import make_batch

    folder = _mixed_size_folder(tmp_path / "real")
    adv_dir = tmp_path / "adv"
    eps = 8 / 255
    build_adversarial_dataset(open_dataset(folder, split="train"), trained_localizer,
                              create_attack("fgsm", trained_localizer, eps=eps), adv_dir, seed=0)
    adv = load_adversarial_pool([adv_dir])
    assert isinstance(adv.originals, list) and {tuple(t.shape[-2:]) for t in adv.originals} == {(48, 72), (72, 48), (52, 64)}
    cfg = TrainANSMConfig(**{**tiny_cfg, "data": str(folder), "adv_data": [str(adv_dir)], "adv_fraction": 0.5})
    pool = real_clean_pool(folder, "train")
    assert len(pool.forged) == 3 and len(pool.authentic) == 1  # the val image stays out
    sources = set()
    for step in range(8):
        b = make_batch(step, cfg, DistContext(), trained_localizer, pool, adv)
        assert b.x_o.shape == b.x_a.shape == (4, 3, 32, 32) and b.mask.shape == (4, 1, 32, 32)
        bound = eps if b.source == "offline" else cfg.eps_max  # an aligned pair differs by attack noise only
        assert float((b.x_a - b.x_o).abs().max()) <= bound + 1.01 / 255
        sources.add(b.source.split(":")[0])
    assert sources == {"online", "offline"}
    _, summary = train_ansm(cfg, trained_localizer)
    assert summary["final_loss_stage2"] is not None
    with pytest.raises(CheckpointError, match="cannot resume, split"):
        train_ansm(TrainANSMConfig(**{**cfg.__dict__, "split": "val"}), trained_localizer)
    with pytest.raises(ConfigError, match="needs crop"):
        TrainANSMConfig(**{**tiny_cfg, "data": str(folder), "crop": None})


@pytest.mark.parametrize("stage", [1, 2])
def test_losses_stay_float32_under_autocast(trained_localizer, synthetic_batch, stage: int) -> None:
    """On CUDA the trainer runs ``ansm_losses`` under fp16 autocast; the networks' forwards drop precision, the
    losses must not: the loss is float32 and within 2% of the full-precision one, and ANSM's gradients are finite.
    Checked here under the CPU's fp16 autocast, the trainer's dtype. (bfloat16, with 3 fewer mantissa bits, puts FFA
    3% off: its feature differences are small differences of large activations.)"""
    from ansm.defense.ansm_net import ANSM
    from ansm.defense.trainer import Batch, ansm_losses, frozen_copy

    localizer = frozen_copy(trained_localizer, None)
    x_o, m = synthetic_batch["image"][:4, :, :32, :32], synthetic_batch["mask"][:4, :, :32, :32]
    x_a = (x_o + 8 / 255 * torch.randn(x_o.shape, generator=torch.Generator().manual_seed(0)).sign()).clamp(0, 1)
    batch = Batch(x_o, x_a, m, "offline")
    cfg = TrainANSMConfig(localizer="x", stage1_steps=1, stage2_steps=1, mgr_ffa=0.5, clean_kl=1.0, mgr_pixel=0.1)
    torch.manual_seed(0)
    ansm = ANSM()
    full = ansm_losses(ansm, localizer, batch, stage, list(localizer.default_taps), cfg)
    with torch.autocast("cpu", dtype=torch.float16):
        mixed = ansm_losses(ansm, localizer, batch, stage, list(localizer.default_taps), cfg)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(full.item(), rel=0.02)
    mixed.backward()
    assert all(torch.isfinite(p.grad).all() for p in ansm.parameters() if p.grad is not None)
