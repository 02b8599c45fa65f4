"""``ansm demo`` (what ``make demo`` runs): the whole pipeline on built-in data, in minutes on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ansm.cli.app import command, console, stage_bars
from ansm.validate import output_dir


@command("demo", example="ansm demo --out runs/demo --seed 0")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder (re-run to resume)."),
    seed: int = typer.Option(0, help="One seed for data, models and attacks."),
    size: Optional[int] = typer.Option(None, help="Side of the synthetic images."),
    shared: str = typer.Option("auto", help="Folder of real datasets to evaluate on ('auto': ../shared/data; 'none': skip)."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Synthesize forgeries, train the localizer, build PGD and FGSM attack sets, train ANSM (stage 1 alignment,
    stage 2 MgR), evaluate on the held-out test split against the trained attacks, unseen ones and an adaptive PGD
    through ANSM (and ../shared/data when present), and write <out>/report.md, report.json and figure.png."""
    output_dir(out, "--out")
    from ansm.demo import DemoConfig, run_demo
    from ansm.utils import resolve_device

    cfg = DemoConfig(out=str(out), seed=seed, shared=shared, device=str(resolve_device(device)),
                     **({"size": size} if size else {}))
    # Always shown (the demo is the one command a newcomer watches), one bar per stage.
    with stage_bars(40) as step:
        report = run_demo(cfg, step=step, log=console.print)
    for name, a in report["attacks"].items():
        rec = "n/a" if a["recovery"] is None else f"{a['recovery']:.2f}"
        adv = "n/a" if a["adaptive_to"] else f"{a['f1_adv']:.3f}"
        typer.echo(f"{name:>13}{'' if a['seen_in_training'] else ' (unseen)':9}: F1 clean {a['f1_clean']:.3f}, "
                   f"attacked {adv}, defended {a['f1_def']:.3f} (recovery {rec}); clean+ANSM {a['f1_clean_def']:.3f}")
    typer.echo(f"report: {out / 'report.md'}  ({report['runtime_s']:.0f} s)")
