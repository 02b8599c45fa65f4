"""``ansm demo`` (what ``make demo`` runs): the whole pipeline on built-in data, in minutes on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ansm.cli.app import command, console, stage_bars


@command("demo", example="ansm demo --out runs/demo --seed 0")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder (re-run to resume)."),
    seed: int = typer.Option(0, help="One seed for data, models and attacks."),
    size: Optional[int] = typer.Option(None, help="Side of the synthetic images."),
    shared: str = typer.Option("auto", help="Folder of real datasets to evaluate on ('auto': ../shared/data; 'none': skip)."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Synthesize forgeries, train the localizer, build PGD and FGSM attack sets, train ANSM (stage 1 alignment,
    stage 2 MgR, plus the stage-2-only ablation), evaluate against PGD and FGSM on held-out images (and
    ../shared/data when present), and write <out>/report.md, <out>/report.json and <out>/figure.png."""
    from ansm.demo import DemoConfig, run_demo
    from ansm.utils import resolve_device

    cfg = DemoConfig(out=str(out), seed=seed, shared=shared, device=str(resolve_device(device)),
                     **({"size": size} if size else {}))
    # Always shown (the demo is the one command a newcomer watches), one bar per stage.
    with stage_bars(40) as step:
        report = run_demo(cfg, step=step, log=console.print)
    for name, a in report["attacks"].items():
        rec = "n/a" if a["recovery"] is None else f"{a['recovery']:.2f}"
        typer.echo(f"{name:>13}: F1 clean {a['f1_clean']:.3f}, attacked {a['f1_adv']:.3f}, defended {a['f1_def']:.3f} "
                   f"(recovery {rec}); clean+ANSM {a['f1_clean_def']:.3f}")
    typer.echo(f"report: {out / 'report.md'}  ({report['runtime_s']:.0f} s)")
