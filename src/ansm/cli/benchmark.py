"""``ansm benchmark``: clean, attacked and defended accuracy side by side, under four threat models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ansm.cli.app import command, console, stage_bars
from ansm.validate import output_dir


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse (numbers, lists), else strings ("8/255")."""
    from ansm.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write key=value, e.g. --set adaptive_steps=200")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


@command("benchmark", example="ansm benchmark --preset quick   (on a GPU: ansm benchmark --preset full --device cuda; "
                              "real forgeries: ansm benchmark --preset real --until val)")
def benchmark_cmd(
    preset: str = typer.Option("quick", help="quick (2 CPU cores, ~95 min) or full (one GPU) on synthetic forgeries; "
                                             "informed (2 CPU cores, ~100 min): plain ANSM, robust ANSM and "
                                             "adversarial fine-tuning under attackers who know them (3 seeds); "
                                             "real (2 CPU cores, in pieces) or real-gpu: CASIA v1 and the real protocol."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: runs/benchmark-<preset>; re-run to resume)."),
    data: Optional[str] = typer.Option(None, help="synthetic:N (held-out synthetic test images) or a dataset folder."),
    max_side: Optional[int] = typer.Option(None, help="Real datasets: downscale the longer side to this many pixels."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Target localizer checkpoint (default: train the built-in)."),
    defenses: Optional[str] = typer.Option(None, help="Comma-separated subset of: none, ansm, jpeg, median, blur, "
                                                      "bit-depth, denoiser-pixel, denoiser-feature, adv-finetune."),
    threats: Optional[str] = typer.Option(None, help="Comma-separated subset of: oblivious, transfer, gray-box, adaptive."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override any setting, e.g. --set adaptive_steps=200 (repeatable)."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    strict: bool = typer.Option(True, help="Exit with status 1 when a sanity check fails (the numbers cannot then be trusted as they are)."),
    until: Optional[str] = typer.Option(None, help="Presets real, real-gpu: stop after this stage (localizer, protocol, "
                                                   "attack-sets, val, seeds, test; informed: also plain vs robust "
                                                   "ANSM vs adversarial fine-tuning under attackers who know them)."),
) -> None:
    """Run a grid of attacks x defenses x eps and write report.md, report.json and a self-contained report.html
    with plots (F1 against eps, F1 against attack steps, per-image worst case).

    Defenses: none, ANSM, JPEG (75, 90), median 3x3, Gaussian blur, bit-depth, two denoisers with ANSM's network
    (pixel loss; HGD-style feature loss) and PGD adversarial fine-tuning. Threat models: oblivious, transfer,
    gray-box and white-box adaptive (BPDA through non-differentiable defenses). Every model the benchmark needs
    is trained into <out>/models and every finished cell is kept, so a killed run resumes.

    Presets real and real-gpu (ansm.benchmark.real) train a localizer on CASIA v1 train (or protect --model), report
    the real protocol, compare ANSM recipes on val and report the chosen one over 3 seeds on CASIA v1 test, under
    trained, unseen and adaptive attacks: <out>/report.md. --data is then the real datasets' root.
    """
    output_dir(out, "--out")
    from ansm.benchmark.real import REAL_PRESETS

    if preset in REAL_PRESETS:
        _real(preset, out, data, model, device, until, set_ or [],
              unused={"--max-side": max_side, "--defenses": defenses, "--threats": threats})
        return
    from ansm.benchmark.config import PRESETS
    from ansm.errors import ConfigError

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (choose from {', '.join([*PRESETS, *REAL_PRESETS])})")
    if until is not None:
        raise ConfigError(f"--until is for the real presets ({', '.join(REAL_PRESETS)}), not {preset!r}")
    from ansm.benchmark import preset_config, run_benchmark
    from ansm.benchmark.report import summary_table

    overrides = _parse_set(set_ or [])
    for key, value in (("out", str(out) if out else None), ("data", data), ("max_side", max_side), ("localizer", model),
                       ("defenses", defenses.split(",") if defenses else None),
                       ("threats", threats.split(",") if threats else None)):
        if value is not None:
            overrides[key] = [v.strip() for v in value] if isinstance(value, list) else value
    cfg = preset_config(preset, device=device, **overrides)
    with stage_bars() as step:
        report = run_benchmark(cfg, step=step, log=console.print)
    header, body = summary_table(report)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    for row in [header, *body]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    typer.echo(f"report: {Path(cfg.out) / 'report.html'}  ({report['timings_s']['total']:.0f} s)")
    if strict and report["checks"]["failed"]:
        raise typer.Exit(1)


def _real(preset: str, out: Optional[Path], data: Optional[str], model: Optional[str], device: str,
          until: Optional[str], set_: list[str], unused: dict[str, Any]) -> None:
    from ansm.benchmark.real import real_config, run_real
    from ansm.errors import ConfigError

    given = [flag for flag, value in unused.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: not used by preset {preset} (see --help)")
    overrides = _parse_set(set_)
    for key, value in (("out", str(out) if out else None), ("real", data), ("localizer", model)):
        if value is not None:
            overrides[key] = value
    cfg = real_config(preset, device=device, **overrides)
    run_real(cfg, until=until or "test", log=console.print)
    report = Path(cfg.out) / "report.md"
    typer.echo(report.read_text())
    typer.echo(f"report: {report}")
