"""Cost of one PGD step relative to one forward+backward pass of the twostream localizer.

Both are timed side by side in the same loop (interleaved, so CPU frequency and load affect them alike), at
256x256 and 512x512, batch 1; each number is the median of a few repeats after a warm-up.

* ``fwd+bwd (params)``: a training-style pass, BCE loss backpropagated to the parameters;
* ``fwd+bwd (input)``: the same loss differentiated w.r.t. the input only (what an attack needs);
* ``pgd step``: one :class:`ansm.attacks.PGD` step as the attack runs it (forward, objective, gradient w.r.t.
  the image via ``autograd.grad``, signed step, projection).

Run: ``.venv/bin/python bench/attack_cost.py [--repeats 5] [--sizes 256 512]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ansm.attacks import create_attack
from ansm.models import create_localizer


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = ap.parse_args()
    torch.manual_seed(0)
    model = create_localizer("twostream").eval()
    attack = create_attack("pgd", model, eps="8/255", steps=1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, median of {args.repeats}")
    print(f"{'size':>9} {'fwd+bwd params':>15} {'fwd+bwd input':>14} {'pgd step':>9} {'step/params':>12} {'step/input':>11}")
    for size in args.sizes:
        x = torch.rand(1, 3, size, size)
        m = (torch.rand(1, 1, size, size) > 0.8).float()

        def fwd_bwd_params() -> None:
            model.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(model(x), m).backward()

        def fwd_bwd_input() -> None:
            xi = x.clone().requires_grad_(True)
            torch.autograd.grad(F.binary_cross_entropy_with_logits(model(xi), m), xi)

        def pgd_step() -> None:
            _, grad, _ = attack.gain_and_grad(x, m)
            attack.step(x, grad, x, {})

        fns = {"params": fwd_bwd_params, "input": fwd_bwd_input, "pgd": pgd_step}
        for fn in fns.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, fn in fns.items():
                times[k].append(_timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{size:>4}x{size:<4} {med['params'] * 1e3:>12.1f} ms {med['input'] * 1e3:>11.1f} ms "
              f"{med['pgd'] * 1e3:>6.1f} ms {med['pgd'] / med['params']:>11.2f}x {med['pgd'] / med['input']:>10.2f}x")
        model.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()
