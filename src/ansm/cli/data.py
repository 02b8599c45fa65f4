"""``ansm synth``: write a synthetic forgery dataset in the standard layout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ansm.cli.app import command, console, progress
from ansm.validate import output_dir


@command("synth", example="ansm synth --out data/synth-train --n 500 --split train --seed 0")
def synth_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: new, empty, or made with the same settings "
                                                     "(resumes or extends it; other settings are refused)."),
    n: int = typer.Option(200, "--n", "-n", help="Number of samples (forgeries plus authentic negatives)."),
    split: str = typer.Option("train", help="train, val or test: disjoint photos and scenes (choose on val, report test once)."),
    seed: int = typer.Option(0, help="Sample i is a pure function of (seed, split, i)."),
    size: int = typer.Option(128, help="Side of the square images, in pixels."),
    source: Optional[Path] = typer.Option(None, help="Folder of authentic photos (default: scikit-image's bundled ones)."),
) -> None:
    """Generate splicing, copy-move and object-removal forgeries with exact masks, plus authentic negatives.

    Writes <out>/<id>.{png,jpg} + <out>/<id>_gt.png, authentic images under <out>/authentic/, and
    <out>/synth.json with every sample's parameters (kind, traces, JPEG qualities). Deterministic per seed.
    """
    from ansm.data.synth import synthesize_folder
    from ansm.errors import ConfigError

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split must be train, val or test, got {split!r}")
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    output_dir(out, "--out")
    with progress() as bar:
        task = bar.add_task("synthesizing", total=n)
        synthesize_folder(out, n, seed=seed, split=split, size=size, source=source, on_sample=lambda: bar.advance(task))
    console.print(f"wrote {n} samples to {out} (index: {out / 'synth.json'})")
