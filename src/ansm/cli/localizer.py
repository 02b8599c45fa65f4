"""``ansm train-localizer`` and ``ansm evaluate``: train a localizer on synthetic forgeries, measure any localizer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ansm.cli.app import command, console, progress
from ansm.validate import integer, output_dir, output_file, positive_int
from ansm.cli.options import max_side_option, tile_option, validate_tile


@command("train-localizer", example="ansm train-localizer --out runs/localizer --seed 0")
def train_localizer_cmd(
    out: Path = typer.Option(Path("runs/localizer"), "--out", "-o", help="Run folder (re-run to resume)."),
    arch: str = typer.Option("twostream", help="Registered localizer: twostream, unet-small, noiseprint-head, mobilenet-unet."),
    weights: Optional[str] = typer.Option(None, help="noiseprint-head: Noiseprint++ weights file (default: auto lookup)."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default: 1200; 600 for noiseprint-head)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (AdamW, warm-up then cosine)."),
    size: Optional[int] = typer.Option(None, help="Training image side, pixels."),
    pool: Optional[int] = typer.Option(None, help="Synthetic training images rendered before training."),
    source: Optional[Path] = typer.Option(None, help="Folder of authentic photos (default: scikit-image's)."),
    data: Optional[Path] = typer.Option(None, help="Train on a real dataset folder with a splits.json instead of "
                                        "synthetic forgeries, e.g. ../shared/real/casia1."),
    split: str = typer.Option("train", help="With --data: the split trained on."),
    val_split: str = typer.Option("val", help="With --data: the split that picks the checkpoint (best F1@0.5)."),
    val_every: Optional[int] = typer.Option(None, help="With --data: validate every N steps (default 250)."),
    crop: Optional[int] = typer.Option(None, help="Random-crop side (default: 96 synthetic, 256 with --data)."),
    eval_n: Optional[int] = typer.Option(None, help="Held-out synthetic images evaluated at the end (0: skip)."),
    init: Optional[Path] = typer.Option(None, help="Start from this localizer checkpoint (fine-tuning)."),
    adv_eps: Optional[str] = typer.Option(None, help="PGD adversarial training budget, e.g. 8/255 (default: off)."),
    adv_steps: Optional[int] = typer.Option(None, help="PGD steps per adversarial example."),
    adv_fraction: Optional[float] = typer.Option(None, help="Share of each batch replaced by PGD examples."),
    trades: Optional[float] = typer.Option(None, help="With --adv-eps: TRADES with this beta (e.g. 1) instead of "
                                           "PGD training: masks learned on clean images, KL to the clean "
                                           "prediction under attack."),
    noise_std: Optional[str] = typer.Option(None, help="Benign-noise augmentation: max Gaussian std, e.g. 3/255 "
                                            "(default: off)."),
    jpeg_grid: Optional[bool] = typer.Option(None, "--jpeg-grid/--no-jpeg-grid",
                                             help="twostream: with or without the JPEG-grid stream (default: with)."),
    seed: int = typer.Option(0, help="Seed for initialisation, data and batches."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1 or auto (under torchrun: one device per process)."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision (default: on with CUDA)."),
) -> None:
    """Train a built-in localizer on synthetic forgeries (or a real dataset split with --data), then report F1.

    Real data: --data ../shared/real/casia1 --arch mobilenet-unet trains on the train split in 256-px crops
    (flips, rescale, JPEG, blur, noise) and keeps the checkpoint with the best F1@0.5 on the val split.

    Writes <out>/localizer.{safetensors,json} (load it with --model <out>/localizer) and a resumable
    <out>/train_state checkpoint; an interrupted run started again continues from its last checkpoint.
    PGD adversarial fine-tuning: --init runs/localizer/localizer --adv-eps 8/255 --steps 300
    (TRADES: add --trades 1).
    GPUs: --device cuda uses mixed precision; torchrun --standalone --nproc_per_node N --no-python ansm
    train-localizer ... splits every global batch over N processes (rank 0 validates and writes the files).
    """
    import inspect

    from ansm.errors import ConfigError
    from ansm.models import LOCALIZERS
    from ansm.models.train import TrainLocalizerConfig, train_localizer
    from ansm.utils import seed_everything, write_json_atomic

    output_dir(out, "--out")
    if init is not None:
        from ansm.checkpoint import load_checkpoint_meta

        arch = load_checkpoint_meta(init).get("arch", arch)  # fine-tuning keeps the checkpoint's architecture
    entry = LOCALIZERS.get(arch)  # unknown name: one-line error with close matches
    if steps is None:  # per-architecture default, else the config default
        steps = getattr(entry, "default_train_steps", None)
    overrides = {"steps": steps, "batch_size": batch_size, "lr": lr, "size": size, "pool": pool,
                 "source": str(source) if source else None, "eval_n": eval_n, "adv_eps": adv_eps,
                 "adv_steps": adv_steps, "adv_fraction": adv_fraction, "trades_beta": trades, "init": str(init) if init else None,
                 "noise_std": noise_std, "val_every": val_every,
                 "crop": crop if crop is not None else (256 if data is not None else None)}
    if data is not None:
        overrides.update(data=str(data), split=split, val_split=val_split)
    # Architectures built on a published backbone take ``weights`` (a path, or "auto" to look it up).
    accepted = inspect.signature(entry).parameters
    arch_kwargs = {"weights": weights or "auto"} if "weights" in accepted and not init else {}
    if weights and not arch_kwargs:
        raise ConfigError(f"--weights: {arch} does not load third-party weights (it is trained from scratch)")
    if jpeg_grid is not None:
        if "jpeg_grid" not in accepted or init:
            raise ConfigError(f"--jpeg-grid/--no-jpeg-grid: {arch if not init else '--init'} does not take it "
                              "(twostream trained from scratch does)")
        arch_kwargs["jpeg_grid"] = jpeg_grid
    cfg = TrainLocalizerConfig(arch=arch, arch_kwargs=arch_kwargs, out=str(out), seed=seed, device=device, amp=amp,
                               **{k: v for k, v in overrides.items() if v is not None})
    seed_everything(seed)
    import os

    main = int(os.environ.get("RANK", "0")) == 0
    with progress(disable=None if main else True) as bar:
        render = bar.add_task("reading data" if cfg.data else "rendering data", total=None if cfg.data else cfg.pool)
        train = bar.add_task("training", total=cfg.steps)
        model, summary = train_localizer(cfg, on_step=lambda step, loss: bar.update(train, completed=step + 1,
                                                                                     description=f"training loss {loss:.3f}"),
                                         on_pool_item=lambda: bar.advance(render))
    if not main:
        return
    write_json_atomic(out / "summary.json", summary)
    line = f"trained {arch} in {summary['train_s']:.0f} s ({cfg.steps} steps, resumed from {summary['resumed_from']})"
    if "val" in summary:
        v = summary["val"]
        line += (f"; chosen on {cfg.val_split} at step {summary['chosen_step']}: F1@0.5 {v['f1']:.3f}, IoU {v['iou']:.3f}, "
                 f"best-F1 {v['f1_best']:.3f}, pixel AUC {v['pixel_auc']:.3f}")
    if "heldout" in summary:
        h = summary["heldout"]
        line += (f"; held-out synthetic ({h['n_images']} images, {h['n_forged']} forged): F1@0.5 {h['f1']:.3f}, "
                 f"IoU {h['iou']:.3f}, best-F1 {h['f1_best']:.3f}, pixel AUC {h['pixel_auc']:.3f}, "
                 f"image AUC {h['image_auc']:.3f}")
    typer.echo(line)
    typer.echo(f"checkpoint: {out / 'localizer'}  (total {summary['train_s'] + summary.get('eval_s', 0):.0f} s)")


COLUMNS = {"n_images": "images", "n_forged": "forged", "f1": "F1", "iou": "IoU", "f1_best": "best-F1",
           "pixel_auc": "pixel AUC", "image_auc": "image AUC", "authentic_fp_rate": "auth. FP"}


@command("evaluate", example="ansm evaluate --model runs/localizer/localizer --data ../shared/data --json runs/eval.json")
def evaluate_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Localizer: checkpoint path, registered name or module:callable."),
    data: Optional[list[str]] = typer.Option(None, "--data", "-d", help="Dataset folder, folder of datasets, IMDLBenCo "
                                             "JSON, or synthetic:N. Repeat for several. With --protocol: its root."),
    protocol: Optional[str] = typer.Option(None, help="real: CASIA v1 test + COVERAGE, IMD2020, CoMoFoD, NoSo, CASIA v2, "
                                           "Columbia at native resolution, with each mask convention (root: --data, "
                                           "default ../shared/real)."),
    weights: Optional[Path] = typer.Option(None, help="Third-party weights for a registered model name."),
    max_side: Optional[int] = max_side_option(),
    tile: Optional[int] = tile_option("Tiled predictions are close to, not equal to, whole-image ones (see README)."),
    resize_masks: bool = typer.Option(False, help="Resize masks whose size differs from their image (nearest)."),
    split: Optional[str] = typer.Option(None, help="train, val or test: restrict datasets that have a splits.json "
                                        "(e.g. ../shared/real/casia1) to that split; others are used whole."),
    size: int = typer.Option(128, help="Image side for synthetic:N."),
    batch_size: int = typer.Option(8, help="Images per forward pass (same-size images only)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the numbers here as JSON."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1 or auto."),
) -> None:
    """Pixel F1/IoU at threshold 0.5 (mean over forged images), best-threshold F1, pixel AUC, image AUC.

    Definitions are in the README (Metrics). A folder whose subfolders are datasets (like ../shared/data) is
    evaluated per subfolder; images run at their own size unless --max-side is given, large ones in tiles (--tile).
    Datasets whose names collide (x/casia and y/casia) are all kept, as casia, casia-2, ...; --json records each
    key's folder under "sources".
    """
    validate_tile(tile)
    integer(max_side, "--max-side", minimum=8)
    positive_int(batch_size, "--batch-size")
    positive_int(size, "--size")
    output_file(json_path, "--json")
    from rich.table import Table

    from ansm.data.datasets import collect_datasets
    from ansm.eval.evaluate import evaluate
    from ansm.eval.readme import fmt
    from ansm.models.resolve import resolve_localizer
    from ansm.utils import resolve_device, write_json_atomic

    from ansm.errors import ConfigError

    conventions: dict[str, str] = {}
    if protocol is not None:
        from ansm.eval.protocols import protocol_datasets

        if split is not None or (data and len(data) > 1):
            raise ConfigError("--protocol fixes the datasets and splits: give at most one --data (its root) and no --split")
        datasets, conventions = protocol_datasets(protocol, data[0] if data else None, max_side=max_side,
                                                  resize_masks=resize_masks)
        sources = {k: str(Path(ds.path).resolve()) for k, ds in datasets.items()}
    elif not data:
        raise ConfigError("give --data (a dataset, a folder of datasets, synthetic:N) or --protocol real")
    else:
        # unique keys: x/casia and y/casia are both kept (casia, casia-2); "sources" in the JSON says which is which
        datasets, sources = collect_datasets(data, size=size, max_side=max_side, resize_masks=resize_masks, split=split)
    dev = resolve_device(device)
    localizer = resolve_localizer(model, weights=weights).to(dev).eval()
    results: dict[str, dict[str, float]] = {}
    with progress() as bar:
        for name, ds in datasets.items():
            task = bar.add_task(name, total=len(ds))
            results[name] = evaluate(localizer, ds, batch_size=batch_size, device=dev, tile=tile,
                                     on_item=lambda k, t=task: bar.advance(t, k))
    table = Table(title=f"{model}: F1/IoU at 0.5, mean over forged images")
    table.add_column("dataset", no_wrap=True)
    for header in COLUMNS.values():
        table.add_column(header, justify="right")
    if conventions:
        table.add_column("mask marks")
    for name, r in results.items():
        table.add_row(name, *(fmt(r[c]) for c in COLUMNS), *([conventions[name]] if conventions else []))
    import sys

    from rich.console import Console

    # dataset and model names are printed as given; in a log (not a terminal) Rich would fit the table to 80
    # columns and cut every number to "0.4…", so it gets room for all of them
    Console(markup=False, width=None if sys.stdout.isatty() else 200).print(table)
    if json_path:
        splits = {k: getattr(ds, "split", None) for k, ds in datasets.items()}
        write_json_atomic(json_path, {"model": model, "protocol": protocol, "datasets": results, "sources": sources,
                                      "splits": splits, "mask_conventions": conventions})
        console.print(f"wrote {json_path}")
