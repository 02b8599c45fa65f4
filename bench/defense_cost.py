"""Cost of ANSM (full and fast arch) next to the localizers it protects: parameters, MACs and forward time at 512x512.

MACs are *counted*, not estimated: forward hooks on every ``nn.Conv2d`` and ``nn.Linear`` add
``output elements x (in_channels / groups) x kernel area`` (Linear: ``output elements x in_features``) during one
real forward pass of a 1x3x512x512 image. Functional convolutions (the twostream SRM filter, the Bayar
constrained conv, ANSM's fixed blur, the fast arch's stem-composed 5x5 convolutions) are not modules and are
added by hand below, so nothing is missed. Norms,
activations and interpolation are not counted (they are a few operations per element, not MACs).

Forward times are measured side by side (interleaved, median of a few repeats after a warm-up), batch 1.
Latency of the defended pipeline (localizer + ANSM, 1 and 2 threads, 512 and 1024): ``bench/ansm_latency.py``.

Run: ``.venv/bin/python bench/defense_cost.py [--size 512] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from ansm.defense import ANSM, count_parameters
from ansm.models import create_localizer


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, counted with hooks on Conv2d and Linear modules."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Linear, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def functional_macs(name: str, model: nn.Module, h: int, w: int) -> int:
    """MACs of convolutions done with ``F.conv2d`` inside a model (not visible to module hooks)."""
    if name == "ansm":
        return h * w * 3 * 9  # fixed 3x3 blur per channel for the high-pass input
    if name == "ansm-fast":
        # head (stride 2) and full-resolution tail are 5x5 kernels on the image through F.conv2d (their modules are
        # never called), and the upsampling ConvTranspose2d is no nn.Conv2d: input elements x out channels x 4x4
        width, h2, w2 = model.head[0].out_channels, -(-h // 2), -(-w // 2)
        return h2 * w2 * width * 3 * 25 + h * w * 3 * 3 * 25 + h2 * w2 * width * 3 * 16
    if name == "twostream":
        h8, w8 = -(-h // 8) * 8, -(-w // 8) * 8  # the localizer pads to a multiple of 8
        jpeg = model.jpeg.basis.shape[0] if hasattr(model, "jpeg") else 0  # block DCT: K coefficients per pixel
        return h8 * w8 * (9 * 25 + 3 * 3 * 25 + jpeg)  # SRM: 9 depthwise 5x5; Bayar: 3x3 channels 5x5
    return 0


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--localizers", nargs="+", default=["twostream", "unet-small"])
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size)
    models: dict[str, nn.Module] = {"ansm": ANSM().eval(), "ansm-fast": ANSM(arch="fast").eval()}
    for name in args.localizers:
        models[name] = create_localizer(name).eval()
    rows = {}
    for name, model in models.items():
        macs = count_macs(model, x) + functional_macs(name, model, args.size, args.size)
        rows[name] = {"params": count_parameters(model), "gmacs": macs / 1e9}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model(x)
        for name, model in models.items():
            rows[name]["fwd_s"] = _median_time(lambda m=model: m(x), args.repeats)
    print(f"{'model':<12} {'params':>10} {'GMACs@' + str(args.size):>12} {'fwd s':>8}   ANSM (full; fast) as a share of it")
    for name, r in rows.items():
        share = "" if name.startswith("ansm") else "; ".join(
            f"{a}: params {rows[k]['params'] / r['params']:.1%}, MACs {rows[k]['gmacs'] / r['gmacs']:.1%}, "
            f"time {rows[k]['fwd_s'] / r['fwd_s']:.1%}" for a, k in (("full", "ansm"), ("fast", "ansm-fast")))
        print(f"{name:<12} {r['params']:>10,} {r['gmacs']:>12.2f} {r['fwd_s']:>8.3f}   {share}")


if __name__ == "__main__":
    main()
