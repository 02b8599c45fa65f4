"""Attackers who know the defense, on the synthetic ``test`` split: the plain ANSM, the robust (adversarially trained)
ANSM and PGD adversarial fine-tuning of the localizer side by side (issue 14, deliverable 4).

Everything is the benchmark's ``informed`` preset (``ansm benchmark --preset informed``): the quick preset's 32
held-out 64x64 test images and target localizer, 3 seeds of each defense at equal step budgets (ANSM's FFA 40 +
MgR 180 steps at batch 16; the fine-tuning gets the same 220 steps at the same batch, every example PGD-3 at
8/255), oblivious PGD-10, gray-box PGD-10 through another seed's ANSM, and the white-box adaptive attack (PGD-100,
2 restarts per objective, untargeted and hide, 2/4/8 /255) with the benchmark's sanity checks. The robust recipe
was chosen on ``val`` (``experiments/robust_val.py``); nothing here was chosen by looking at ``test``.

    python experiments/informed.py           # runs the preset (resumable) and prints the table
    python experiments/informed.py --docs    # also writes it into docs/benchmark.md (<!-- ansm:informed-test -->)

The run folder is ``runs/benchmark-informed`` (the preset's), so the CLI command and this script share their work.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from statistics import mean, stdev

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from ansm.benchmark.config import preset_config  # noqa: E402
from ansm.benchmark.report import _row  # noqa: E402
from ansm.benchmark.run import run_benchmark  # noqa: E402
from ansm.data.datasets import open_data  # noqa: E402
from ansm.defense.ansm_net import load_ansm  # noqa: E402
from ansm.defense.evaluate import perturbation_profile  # noqa: E402
from ansm.eval.readme import update_readme_section  # noqa: E402

RUN = REPO / "runs" / "benchmark-informed"
LABELS = {"none": "bare localizer", "ansm": "plain ANSM", "ansm-robust": "robust ANSM",
          "adv-finetune": "PGD adversarial fine-tuning"}
# the bar: the share of its own clean F1 a defense keeps under the white-box adaptive attack
BAR = {4 / 255: 0.5, 8 / 255: 0.3}


def _pm(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{mean(values):.3f} ± {stdev(values):.3f}"


def _per_seed(report: dict, threat: str, eps: float, group: str) -> dict[str, float]:
    r = _row(report, threat, "pgd", eps, group)
    return {k: v["f1"] for k, v in r["seeds"].items()} if r else {}


def _clean_per_seed(report: dict, group: str) -> dict[str, float]:
    # the clean F1 of each seed, read off any row's per-seed retention (retention = clean F1 / bare clean F1)
    bare = report["clean"]["none"]["f1"]
    r = _row(report, "oblivious", "pgd", report["config"]["eps_main"], group)
    return {k: v["retention"] * bare for k, v in r["seeds"].items()}


def _failed(report: dict, group: str) -> list[str]:
    pattern = re.compile(rf"(^|\s){re.escape(group)}(@s\d+)?(\s|$)")
    return sorted({c["check"] for c in report["checks"]["results"] if not c["ok"] and pattern.search(c["subject"])})


def _test_images(report: dict) -> torch.Tensor:
    """The run's test images, in one batch (32 at 64x64)."""
    cfg = report["config"]
    data = open_data(cfg["data"], size=cfg["size"], seed=0)
    return torch.stack([data[i]["image"] for i in range(len(data))])


def let_through(group: str, x: torch.Tensor) -> list[float]:
    """Per seed of an ANSM group, the share of random sign noise (4/255) its ANSM lets through on images ``x``
    (``ansm.defense.evaluate.perturbation_profile``: 1.00 = the identity or a constant shift); [] for other rows."""
    paths = sorted((RUN / "models").glob(f"{group}-s*/ansm.json"))
    if not group.startswith("ansm"):
        return []
    return [perturbation_profile(load_ansm(p.with_suffix(""))[0].eval(), x)["let_through"] for p in paths]


def _compute_minutes(report: dict) -> float:
    """Training plus attack time of the whole run, from every model's and every cell's own record (a resumed
    run's ``total`` counts only its own part)."""
    t = report["timings_s"]
    return (sum(v for v in t["per_model"].values() if v) + sum(v for v in t["per_unit"].values() if v)) / 60


def table(report: dict) -> str:
    cfg = report["config"]
    eps_main = cfg["eps_main"]
    adaptive = cfg["adaptive_eps"]
    times = report["timings_s"]["per_model"]
    head = (["defense", "train s / seed", "clean F1"] + [f"oblivious {eps_main * 255:g}/255", f"gray-box {eps_main * 255:g}/255"]
            + [f"adaptive {e * 255:g}/255" for e in adaptive]
            + [f"kept at {e * 255:g}/255 (bar {b:.2f})" for e, b in BAR.items()]
            + ["noise let through", "failed checks"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    images = _test_images(report)
    for group in cfg["defenses"]:
        clean = _clean_per_seed(report, group) if group != "none" else {"none": report["clean"]["none"]["f1"]}
        train = [t for k, t in times.items() if re.fullmatch(rf"{re.escape(group)}-s\d+", k)]
        cells = [LABELS.get(group, group), f"{mean(train):.0f}" if train else "-", _pm(list(clean.values()))]
        for threat in ("oblivious", "gray-box"):
            f1 = _per_seed(report, threat, eps_main, group)
            cells.append(_pm(list(f1.values())) if f1 else "-")
        adaptive_f1 = {e: _per_seed(report, "adaptive", e, group) for e in adaptive}
        cells += [_pm(list(adaptive_f1[e].values())) if adaptive_f1[e] else "-" for e in adaptive]
        for e in BAR:
            f1 = next((v for k, v in adaptive_f1.items() if abs(k - e) < 1e-9), {})
            kept = [f1[k] / clean[k] for k in f1 if clean.get(k)]
            cells.append(_pm(kept) if kept else "-")
        through = let_through(group, images)
        cells.append(_pm(through) if through else "-")
        cells.append(", ".join(_failed(report, group)) or "none")
        lines.append("| " + " | ".join(cells) + " |")
    n = report["data"]["n_images"], report["data"]["n_forged"]
    seeds = f"{cfg['ansm_seeds']} seeds of each trained defense (mean ± sd over seeds)"
    lead = (f"Synthetic 64x64 `test` split ({n[0]} images, {n[1]} forged), {seeds}; F1 per forged image. Adaptive = "
            f"white-box PGD-{cfg['adaptive_steps']} through defense + localizer, {cfg['adaptive_restarts']} restarts per "
            "objective (untargeted, hide), the worst per image, oblivious images included. Kept = adaptive F1 / the same "
            "seed's clean F1. Noise let through: the share of random sign noise (4/255) that survives ANSM (1.00: the "
            "identity or a constant shift). `python experiments/informed.py --docs`, "
            f"{_compute_minutes(report):.0f} min of training and attacks on 2 CPU cores shared with other jobs.")
    return lead + "\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", action="store_true", help="write the table into docs/benchmark.md")
    args = ap.parse_args()
    report = run_benchmark(preset_config("informed", out=str(RUN)), log=print)
    text = table(report)
    print(text)
    if args.docs:
        update_readme_section("informed-test", text, REPO / "docs" / "benchmark.md")


if __name__ == "__main__":
    main()
