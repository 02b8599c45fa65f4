"""How far is issue 14's bar from what any trained defense here holds? A probe on ``val``: white-box F1 against
the budget, below the budgets the bar names.

The bar asks a robust ANSM to keep >= 50% of its clean F1 under the white-box attack at 4/255. Every defense in
docs/benchmark.md is near 0 at 2/255 already, which says the bar is out of reach and not how far. This probe walks
the budget down (0.25, 0.5, 1 and 2 /255, and the bar's own 4/255) and reports, per defense, the largest budget at which it still keeps
half its clean F1: a factor between that and 4/255 is a distance a reader can weigh (and a GPU request can cite).

Rows: the bare target localizer (the robust_val one), the plain ANSM and the val-chosen robust ANSM in front of
it (``experiments/robust_val.py``: ``plain``, ``df1-kl0``), and the two adversarially trained localizers of
``experiments/at_scale_probe.py`` that did best there (PGD-3 after 4,000 steps: the most clean F1; PGD-10 after
500: the most white-box F1 at 4/255). Two diagnostic rows, added after those were seen, ask whether the
sensitivity is the twostream's own (its SRM noise residual x 85): the target's recipe with the other two built-in
architectures, trained by

    for a in mobilenet-unet unet-small; do ansm train-localizer --arch $a --steps 500 --batch-size 16 --lr 0.003 \
        --size 64 --crop 96 --pool 800 --noise-std 8/255 --eval-n 0 --seed 0 --out runs/experiments/eps-curve/$a; done

and, as unet-small came out the least sensitive, one more: unet-small adversarially trained from there,

    ansm train-localizer --arch unet-small --init runs/experiments/eps-curve/unet-small/localizer --steps 1000 \
        --batch-size 16 --lr 0.001 --size 64 --crop 96 --pool 800 --noise-std 8/255 --eval-n 0 --seed 0 \
        --adv-eps 4/255 --adv-steps 10 --adv-fraction 0.5 --out runs/experiments/eps-curve/unet-small-pgd10

Attack: ``val_probe.white_box_f1`` (PGD-100, untargeted and hide, the worst per image) on the 32 ``val`` images.
Nothing is tuned; the first five rows and the budgets were fixed before the first run.

Two checks that can fail. Every budget is attacked on its own, so F1 must not rise with the budget (by more than
0.02); a rise would mean the attack, not the defense, set the number. And budgets under one grey level are not
something a published 8-bit image can carry as they are: the last column rounds the 1/255 attack's images to 8
bits (added after the first run, when the grid's low end came out as it did), so a number owed to float
precision would show there as a higher F1.

    python experiments/eps_curve.py          # ~40 min on one core; runs/experiments/eps-curve/summary.json
    python experiments/eps_curve.py --docs   # also writes the table into docs/benchmark.md
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch.nn as nn
from val_probe import REPO, TARGET, frozen, mean_f1, require_target, run, val_batches, white_box_f1  # (this folder;
                                                                                                   # src on the path)
from ansm.defense.ansm_net import load_ansm  # noqa: E402
from ansm.models.registry import load_localizer  # noqa: E402
from ansm.utils import write_json_atomic  # noqa: E402

OUT = REPO / "runs" / "experiments" / "eps-curve"
EPS = (0.25, 0.5, 1.0, 2.0, 4.0)  # /255 (4/255, the bar's own budget, added after the first run)
STEPS, RISE_TOLERANCE, BAR_EPS = 100, 0.02, 4
EIGHT_BIT = "1/255, rounded to 8 bits"
ROBUST_VAL, AT_SCALE = REPO / "runs" / "experiments" / "robust-val", REPO / "runs" / "experiments" / "at-scale"


def defended(ansm_dir: str) -> Callable[[], nn.Module]:
    return lambda: nn.Sequential(load_ansm(ROBUST_VAL / ansm_dir)[0], load_localizer(TARGET))


ROWS: dict[str, tuple[Callable[[], nn.Module], Path]] = {  # name -> (builder, the file it needs)
    "bare target localizer": (lambda: load_localizer(TARGET), TARGET.with_suffix(".json")),
    "plain ANSM + target": (defended("plain/models/ansm-s0/ansm"), ROBUST_VAL / "plain/models/ansm-s0/ansm.json"),
    "robust ANSM (df1-kl0) + target": (defended("df1-kl0/models/ansm-robust-s0/ansm"),
                                       ROBUST_VAL / "df1-kl0/models/ansm-robust-s0/ansm.json"),
    "PGD-3 adversarial training, 4,000 steps": (lambda: load_localizer(AT_SCALE / "step-4000"),
                                                AT_SCALE / "step-4000.json"),
    "PGD-10 adversarial training, 500 steps": (lambda: load_localizer(AT_SCALE / "pgd10" / "step-500"),
                                               AT_SCALE / "pgd10" / "step-500.json"),
    # added after the rows above were seen: is the sensitivity the twostream's (its noise residual x 85)? The
    # target's recipe (500 steps, batch 16, lr 3e-3, benign noise <= 8/255) with the other built-in architectures
    "diagnostic: mobilenet-unet, the target's recipe": (lambda: load_localizer(OUT / "mobilenet-unet" / "localizer"),
                                                        OUT / "mobilenet-unet" / "localizer.json"),
    "diagnostic: unet-small, the target's recipe": (lambda: load_localizer(OUT / "unet-small" / "localizer"),
                                                    OUT / "unet-small" / "localizer.json"),
    # and, since unet-small came out the least sensitive: does adversarial training start from there? PGD-10 at
    # 4/255 on half of each batch (at_scale_probe's second run), 1,000 steps from the row above, lr 1e-3
    "diagnostic: unet-small + PGD-10 adversarial training, 1,000 steps": (
        lambda: load_localizer(OUT / "unet-small-pgd10" / "localizer"), OUT / "unet-small-pgd10" / "localizer.json"),
}


def measure() -> dict[str, dict]:
    """Every (row, column) not yet in OUT/summary.json, each written when done (a killed run resumes cell by cell).
    Rows whose model is not there yet are named and skipped; the table is only written once every row is in."""
    require_target()
    OUT.mkdir(parents=True, exist_ok=True)
    summary = json.loads((OUT / "summary.json").read_text()) if (OUT / "summary.json").is_file() else {}
    batches = val_batches()
    missing = [str(needs) for needs in (n for _, n in ROWS.values()) if not needs.is_file()]
    for name, (build, needs) in ROWS.items():
        if not needs.is_file():
            continue
        model, row = frozen(build()), summary.setdefault(name, {})
        if "clean" not in row:
            row["clean"], row["n_forged"] = mean_f1(model, batches)
        columns = {f"{e:g}/255": lambda e=e: white_box_f1(model, batches, e, STEPS) for e in EPS}
        columns[EIGHT_BIT] = lambda: white_box_f1(model, batches, 1, STEPS, eight_bit=True)  # the physical check
        for column, compute in columns.items():
            if column not in row:
                t = time.perf_counter()
                row[column] = compute()
                row["seconds"] = row.get("seconds", 0) + round(time.perf_counter() - t)
                print(json.dumps({name: {column: row[column]}}), flush=True)
                write_json_atomic(OUT / "summary.json", summary)
    if missing:
        raise SystemExit("error: not there yet (see the module docstring for what makes them): " + ", ".join(missing))
    return {name: summary[name] for name in ROWS}


def half_kept_up_to(row: dict) -> str:
    """The largest budget of the grid at which white-box F1 is still >= half the clean F1 (``< 0.25`` if none)."""
    kept = [e for e in EPS if row[f"{e:g}/255"] >= 0.5 * row["clean"]]
    return f"{max(kept):g}/255 ({BAR_EPS / max(kept):g}x short of the bar)" if kept else f"< {EPS[0]:g}/255"


def rises(row: dict) -> str:
    values = [row[f"{e:g}/255"] for e in EPS]
    bad = [f"{a:g}->{b:g}" for a, b, u, v in zip(EPS, EPS[1:], values, values[1:]) if v > u + RISE_TOLERANCE]
    return ", ".join(f"F1 rises {b}/255" for b in bad) or "none"


def table(summary: dict[str, dict]) -> str:
    n = next(iter(summary.values()))["n_forged"]
    lines = [f"| defense (`val`, {n} forged images) | clean F1 | " + " | ".join(f"white-box {e:g}/255" for e in EPS)
             + " | keeps half its clean F1 up to | check: F1 never rises with eps | white-box 1/255 as an 8-bit image |",
             "|---|---|" + "---|" * len(EPS) + "---|---|---|"]
    for name, r in summary.items():
        lines.append(f"| {name} | {r['clean']:.3f} | " + " | ".join(f"{r[f'{e:g}/255']:.3f}" for e in EPS)
                     + f" | {half_kept_up_to(r)} | {rises(r)} | {r[EIGHT_BIT]:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, "eps-curve", measure, table)
