"""``ansm attack``: build an anti-forensics dataset (adversarial images + masks + manifest) from a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ansm.cli.app import command, console, progress
from ansm.validate import integer, output_dir, positive_int
from ansm.cli.options import max_side_option, tile_option, validate_tile


@command("attack", example="ansm attack --data synthetic:50 --model runs/loc/localizer --attack pgd --eps 8/255 "
                           "--steps 10 --objective hide --out runs/adv-pgd")
def attack_cmd(
    data: str = typer.Option(..., "--data", "-d", help="Dataset folder / IMDLBenCo JSON, or synthetic:N."),
    split: Optional[str] = typer.Option(None, help="Only this split of the folder's splits.json (e.g. train)."),
    model: str = typer.Option(..., "--model", "-m", help="Localizer: checkpoint path, registered name or module:callable."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (re-run to resume; other settings "
                                                     "or retrained weights of --model are refused)."),
    attack: str = typer.Option("pgd", "--attack", "-a", help="fgsm, bim, pgd, pgd-l2, mifgsm, cw-l2, segpgd, square "
                                                             "(gradient-free), noise-equalize (model-free: noise on the "
                                                             "quieter side of the mask), region-denoise (model-free: "
                                                             "the region smoothed by at most eps), noise-match "
                                                             "(model-free: both sides brought to one noise level)."),
    objective: str = typer.Option("untargeted", help="untargeted (break the mask) or hide (make it look authentic)."),
    eps: Optional[str] = typer.Option(None, help="Budget, e.g. 8/255 (L-inf; L2 for pgd-l2; optional L-inf cap for cw-l2)."),
    alpha: Optional[str] = typer.Option(None, help="Step size, e.g. 2/255."),
    steps: Optional[int] = typer.Option(None, help="Iterations."),
    restarts: Optional[int] = typer.Option(None, help="Random restarts (pgd, pgd-l2, segpgd)."),
    random_start: Optional[bool] = typer.Option(None, "--random-start/--no-random-start", help="Start inside the ball."),
    decay: Optional[float] = typer.Option(None, help="Momentum decay (mifgsm)."),
    c: Optional[float] = typer.Option(None, help="C&W trade-off constant."),
    kappa: Optional[float] = typer.Option(None, help="C&W confidence margin."),
    lr: Optional[float] = typer.Option(None, help="C&W Adam learning rate."),
    weights: Optional[Path] = typer.Option(None, help="Third-party weights for a registered model name."),
    seed: int = typer.Option(0, help="Base seed; each image uses a seed derived from (seed, image id)."),
    shard: Optional[str] = typer.Option(None, help="k/n: process one deterministic n-th of the images (0 <= k < n)."),
    size: int = typer.Option(128, help="Image size for synthetic:N."),
    max_side: Optional[int] = max_side_option(),
    tile: Optional[int] = tile_option("Tiled images are attacked tile by tile (each tile on its own, a "
                                      "bounded-memory attacker; an L2 budget still holds over the whole image)."),
    batch_size: int = typer.Option(1, help="Images attacked together (same-size runs; each keeps its own seed)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1 or auto."),
) -> None:
    """Attack every image of a dataset with a white-box attack on a localizer and save a lossless PNG dataset.

    Writes <out>/<id>.png + <out>/<id>_gt.png (authentic images under <out>/authentic/), one record per image
    in <out>/records/, and <out>/manifest.jsonl (sorted by id) with budgets, PSNR, SSIM and F1 before/after.
    Interrupted runs resume where they stopped; shards can run in parallel into the same folder.
    Large images are attacked in tiles (--tile) or downscaled first (--max-side).
    """
    validate_tile(tile)
    integer(max_side, "--max-side", minimum=8)
    positive_int(batch_size, "--batch-size")
    positive_int(size, "--size")
    output_dir(out, "--out")
    from ansm.attacks import create_attack
    from ansm.attacks.builder import build_adversarial_dataset, parse_shard, summarize_manifest
    from ansm.data.datasets import open_data
    from ansm.errors import ConfigError
    from ansm.models.resolve import resolve_localizer
    from ansm.utils import resolve_device, seed_everything

    seed_everything(seed)
    k, n = parse_shard(shard)
    dev = resolve_device(device)
    if split is not None and data.startswith("synthetic:"):
        raise ConfigError("--split is for dataset folders; synthetic:N is always the held-out test split")
    dataset = open_data(data, size=size, max_side=max_side, **({"split": split} if split else {}))
    localizer = resolve_localizer(model, weights=weights).to(dev).eval()
    atk = create_attack(attack, localizer, eps=eps, alpha=alpha, steps=steps, restarts=restarts,
                        random_start=random_start, decay=decay, c=c, kappa=kappa, lr=lr, objective=objective)
    describe = {"data": data, "model": model, "size": size if data.startswith("synthetic:") else None}
    if split is not None:
        describe["split"] = split
    # size options change the saved images: recorded (when given) so a resume with other values is refused
    describe.update({k: v for k, v in {"max_side": max_side, "tile": tile}.items() if v is not None})
    n_shard = len(range(k, len(dataset), n))
    with progress() as bar:
        task = bar.add_task(f"{attack} {k}/{n}" if n > 1 else attack, total=n_shard)
        result = build_adversarial_dataset(dataset, localizer, atk, out, seed=seed, shard=(k, n), describe=describe,
                                           device=dev, on_item=lambda _id, done: bar.update(task, advance=1, resumed=not done),
                                           batch_size=batch_size, tile=tile)
    console.print(f"{result.n_attacked} attacked, {result.n_skipped} already done ({result.n_shard} in shard {k}/{n})")
    if result.manifest is None:
        console.print(f"manifest pending: other shards of {out} have not finished")
        return
    s = summarize_manifest(result.manifest)
    typer.echo(f"{result.manifest}: {s['n_images']} images ({s['n_forged']} forged); "
               f"F1 {s['f1_before']:.3f} -> {s['f1_after']:.3f}; L-inf max {s['linf_max']:.4f}, "
               f"L2 mean {s['l2_mean']:.3f}, PSNR {s['psnr_mean']:.1f} dB, SSIM {s['ssim_mean']:.3f}")
