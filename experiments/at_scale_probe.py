"""A probe on ``val`` (issue 14): does adversarial training of the localizer itself start to buy white-box
robustness when it is given 18x the benchmark's budget, or a stronger training attack? Learning curves, two runs.

Every trained defense in docs/benchmark.md is at F1 <= 0.008 under the white-box attack, and the longest adversarial
training tried so far (TRADES, 1,980 steps) is at 0.003 at 2/255. Before asking for a GPU, the question is whether the
curve moves at all with compute: if robust F1 rises between 500 and 4,000 steps, more steps (a GPU) are the way to the
bar; if it stays at zero, compute alone is not.

One run of ``ansm train-localizer``'s adversarial training, as a user would start it (``--init`` the target
localizer ``--adv-eps 4/255``: PGD-3 on half of each batch, the other half clean), with 4,000 steps at batch 16, lr
1e-3 and a pool of 4,000 training images (the benchmark's fine-tuning: 220 steps, pool 800). The weights at 500,
1,000, 2,000 and 4,000 steps (one cosine schedule over all 4,000) are attacked on the 32 ``val`` images with the
white-box PGD-100 (untargeted and hide, the worst per image) at 2, 4 and 8 /255, with the same attack cut to 10
steps, and with the training's own attack (PGD-3 at 4/255): is the localizer robust at least to what it was
trained against?

It is (F1 0.41 under PGD-3 where the target has 0.04), and not to PGD-10 (0.05) or PGD-100 (0.00). So the second
run trains against PGD-10 instead, for 2,000 steps: about the same compute as PGD-3's 4,000. Every setting of the
first run was fixed before it started; the second run and the two diagnostic columns were added after its rows
were seen, all on ``val``; nothing here is chosen on ``test``.

A third run was added after ``experiments/eps_curve.py``: the plain unet-small (RGB, no noise residual; trained by
that probe's docstring command) was the least sensitive localizer there, and 1,000 steps of PGD-10 training from it
kept half its clean F1 up to 1/255, but at clean F1 0.30. Its question: given 4,000 steps (one cosine schedule, the
PGD-3 run's length and recipe, PGD-10 as the attack), does its clean F1 come back, as the twostream's did, and
does the robustness stay? Its step-0 row is the clean unet-small.

    python experiments/at_scale_probe.py          # ~2 h on one core; rows resume one by one
    python experiments/at_scale_probe.py --docs   # also writes the table into docs/benchmark.md
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn
from val_probe import (REPO, TARGET, forged_f1, frozen, mean_f1, require_target, run, val_batches,  # (this folder;
                       white_box_f1)                                                               # src on the path)

from ansm.checkpoint import load_checkpoint  # noqa: E402
from ansm.models.registry import load_localizer, save_localizer  # noqa: E402
from ansm.models.train import TrainLocalizerConfig, train_localizer  # noqa: E402
from ansm.utils import seeded_generator, write_json_atomic  # noqa: E402

OUT = REPO / "runs" / "experiments" / "at-scale"
EPS = (2, 4, 8)
STEPS = 100
UNET_SMALL = REPO / "runs" / "experiments" / "eps-curve" / "unet-small" / "localizer"


@dataclass(frozen=True)
class Variant:
    out: Path  # its folder (PGD-3's is the probe's first)
    adv_steps: int  # PGD steps of the training attack
    snapshots: tuple[int, ...]  # steps whose weights are attacked
    init: Path = TARGET  # the localizer it starts from; its own step-0 row unless it is the target
    label: str = ""  # how the table names it


VARIANTS = {"PGD-3": Variant(OUT, 3, (500, 1000, 2000, 4000), label="PGD-3"),
            "PGD-10": Variant(OUT / "pgd10", 10, (500, 1000, 2000), label="PGD-10"),
            "unet-small PGD-10": Variant(OUT / "unet-small-pgd10", 10, (1000, 2000, 4000), UNET_SMALL,
                                         "unet-small, PGD-10")}
TRAINING_ATTACK, WEAK = "training attack 4/255", "white-box PGD-10 4/255"


def training_config(v: Variant) -> TrainLocalizerConfig:
    init_cfg = json.loads(v.init.with_suffix(".json").read_text())["training"]["config"]
    return TrainLocalizerConfig(out=str(v.out / "train"), init=str(v.init), seed=0, size=64, steps=v.snapshots[-1],
                                batch_size=16, lr=1e-3, warmup=20, pool=4000, eval_n=0, ckpt_every=v.snapshots[0],
                                adv_eps=4 / 255, adv_steps=v.adv_steps, adv_fraction=0.5,
                                noise_std=init_cfg.get("noise_std", 0.0), noise_prob=init_cfg.get("noise_prob", 0.5))


def measure() -> dict[str, dict]:
    """``{variant: {step: row}}``; rows not yet in a variant's summary.json are measured and written one by one,
    so a killed run resumes (its training too)."""
    require_target()
    if not UNET_SMALL.with_suffix(".json").is_file():
        sys.exit(f"error: no unet-small at {UNET_SMALL}: train it with the command in experiments/eps_curve.py")
    batches = val_batches()
    return {name: measure_variant(v, batches) for name, v in VARIANTS.items()}


def measure_variant(v: Variant, batches: list) -> dict[str, dict]:
    out, snapshots = v.out, v.snapshots
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    out.mkdir(parents=True, exist_ok=True)
    if (out == OUT or v.init != TARGET) and "0" not in summary:  # the target itself once, any other start in its run
        summary["0"] = score(frozen(load_localizer(v.init)), batches)
        write_json_atomic(out / "summary.json", summary)
    cfg = training_config(v)
    state = Path(cfg.out) / "train_state"
    t0, attacking = time.perf_counter(), [0.0]  # seconds spent attacking snapshots, not training

    def snapshot(step: int) -> None:
        t = time.perf_counter()
        evaluate_snapshot(step, state, v, summary, batches, t - t0 - attacking[0])
        attacking[0] += time.perf_counter() - t

    def on_step(step: int, _loss: float) -> None:
        # at step k the state saved after k steps is on disk (ckpt_every divides every snapshot)
        if step in snapshots and str(step) not in summary:
            snapshot(step)

    if not all(str(s) in summary for s in snapshots):
        train_localizer(cfg, on_step=on_step)
        if str(snapshots[-1]) not in summary:
            snapshot(snapshots[-1])
    for step, row in summary.items():  # diagnostic columns, added after the first rows were measured
        model = frozen(load_localizer(v.init if step == "0" else out / f"step-{step}"))
        if TRAINING_ATTACK not in row:
            row[TRAINING_ATTACK] = training_attack_f1(model, batches, cfg)
        if WEAK not in row:
            row[WEAK] = white_box_f1(model, batches, 4, 10)
        write_json_atomic(out / "summary.json", summary)
    return summary


def training_attack_f1(model: nn.Module, batches: list, cfg: TrainLocalizerConfig) -> float:
    """F1 under the attack the training used (PGD-3 at 4/255, its step size, untargeted, one random start): has
    training made the localizer robust at least to what it trained against?"""
    from ansm.attacks import create_attack

    pgd = create_attack("pgd", model, eps=cfg.adv_eps, alpha=2.5 * cfg.adv_eps / cfg.adv_steps, steps=cfg.adv_steps)
    scores = [v for k, (x, m) in enumerate(batches) for v in forged_f1(model, pgd(x, m, generator=seeded_generator(1, k)), m)]
    return sum(scores) / len(scores)


def evaluate_snapshot(step: int, state: Path, v: Variant, summary: dict, batches: list, train_s: float) -> None:
    tensors, meta = load_checkpoint(state)
    if meta["step"] != step:
        raise RuntimeError(f"{state}: holds step {meta['step']}, expected {step}")
    model = load_localizer(v.init)
    model.load_state_dict({k[6:]: w for k, w in tensors.items() if k.startswith("model.")})
    save_localizer(model, v.out / f"step-{step}")
    t = time.perf_counter()
    summary[str(step)] = score(frozen(model), batches) | {"train_s": round(train_s), "attack_s": round(time.perf_counter() - t)}
    print(json.dumps({step: summary[str(step)]}), flush=True)
    write_json_atomic(v.out / "summary.json", summary)


def score(model: nn.Module, batches: list) -> dict[str, float]:
    """Clean F1 and white-box PGD-100 F1 (untargeted and hide, the worst per image), over the forged images."""
    clean, n_forged = mean_f1(model, batches)
    return {"clean": clean, "n_forged": n_forged} | {f"adaptive {e}/255": white_box_f1(model, batches, e, STEPS) for e in EPS}


def table(summaries: dict[str, dict[str, dict]]) -> str:
    first = next(iter(summaries.values()))
    lines = [f"| adversarial training (`val`, {first['0']['n_forged']} forged images) | clean F1 | white-box 2/255 | "
             "white-box 4/255 | white-box 8/255 | white-box PGD-10 4/255 | its training attack 4/255 | "
             "training s (one core, this process) |", "|---|---|---|---|---|---|---|---|"]
    for name, summary in summaries.items():
        v = VARIANTS[name]
        for step, r in sorted(summary.items(), key=lambda kv: int(kv[0])):
            start = "none (the target localizer)" if v.init == TARGET else f"none ({v.init.parent.name}, its start)"
            label = start if step == "0" else f"{v.label}, {step} steps"
            lines.append(f"| {label} | {r['clean']:.3f} | " + " | ".join(f"{r[f'adaptive {e}/255']:.3f}" for e in EPS)
                         + "".join(f" | {r[k]:.3f}" if k in r else " | -" for k in (WEAK, TRAINING_ATTACK))
                         + f" | {r.get('train_s', '-')} |")  # (the two diagnostics are measured once training ends)
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, "at-scale-probe", measure, table)
