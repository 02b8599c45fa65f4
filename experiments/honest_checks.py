"""The honest-evaluation checks on one localizer's white-box number, on ``val``: is a non-zero F1 robustness, or
an attack that did not converge or was fooled?

For each budget: the white-box PGD-100 (``val_probe.white_box_f1``: untargeted and hide, the worst per image), the
same with 200 steps (doubling the steps must not change F1 by more than 0.02), the gradient-free Square attack on
the model's output (1,000 queries, untargeted and hide, the worst per image; it must not beat PGD by more than
0.02, or the gradients were masked), and PGD-100 at an unbounded 64/255 (F1 must go to ~0, or the attack is
broken). A failed check is printed as FAILED.

Written for the unet-small + PGD-10 weights of ``experiments/at_scale_probe.py`` after 4,000 steps, whose 8/255
number rose from 0.001 to 0.030:

    python experiments/honest_checks.py runs/experiments/at-scale/unet-small-pgd10/step-4000 --eps 4 8
"""

from __future__ import annotations

import argparse

from val_probe import forged_f1, frozen, mean_f1, val_batches, white_box_f1  # (this folder; src on the path)

from ansm.benchmark.threats import gradient_free_attack  # noqa: E402
from ansm.models.registry import load_localizer  # noqa: E402
from ansm.utils import seeded_generator  # noqa: E402

MARGIN = 0.02


def square_f1(model, batches: list, eps: float, queries: int) -> float:
    scores = []
    for k, (x, m) in enumerate(batches):
        x_a = gradient_free_attack(model, x, m, eps / 255, queries, ["untargeted", "hide"], seeded_generator(2, k))
        scores += forged_f1(model, x_a, m)
    return sum(scores) / len(scores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("localizer", help="a localizer checkpoint (path without extension)")
    ap.add_argument("--eps", type=float, nargs="+", default=[4, 8], help="budgets in /255")
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    model = frozen(load_localizer(args.localizer))
    batches = val_batches()
    clean, n = mean_f1(model, batches)
    print(f"{args.localizer}: clean F1 {clean:.3f} over {n} forged val images")
    unbounded = white_box_f1(model, batches, 64, 100)
    print(f"  PGD-100 at 64/255 (unbounded): {unbounded:.3f}" + ("" if unbounded < MARGIN else "  FAILED: not ~0"))
    for eps in args.eps:
        f100, f200 = white_box_f1(model, batches, eps, 100), white_box_f1(model, batches, eps, 200)
        square = square_f1(model, batches, eps, args.queries)
        print(f"  {eps:g}/255: PGD-100 {f100:.3f}, PGD-200 {f200:.3f}"
              + ("" if abs(f200 - f100) <= MARGIN else "  FAILED: steps not converged")
              + f", Square-{args.queries} {square:.3f}"
              + ("" if square >= min(f100, f200) - MARGIN else "  FAILED: gradient-free beats PGD"))


if __name__ == "__main__":
    main()
