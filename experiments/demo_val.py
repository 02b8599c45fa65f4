"""The demo's ANSM recipe against its alternatives, on the synthetic ``val`` split, at equal budgets.

Every variant trains ANSM for the same number of steps (stage 1 + stage 2 = 2,800, batch 16) on the same two
offline attack sets (PGD-10 and FGSM at 8/255 on 768 training images) against the same localizer, and is scored
on 96 ``val`` images (photos and scenes of neither train nor test; ``ansm.data.sources``). The winner is what
``DemoConfig`` uses; ``test`` is not looked at here.

    python experiments/demo_val.py            # runs (resumable) and prints the table
    python experiments/demo_val.py --docs     # also writes the table into docs/ansm.md

Work goes to ``runs/experiments/demo-val/<variant>`` (each variant a resumable demo run; the localizer and the
attack sets are built once and copied). About 5-6 minutes per variant on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ansm.demo import DemoConfig, run_demo  # noqa: E402
from ansm.eval.readme import update_readme_section  # noqa: E402
from ansm.eval.stats import format_ci  # noqa: E402

OUT = REPO / "runs" / "experiments" / "demo-val"
BUDGET = DemoConfig().stage1_steps + DemoConfig().stage2_steps
VARIANTS: dict[str, dict] = {
    # the demo's recipe: stage 1 pixel alignment, stage 2 MgR + pixel term
    "pixel + MgR (the demo's)": {},
    # the paper's stage 1 (FFA on the localizer's taps) beside the pixel term
    "FFA + pixel, then MgR": {"align_ffa": 1.0},
    # the paper's recipe as written: FFA alone in stage 1, MgR alone in stage 2
    "FFA, then MgR (paper)": {"align_ffa": 1.0, "align_pixel": 0.0, "mgr_pixel": 0.0},
    # ablations at the same budget
    f"stage 1 only ({BUDGET} steps)": {"stage1_steps": BUDGET, "stage2_steps": 0},
    f"stage 2 only ({BUDGET} steps, full lr)": {"stage1_steps": 0, "stage2_steps": BUDGET, "stage2_lr": None},
    # ANSM's body at half resolution (~1/4 of the full arch's CPU forward time, bench/ansm_latency.py)
    "pixel + MgR, fast ANSM": {"ansm_arch": "fast"},
}
ATTACKS = ("pgd", "fgsm", "pgd-4/255", "pgd-12/255", "mifgsm", "segpgd", "cw-l2", "pgd-hide")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_variant(name: str, overrides: dict, first: Path | None) -> dict:
    out = OUT / _slug(name)
    if first is not None and first != out:  # same localizer and attack sets as the first variant
        for part in ("localizer", "attack-pgd", "attack-fgsm"):
            if (first / part).is_dir() and not (out / part).exists():
                shutil.copytree(first / part, out / part)
    # stage2_lr None: TrainANSMConfig's stage 2 then peaks at the stage-1 lr (MgR starting from the identity)
    cfg = DemoConfig(out=str(out), eval_split="val", shared="none", **overrides)
    print(f"== {name}: {out}", flush=True)
    return run_demo(cfg, log=lambda m: print("  " + m, flush=True))


def table(results: dict[str, dict]) -> str:
    head = "| recipe | clean+ANSM F1 | " + " | ".join(f"{a} f1_def (rec.)" for a in ATTACKS) + " |"
    lines = [head, "|" + "---|" * (2 + len(ATTACKS))]
    for name, r in results.items():
        cells = [name, f"{r['attacks']['pgd']['f1_clean_def']:.3f}"]
        for a in ATTACKS:
            row = r["attacks"][a]
            rec = "n/a" if row["recovery"] is None else f"{row['recovery']:.2f}"
            cells.append(f"{format_ci(row['f1_def'], row['f1_def_ci'])} ({rec})")
        lines.append("| " + " | ".join(cells) + " |")
    any_r = next(iter(results.values()))
    a = any_r["attacks"]
    h = any_r["heldout"]
    note = (f"`python experiments/demo_val.py`: {h['n_images']} `val` images ({h['n_forged']} forged), 64x64; bare "
            f"localizer clean F1 {a['pgd']['f1_clean']:.3f}, under attack: " + ", ".join(
                f"{k} {a[k]['f1_adv']:.3f}" for k in ATTACKS) + f". Every recipe: {BUDGET} ANSM steps, batch 16, the "
            "same two attack sets (PGD-10 and FGSM at 8/255 only: the other attacks are unseen). F1@0.5 over forged "
            "images [bootstrap 95% interval over images] (recovery); one training seed.")
    return "\n".join(lines) + "\n\n" + note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", action="store_true", help="write the table into docs/ansm.md")
    ap.add_argument("--only", help="run just this variant (by its slug); for running in pieces")
    args = ap.parse_args()
    results, first = {}, None
    for name, overrides in VARIANTS.items():
        if args.only and _slug(name) != args.only:
            continue
        results[name] = run_variant(name, overrides, first)
        first = first or OUT / _slug(name)
    text = table(results)
    print(text)
    if args.docs:
        update_readme_section("demo-val", text, REPO / "docs" / "ansm.md")


if __name__ == "__main__":
    main()
