"""Regenerate the README's results tables from measured runs (tables are never typed by hand).

    python scripts/update_readme.py localizer            # from runs/*/summary.json written by train-localizer
    python scripts/update_readme.py attacks --n 100      # every attack on held-out synthetic images
    python scripts/update_readme.py shared               # clean vs PGD on ../shared/data, per dataset
    python scripts/update_readme.py benchmark            # from runs/benchmark-quick/report.json (ansm benchmark)
    python scripts/update_readme.py real                 # from runs/benchmark-real (ansm benchmark --preset real)

Models are the checkpoints given with --model (default: runs/localizer/localizer, plus
runs/noiseprint-head/localizer when it exists). Raw numbers go to runs/readme/<section>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ansm.attacks import create_attack
from ansm.checkpoint import load_checkpoint
from ansm.data.datasets import discover_datasets, open_data
from ansm.eval.evaluate import evaluate
from ansm.eval.readme import markdown_table, update_readme_section
from ansm.models import load_localizer
from ansm.utils import seed_everything, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "readme"

# (row label, registry name, parameters): the paper's attacks, the stronger ones, and the anti-forensic goal.
ATTACKS: list[tuple[str, str, dict[str, Any]]] = [
    ("FGSM", "fgsm", {"eps": "8/255"}),
    ("BIM", "bim", {"eps": "8/255", "alpha": "2/255", "steps": 10}),
    ("PGD L-inf", "pgd", {"eps": "8/255", "alpha": "2/255", "steps": 10}),
    ("PGD L2", "pgd-l2", {"eps": 1.0, "alpha": 0.2, "steps": 10}),
    ("MI-FGSM", "mifgsm", {"eps": "8/255", "alpha": "2/255", "steps": 10}),
    ("C&W L2", "cw-l2", {"steps": 50}),
    ("SegPGD", "segpgd", {"eps": "8/255", "alpha": "2/255", "steps": 10}),
    ("PGD hide (targeted)", "pgd", {"eps": "8/255", "alpha": "2/255", "steps": 10, "objective": "hide"}),
]
PGD = {"eps": "8/255", "alpha": "2/255", "steps": 10}


def default_models() -> list[str]:
    found = [p for p in ("runs/localizer/localizer", "runs/noiseprint-head/localizer")
             if (REPO / f"{p}.safetensors").exists()]
    return found or ["runs/localizer/localizer"]


def describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "objective")


def attacked(model: torch.nn.Module, name: str, params: dict[str, Any]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    atk = create_attack(name, model, **params)
    return lambda x, m: atk(x, m)


def section_localizer(models: list[str], args: argparse.Namespace) -> None:
    rows, raw = [], {}
    for path in models:
        summary_path = REPO / Path(path).parent / "summary.json"
        if not summary_path.exists():
            raise SystemExit(f"{summary_path} missing: run `ansm train-localizer --out {Path(path).parent}` first")
        s = json.loads(summary_path.read_text())
        h = s["heldout"]
        tensors, _ = load_checkpoint(REPO / path)
        n_params = sum(t.numel() for t in tensors.values() if t.is_floating_point())
        raw[path] = s
        rows.append([s["arch"], f"{n_params / 1e6:.2f} M", s["steps"], f"{s['train_s'] + s.get('eval_s', 0):.0f}",
                     h["n_images"], h["f1"], h["iou"], h["f1_best"], h["pixel_auc"], h["image_auc"]])
    write_json_atomic(OUT / "localizer.json", raw)
    table = markdown_table(["localizer", "params", "steps", "time (s, 2-core CPU)", "held-out images", "F1@0.5",
                            "IoU@0.5", "best-F1", "pixel AUC", "image AUC"], rows)
    note = ("Trained with `ansm train-localizer` defaults (twostream) or `--arch noiseprint-head`; time includes "
            "rendering the training data and the held-out evaluation; held-out = `synthetic:200` (test-split photos "
            "never seen in training), 128x128.")
    update_readme_section("localizer", f"{table}\n\n{note}", REPO / "README.md")


def section_attacks(models: list[str], args: argparse.Namespace) -> None:
    data = open_data(f"synthetic:{args.n}", size=128)
    # The default localizer only; other models appear in the shared-data table.
    model = load_localizer(REPO / models[0])
    seed_everything(0)
    clean = evaluate(model, data, batch_size=16)
    raw: dict[str, Any] = {"clean": clean}
    rows: list[list[Any]] = [["none (clean)", "", clean["f1"], "", clean["pixel_auc"], ""]]
    for label, name, params in ATTACKS:
        seed_everything(0)
        t0 = time.perf_counter()
        r = evaluate(model, data, batch_size=16, transform=attacked(model, name, params))
        seconds = time.perf_counter() - t0
        raw[label] = {**r, "params": params, "seconds": seconds}
        drop = 1 - r["f1"] / clean["f1"] if clean["f1"] > 0 else math.nan
        rows.append([label, describe(params), r["f1"], f"{100 * drop:.0f}%", r["pixel_auc"], f"{seconds:.0f}"])
        print(label, f"F1 {clean['f1']:.3f} -> {r['f1']:.3f}", flush=True)
    write_json_atomic(OUT / "attacks.json", raw)
    table = markdown_table(["attack", "parameters", "F1@0.5", "relative drop", "pixel AUC", "time (s)"], rows)
    note = (f"Default localizer `{models[0]}` on `synthetic:{args.n}` (held-out, 128x128); white-box, untargeted "
            "(maximise pixel BCE against the true mask) unless marked hide (drive the mask to all-authentic). "
            "Budgets in [0, 1] pixel units; the L2 budget is over the whole 3x128x128 image.")
    update_readme_section("attacks", f"{table}\n\n{note}", REPO / "README.md")


def section_shared(models: list[str], args: argparse.Namespace) -> None:
    """Every attack on the default localizer, PGD on the others; F1@0.5 per dataset and the relative drop."""
    shared = Path(os.environ.get("ANSM_SHARED") or REPO.parent / "shared") / "data"
    if not shared.is_dir():
        raise SystemExit(f"{shared} not found: set ANSM_SHARED to the folder holding data/")
    full = discover_datasets(shared, max_side=args.max_side)
    names = list(full)
    rows, raw = [], {}
    for i, path in enumerate(models):
        model = load_localizer(REPO / path)
        arch = load_checkpoint(REPO / path)[1]["arch"]
        attacks = ATTACKS if i == 0 else [a for a in ATTACKS if a[0] == "PGD L-inf"]
        if i > 0 and args.other_limit:  # slower models: the first forged images of each dataset
            from ansm.data.datasets import ForgeryDataset

            datasets = {n: ForgeryDataset(d.path, records=[r for r in d.records if r.mask][:args.other_limit],
                                          max_side=args.max_side) for n, d in full.items()}
        else:
            datasets = full
        clean: dict[str, float] = {}
        for label, name, params in [("none (clean)", "", {}), *attacks]:
            f1 = {}
            for ds_name, ds in datasets.items():
                seed_everything(0)
                r = evaluate(model, ds, batch_size=4, transform=attacked(model, name, params) if name else None)
                raw[f"{arch}/{label}/{ds_name}"] = r
                f1[ds_name] = r["f1"]
            if not name:
                clean = f1
            mean_clean, mean_now = (sum(d.values()) / len(d) for d in (clean, f1))
            drop = "" if not name or mean_clean <= 0 else f"{100 * (1 - mean_now / mean_clean):.0f}%"
            scope = "all" if datasets is full else f"first {args.other_limit} forged per dataset"
            rows.append([arch, label, scope, *(f1[n] for n in names), drop])
            print(arch, label, {n: round(v, 3) for n, v in f1.items()}, flush=True)
    write_json_atomic(OUT / "shared.json", raw)
    counts = ", ".join(f"{n}: {len(ds)} images" for n, ds in full.items())
    table = markdown_table(["localizer", "attack", "images", *(f"{n} F1@0.5" for n in names), "drop (mean over datasets)"], rows)
    size_note = f"longer side capped at {args.max_side} px" if args.max_side else "native sizes"
    note = (f"Real forgeries from `../shared/data` ({counts}; {size_note}). The models were trained on synthetic "
            "data only, so clean numbers are low: reported as they are. Attack parameters as in the table above.")
    update_readme_section("shared", f"{table}\n\n{note}", REPO / "README.md")


def section_demo(models: list[str], args: argparse.Namespace) -> None:
    """The demo's own report (runs/demo/report.md, written by `make demo`), headings demoted to fit the README."""
    report = REPO / "runs" / "demo" / "report.md"
    if not report.exists():
        raise SystemExit(f"{report} missing: run `make demo` first")
    lines = report.read_text().splitlines()
    # The figure link is relative to the run folder and the runtime belongs to one invocation (a resumed demo
    # reports only its own part): both stay in report.md, not in the README.
    skip = ("# ", "![", "Runtime:")
    body = [("###" + ln[1:] if ln.startswith("## ") else ln) for ln in lines if not ln.startswith(skip)]
    body.append("\nExamples (image | ground truth | clean | attacked | defended predictions): `runs/demo/figure.png`.")
    update_readme_section("demo", "\n".join(body), REPO / "README.md")


def section_benchmark(models: list[str], args: argparse.Namespace) -> None:
    """The quick benchmark's summary table, from the report `ansm benchmark --preset quick` wrote."""
    from ansm.benchmark.report import summary_table

    path = REPO / "runs" / "benchmark-quick" / "report.json"
    if not path.exists():
        raise SystemExit(f"{path} missing: run `ansm benchmark --preset quick` first")
    report = json.loads(path.read_text())
    cfg, data, t = report["config"], report["data"], report.get("timings_s", {})
    header, body = summary_table(report)
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                       *("| " + " | ".join(row) + " |" for row in body)])
    checks = report["checks"]
    note = (f"`ansm benchmark --preset quick`: {data['n_images']} held-out synthetic images ({data['n_forged']} forged), "
            f"{cfg['size']}x{cfg['size']}, F1@0.5 over forged images under attacks at {cfg['eps_main'] * 255:g}/255 "
            f"(bare localizer clean F1 {report['f1_clean']:.3f}); mean ± SD over training seeds where there are several. "
            "oblivious = attack the bare localizer (the paper's setting); transfer = PGD on a unet-small surrogate; "
            "gray-box = PGD through an ANSM trained with another seed; adaptive = white-box PGD through the defense "
            f"({cfg['adaptive_steps']} steps, BPDA for JPEG and bit-depth, worst case over untargeted/hide objectives); "
            "worst case = per image, the lowest F1 over all of these. Sanity checks: "
            f"{checks['passed']} passed, {checks['failed']} failed. Runtime {t.get('total', 0) / 60:.0f} min on 2 CPU cores. "
            "Plots and every cell (F1, IoU, AUC, recovery, retention, per eps): `runs/benchmark-quick/report.html`.")
    update_readme_section("benchmark", f"{table}\n\n{note}", REPO / "README.md")


def section_real(models: list[str], args: argparse.Namespace) -> None:
    """The real benchmark's finished stages (nothing is run here): the localizer on the real protocol, ANSM's
    recipe comparison on val and seeds on test (README), and stage 7's informed attackers (docs/benchmark.md)."""
    from ansm.benchmark.real import load_finished
    from ansm.benchmark.real_report import localizer_section, test_section, val_section

    done = load_finished(args.run or REPO / "runs" / "benchmark-real")
    if "protocol" not in done or "pgd" not in done:
        raise SystemExit("the real benchmark's protocol stage has not finished: `ansm benchmark --preset real --until protocol`")
    command = f"`ansm benchmark --preset {done['config']['preset']}`"
    update_readme_section("real", f"{localizer_section(done)}\n\n{command}, stages localizer and protocol.",
                          REPO / "README.md")
    if "val" in done:
        parts = [val_section(done)] + ([test_section(done)] if "test" in done else
                                       ["(the test stage has not been run yet: no CASIA v1 test number for ANSM exists)"])
        update_readme_section("real-ansm", "\n\n".join(parts) + f"\n\n{command}.", REPO / "README.md")
    if "informed" in done:  # stage 7: plain vs robust ANSM vs adversarial fine-tuning, attackers who know them
        from ansm.benchmark.real_informed import informed_section

        update_readme_section("real-informed", f"{informed_section(done)}\n\n{command[:-1]} --until informed`.",
                              REPO / "docs" / "benchmark.md")


SECTIONS = {"real": section_real, "benchmark": section_benchmark, "localizer": section_localizer, "attacks": section_attacks, "shared": section_shared, "demo": section_demo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="+", choices=sorted(SECTIONS))
    parser.add_argument("--model", action="append", help="checkpoint path (repeatable)")
    parser.add_argument("--n", type=int, default=100, help="held-out synthetic images for the attack table")
    parser.add_argument("--max-side", type=int, default=None, help="downscale shared images above this side")
    parser.add_argument("--other-limit", type=int, default=None,
                        help="shared table: forged images per dataset for models after the first (slow models)")
    parser.add_argument("--run", type=Path, default=None, help="real: the benchmark folder (default runs/benchmark-real)")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    models = args.model or default_models()
    for name in args.sections:
        SECTIONS[name](models, args)
        print(f"README section {name!r} updated", flush=True)


if __name__ == "__main__":
    main()
