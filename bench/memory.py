"""Peak memory (RSS) of ``ansm evaluate``, ``ansm defend`` and ``ansm attack`` on one large image.

Each command runs in its own fresh subprocess; its peak resident set size is read from the kernel's rusage for
that process (``os.wait4``), so imports, image decoding, the model, metrics and file writing are all counted.
The image is synthetic (smooth colour field plus noise, a rectangular "forgery" mask), 4000x3000 = 12 MP by
default; the models are the built-in two-stream localizer (default width, seeded random weights: memory does
not depend on the weights) and an untrained ANSM. ``--compare-mp`` adds the untiled path (``--tile 0``) on a
smaller image, to show what tiling saves (untiled, evaluate took 1,968 MiB at 2 MP: ~0.8 GB per megapixel,
so ~10 GB at 12 MP; not run at 12 MP for that reason).

    python bench/memory.py                       # 12 MP: evaluate, defend, attack (FGSM) on the tiled path
    python bench/memory.py --compare-mp 2        # plus evaluate with and without tiling at 2 MP

Not a test: it takes minutes on 2 CPU cores (the attack does a forward and backward pass per tile).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_image(folder: Path, width: int, height: int, seed: int = 0) -> Path:
    """A dataset folder with one ``img.jpg`` (width x height) and its mask ``img_gt.png``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.fromarray(rng.integers(0, 256, (max(2, height // 50), max(2, width // 50), 3), dtype=np.uint8))
    img = np.asarray(base.resize((width, height), Image.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.integers(-6, 7, img.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(folder / "img.jpg", quality=92)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 3: height // 2, width // 4: width // 2] = 255
    Image.fromarray(mask).save(folder / "img_gt.png")
    return folder


def make_models(folder: Path) -> tuple[Path, Path]:
    """A seeded two-stream localizer checkpoint and an (identity) ANSM checkpoint that names it."""
    import torch

    from ansm.defense.ansm_net import ANSM, save_ansm
    from ansm.models import create_localizer
    from ansm.models.registry import save_localizer

    torch.manual_seed(0)
    loc = folder / "localizer"
    save_localizer(create_localizer("twostream"), loc)
    ansm = folder / "ansm"
    save_ansm(ANSM(), ansm, localizer=str(loc))
    return loc, ansm


def peak_rss(args: list[str]) -> tuple[int, float, float, str]:
    """Run ``ansm <args>`` in a fresh process: (exit code, peak RSS in MiB, seconds, last stderr line)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "from ansm.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (ru_maxrss in KiB on Linux)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
    return proc.returncode, usage.ru_maxrss / 1024, time.perf_counter() - start, err[-1] if err else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--commands", default="evaluate,defend,attack", help="comma-separated subset")
    ap.add_argument("--compare-mp", type=float, default=0.0,
                    help="also run evaluate with --tile 0 and with tiling on an image of this many megapixels")
    opts = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        loc, ansm = make_models(root)
        data = make_image(root / "data", opts.width, opts.height)
        mp = opts.width * opts.height / 1e6
        runs = {
            "evaluate": ["evaluate", "--model", str(loc), "--data", str(data), "--device", "cpu"],
            "defend": ["defend", "--ansm", str(ansm), "--input", str(data / "img.jpg"), "--out", str(root / "def"),
                       "--device", "cpu"],
            "attack": ["attack", "--data", str(data), "--model", str(loc), "--attack", "fgsm", "--eps", "8/255",
                       "--out", str(root / "adv"), "--device", "cpu"],
        }
        for name in [c.strip() for c in opts.commands.split(",") if c.strip()]:
            rc, rss, secs, last = peak_rss(runs[name])
            rows.append((f"ansm {name}" + (" (FGSM)" if name == "attack" else ""), f"{opts.width}x{opts.height}",
                         f"{mp:.1f}", "auto (512/64)", rc, rss, secs, last if rc else ""))
        if opts.compare_mp:
            side = int(round((opts.compare_mp * 1e6 / 12) ** 0.5))
            w, h = 4 * side, 3 * side
            small = make_image(root / "small", w, h)
            for tile in ("0", "512"):
                rc, rss, secs, last = peak_rss(["evaluate", "--model", str(loc), "--data", str(small),
                                                "--device", "cpu", "--tile", tile])
                rows.append(("ansm evaluate", f"{w}x{h}", f"{w * h / 1e6:.1f}", "off" if tile == "0" else "512/64",
                             rc, rss, secs, last if rc else ""))
    print("| command | image | MP | tiling (tile/overlap px) | exit | peak RSS (MiB) | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for cmd, size, mp_s, tiling, rc, rss, secs, last in rows:
        print(f"| {cmd} | {size} | {mp_s} | {tiling} | {rc} | {rss:.0f} | {secs:.0f} |" + (f" {last}" if last else ""))
    print(f"\nOMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')}, {os.cpu_count()} CPU(s); "
          "localizer: twostream (default width), ANSM: untrained")


if __name__ == "__main__":
    main()
