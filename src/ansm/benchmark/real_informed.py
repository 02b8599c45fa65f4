"""Stage 7 of the real benchmark (``--until informed``): which defense holds against an attacker who knows it, on
real forgeries? The informed preset's side-by-side (docs/benchmark.md), on CASIA v1 ``test``.

Three trained defenses, each with every seed of ``RealConfig.seeds``, at one budget (``stage1_steps +
stage2_steps`` steps at batch ``ansm_batch`` on ``crop``-px crops of CASIA v1 ``train``):

* **plain ANSM**: the recipe chosen on ``val`` (stages 4-5, reused);
* **robust ANSM**: the same recipe, with the synthetic-``val``-chosen robust settings of ``BenchmarkConfig``
  (every online attack crafted through the ANSM being trained, budget curriculum, clean KL; ``robust_recipe``);
* **PGD adversarial fine-tuning** of the localizer: ``ansm train-localizer --init`` the localizer, every example
  PGD-3 at ``advft_eps`` (8/255), lr 1e-3; validated once, at its last step (no checkpoint is chosen for it).

Scored on the first ``informed_n`` forged ``test`` images at native resolution, one image at a time, each
defense (and the bare localizer) under:

* oblivious: PGD-10 at 8/255 on the bare localizer;
* gray-box (the ANSMs): PGD-10 at 8/255 through the next seed's ANSM of the same kind;
* white-box: PGD-``informed_steps`` through the defense, untargeted and hide, ``informed_restarts`` restarts
  each, at each of ``informed_eps``; the worst per image, the oblivious image included (the adaptive row);
* the checks: the gradient attack's F1 after half its steps (``converged``: it must not be higher by more than
  ``CHECK_MARGIN``) and an unbounded budget (``UNBOUNDED_EPS``: it must take F1 under ``UNBOUNDED_MAX``).

Each image's numbers are written to ``ansm/informed/cells/<index>.json`` as soon as they exist: a killed run
resumes at the next image. The table: :func:`informed_section`.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ansm.utils import write_json_atomic

if TYPE_CHECKING:
    from ansm.benchmark.real import RealConfig

KINDS = {"ansm": "plain ANSM", "ansm-robust": "robust ANSM", "adv-finetune": "PGD adversarial fine-tuning"}
OBLIVIOUS = {"eps": 8 / 255, "steps": 10}
CHECK_MARGIN = 0.03  # converged: F1 after all steps may be lower than after half by at most this
UNBOUNDED_EPS, UNBOUNDED_MAX = 64 / 255, 0.05


def robust_flags() -> list[str]:
    """``ansm train`` flags of the robust recipe: ``BenchmarkConfig``'s ``robust_*`` defaults (chosen on the
    synthetic ``val`` split by experiments/robust_val.py), the curriculum as a share of the real budget."""
    from ansm.benchmark.config import BenchmarkConfig

    b = BenchmarkConfig()
    return ["--defended-fraction", str(b.robust_defended_fraction), "--clean-kl", str(b.robust_clean_kl),
            "--pgd-steps", str(b.robust_pgd_steps), "--eps-min", f"{b.robust_eps_min * 255:g}/255",
            "--eps-max", f"{b.robust_eps_max * 255:g}/255"]


def train_defenses(cfg: "RealConfig", localizer: Path, casia: Path, adv: list[Path], winner: str,
                   plain: dict[str, Path], out: Path) -> dict[str, dict[str, Path]]:
    """Every seed of the robust ANSM and of the adversarial fine-tuning (each resumes or is skipped when done);
    ``{kind: {"s<seed>": checkpoint}}`` with the plain ANSMs of stage 5."""
    from ansm.benchmark.config import BenchmarkConfig
    from ansm.benchmark.real import _train_ansm, cli

    total = cfg.stage1_steps + cfg.stage2_steps
    curriculum = ["--curriculum", str(round(BenchmarkConfig().robust_curriculum * total))]
    robust = {f"s{s}": _train_ansm(cfg, localizer, casia, adv, winner, s, out / f"robust-s{s}",
                                   extra=[*robust_flags(), *curriculum]) for s in cfg.seeds}
    advft = {}
    for s in cfg.seeds:
        folder = out / f"adv-finetune-s{s}"
        if not (folder / "localizer.json").is_file():
            cli("train-localizer", "--data", str(casia), "--init", str(localizer), "--adv-eps",
                f"{cfg.advft_eps * 255:g}/255", "--adv-fraction", "1", "--steps", str(total), "--val-every", str(total),
                "--batch-size", str(cfg.ansm_batch), "--crop", str(cfg.crop), "--lr", "0.001", "--seed", str(s),
                "--device", cfg.device, "--out", str(folder))
        advft[f"s{s}"] = folder / "localizer"
    return {"ansm": plain, "ansm-robust": robust, "adv-finetune": advft}


def _defenses(localizer_path: Path, checkpoints: dict[str, dict[str, Path]], device: Any) -> list:
    """The bare localizer, then every seed of every kind, each ANSM with the next seed's as its gray-box stand-in."""
    from ansm.benchmark.defenses import Defense, _frozen
    from ansm.defense.ansm_net import load_ansm
    from ansm.models.registry import load_localizer

    bare = _frozen(load_localizer(localizer_path), device)
    out = [Defense("none", "none", bare)]
    for kind, seeds in checkpoints.items():
        if kind == "adv-finetune":
            out += [Defense(kind, "model", _frozen(load_localizer(p), device), None, int(k[1:])) for k, p in seeds.items()]
            continue
        ansm = [Defense(kind, "ansm", bare, _frozen(load_ansm(p)[0], device), int(k[1:])) for k, p in seeds.items()]
        for i, d in enumerate(ansm):  # gray-box: as in the synthetic benchmark (ansm.benchmark.defenses)
            d.surrogate = ansm[(i + 1) % len(ansm)]
        out += ansm
    return out


def score_image(defenses: list, x: Any, m: Any, cfg: "RealConfig", index: int) -> dict[str, dict[str, float]]:
    """One forged image's F1 per defense: clean, oblivious, gray-box, white-box per eps (with the checks' numbers)."""
    import torch

    from ansm.benchmark.threats import _f1, adaptive_attack, pgd
    from ansm.utils import seeded_generator

    bare = defenses[0].localizer
    with torch.enable_grad():
        x_obl = pgd(bare, OBLIVIOUS["eps"], OBLIVIOUS["steps"])(x, m, generator=seeded_generator(0, index, 0)).detach()
    cells: dict[str, dict[str, float]] = {}
    for d in defenses:
        row = {"clean": float(_f1(d.logits, x, m)[0]), "oblivious": float(_f1(d.logits, x_obl, m)[0])}
        if d.surrogate is not None:
            with torch.enable_grad():
                x_gray = pgd(d.surrogate.attacker_view(), OBLIVIOUS["eps"], OBLIVIOUS["steps"])(
                    x, m, generator=seeded_generator(0, index, 1)).detach()
            row["gray-box"] = float(_f1(d.logits, x_gray, m)[0])
        steps, half = cfg.informed_steps, cfg.informed_steps // 2
        for j, eps in enumerate(cfg.informed_eps):
            with torch.enable_grad():
                res = adaptive_attack(d.attacker_views(), d.logits, x, m, eps, steps, cfg.informed_restarts,
                                      ["untargeted", "hide"], seeded_generator(0, index, 2, j), checkpoints=[half],
                                      candidates=[x_obl])
            tag = f"{eps * 255:g}"
            row[f"white-box {tag}"] = float(_f1(d.logits, res.worst, m)[0])
            row[f"gradient {tag}"] = float(_f1(d.logits, res.gradient, m)[0])
            row[f"half steps {tag}"] = float(res.curve[half][0])
        with torch.enable_grad():
            res = adaptive_attack(d.attacker_views(), d.logits, x, m, UNBOUNDED_EPS, max(1, half), 1, ["hide"],
                                  seeded_generator(0, index, 3))
        row["unbounded"] = float(_f1(d.logits, res.gradient, m)[0])
        cells[d.key] = row
    return cells


def score(cfg: "RealConfig", localizer_path: Path, casia: Path, checkpoints: dict[str, dict[str, Path]],
          out: Path) -> dict[str, Any]:
    """Every image not yet in ``out/cells`` (one JSON per image), then the per-defense means."""
    from ansm.benchmark.real import _forged
    from ansm.cli.app import progress
    from ansm.utils import resolve_device

    device = resolve_device(cfg.device)
    defenses = _defenses(localizer_path, checkpoints, device)
    forged = _forged(casia, "test", cfg.informed_n)
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("test: attackers who know the defense", total=len(forged))
        for i in range(len(forged)):
            path = cells_dir / f"{i:04d}.json"
            if path.is_file():  # scored before a resume
                bar.update(task, advance=1, resumed=True)
                continue
            item = forged[i]
            x, m = item["image"][None].to(device), item["mask"][None].to(device)
            write_json_atomic(path, {"name": str(item["name"]), "defenses": score_image(defenses, x, m, cfg, i)})
            bar.advance(task, 1)
    cells = [json.loads((cells_dir / f"{i:04d}.json").read_text()) for i in range(len(forged))]
    means = {k: {c: statistics.mean(cell["defenses"][k][c] for cell in cells) for c in columns}
             for k, columns in cells[0]["defenses"].items()}
    return {"n_forged": len(cells), "means": means, "groups": {d.key: d.group for d in defenses},
            "train_s": _training_seconds(checkpoints), "eps": [round(e * 255, 3) for e in cfg.informed_eps],
            "steps": cfg.informed_steps, "restarts": cfg.informed_restarts, "seconds": round(time.perf_counter() - t0, 1)}


def _training_seconds(checkpoints: dict[str, dict[str, Path]]) -> dict[str, float | None]:
    """Each trained defense's training time, read back from its checkpoint's JSON. A training that resumed timed
    only the steps after the resume (``resumed_from``): its time is scaled to all its steps, so a resume at step 200
    of 250 does not make it look five times cheaper."""
    from ansm.checkpoint import load_checkpoint_meta

    seconds: dict[str, float | None] = {}
    for kind, seeds in checkpoints.items():
        for k, path in seeds.items():
            training = load_checkpoint_meta(path).get("training", {})
            t, steps, start = training.get("train_s"), training.get("steps"), training.get("resumed_from") or 0
            if t is not None and steps and 0 < start < steps:
                t = round(t * steps / (steps - start), 1)
            seconds[f"{kind}@{k}"] = t
    return seconds


def informed_section(done: dict[str, Any]) -> str:
    """The side-by-side table (mean ± sd over seeds) and how it was measured."""
    from ansm.benchmark.real_report import mean_sd
    from ansm.eval.readme import markdown_table

    inf, cfg = done["informed"], done["config"]
    eps = [f"{e:g}" for e in inf["eps"]]
    by_group: dict[str, list[str]] = {}
    for key, group in inf["groups"].items():
        by_group.setdefault(group, []).append(key)
    rows = []
    for group, keys in by_group.items():
        ms = [inf["means"][k] for k in keys]

        def col(c: str) -> str:
            return mean_sd([m.get(c) for m in ms]) if any(c in m for m in ms) else "-"

        kept = [mean_sd([m[f"white-box {e}"] / m["clean"] if m["clean"] > 0 else None for m in ms]) for e in eps]
        checks = [f"{e}/255 not converged" for e in eps
                  if any(m[f"gradient {e}"] < m[f"half steps {e}"] - CHECK_MARGIN for m in ms)]
        checks += ["unbounded budget leaves F1"] if any(m["unbounded"] > UNBOUNDED_MAX for m in ms) else []
        seconds = [inf["train_s"][k] for k in keys if inf["train_s"].get(k) is not None]
        rows.append([KINDS.get(group, "bare localizer"), f"{statistics.mean(seconds):.0f}" if seconds else "-", col("clean"),
                     col("oblivious"), col("gray-box"), *(col(f"white-box {e}") for e in eps), *kept,
                     ", ".join(checks) or "none"])
    table = markdown_table(["defense (CASIA v1 test)", "train s / seed", "clean F1", "oblivious 8/255",
                            "gray-box 8/255", *(f"white-box {e}/255" for e in eps), *(f"kept at {e}/255" for e in eps),
                            "failed checks"], rows)
    return (f"{table}\n\nThe first {inf['n_forged']} forged CASIA v1 `test` images at native resolution, F1@0.5 per "
            f"image; mean ± sd over seeds {', '.join(map(str, cfg['seeds']))}. Every trained defense had "
            f"{cfg['stage1_steps'] + cfg['stage2_steps']} steps at batch {cfg['ansm_batch']} on {cfg['crop']}-px "
            "crops of `train` (equal budgets in steps; train s is wall time on a CPU that may have been shared, a "
            "resumed training's scaled from the steps it timed). White-box: PGD through the defense and the localizer, "
            f"{inf['steps']} steps, {inf['restarts']} restart(s) per objective (untargeted, hide), the worst per image, "
            "the oblivious image included; kept = white-box / the same seed's clean F1. Gray-box: PGD-10 through the "
            f"next seed's ANSM. Checks: half the steps must not leave F1 higher by more than {CHECK_MARGIN}; "
            f"an unbounded budget ({UNBOUNDED_EPS * 255:g}/255, hide) must take F1 under {UNBOUNDED_MAX}.")
