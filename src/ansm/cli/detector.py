"""``ansm train-detector``: train the adversarial-input detector (:mod:`ansm.defense.detector`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ansm.cli.app import command, progress
from ansm.errors import ConfigError
from ansm.validate import output_dir


def _split(text: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _weights(text: Optional[str]) -> Optional[list[float]]:
    try:
        return [float(t) for t in _split(text)] if text else None
    except ValueError:
        raise ConfigError(f"--aware-weights takes numbers separated by commas, got {text!r}") from None


@command("train-detector", example="ansm train-detector --model runs/localizer/localizer --out runs/detector "
                                   "--adv-data runs/adv-pgd --steps 300")
def train_detector_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Localizer the online attacks target: checkpoint path, "
                              "registered name or module:callable."),
    out: Path = typer.Option(Path("runs/detector"), "--out", "-o", help="Run folder (re-run to resume)."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default 300)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step, half clean and half attacked (default 32)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (Adam; warm-up then cosine)."),
    width: Optional[int] = typer.Option(None, help="Detector channels (default 16)."),
    attacks: Optional[str] = typer.Option(None, help="Online attacks, comma-separated (fgsm, pgd, bim, mifgsm, "
                                          "aware-pgd: PGD that must also fool the detector in training)."),
    aware_weights: Optional[str] = typer.Option(None, help="Weights of the detector term for aware-pgd, "
                                                "comma-separated (default 1,3,10)."),
    objectives: Optional[str] = typer.Option(None, help="Online objectives, comma-separated (untargeted, hide)."),
    eps_min: Optional[str] = typer.Option(None, help="Smallest online budget, e.g. 2/255."),
    eps_max: Optional[str] = typer.Option(None, help="Largest online budget, e.g. 10/255."),
    pgd_steps: Optional[int] = typer.Option(None, help="Steps of online PGD/BIM/MI-FGSM."),
    adv_data: Optional[list[Path]] = typer.Option(None, "--adv-data", help="Attack-set folder from `ansm attack` "
                                                  "built on the same synthetic training pool (repeatable)."),
    adv_fraction: Optional[float] = typer.Option(None, help="Share of steps whose attacked images come from --adv-data."),
    benign_prob: Optional[float] = typer.Option(None, help="Share of clean images given benign noise or JPEG (default 0.5)."),
    noise_std: Optional[str] = typer.Option(None, help="Largest benign Gaussian noise std, e.g. 3/255."),
    pool: Optional[int] = typer.Option(None, help="Clean synthetic training images."),
    size: Optional[int] = typer.Option(None, help="Side of the synthetic training images."),
    calib_n: Optional[int] = typer.Option(None, help="Clean val images for the 5%-FPR flag threshold (0: 0.5)."),
    seed: int = typer.Option(0, help="Seed for initialisation, batches and online attacks."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
) -> None:
    """Train a light detector that flags attacked images: positives are attacked training images (online FGSM/PGD
    on the localizer at random budgets, and/or --adv-data sets; --attacks aware-pgd trains it adversarially, against
    a PGD that also fools the detector as it is at each step), negatives clean ones (authentic and forged), half
    with benign Gaussian noise or JPEG so that noise alone is not flagged. The flag threshold is calibrated to 5%
    false positives on clean val images.

    Writes <out>/detector (use it with ansm defend --detector), a resumable <out>/train_state and summary.json."""
    from ansm.defense.detector import TrainDetectorConfig, train_detector
    from ansm.utils import seed_everything

    output_dir(out, "--out")
    overrides = {"steps": steps, "batch_size": batch_size, "lr": lr, "width": width, "attacks": _split(attacks),
                 "objectives": _split(objectives), "aware_weights": _weights(aware_weights), "eps_min": eps_min,
                 "eps_max": eps_max, "pgd_steps": pgd_steps,
                 "adv_data": [str(p) for p in adv_data] if adv_data else None, "adv_fraction": adv_fraction,
                 "benign_prob": benign_prob, "noise_std": noise_std, "pool": pool, "size": size, "calib_n": calib_n}
    if aware_weights and "aware-pgd" not in (overrides["attacks"] or []):
        raise ConfigError("--aware-weights applies only to the aware-pgd attack: add it to --attacks")
    cfg = TrainDetectorConfig(localizer=model, out=str(out), seed=seed, device=device,
                              **{k: v for k, v in overrides.items() if v is not None})
    seed_everything(seed)
    with progress() as bar:
        render = bar.add_task("rendering data", total=cfg.pool)
        task = bar.add_task("training", total=cfg.steps)
        _, summary = train_detector(cfg, on_pool_item=lambda: bar.advance(render),
                                    on_step=lambda step, loss: bar.update(task, completed=step + 1,
                                                                          description=f"training loss {loss:.3f}"))
    typer.echo(f"trained the detector in {summary['train_s']:.0f} s ({cfg.steps} steps, resumed from "
               f"{summary['resumed_from']}); flag threshold p > {summary['threshold']:.3f} (5% FPR on "
               f"{cfg.calib_n} clean val images)")
    typer.echo(f"checkpoint: {out / 'detector'}")
