"""What the demo's ANSM training step costs, and what the channels-last memory layout saves, side by side.

Times one optimisation step of each stage at the demo's shapes (batch 16 attacked + 16 clean images, 64x64):

* stage 1 with pixel alignment only (``ffa_weight 0``): ANSM forward + backward, no localizer;
* stage 2 (MgR): ANSM, then the frozen localizer forward + backward on the defended images;

each with the default (contiguous) layout and with the channels-last layout the package now uses (ANSM makes
its input channels-last; ``trainer.freeze`` lays the localizer's weights out channels-last). Interleaved
repeats, median, after a warm-up; prints the ratio measured in this run.

Run: ``.venv/bin/python bench/training_step.py [--repeats 15] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from ansm.defense import ANSM
from ansm.defense.losses import mask_loss
from ansm.models import create_localizer


def _contiguous_ansm(ansm: ANSM) -> Callable[[torch.Tensor], torch.Tensor]:
    """ANSM's forward as it was before the channels-last change (same weights, contiguous activations)."""
    return lambda x: (x + ansm.perturbation(x.contiguous())).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ansm = ANSM()
    torch.nn.init.normal_(ansm.tail.weight, std=0.01)  # a trained-like, non-identity ANSM
    opt = torch.optim.Adam(ansm.parameters(), lr=1e-4)
    loc_default = create_localizer("twostream", jpeg_grid=False).eval()
    loc_cl = create_localizer("twostream", jpeg_grid=False).eval()
    loc_cl.load_state_dict(loc_default.state_dict())
    loc_cl.to(memory_format=torch.channels_last)
    for p in [*loc_default.parameters(), *loc_cl.parameters()]:
        p.requires_grad_(False)
    x = torch.rand(32, 3, 64, 64)
    mask = (torch.rand(32, 1, 64, 64) > 0.7).float()

    def step(forward: Callable[[torch.Tensor], torch.Tensor], localizer: torch.nn.Module | None) -> None:
        out = forward(x)
        loss = (out - x).abs().mean() if localizer is None else mask_loss(localizer(out), mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    cases = {
        "stage 1, contiguous": lambda: step(_contiguous_ansm(ansm), None),
        "stage 1, channels-last": lambda: step(ansm, None),
        "stage 2, contiguous": lambda: step(_contiguous_ansm(ansm), loc_default),
        "stage 2, channels-last": lambda: step(ansm, loc_cl),
    }
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"one training step, batch 32x3x64x64, {args.threads} thread(s), median of {args.repeats}:")
    for name, t in med.items():
        print(f"  {name:24s} {t * 1000:7.1f} ms")
    for stage in ("stage 1", "stage 2"):
        print(f"  {stage}: channels-last is {med[f'{stage}, contiguous'] / med[f'{stage}, channels-last']:.2f}x faster")


if __name__ == "__main__":
    main()
