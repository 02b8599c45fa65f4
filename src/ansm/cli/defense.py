"""``ansm train`` (two-stage ANSM training) and ``ansm defend`` (apply a trained ANSM to images)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ansm.cli.app import command, console, progress
from ansm.errors import ConfigError
from ansm.validate import integer, output_dir, positive_int
from ansm.cli.options import max_side_option, tile_option, validate_tile


def _split(text: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _dilations(text: Optional[str]) -> Optional[list[int]]:
    """``--dilations 1,3`` -> [1, 3]; anything but positive integers is a one-line error."""
    parts = _split(text)
    if parts is None:
        return None
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ConfigError(f"--dilations must be comma-separated integers >= 1, e.g. 1,3; got {text!r}")
    return [int(p) for p in parts]


@command("train", example="ansm train --model runs/localizer/localizer --out runs/ansm --adv-data runs/adv-pgd "
                          "(robust, adversarially trained: --defended-fraction 1 --curriculum 100 --clean-kl 1) "
                          "(real photos: --data ../shared/real/casia1 --split train --crop 256) "
                          "(a cheaper network, trained four times as long: --width 8 --dilations 2 --stage2-steps 4400) "
                          "(multi-process: torchrun --standalone --nproc_per_node 2 --no-python ansm train ...)")
def train_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Localizer to protect: checkpoint path, registered name or module:callable."),
    out: Path = typer.Option(Path("runs/ansm"), "--out", "-o", help="Run folder (re-run to resume)."),
    stage1_steps: Optional[int] = typer.Option(None, help="Stage 1 (FFA) steps."),
    stage2_steps: Optional[int] = typer.Option(None, help="Stage 2 (MgR) steps."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch (split over torchrun processes)."),
    crop: Optional[int] = typer.Option(None, help="Training crop side (0: whole images)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (Adam; warm-up then cosine, per stage)."),
    eps_d: Optional[str] = typer.Option(None, help="Bound of the defensive perturbation, e.g. 16/255."),
    width: Optional[int] = typer.Option(None, help="ANSM hidden channels."),
    dilations: Optional[str] = typer.Option(None, help="Comma-separated dilations, one residual block each "
                                            "(default 1,2,4; the cheaper ANSM of docs/ansm.md: --width 8 "
                                            "--dilations 2)."),
    arch: Optional[str] = typer.Option(None, help="ANSM architecture: full (body at full resolution) or fast "
                                                  "(body at half resolution, ~1/4 of full's CPU time)."),
    taps: Optional[str] = typer.Option(None, help="Comma-separated localizer layers for FFA (default: the model's)."),
    ffa_weight: Optional[float] = typer.Option(None, help="Weight of FFA in stage 1 (0 with --ffa-pixel: pixel alignment only)."),
    ffa_pixel: Optional[float] = typer.Option(None, help="Weight of a pixel term (L1 to x_o, in 1/255 units) in stage 1."),
    ffa_alpha: Optional[float] = typer.Option(None, help="FFA smoothing alpha."),
    ffa_reduction: Optional[str] = typer.Option(None, help="FFA over channels: mean (1/N) or sum."),
    mgr_lambda: Optional[float] = typer.Option(None, help="MgR weight of the defended-original term."),
    mgr_dice: Optional[float] = typer.Option(None, help="MgR Dice weight (0: BCE only)."),
    mgr_ffa: Optional[float] = typer.Option(None, help="Weight of an FFA term kept in stage 2."),
    mgr_pixel: Optional[float] = typer.Option(None, help="Weight of the pixel term in stage 2."),
    stage2_lr: Optional[float] = typer.Option(None, help="Peak learning rate of stage 2 (default: --lr)."),
    attacks: Optional[str] = typer.Option(None, help="Online attack mix, comma-separated (fgsm, pgd, bim, mifgsm)."),
    objectives: Optional[str] = typer.Option(None, help="Online objectives, comma-separated (untargeted, hide)."),
    eps_min: Optional[str] = typer.Option(None, help="Smallest online attack budget, e.g. 4/255."),
    eps_max: Optional[str] = typer.Option(None, help="Largest online attack budget, e.g. 10/255."),
    pgd_steps: Optional[int] = typer.Option(None, help="Steps of online PGD/BIM/MI-FGSM."),
    defended_fraction: Optional[float] = typer.Option(None, help="Robust recipe: share of online steps whose attack "
                                                      "goes through ANSM + localizer (adversarial training; 0: the paper)."),
    curriculum: Optional[int] = typer.Option(None, help="Robust recipe: steps over which the largest online budget "
                                             "grows from --eps-min to --eps-max."),
    clean_kl: Optional[float] = typer.Option(None, help="Robust recipe: weight of the KL keeping V(ANSM(x_o)) at V(x_o) "
                                             "in stage 2."),
    noise_std: Optional[str] = typer.Option(None, help="Stochastic ANSM: std of the Gaussian noise on its network's "
                                            "input, e.g. 8/255 (0: deterministic)."),
    teacher: Optional[Path] = typer.Option(None, help="Distil from this trained ANSM checkpoint: an L1 term to its "
                                           "outputs (with --distill); it lowered a --arch fast ANSM's val "
                                           "recovery (docs/ansm.md)."),
    distill: Optional[float] = typer.Option(None, help="Weight of the distillation term (1/255 units, like the "
                                            "pixel term), e.g. 0.125."),
    adv_data: Optional[list[Path]] = typer.Option(None, "--adv-data", help="Attack-set folder from `ansm attack` (repeatable)."),
    adv_fraction: Optional[float] = typer.Option(None, help="Share of steps drawn from --adv-data."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Real dataset folder (with splits.json): its "
                                        "--split, cut into --crop crops, is the clean pool (default: synthetic)."),
    split: str = typer.Option("train", help="Split of --data to train on."),
    pool: Optional[int] = typer.Option(None, help="Clean synthetic training images."),
    size: Optional[int] = typer.Option(None, help="Side of the synthetic training images."),
    source: Optional[Path] = typer.Option(None, help="Folder of authentic photos for synthesis (default: scikit-image's)."),
    seed: int = typer.Option(0, help="Seed for initialisation, batches and online attacks."),
    device: str = typer.Option("auto", help="cpu, cuda or auto (under torchrun: one device per process)."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision (default: on with CUDA)."),
) -> None:
    """Train ANSM against a frozen localizer: stage 1 aligns features (FFA), stage 2 enforces the dual-mask
    constraint (MgR). Adversarial inputs are generated online from an attack mix and/or read from --adv-data.

    Writes <out>/ansm (final), <out>/ansm_stage1, a resumable <out>/train_state and <out>/summary.json.
    Runs unchanged under torchrun (gloo on CPU, NCCL on GPU); rank 0 writes the files. On CUDA the losses run
    under fp16 autocast (--no-amp: full precision); the online attacks always run in full precision.
    """
    from ansm.defense.trainer import TrainANSMConfig, train_ansm
    from ansm.utils import seed_everything

    output_dir(out, "--out")
    positive_int(crop if crop else None, "--crop")

    overrides = {"stage1_steps": stage1_steps, "stage2_steps": stage2_steps, "batch_size": batch_size, "lr": lr,
                 "stage2_lr": stage2_lr, "eps_d": eps_d, "width": width,
                 "dilations": _dilations(dilations), "arch": arch, "taps": _split(taps), "ffa_weight": ffa_weight,
                 "ffa_pixel": ffa_pixel, "ffa_alpha": ffa_alpha, "mgr_pixel": mgr_pixel,
                 "ffa_reduction": ffa_reduction, "mgr_lambda": mgr_lambda, "mgr_dice": mgr_dice, "mgr_ffa": mgr_ffa,
                 "attacks": _split(attacks), "objectives": _split(objectives), "eps_min": eps_min, "eps_max": eps_max,
                 "pgd_steps": pgd_steps, "defended_fraction": defended_fraction, "curriculum": curriculum,
                 "clean_kl": clean_kl, "noise_std": noise_std, "distill": distill,
                 "teacher": str(teacher) if teacher else None, "adv_data": [str(p) for p in adv_data] if adv_data else None,
                 "adv_fraction": adv_fraction, "pool": pool, "size": size, "source": str(source) if source else None,
                 "data": str(data) if data else None}
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    if crop is not None:
        kwargs["crop"] = crop or None
    if data is not None and crop is None:
        kwargs["crop"] = 256  # native-resolution photos: the size real localizers are trained at
    cfg = TrainANSMConfig(localizer=model, out=str(out), seed=seed, device=device, amp=amp, split=split, **kwargs)
    seed_everything(seed)
    import os

    main = int(os.environ.get("RANK", "0")) == 0
    with progress(disable=None if main else True) as bar:
        render = bar.add_task("reading data" if cfg.data else "rendering data", total=None if cfg.data else cfg.pool)
        task = bar.add_task("training", total=cfg.total_steps)
        _, summary = train_ansm(cfg, on_pool_item=lambda: bar.advance(render),
                                on_step=lambda step, stage, loss: bar.update(
                                    task, completed=step + 1, description=f"stage {stage} loss {loss:.4f}"))
    if main:
        typer.echo(f"trained ANSM in {summary['train_s']:.0f} s ({cfg.stage1_steps} stage-1 + {cfg.stage2_steps} stage-2 steps, "
                   f"{summary['world_size']} process(es), resumed from {summary['resumed_from']}); taps "
                   f"{', '.join(summary['taps'])}")
        typer.echo(f"checkpoint: {out / 'ansm'}  (stage 1 only: {out / 'ansm_stage1'})")


@command("defend", example="ansm defend --ansm runs/ansm/ansm --input ../shared/data/casia1 --out runs/defended")
def defend_cmd(
    ansm_path: Path = typer.Option(..., "--ansm", "-a", help="ANSM checkpoint (from ansm train)."),
    inputs: Path = typer.Option(..., "--input", "-i", help="An image or a folder of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Localizer (default: the one ANSM was trained for)."),
    max_side: Optional[int] = max_side_option(),
    tile: Optional[int] = tile_option("The defended image is the same tiled or not; predictions are close."),
    detector_path: Optional[Path] = typer.Option(None, "--detector", "-d", help="Attack detector (from ansm "
                                                 "train-detector): print and record per image whether it looks attacked."),
    passes: int = typer.Option(8, help="A stochastic ANSM (trained with --noise-std): average the defended mask "
                               "over this many passes, each with fresh noise."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
) -> None:
    """Write defended images, predicted masks with and without ANSM, and side-by-side overlays
    (input | without defense | with defense, tampered pixels in red) for every image.

    With --detector, each image's line reads "attack flag: yes/no (p=0.97)" (flagged above the threshold calibrated
    at 5% false positives on clean images) and defend.json records attack_p and attack_flag.

    Outputs are named <stem>_defended.png, <stem>_mask.png, ...; inputs sharing a stem (a.png and a.jpg) keep
    their extension instead (a_png_defended.png, a_jpg_defended.png), so none overwrites another."""
    integer(max_side, "--max-side", minimum=8)
    integer(passes, "--passes", minimum=1)
    output_dir(out, "--out")
    validate_tile(tile)
    from ansm.checkpoint import checkpoint_paths
    from ansm.defense.ansm_net import load_ansm
    from ansm.defense.inference import defend_images, list_images
    from ansm.models.resolve import resolve_localizer
    from ansm.utils import resolve_device

    dev = resolve_device(device)
    ansm, meta = load_ansm(ansm_path)
    detector, threshold = None, 0.5
    if detector_path is not None:
        from ansm.defense.detector import load_detector

        detector, det_meta = load_detector(detector_path)
        detector, threshold = detector.to(dev), float(det_meta.get("threshold", 0.5))
    spec = model or meta.get("localizer")
    if not spec:
        raise ConfigError(f"{ansm_path} does not name its localizer; pass --model")
    # A spec from the checkpoint's JSON is data: a registered name or a checkpoint path, never code to import.
    named_in = None if model else checkpoint_paths(ansm_path)[1]
    localizer = resolve_localizer(spec, named_in=named_in).to(dev).eval()
    n = len(list_images(inputs))
    with progress() as bar:
        task = bar.add_task("defending", total=n)
        summary = defend_images(ansm.to(dev), localizer, inputs, out, max_side=max_side, device=dev, tile=tile,
                                on_item=lambda _id: bar.advance(task), detector=detector,
                                detector_threshold=threshold, stochastic_passes=passes)
    console.print(f"localizer: {spec}")
    if detector is not None:
        for row in summary["images"]:
            typer.echo(f"{row['id']}: attack flag: {'yes' if row['attack_flag'] else 'no'} (p={row['attack_p']:.2f})")
        typer.echo(f"attack flags: {summary['n_flagged']} of {summary['n_images']} image(s) (threshold p > "
                   f"{threshold:.3f}, detector {detector_path})")
    typer.echo(f"defended {summary['n_images']} image(s) into {out}: mean predicted tampered area "
               f"{summary['mean_area_nodef']:.3f} without ANSM, {summary['mean_area_def']:.3f} with it "
               f"(overlays: {out}/*_overlay.png)")
