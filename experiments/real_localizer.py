"""A localizer trained on real forgeries (issue 12, deliverables 1-2): CASIA v1 ``train``, checkpoint chosen on
``val``, reported once on the real protocol and under PGD-10 at 8/255 on CASIA v1 ``test``.

    python experiments/real_localizer.py             # runs (resumable) and prints the tables
    python experiments/real_localizer.py --readme    # also writes them into README.md (<!-- ansm:real -->)

Stages, each resumable under ``runs/experiments/real-localizer`` (``--out``):

1. ``ansm train-localizer --data <real>/casia1 --arch mobilenet-unet`` (ImageNet MobileNetV2 encoder from the
   official TFLite file, SRM/Bayar noise stream, U-Net decoder): RECIPE below, 256-px crops with flips, rescale,
   JPEG, blur and noise; val F1@0.5 every 250 steps picks the checkpoint (2000 steps: a 1000-step run was still rising on val);
2. ``ansm evaluate --protocol real`` on that checkpoint (native resolution, large images tiled);
3. PGD-10, L-inf 8/255 (step 2/255, untargeted pixel BCE), white-box on the bare localizer, on the forged images
   of CASIA v1 ``test``.

Nothing here looks at ``test`` before stage 2: the recipe was fixed before the run and the step by val F1.
Needs ``../shared/real`` and ``../shared/weights/mobilenet`` (or $ANSM_SHARED); ~75 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ansm.eval.protocols import default_real_root  # noqa: E402
from ansm.eval.readme import markdown_table, update_readme_section  # noqa: E402
from ansm.utils import write_json_atomic  # noqa: E402

RECIPE = ["--arch", "mobilenet-unet", "--steps", "2000", "--val-every", "250", "--batch-size", "8", "--lr", "1e-3",
          "--crop", "256"]
PGD = {"eps": "8/255", "alpha": "2/255", "steps": 10}


def ansm(*args: str) -> None:
    """Run one CLI stage as a user would (the CLI resumes finished and interrupted stages itself)."""
    cmd = [sys.executable, "-c", "import sys; from ansm.cli import main; sys.argv[0] = 'ansm'; main()", *args]
    subprocess.run(cmd, check=True)


def pgd_on_casia_test(checkpoint: Path, real: Path, out: Path) -> dict:
    """F1 of the bare localizer under PGD on the forged CASIA v1 test images (attacking authentic images to
    create false positives is another threat, not measured here)."""
    path = out / "pgd.json"
    if path.exists():
        return json.loads(path.read_text())
    import torch

    from ansm.attacks import create_attack
    from ansm.data.datasets import ForgeryDataset, open_dataset
    from ansm.eval.evaluate import evaluate
    from ansm.models.registry import load_localizer
    from ansm.utils import seed_everything

    model = load_localizer(checkpoint)
    full = open_dataset(real / "casia1", split="test")
    forged = ForgeryDataset(full.path, records=[r for r in full.records if r.mask is not None])
    seed_everything(0)
    t0 = time.perf_counter()
    clean = evaluate(model, forged, batch_size=8)
    atk = create_attack("pgd", model, **PGD)
    with torch.enable_grad():
        attacked = evaluate(model, forged, batch_size=8, transform=lambda x, m: atk(x, m))
    result = {"clean": clean, "pgd": attacked, "params": PGD, "seconds": round(time.perf_counter() - t0, 1)}
    write_json_atomic(path, result)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "experiments" / "real-localizer")
    ap.add_argument("--real", type=Path, default=None, help="root of the real datasets (default ../shared/real)")
    ap.add_argument("--readme", action="store_true")
    args = ap.parse_args()
    real = args.real or default_real_root()
    if real is None:
        raise SystemExit("no ../shared/real (or $ANSM_SHARED/real): pass --real DIR")
    run = args.out / "train"
    ansm("train-localizer", "--data", str(real / "casia1"), *RECIPE, "--out", str(run))
    summary = json.loads((run / "summary.json").read_text())
    protocol_json = args.out / "protocol.json"
    if not protocol_json.exists():
        ansm("evaluate", "--model", str(run / "localizer"), "--protocol", "real", "--data", str(real),
             "--json", str(protocol_json))
    protocol = json.loads(protocol_json.read_text())
    pgd = pgd_on_casia_test(run / "localizer", real, args.out)

    rows = [[k, r["n_images"], r["n_forged"], r["f1"], r["iou"], r["f1_best"], r["pixel_auc"], r["image_auc"],
             r["authentic_fp_rate"], protocol["mask_conventions"][k]] for k, r in protocol["datasets"].items()]
    table = markdown_table(["dataset", "images", "forged", "F1@0.5", "IoU@0.5", "best-F1", "pixel AUC", "image AUC",
                            "auth. FP", "mask marks"], rows)
    val = summary["val"]
    history = ", ".join(f"{h['step']}: {h['f1']:.3f}" for h in summary["val_history"])
    c, a = pgd["clean"], pgd["pgd"]
    note = (f"`python experiments/real_localizer.py`: mobilenet-unet ({' '.join(RECIPE[2:])}) trained on CASIA v1 "
            f"`train` only ({summary['train_s'] / 60:.0f} min on 2 CPU cores, with validation). Val F1@0.5 by step "
            f"({history}) chose step {summary['chosen_step']} (val F1 {val['f1']:.3f}); `test` was evaluated once, "
            f"after. Every image at native resolution (over 1 MP in tiles); F1/IoU are means over forged images at "
            f"threshold 0.5, auth. FP the share of authentic pixels flagged. Under PGD-10 at 8/255 (white-box, "
            f"{a['n_forged']} forged CASIA v1 test images): F1@0.5 {c['f1']:.3f} -> {a['f1']:.3f}.")
    print(table)
    print(note)
    if args.readme:
        update_readme_section("real", f"{table}\n\n{note}", REPO / "README.md")


if __name__ == "__main__":
    main()
