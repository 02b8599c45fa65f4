"""``ansm serve``: a local web page showing an image's mask without and with ANSM (see :mod:`ansm.serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ansm.cli.app import command, console
from ansm.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_range(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


@command("serve", example="ansm serve --model runs/localizer/localizer --ansm runs/ansm/ansm --port 8000  "
                          "(then open http://127.0.0.1:8000/)")
def serve_cmd(
    ansm_path: Path = typer.Option(..., "--ansm", "-a", help="ANSM checkpoint (from ansm train)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Localizer: checkpoint path, registered name or "
                                        "module:callable (default: the one ANSM was trained for)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. The default is this machine only; the page "
                             "has no login, so bind elsewhere only on a network you trust."),
    port: int = typer.Option(8000, help="Port (0: any free port, printed at start)."),
    max_side: int = typer.Option(512, "--max-side", help="Images whose longer side exceeds this are downscaled to it "
                                 "for display and inference (the page says so)."),
    max_upload_mb: int = typer.Option(20, "--max-upload-mb", help="Largest upload accepted, in MiB."),
    detector_path: Optional[Path] = typer.Option(None, "--detector", "-d", help="Attack detector (from ansm "
                                                 "train-detector): fills the page's attack-flag slot."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
) -> None:
    """Serve a local web page for analysts: open or drop an image and see it, the mask without and with ANSM as
    overlays and the defensive perturbation amplified; optionally attack it in the page (FGSM or PGD at a chosen
    eps) to watch the mask vanish and come back. Needs the serve extra: pip install -e ".[serve]"."""
    _check_range(port, "--port", 0, 65535)
    _check_range(max_side, "--max-side", 32, 4096)
    _check_range(max_upload_mb, "--max-upload-mb", 1, 1024)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"ansm serve needs the serve extra ({exc.name} is missing): pip install -e \".[serve]\"") from None
    from ansm.checkpoint import checkpoint_paths
    from ansm.defense.ansm_net import load_ansm
    from ansm.models.resolve import resolve_localizer
    from ansm.serve.app import ServeLimits, create_app
    from ansm.serve.server import bind, make_server, url
    from ansm.utils import resolve_device

    dev = resolve_device(device)
    ansm, meta = load_ansm(ansm_path)
    spec = model or meta.get("localizer")
    if not spec:
        raise ConfigError(f"{ansm_path} does not name its localizer; pass --model")
    # A spec from the checkpoint's JSON is data: a registered name or a checkpoint path, never code to import.
    named_in = None if model else checkpoint_paths(ansm_path)[1]
    localizer = resolve_localizer(spec, named_in=named_in)
    detector, threshold = None, 0.5
    if detector_path is not None:
        from ansm.defense.detector import load_detector

        detector, det_meta = load_detector(detector_path)
        threshold = float(det_meta.get("threshold", 0.5))
    limits = ServeLimits(max_side=max_side, max_bytes=max_upload_mb * 1024 * 1024)
    app = create_app(localizer, ansm, limits=limits, device=dev, localizer_name=str(spec), ansm_name=str(ansm_path),
                     detector=detector, detector_threshold=threshold, detector_name=str(detector_path))
    sock = bind(host, port)
    if host not in LOOPBACK:
        console.print(f"note: listening on {host}, reachable from other machines; the page has no login")
    typer.echo(f"ansm serve: {url(sock)}  (localizer {spec}, ANSM {ansm_path}, max side {max_side} px; Ctrl+C stops)")
    make_server(app, log_level="warning").run(sockets=[sock])
