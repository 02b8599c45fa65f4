"""The ``ansm serve`` web app: one page and a small JSON API around a localizer and a trained ANSM.

:func:`create_app` returns a Starlette application built from objects, not from paths or a socket, so the API is
tested through Starlette's ``TestClient`` and the CLI only loads checkpoints and hands the app to uvicorn.

Routes:

* ``GET /``            the page (plain HTML/JS from the package's ``static/index.html``; no build step);
* ``GET /api/info``    what the page states: max side, upload limits, attacks offered, the detector's name
  (``null`` without one: the page then says "no detector configured");
* ``POST /api/predict`` the raw image bytes as the body (no multipart parsing needed), options in the query
  (``attack=none|fgsm|pgd``, ``eps``, ``steps``, ``objective``). Answers the image as it was analysed (downscaled
  to ``max_side``), overlays of the mask without and with ANSM, the defensive perturbation amplified, and with an
  attack the same for the attacked image; with a detector each row also has ``attack_p`` and ``attack_flag``.

Every bad request (empty, too large, not an image, corrupt, bad option) is a 4xx ``{"error": "..."}``; an
unexpected failure is a 500 with a one-line message, its traceback only in the server's log.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ansm.data.io import pil_to_tensor, tensor_to_uint8
from ansm.defense.inference import overlay
from ansm.errors import AnsmError, DataError
from ansm.tiling import model_align, resolve_tile, tiled_apply
from ansm.utils import parse_eps

log = logging.getLogger("ansm.serve")

# Attacks the page offers: the two the issue names (one-step FGSM, iterative PGD), from ansm.attacks.
PAGE_ATTACKS = ("fgsm", "pgd")
OBJECTIVES = ("hide", "untargeted")
MAX_STEPS = 50  # PGD steps accepted from the page; more would hold the (single) model for minutes on a CPU
MAX_EPS = 64 / 255


# Leading bytes of the formats Pillow reads, to tell "a damaged image" from "not an image" in the message.
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class ServeLimits:
    """What an upload may be. Checked before decoding (bytes) and before loading pixels (pixel count), so a
    decompression bomb or a huge file is refused without allocating its pixels."""

    # 512: on 2 busy CPU cores the built-in localizer + ANSM answer a 768x576 image in ~6 s and PGD-10 in ~70 s;
    # at 512 px both take under half that, and the masks are still legible on screen.
    max_side: int = 512
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 64_000_000


class UploadError(Exception):
    """A request the page should explain to the analyst: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, limits: ServeLimits) -> tuple[torch.Tensor, int, int]:
    """Bytes -> (3xHxW float image in [0, 1] downscaled to ``max_side``, original height, original width).

    Pillow decides what is an image (PNG, JPEG, WebP, TIFF, BMP, ...); the format is never guessed from a name."""
    if not data:
        raise UploadError(400, "empty upload: no bytes received")
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"upload too large: {len(data) / 2**20:.1f} MiB (limit {limits.max_bytes / 2**20:.0f} MiB)")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only: the size is known before any pixel is decoded
        w, h = img.size
        if w * h > limits.max_pixels:
            raise UploadError(413, f"image too large: {w}x{h} pixels (limit {limits.max_pixels / 1e6:.0f} MP)")
        img.load()
    except UploadError:
        raise
    except Image.DecompressionBombError as exc:
        raise UploadError(413, f"image too large: {exc}") from None
    except UnidentifiedImageError:
        if data.startswith(IMAGE_SIGNATURES) or data[8:12] == b"WEBP":
            raise UploadError(400, "corrupt image: it starts like an image file but cannot be decoded") from None
        raise UploadError(415, "not an image: the upload is not in a format Pillow can read "
                               "(PNG, JPEG, WebP, TIFF, BMP, ...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UploadError(400, f"corrupt image: {exc.__class__.__name__}: {exc}") from None
    if w < 8 or h < 8:
        raise UploadError(400, f"image too small: {w}x{h} pixels (at least 8x8)")
    try:  # orientation, 16-bit and float greyscale exactly as ansm.data.io.read_image reads a file
        ImageOps.exif_transpose(img, in_place=True)
        x = pil_to_tensor(img, "upload")
    except DataError as exc:
        raise UploadError(400, str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UploadError(400, f"corrupt image: {exc.__class__.__name__}: {exc}") from None
    h, w = int(x.shape[-2]), int(x.shape[-1])  # as displayed (after the EXIF orientation)
    if max(h, w) > limits.max_side:
        scale = limits.max_side / max(h, w)
        size = [max(1, round(s * scale)) for s in (h, w)]
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
        x = torch.from_numpy(tensor_to_uint8(x).transpose(2, 0, 1).copy()).float() / 255  # what a PNG would hold
    return x, h, w


def png_data_url(image: torch.Tensor) -> str:
    """3xHxW (or 1xHxW) in [0, 1] -> ``data:image/png;base64,...`` for an ``<img src>``."""
    buf = io.BytesIO()
    arr = tensor_to_uint8(image)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def parse_options(query: Any) -> dict[str, Any]:
    """Validate the page's attack options (``attack``, ``eps``, ``steps``, ``objective``) -> a dict."""
    attack = (query.get("attack") or "none").strip().lower()
    if attack not in ("none", *PAGE_ATTACKS):
        raise UploadError(400, f"attack must be one of none, {', '.join(PAGE_ATTACKS)}; got {attack!r}")
    objective = (query.get("objective") or "hide").strip().lower()
    if objective not in OBJECTIVES:
        raise UploadError(400, f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
    eps_text = query.get("eps") or "8/255"
    try:
        eps = parse_eps(eps_text)
    except AnsmError as exc:
        raise UploadError(400, f"eps: {exc}") from None
    if not 0 < eps <= MAX_EPS:
        raise UploadError(400, f"eps must be in (0, {MAX_EPS * 255:.0f}/255], got {eps_text!r}")
    steps_text = query.get("steps") or "10"
    try:
        steps = int(steps_text)
    except ValueError:
        raise UploadError(400, f"steps must be an integer, got {steps_text!r}") from None
    if not 1 <= steps <= MAX_STEPS:
        raise UploadError(400, f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    return {"attack": attack, "eps": eps, "eps_text": eps_text, "steps": steps, "objective": objective}


class Analyzer:
    """Runs the networks for one image. One lock: a request holds the models (and the CPU) alone, so two
    analysts' requests queue instead of thrashing the cores."""

    def __init__(self, localizer: nn.Module, ansm: nn.Module, device: torch.device | str = "cpu",
                 detector: nn.Module | None = None, detector_threshold: float = 0.5) -> None:
        self.device = torch.device(device)
        self.detector = detector.to(self.device).eval() if detector is not None else None
        self.detector_threshold = float(detector_threshold)
        self.localizer = localizer.to(self.device).eval()
        self.ansm = ansm.to(self.device).eval()
        self.eps_d = float(getattr(ansm, "eps_d", 0.0)) or None
        self.align = model_align(self.localizer)
        self.lock = asyncio.Lock()

    @torch.no_grad()
    def _masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(defended image, P(tampered) without ANSM, with ANSM) for one 3xHxW image; tiled above 1 MP."""
        xb = x[None].to(self.device)
        t = resolve_tile(None, *x.shape[-2:])
        if t is None:
            x_d = self.ansm(xb)
            p0, p1 = torch.sigmoid(self.localizer(xb)), torch.sigmoid(self.localizer(x_d))
        else:
            x_d = tiled_apply(self.ansm, xb, tile=t, align=self.align)
            p0 = torch.sigmoid(tiled_apply(self.localizer, xb, tile=t, align=self.align))
            p1 = torch.sigmoid(tiled_apply(self.localizer, x_d, tile=t, align=self.align))
        return x_d[0].cpu(), p0[0].cpu(), p1[0].cpu()

    def panels(self, x: torch.Tensor) -> dict[str, Any]:
        """The four pictures of one row of the page, and the predicted tampered areas."""
        x_d, p0, p1 = self._masks(x)
        delta = x_d - x
        gain = 0.5 / self.eps_d if self.eps_d else 1.0
        flag: dict[str, Any] = {}
        if self.detector is not None:
            with torch.no_grad():
                p = float(torch.sigmoid(self.detector(x[None].to(self.device)))[0])
            flag = {"attack_p": round(p, 4), "attack_flag": p > self.detector_threshold}
        return {**flag,
            "image": png_data_url(x),
            "mask_nodef": png_data_url(overlay(x, p0)),
            "mask_def": png_data_url(overlay(x, p1)),
            "perturbation": png_data_url((0.5 + delta * gain).clamp(0, 1)),
            "area_nodef": round(float((p0 > 0.5).float().mean()), 6),
            "area_def": round(float((p1 > 0.5).float().mean()), 6),
            "max_abs_change": round(float(delta.abs().max()), 6),
            "perturbation_gain": round(gain, 3),
        }

    def attack(self, x: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
        """Attack the bare localizer (the attacker of the paper's main setting, who does not know ANSM is
        there), rounded to 8 bits inside the budget, as a PNG the attacker shares would be."""
        from ansm.attacks import create_attack
        from ansm.attacks.builder import quantize
        from ansm.utils import seeded_generator

        kwargs: dict[str, Any] = {"eps": opts["eps"], "objective": opts["objective"]}
        if opts["attack"] == "pgd":
            kwargs.update(steps=opts["steps"], alpha=2.5 * opts["eps"] / opts["steps"])  # Madry et al.'s step rule
        atk = create_attack(opts["attack"], self.localizer, **kwargs)
        adv = atk(x[None].to(self.device), generator=seeded_generator(0))[0].cpu()
        return quantize(adv, x, opts["eps"])

    def analyse(self, x: torch.Tensor, opts: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        out: dict[str, Any] = {"clean": self.panels(x)}
        if opts["attack"] != "none":
            t1 = time.perf_counter()
            adv = self.attack(x, opts)
            out["attack"] = {"name": opts["attack"], "eps": opts["eps_text"], "objective": opts["objective"],
                             "steps": opts["steps"] if opts["attack"] == "pgd" else 1,
                             "linf": round(float((adv - x).abs().max()), 6),
                             "attack_s": round(time.perf_counter() - t1, 3)}
            out["attacked"] = self.panels(adv)
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out


PAGE = "index.html"


def page_html() -> str:
    """The page, read from the installed package (``ansm/serve/static/index.html``)."""
    return resources.files("ansm.serve").joinpath("static", PAGE).read_text(encoding="utf-8")


def create_app(localizer: nn.Module, ansm: nn.Module, *, limits: ServeLimits | None = None,
               device: torch.device | str = "cpu", localizer_name: str = "localizer",
               ansm_name: str = "ANSM", detector: nn.Module | None = None, detector_threshold: float = 0.5,
               detector_name: str = "detector") -> Any:
    """The Starlette app for ``localizer`` defended by ``ansm`` (both ``nn.Module`` s, moved to ``device``).

    ``localizer_name`` / ``ansm_name`` are only shown in the page (which checkpoints are being looked at)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    limits = limits or ServeLimits()
    analyzer = Analyzer(localizer, ansm, device, detector, detector_threshold)
    html = page_html()
    info = {"max_side": limits.max_side, "max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
            "attacks": list(PAGE_ATTACKS), "objectives": list(OBJECTIVES), "max_steps": MAX_STEPS,
            "max_eps": f"{round(MAX_EPS * 255)}/255", "eps_d": analyzer.eps_d,
            "detector": detector_name if detector is not None else None,
            "detector_threshold": detector_threshold if detector is not None else None,
            "localizer": localizer_name, "ansm": ansm_name, "device": str(analyzer.device)}

    async def index(request: Request) -> Response:
        return HTMLResponse(html)

    async def api_info(request: Request) -> Response:
        return JSONResponse(info)

    async def read_body(request: Request) -> bytes:
        """The body, refused as soon as it passes ``max_bytes`` (Content-Length first, then while streaming)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_bytes:
            raise UploadError(413, f"upload too large: {int(declared) / 2**20:.1f} MiB "
                                   f"(limit {limits.max_bytes / 2**20:.0f} MiB)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_bytes:
                raise UploadError(413, f"upload too large: over {limits.max_bytes / 2**20:.0f} MiB")
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(request: Request) -> Response:
        try:
            opts = parse_options(request.query_params)
            data = await read_body(request)
            x, h, w = await run_in_threadpool(decode_upload, data, limits)
        except UploadError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        async with analyzer.lock:
            try:
                result = await run_in_threadpool(analyzer.analyse, x, opts)
            except AnsmError as exc:  # e.g. a model that refuses this input size
                return JSONResponse({"error": str(exc)}, status_code=422)
        result.update({"width": int(x.shape[-1]), "height": int(x.shape[-2]), "original_width": w,
                       "original_height": h, "resized": (w, h) != (x.shape[-1], x.shape[-2])})
        return JSONResponse(result)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("ansm serve: unexpected error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"},
                            status_code=500)

    routes = [Route("/", index), Route("/api/info", api_info), Route("/api/predict", predict, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={Exception: internal_error})
