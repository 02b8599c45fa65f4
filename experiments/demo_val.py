"""The demo's ANSM recipe against its alternatives, on the synthetic ``val`` split, at equal budgets.

Every variant trains ANSM for the same number of steps (stage 1 + stage 2 = 2,800, batch 16) on the same two
offline attack sets (PGD-10 and FGSM at 8/255 on 768 training images) against the same localizer, and is scored
on 96 ``val`` images (photos and scenes of neither train nor test; ``ansm.data.sources``). The winner is what
``DemoConfig`` uses; ``test`` is not looked at here.

    python experiments/demo_val.py            # runs (resumable) and prints the table
    python experiments/demo_val.py --docs     # also writes the table into docs/ansm.md
    python experiments/demo_val.py --only pixel-mgr-the-demo-s --only stage-1-only-2800-steps  # in pieces
    python experiments/demo_val.py --table cheap [--docs]   # cheaper ANSM networks against the default, on val
    python experiments/demo_val.py --table test [--docs]    # the one chosen there and the default, once on test

Work goes to ``runs/experiments/demo-val/<variant>`` (each variant a resumable demo run; the localizer and the
attack sets are built once and copied). About 5-6 minutes per variant on 2 CPU cores (stage 2 only at 2800 steps:
about 11). One row gets equal wall time instead of equal steps. Selection rule: the highest mean recovery over
every oblivious attack among the recipes that keep clean F1 within 0.03 of the bare localizer and take no more
ANSM training time than 2400 + 400 steps (so ``make demo`` stays within its 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ansm.demo import DemoConfig, run_demo  # noqa: E402
from ansm.eval.readme import update_readme_section  # noqa: E402
from ansm.eval.stats import format_ci  # noqa: E402

OUT = REPO / "runs" / "experiments" / "demo-val"
# The two-stage recipe the comparison starts from (the demo's until this table chose stage 2 alone): 2400 pixel-
# alignment + 400 MgR steps, stage-2 peak lr 5e-4. Variants are written out in full, not as changes to DemoConfig's
# defaults, so a row means the same thing whatever the demo's default is.
TWO_STAGE = {"stage1_steps": 2400, "stage2_steps": 400, "stage2_lr": 5e-4}
BUDGET = TWO_STAGE["stage1_steps"] + TWO_STAGE["stage2_steps"]
PIXEL_STEP_MS, MGR_STEP_MS = 69, 226  # bench/training_step.py on 2 cores (channels-last)
WALL_STEPS = round((TWO_STAGE["stage1_steps"] * PIXEL_STEP_MS + TWO_STAGE["stage2_steps"] * MGR_STEP_MS)
                   / MGR_STEP_MS / 100) * 100
STAGE2_ONLY = {"stage1_steps": 0, "stage2_lr": None}  # stage 2 from the identity at the full (stage-1) lr
VARIANTS: dict[str, dict] = {
    # stage 1 pixel alignment, stage 2 MgR + pixel term
    "pixel + MgR (2400 + 400)": TWO_STAGE,
    # the paper's stage 1 (FFA on the localizer's taps) beside the pixel term
    "FFA + pixel, then MgR": {**TWO_STAGE, "align_ffa": 1.0},
    # the paper's recipe as written: FFA alone in stage 1, MgR alone in stage 2
    "FFA, then MgR (paper)": {**TWO_STAGE, "align_ffa": 1.0, "align_pixel": 0.0, "mgr_pixel": 0.0},
    # ablations at the same budget
    f"stage 1 only ({BUDGET} steps)": {"stage1_steps": BUDGET, "stage2_steps": 0},
    f"stage 2 only ({BUDGET} steps, full lr)": {**STAGE2_ONLY, "stage2_steps": BUDGET},
    # an MgR step runs the localizer forward and backward (226 vs 69 ms for a pixel step, bench/training_step.py),
    # so equal steps give stage 2 alone ~2.5x the two-stage wall time; this row gets that wall time instead (and
    # is what DemoConfig now runs)
    f"stage 2 only ({WALL_STEPS} steps = the wall time of 2400 + 400)": {**STAGE2_ONLY, "stage2_steps": WALL_STEPS},
    # ANSM's body at half resolution (~1/4 of the full arch's CPU forward time, bench/ansm_latency.py)
    "pixel + MgR (2400 + 400), fast ANSM": {**TWO_STAGE, "ansm_arch": "fast"},
}
# The cheaper-ANSM comparison (issue: ANSM at <= 15% of the localizer's CPU latency, recovery within 0.03 of the
# full arch on val): the demo's recipe with the full arch (TEACHER, 3 ANSM seeds) against cheaper networks, same
# localizer, attack sets and val images. ``--table cheap`` runs and prints it (``--docs``: docs/ansm.md). CHOSEN is
# the cheaper network it chose (one block at 4x steps; the docs say why).
CHOSEN = f"stage 2 only ({4 * WALL_STEPS} steps), full ANSM width 8, dilation 2"
CHEAP: dict[str, dict] = {
    # the fast arch at the demo's recipe, then with twice the steps (a wider fast body is not tried: width 24
    # already took 58 ms against width 16's 34 ms at 512x512, past the latency goal of 15% of the localizer)
    f"stage 2 only ({WALL_STEPS} steps), fast ANSM": {**STAGE2_ONLY, "stage2_steps": WALL_STEPS, "ansm_arch": "fast"},
    f"stage 2 only ({2 * WALL_STEPS} steps), fast ANSM": {**STAGE2_ONLY, "stage2_steps": 2 * WALL_STEPS,
                                                         "ansm_arch": "fast"},
    # cheaper ANSMs that keep the body at full resolution (bench/ansm_latency.py: ~1/4 of full's forward)
    f"stage 2 only ({WALL_STEPS} steps), full ANSM width 8, dilations 1, 3":
        {**STAGE2_ONLY, "stage2_steps": WALL_STEPS, "ansm_width": 8, "ansm_dilations": (1, 3)},
    f"stage 2 only ({2 * WALL_STEPS} steps), full ANSM width 8, dilations 1, 3":
        {**STAGE2_ONLY, "stage2_steps": 2 * WALL_STEPS, "ansm_width": 8, "ansm_dilations": (1, 3)},
    # narrower still, for the latency goal (bench/ansm_latency.py: width 8 with two blocks is ~16-18% of the
    # localizer at 512x512 on one thread, over the 15% goal): width 6, or one block of dilation 2
    f"stage 2 only ({2 * WALL_STEPS} steps), full ANSM width 6, dilations 1, 3":
        {**STAGE2_ONLY, "stage2_steps": 2 * WALL_STEPS, "ansm_width": 6, "ansm_dilations": (1, 3)},
    f"stage 2 only ({2 * WALL_STEPS} steps), full ANSM width 8, dilation 2":
        {**STAGE2_ONLY, "stage2_steps": 2 * WALL_STEPS, "ansm_width": 8, "ansm_dilations": (2,)},
    # one block at 4x steps: with the allocator held steady (bench/ansm_latency.py) only this network of the ones
    # above stays within 15% of the localizer's latency at 512x512
    CHOSEN: {**STAGE2_ONLY, "stage2_steps": 4 * WALL_STEPS, "ansm_width": 8, "ansm_dilations": (2,)},
    # the fast arch distilled from the full one of the demo's row (TEACHER): an L1 term to its outputs beside MgR
    f"stage 2 only ({WALL_STEPS} steps), fast ANSM distilled from full (weight 1/8)":
        {**STAGE2_ONLY, "stage2_steps": WALL_STEPS, "ansm_arch": "fast", "ansm_distill": 1 / 8},
}
# run folders named before the rows were renamed
FOLDERS = {"pixel + MgR (2400 + 400)": "pixel-mgr-the-demo-s",
           f"stage 2 only ({WALL_STEPS} steps = the wall time of 2400 + 400)": "stage-2-only-1100-steps-the-demo-s-wall-time",
           "pixel + MgR (2400 + 400), fast ANSM": "pixel-mgr-fast-ansm"}
# the teacher of the distilled rows: the full ANSM of the demo's recipe (trained first when missing), the ANSM seed
# of the student's own row (the recipe "train full, then distil it" run end to end per seed)
TEACHER = f"stage 2 only ({WALL_STEPS} steps = the wall time of 2400 + 400)"
# rows also trained with ANSM seeds 1 and 2 (same localizer, attack sets and val images; DemoConfig.ansm_seed), for
# the mean +- sd over 3 training seeds of the comparison they decide: full ANSM against the cheaper one
SEEDED = (TEACHER, f"stage 2 only ({2 * WALL_STEPS} steps), full ANSM width 6, dilations 1, 3",
          f"stage 2 only ({2 * WALL_STEPS} steps), full ANSM width 8, dilations 1, 3",
          CHOSEN)
SEEDS = (1, 2)
CHEAP = {TEACHER: VARIANTS[TEACHER], **CHEAP}
for _name in SEEDED:
    for _s in SEEDS:
        CHEAP[f"{_name} (ANSM seed {_s})"] = {**CHEAP[_name], "ansm_seed": _s}
ROWS = {**VARIANTS, **CHEAP}


def _seedless(name: str) -> str:
    """A row's name without its " (ANSM seed N)" suffix: the network and recipe its seeds share."""
    return re.sub(r" \(ANSM seed \d+\)$", "", name)


# The cheaper network chosen on val (docs/ansm.md, CHOSEN) and the default it replaces, each seed's trained ANSM
# scored once on ``test`` (``--table test``): no choice is made from these numbers.
TEST_ROWS = {name: o for name, o in CHEAP.items() if _seedless(name) in (TEACHER, CHOSEN)}
ATTACKS = ("pgd", "fgsm", "pgd-4/255", "pgd-12/255", "pgd-l2", "mifgsm", "segpgd", "cw-l2", "pgd-hide")


def _slug(name: str) -> str:
    return FOLDERS.get(name) or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_variant(name: str, overrides: dict, first: Path | None, rerun: bool = False) -> dict:
    out = OUT / _slug(name)
    if first is not None and first != out:  # same localizer and attack sets as the first variant
        for part in ("localizer", "attack-pgd", "attack-fgsm"):
            if (first / part).is_dir() and not (out / part).exists():
                shutil.copytree(first / part, out / part)
    # stage2_lr None: TrainANSMConfig's stage 2 then peaks at the stage-1 lr (MgR starting from the identity)
    if overrides.get("ansm_distill"):
        seed = overrides.get("ansm_seed")
        teacher_row = TEACHER if seed is None else f"{TEACHER} (ANSM seed {seed})"
        teacher = OUT / _slug(teacher_row) / "ansm" / "ansm"
        if not teacher.with_suffix(".json").is_file():
            run_variant(teacher_row, ROWS[teacher_row], first)
        overrides = {**overrides, "ansm_teacher": str(teacher)}
    report = out / "report.json"
    if report.is_file() and not rerun:  # finished earlier: the table is rebuilt from its report
        return json.loads(report.read_text())
    cfg = DemoConfig(out=str(out), eval_split="val", shared="none", **overrides)
    print(f"== {name}: {out}", flush=True)
    return run_demo(cfg, log=lambda m: print("  " + m, flush=True))


def test_variant(name: str, overrides: dict) -> dict:
    """Score a row's trained ANSM on ``test``: its localizer, attack sets and ANSM copied, nothing trained again."""
    src, out = OUT / _slug(name), OUT / "test" / _slug(name)
    report = out / "report.json"
    if report.is_file():
        return json.loads(report.read_text())
    if not (src / "ansm" / "ansm.json").is_file():
        raise SystemExit(f"{name}: not trained yet (python experiments/demo_val.py --table cheap trains it)")
    for part in ("localizer", "attack-pgd", "attack-fgsm", "ansm"):
        if not (out / part).exists():
            shutil.copytree(src / part, out / part)
    print(f"== {name} on test: {out}", flush=True)
    cfg = DemoConfig(out=str(out), eval_split="test", shared="none", **overrides)
    return run_demo(cfg, log=lambda m: print("  " + m, flush=True))


def mean_recovery(report: dict) -> float:
    """The selection score: recovery averaged over every oblivious attack of the table (seen and unseen alike, so
    a recipe that only undoes its two training attacks does not win), a missing recovery counting as 0."""
    return sum(report["attacks"][a]["recovery"] or 0.0 for a in ATTACKS) / len(ATTACKS)


def table(results: dict[str, dict]) -> str:
    head = ("| recipe | ANSM training (s) | clean+ANSM F1 | mean recovery | "
            + " | ".join(f"{a} f1_def (rec.)" for a in ATTACKS) + " |")
    lines = [head, "|" + "---|" * (4 + len(ATTACKS))]
    for name, r in results.items():
        cells = [name, f"{r['timings_s']['ansm_s']:.0f}", f"{r['attacks']['pgd']['f1_clean_def']:.3f}",
                 f"{mean_recovery(r):.2f}"]
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
                f"{k} {a[k]['f1_adv']:.3f}" for k in ATTACKS) + f". Every recipe: {BUDGET} ANSM steps (one row: {WALL_STEPS} MgR "
            "steps, the demo's wall time), batch 16, the same two attack sets (PGD-10 and FGSM at 8/255 only: the other attacks are unseen). F1@0.5 over forged "
            "images [bootstrap 95% interval over images] (recovery); one training seed. ANSM training time was measured "
            "with one thread per run, two runs sharing 2 cores: compare rows with each other, not with the demo.")
    return "\n".join(lines) + "\n\n" + note


def cheap_table(results: dict[str, dict], split: str = "val") -> str:
    """One row per network and recipe: its seeds' mean (+- sd where there are several) of clean+ANSM F1, of the
    mean recovery (the selection score) and of each attack's recovery."""
    groups: dict[str, list[dict]] = {}
    for name, r in results.items():
        groups.setdefault(_seedless(name), []).append(r)

    def cell(values: list[float], digits: int = 2) -> str:
        m = statistics.fmean(values)
        return f"{m:.{digits}f}" + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")

    head = ("| ANSM network and recipe | seeds | clean+ANSM F1 | mean recovery | "
            + " | ".join(f"{a} rec." for a in ATTACKS) + " |")
    lines = [head, "|" + "---|" * (4 + len(ATTACKS))]
    for name, reps in groups.items():
        label = "full (the demo's ANSM), 1100 steps" if name == TEACHER else name
        cells = [label, str(len(reps)), cell([r["attacks"]["pgd"]["f1_clean_def"] for r in reps], 3),
                 cell([mean_recovery(r) for r in reps])]
        cells += [cell([r["attacks"][a]["recovery"] or 0.0 for r in reps]) for a in ATTACKS]
        lines.append("| " + " | ".join(cells) + " |")
    a = next(iter(results.values()))["attacks"]
    h = next(iter(results.values()))["heldout"]
    command = "--table cheap" if split == "val" else "--table test"
    note = (f"`python experiments/demo_val.py {command}`: {h['n_images']} `{split}` images ({h['n_forged']} forged), "
            f"64x64; bare localizer clean F1 {a['pgd']['f1_clean']:.3f}. Every row: the demo's recipe (stage 2 alone, "
            f"MgR + pixel term from the identity, batch 16, the PGD-10 and FGSM 8/255 attack sets; the other seven "
            f"attacks are unseen) with the steps its name gives; recovery as in the table above (a missing one counts "
            f"0), mean ± SD over ANSM training seeds (same localizer, attack sets and images) where there are several.")
    return "\n".join(lines) + "\n\n" + note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", action="store_true", help="write the table into docs/ansm.md")
    ap.add_argument("--table", choices=["recipes", "cheap", "test"], default="recipes",
                    help="recipes: the demo's recipe against its alternatives; cheap: cheaper ANSM networks; test: "
                    "the cheaper network chosen on val and the default, scored once on test")
    ap.add_argument("--only", action="append", help="run just this variant (by its slug; repeatable): in pieces")
    ap.add_argument("--rerun", action="store_true", help="evaluate finished variants again instead of reading "
                    "their report.json")
    args = ap.parse_args()
    results = {}
    if args.table == "test":
        for name, overrides in TEST_ROWS.items():
            if not args.only or _slug(name) in args.only:
                results[name] = test_variant(name, overrides)
        text = cheap_table(results, split="test")
        print(text)
        if args.docs:
            update_readme_section("cheap-ansm-test", text, REPO / "docs" / "ansm.md")
        return
    base = OUT / _slug(TEACHER)  # a finished row's localizer and attack sets serve every other row
    first = base if (base / "attack-fgsm" / "attack.json").is_file() else None
    rows = CHEAP if args.table == "cheap" else VARIANTS
    for name, overrides in rows.items():
        if args.only and _slug(name) not in args.only:
            continue
        results[name] = run_variant(name, overrides, first, args.rerun)
        first = first or OUT / _slug(name)
    text = table(results) if args.table == "recipes" else cheap_table(results)
    print(text)
    if args.docs:
        update_readme_section("demo-val" if args.table == "recipes" else "cheap-ansm", text, REPO / "docs" / "ansm.md")


if __name__ == "__main__":
    main()
