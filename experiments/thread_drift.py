"""Does the CPU thread count change a result? Same seed, same config, same torch, 1 thread against 2.

Why: the real preset's localizer, trained twice by the same command in two sessions, reached val F1 0.429 and
0.385, and the two runs agreed to 0.001 at step 250. Every draw in a run is a function of (seed, step), so the
data and noise were the same. What was not recorded is the thread count: PyTorch's CPU kernels split their sums
by thread, and a float sum in another order rounds differently. This probe measures that, and whether it grows:

1. one forward and backward of mobilenet-unet (the real preset's localizer) on a fixed 4x3x256x256 batch, at 1,
   2 and again 1 thread: the repeat must be bitwise equal (a check that can fail: if it is not, the kernels are
   nondeterministic at a fixed thread count and the thread count is not the cause), and the largest difference
   between 1 and 2 threads is printed;
2. a short ``train_localizer`` run (unet-small, synthetic, 200 steps) at 1 and at 2 threads: the largest weight
   difference and the held-out F1 of each.

    OMP_NUM_THREADS=2 python experiments/thread_drift.py     (~2 min on 2 cores)

It writes nothing; the README's reproducibility note quotes its output.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from ansm.models.registry import create_localizer
from ansm.models.train import TrainLocalizerConfig, train_localizer
from ansm.utils import seeded_generator


def gradients(threads: int) -> torch.Tensor:
    """All parameter gradients of one mobilenet-unet forward and backward, computed on ``threads`` threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_localizer("mobilenet-unet")
    x = torch.rand(4, 3, 256, 256, generator=seeded_generator(0, 1))
    model(x).float().mean().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def short_run(threads: int, steps: int, out: str) -> tuple[torch.nn.Module, float]:
    torch.set_num_threads(threads)
    cfg = TrainLocalizerConfig(arch="unet-small", out=out, steps=steps, batch_size=8, size=64, pool=200, eval_n=64,
                               seed=0)
    model, summary = train_localizer(cfg)
    return model, summary["heldout"]["f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    was = torch.get_num_threads()
    try:
        one, two, again = gradients(1), gradients(2), gradients(1)
        if not torch.equal(one, again):
            raise SystemExit("1 thread twice gave different gradients: the kernels are nondeterministic at a fixed "
                             "thread count, so the thread count is not what this probe can blame")
        diff = (one - two).abs()
        print(f"mobilenet-unet, one forward+backward: 1 thread twice bitwise equal; 1 vs 2 threads: "
              f"{int((diff > 0).sum())} of {diff.numel()} gradients differ, largest by {diff.max():.2e} "
              f"(largest gradient {one.abs().max():.2e})")
        with tempfile.TemporaryDirectory() as tmp:
            (m1, f1_one), (m2, f1_two) = (short_run(n, args.steps, f"{tmp}/t{n}") for n in (1, 2))
        wdiff = max((a - b).abs().max().item() for a, b in zip(m1.state_dict().values(), m2.state_dict().values())
                    if a.is_floating_point())
        print(f"unet-small, {args.steps} training steps: largest weight difference {wdiff:.2e}; held-out F1 "
              f"{f1_one:.4f} (1 thread) vs {f1_two:.4f} (2 threads)")
    finally:
        torch.set_num_threads(was)


if __name__ == "__main__":
    main()
