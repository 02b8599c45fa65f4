"""Latency of ANSM next to the localizer it defends: localizer alone vs localizer + ANSM, for each ANSM network.

One run measures everything side by side: for each image size and thread count, the forwards (the localizer
alone, and for each network in ``NETS`` the network alone and the localizer after it) are interleaved round by
round after a warm-up, and each is the median of ``--repeats`` rounds, batch 1. Printed per network:

* throughput (images/s) of the localizer alone and of the defended pipeline ``V(ANSM(x))``;
* ``ANSM/V``: ANSM's forward time divided by the localizer's (both measured alone);
* ``share``: ANSM's forward time divided by the defended pipeline's, i.e. its part of ``V(ANSM(x))``.

The localizer is the one the demo defends (``twostream`` with ``ansm.demo.DEFENDED_LOCALIZER_KWARGS``), or with
``--localizer mobilenet-unet`` the one the real-forgery preset trains (``ansm benchmark --preset real``), with
channels-last weights as the demo and the trainer use them; weights are untrained (the time does not depend on
them). ANSM's output layers get small random weights so it is not the zero-init identity.

``--amp bf16`` runs every forward (localizer and ANSM alike, so the ratios compare equal precision) under
autocast (on a CPU with AVX512-BF16 both get faster; whether a localizer keeps its accuracy in bf16 is for the
user to check on their own data). On a GPU (``--device cuda``) the times are taken between
``torch.cuda.synchronize()`` calls, ``--amp`` takes bf16 or fp16, and a training step of each network is timed too
(a stage-2 MgR step of ``ansm.defense.trainer.ansm_losses`` with the pixel term, plus Adam, at ``--train-batch`` x
``--train-size``); on a CPU the training step is skipped (``bench/training_step.py`` times CPU training steps) and
fp16 is refused.

The allocator is held steady by default (``--malloc steady``, glibc only): freed memory stays in the process
instead of large blocks being mapped fresh on every allocation and unmapped on every free. With glibc's defaults
whether an 8-16 MB activation page-faults anew depends on the history of its dynamic mmap threshold, and the same
ANSM forward at 512x512 took 48 ms in one process and 69 ms in the next, the localizer's moving too, so ratios
taken that way wander by several points. Holding freed memory is what jemalloc and tcmalloc do (the allocators
PyTorch's CPU performance guides recommend); it speeds the localizer up more than ANSM, so its ratios are the
stricter ones. ``--malloc system`` leaves glibc's defaults.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/ansm_latency.py [--sizes 512 1024] [--threads 1 2]``
(GPU: ``python bench/ansm_latency.py --device cuda --amp bf16 --sizes 512 1024 2048``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn

from ansm.defense import ANSM
from ansm.demo import DEFENDED_LOCALIZER_KWARGS
from ansm.models import create_localizer

# The ANSM networks measured (name -> ANSM keyword arguments): the default, the fast arch, and the cheaper
# variants compared on val by experiments/demo_val.py (w8-d2 is the one chosen there). ``--nets`` picks a subset.
NETS: dict[str, dict] = {
    "full": {},
    "fast": {"arch": "fast"},
    "w8-d13": {"width": 8, "dilations": (1, 3)},  # full resolution, width 8, dilations 1, 3
    "w8-d124": {"width": 8},  # full resolution, width 8, dilations 1, 2, 4
    "w7-d13": {"width": 7, "dilations": (1, 3)},  # timed only (18% of the localizer at 512, 1 thread): not trained
    "w6-d13": {"width": 6, "dilations": (1, 3)},
    "w8-d2": {"width": 8, "dilations": (2,)},
}
LOCALIZERS: dict[str, dict] = {"twostream": DEFENDED_LOCALIZER_KWARGS, "mobilenet-unet": {}}
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def hold_freed_memory() -> str:
    """glibc: serve every block from the heap (no mmap) and never trim it, so freed activations are reused."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return "system (no glibc mallopt here)"
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    if libc.mallopt(m_mmap_max, 0) != 1 or libc.mallopt(m_trim_threshold, 2**31 - 1) != 1:
        return "system (mallopt refused)"
    return "steady (glibc: no mmap, no trim)"


def make_ansm(name: str, device: torch.device) -> ANSM:
    torch.manual_seed(0)
    net = ANSM(**NETS[name])
    with torch.no_grad():  # a trained-like, non-identity ANSM
        for pname, p in net.named_parameters():
            if pname.startswith(("tail.", "up.", "hp_tail.")):
                p.normal_(0, 0.01)
    return net.to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                        device: torch.device) -> dict[str, float]:
    """Median seconds of each function, the functions run round-robin so load drifts hit them all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def forward_table(localizer: nn.Module, ansms: dict[str, ANSM], size: int, repeats: int, warmup: int,
                  device: torch.device, amp: torch.dtype | None) -> list[str]:
    x = torch.rand(1, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    autocast = (torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext())
    fns: dict[str, Callable[[], object]] = {"V": lambda: localizer(x)}
    for name, net in ansms.items():
        fns[f"V+{name}"] = lambda n=net: localizer(n(x))
        fns[name] = lambda n=net: n(x)
    with torch.no_grad(), autocast:
        t = interleaved_medians(fns, repeats, warmup, device)
    rows = []
    for name in ansms:
        rows.append(f"{size:>5} {name:<10} {t['V'] * 1e3:>9.1f} {t[name] * 1e3:>10.1f} {t['V+' + name] * 1e3:>11.1f} "
                    f"{1 / t['V']:>9.2f} {1 / t['V+' + name]:>11.2f} {t[name] / t['V']:>7.1%} "
                    f"{t[name] / t['V+' + name]:>7.1%}")
    return rows


def train_step_times(localizer: nn.Module, names: tuple[str, ...], batch: int, size: int, repeats: int,
                     warmup: int, device: torch.device, amp: torch.dtype | None) -> list[str]:
    """Seconds of one ANSM training step (stage-2 MgR + pixel term, backward, Adam), per network, interleaved."""
    from ansm.defense.trainer import Batch, TrainANSMConfig, ansm_losses

    g = torch.Generator(device="cpu").manual_seed(0)
    x_o = torch.rand(batch, 3, size, size, generator=g)
    x_a = (x_o + (torch.rand(x_o.shape, generator=g) - 0.5) * 16 / 255).clamp(0, 1)
    mask = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    b = Batch(x_o.to(device), x_a.to(device), mask.to(device), "bench")
    cfg = TrainANSMConfig(stage1_steps=0, stage2_steps=1, mgr_pixel=1 / 8, device=device.type)
    autocast = (torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext())
    fns: dict[str, Callable[[], object]] = {}
    for name in names:
        net = make_ansm(name, device).train().to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def step(net: ANSM = net, opt: torch.optim.Optimizer = opt) -> None:
            with autocast:
                loss = ansm_losses(net, localizer, b, 2, [], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        fns[name] = step
    t = interleaved_medians(fns, repeats, warmup, device)
    return [f"train step {name}: {t[name] * 1e3:.1f} ms ({batch}x3x{size}x{size}, {batch / t[name]:.1f} images/s)"
            for name in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts (torch.set_num_threads)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", default=None, choices=sorted(AMP), help="autocast dtype (CPU: bf16 only)")
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--train-size", type=int, default=256)
    ap.add_argument("--localizer", default="twostream", choices=list(LOCALIZERS),
                    help="the defended localizer: the demo's twostream or the real preset's mobilenet-unet")
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS), help="ANSM networks to time")
    ap.add_argument("--malloc", default="steady", choices=["steady", "system"],
                    help="steady: keep freed memory in the process (module docstring); system: glibc's defaults")
    args = ap.parse_args()
    malloc = hold_freed_memory() if args.malloc == "steady" else "system"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (run without --device on a CPU)")
    device = torch.device(args.device)
    if args.amp == "fp16" and device.type == "cpu":
        raise SystemExit("--amp fp16: GPU only (on a CPU use --amp bf16)")
    amp = AMP[args.amp] if args.amp else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    localizer = create_localizer(args.localizer, **LOCALIZERS[args.localizer]).eval().to(device)
    localizer = localizer.to(memory_format=torch.channels_last)
    for p in localizer.parameters():
        p.requires_grad_(False)
    ansms = {name: make_ansm(name, device) for name in args.nets}
    threads = args.threads if device.type == "cpu" else [torch.get_num_threads()]
    print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"dtype {args.amp if amp is not None else 'float32'}, batch 1, median of {args.repeats} interleaved rounds "
          f"after {args.warmup} warm-up; localizer {args.localizer} {LOCALIZERS[args.localizer]}; allocator {malloc}")
    header = (f"{'size':>5} {'ANSM':<10} {'V ms':>9} {'ANSM ms':>10} {'V+ANSM ms':>11} {'V img/s':>9} "
              f"{'V+ANSM im/s':>11} {'ANSM/V':>7} {'share':>7}")
    for n in threads:
        if device.type == "cpu":
            torch.set_num_threads(n)
            print(f"\n{n} thread(s)")
        print(header)
        for size in args.sizes:
            for row in forward_table(localizer, ansms, size, args.repeats, args.warmup, device, amp):
                print(row, flush=True)
    if device.type == "cuda":
        print()
        for row in train_step_times(localizer, tuple(args.nets), args.train_batch, args.train_size, args.repeats,
                                    args.warmup, device, amp):
            print(row)
    else:
        print("\ntraining step: skipped on the CPU (GPU only here; bench/training_step.py times CPU steps)")


if __name__ == "__main__":
    main()
