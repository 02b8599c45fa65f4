"""How much of the synthetic forgeries' evidence an L-inf budget can erase without any model: the noise-level
equalization attack, scored on every defense of the ``informed`` benchmark (issue 14).

The synthetic forgeries' strongest trace is a noise-level mismatch (``ansm.data.synth``: the host's camera noise
has std 0.5-2.5 /255, the manipulated region's differs by 4-10 /255). The ``noise-equalize`` attack
(``ansm.attacks.equalize``) is what a forger does about it: random signs of size eps on the side of the mask whose
high-pass residual is weaker, no localizer involved. Where it closes the gap, the noise-level evidence is gone from
the image itself, so no defense in front of the localizer (and no localizer) can bring it back; only the other
traces (blur, resampling, JPEG) remain. It needs no gradient and no knowledge of the defense. Measured: it barely
moves F1 (the evidence survives), so the white-box attacks' zeros are the models' weakness, not the data's.

Beside it, the forger's other move, ``region-denoise``: the region itself smoothed (Gaussian, sigma 1) by at most
eps per pixel value, which strips the donor's noise, resampling and JPEG residue where they are. And the control:
the same sign noise without the mask (signs on the whole image: noise, not equalization).

    python experiments/noise_equalization.py          # needs runs/benchmark-informed (experiments/informed.py)
    python experiments/noise_equalization.py --docs   # also writes the table into docs/benchmark.md

Same 32 test images as the informed table (the attack chooses nothing; nothing here is tuned).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean, stdev

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from ansm.attacks import create_attack  # noqa: E402
from ansm.attacks.base import random_signs  # noqa: E402
from ansm.benchmark.config import preset_config  # noqa: E402
from ansm.benchmark.defenses import build_defenses  # noqa: E402
from ansm.data.datasets import open_data  # noqa: E402
from ansm.eval.evaluate import same_size_batches  # noqa: E402
from ansm.eval.metrics import f1_score  # noqa: E402
from ansm.eval.readme import update_readme_section  # noqa: E402
from ansm.utils import seeded_generator  # noqa: E402

from informed import LABELS, RUN  # noqa: E402  (this folder; the informed benchmark's run and row names)

EPS = (2 / 255, 4 / 255, 8 / 255)


def sign_noise(x: torch.Tensor, eps: float, g: torch.Generator) -> torch.Tensor:
    """The control: ``x + eps * s`` on the whole image (s uniform in {-1, +1}), clipped to [0, 1]."""
    return (x + eps * random_signs(x.shape, x, g)).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", action="store_true", help="write the table into docs/benchmark.md")
    args = ap.parse_args()
    if not (RUN / "report.json").is_file():
        sys.exit(f"error: {RUN} has no finished benchmark: run `python experiments/informed.py` first")
    cfg = preset_config("informed", out=str(RUN), device="cpu")
    _, _, defenses = build_defenses(cfg, torch.device("cpu"), lambda _d, _t: (lambda _n=1: None), lambda _s: None)
    data = open_data(cfg.data, size=cfg.size, seed=0)
    batches = [(torch.stack([it["image"] for it in b]), torch.stack([it["mask"] for it in b]))
               for b in same_size_batches(data, cfg.batch_size)]
    # f1[(view, eps)][defense key] = per forged image F1s
    f1: dict[tuple[str, float], dict[str, list[float]]] = {}
    for k, (x, m) in enumerate(batches):
        forged = m.flatten(1).amax(1) > 0.5
        views = {"clean": {0.0: x}}
        for eps in EPS:
            equalize = create_attack("noise-equalize", defenses[0].localizer, eps=eps)
            views.setdefault("equalized", {})[eps] = equalize(x, m, generator=seeded_generator(cfg.seed, k, round(eps * 255)))
            views.setdefault("noise (no mask)", {})[eps] = sign_noise(x, eps, seeded_generator(cfg.seed, k, round(eps * 255), 1))
            views.setdefault("region denoised", {})[eps] = create_attack("region-denoise", defenses[0].localizer, eps=eps)(x, m)
        for view, by_eps in views.items():
            for eps, xv in by_eps.items():
                for d in defenses:
                    scores = f1_score(torch.sigmoid(d.logits(xv)), m)[forged]
                    f1.setdefault((view, eps), {}).setdefault(d.key, []).extend(scores.tolist())
    text = table(f1, defenses, len(f1[("clean", 0.0)]["none"]))
    print(text)
    if args.docs:
        update_readme_section("noise-equalization", text, REPO / "docs" / "benchmark.md")


def table(f1: dict[tuple[str, float], dict[str, list[float]]], defenses: list, n_forged: int) -> str:
    groups: dict[str, list[str]] = {}
    for d in defenses:
        groups.setdefault(d.group, []).append(d.key)
    cols = [("clean", 0.0)] + [(v, e) for v in ("equalized", "region denoised", "noise (no mask)") for e in EPS]
    head = ["defense"] + ["clean" if v == "clean" else f"{v} {e * 255:g}/255" for v, e in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, keys in groups.items():
        cells = [LABELS.get(group, group)]
        for col in cols:
            per_seed = [mean(f1[col][k]) for k in keys]
            cells.append(f"{per_seed[0]:.3f}" if len(per_seed) == 1 else f"{mean(per_seed):.3f} ± {stdev(per_seed):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    lead = (f"F1 per forged image ({n_forged} forged of the informed table's test images), mean ± sd over the "
            "defenses' seeds; the attacked images stay on the 8-bit grid (eps is a whole number of levels); `python experiments/noise_equalization.py --docs`.")
    return lead + "\n\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
