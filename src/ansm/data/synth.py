"""Synthetic forgeries with exact masks: splicing, copy-move and object removal, plus authentic negatives.

Each forgery carries the traces real ones leave, each drawn at random per sample:

* **noise-level mismatch**: the host gets camera-like noise of one level, the manipulated region another;
* **resampling**: a spliced or copied region is rescaled by a random factor (interpolation traces);
* **blur**: the region is smoothed (the usual way forgers hide seams);
* **compression mismatch**: the host is JPEG-compressed once before editing; the donor at another quality;
  the result is optionally JPEG-compressed again (double compression outside the region, single inside);
* **inpainting**: object removal fills the region by diffusion from its surroundings (no sensor noise inside).

Masks are ellipses, polygons, rectangles or random blobs covering 2-25% of the image.
Copy-move masks mark the *pasted* region only (CoMoFoD's ``_gt_target.png`` convention).

Everything is deterministic per ``(seed, split, index)``: sample ``i`` is the same whether it is streamed in
memory (:class:`SyntheticForgeries`) or written to disk (:func:`synthesize_folder`), and whatever order
samples are drawn in.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from skimage.draw import ellipse as draw_ellipse, polygon as draw_polygon

from ansm.data.io import image_to_tensor
from ansm.data.sources import photos
from ansm.errors import ConfigError, DataError
from ansm.utils import atomic_path, read_json, write_json_atomic

KINDS = ("splice", "copymove", "removal", "authentic")
_SPLIT_CODE = {"train": 0, "test": 1, "val": 2}  # seeds the per-sample generator; old codes kept


@dataclass(frozen=True)
class SynthConfig:
    """Ranges the generator draws from. Pixel-noise values are on the 0-255 scale."""

    size: int = 128
    kind_weights: tuple[float, float, float, float] = (0.40, 0.25, 0.20, 0.15)  # order of KINDS
    area: tuple[float, float] = (0.02, 0.25)
    host_noise: tuple[float, float] = (0.5, 2.5)
    noise_gap: tuple[float, float] = (4.0, 10.0)
    resample: tuple[float, float] = (0.6, 1.7)
    blur: tuple[float, float] = (0.0, 1.5)
    first_jpeg_prob: float = 0.6
    first_jpeg_quality: tuple[int, int] = (65, 95)
    donor_jpeg_prob: float = 0.5
    donor_jpeg_quality: tuple[int, int] = (50, 90)
    final_jpeg_prob: float = 0.35
    final_jpeg_quality: tuple[int, int] = (85, 98)

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ConfigError(f"synthetic image size must be >= 16, got {self.size}")
        if len(self.kind_weights) != len(KINDS) or min(self.kind_weights) < 0 or sum(self.kind_weights) <= 0:
            raise ConfigError(f"kind_weights needs {len(KINDS)} non-negative numbers ({', '.join(KINDS)})")
        from ansm.validate import check_fields

        check_fields(self, None, fraction=("first_jpeg_prob", "donor_jpeg_prob", "final_jpeg_prob"))


@dataclass
class RenderedForgery:
    image: np.ndarray  # HxWx3 uint8 (decoded pixels)
    mask: np.ndarray  # HxW bool
    kind: str
    params: dict[str, Any]
    jpeg_bytes: bytes | None  # the final file's bytes when the last step was a JPEG save


# ----------------------------------------------------------------------------------------------- helpers
def _jpeg(img: np.ndarray, quality: int) -> tuple[np.ndarray, bytes]:
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=int(quality))
    data = buf.getvalue()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float64), data


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize HxWx3 float [0,255] to (h, w) with bicubic interpolation."""
    pil = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8))
    return np.asarray(pil.resize((size[1], size[0]), Image.BICUBIC)).astype(np.float64)


def _crop(rng: np.random.Generator, photo: np.ndarray, out: int, zoom: float = 1.0) -> np.ndarray:
    """A random square crop resized to ``out``; ``zoom`` > 1 crops a smaller area (upsampling)."""
    h, w = photo.shape[:2]
    side_max = min(h, w)
    side_min = min(side_max, max(8, int(out / max(zoom, 1e-3) * 0.5)))
    side = int(np.clip(out / zoom * rng.uniform(0.8, 1.6), side_min, side_max))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return _resize(photo[y : y + side, x : x + side].astype(np.float64), (out, out))


def _random_mask(rng: np.random.Generator, size: int, area: tuple[float, float]) -> tuple[np.ndarray, str]:
    target = rng.uniform(*area) * size * size
    shape = str(rng.choice(["ellipse", "polygon", "rectangle", "blob"]))
    for _ in range(20):
        mask = np.zeros((size, size), dtype=bool)
        if shape == "blob":
            field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=size / 10)
            mask = field > np.quantile(field, 1 - target / (size * size))
        else:
            r = np.sqrt(target / np.pi) * rng.uniform(0.8, 1.25)
            cy, cx = rng.uniform(r * 0.6, size - r * 0.6, size=2)
            if shape == "ellipse":
                aspect = rng.uniform(0.5, 2.0)
                rr, cc = draw_ellipse(cy, cx, r * np.sqrt(aspect), r / np.sqrt(aspect), shape=mask.shape, rotation=rng.uniform(0, np.pi))
            elif shape == "rectangle":
                hh, ww = r * np.sqrt(np.pi) * np.array([1, 1]) * rng.uniform(0.6, 1.6, size=2) / 2
                rr, cc = draw_polygon([cy - hh, cy - hh, cy + hh, cy + hh], [cx - ww, cx + ww, cx + ww, cx - ww], shape=mask.shape)
            else:
                n = int(rng.integers(5, 10))
                ang = np.sort(rng.uniform(0, 2 * np.pi, n))
                rad = r * rng.uniform(0.6, 1.4, n)
                rr, cc = draw_polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), shape=mask.shape)
            mask[rr, cc] = True
        if mask.sum() >= 0.01 * size * size:
            return mask, shape
    return mask, shape


def _add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    return img + rng.standard_normal(img.shape) * sigma if sigma > 0 else img


def _retouch(rng: np.random.Generator, region: np.ndarray, cfg: SynthConfig, host_sigma: float, params: dict[str, Any]) -> np.ndarray:
    """Blur, re-noise at a *different* level than the host, maybe JPEG: the traces inside the region."""
    blur = float(rng.uniform(*cfg.blur))
    if blur > 0.2:
        region = ndimage.gaussian_filter(region, sigma=(blur, blur, 0))
    gap = float(rng.uniform(*cfg.noise_gap))
    sigma = host_sigma + gap if (rng.random() < 0.6 or host_sigma - gap < 0) else host_sigma - gap
    region = _add_noise(rng, region, max(sigma, 0.0))
    params.update(region_blur=round(blur, 3), region_noise=round(max(sigma, 0.0), 3))
    if rng.random() < cfg.donor_jpeg_prob:
        q = int(rng.integers(*cfg.donor_jpeg_quality))
        region, _ = _jpeg(region, q)
        params["region_jpeg"] = q
    return region


def _diffusion_fill(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill ``mask`` from its surroundings by normalised convolution at decreasing scales (smooth inpainting)."""
    weight = (~mask).astype(np.float64)
    out = img.copy()
    for sigma in (16, 8, 4, 2, 1):
        num = ndimage.gaussian_filter(out * weight[..., None], sigma=(sigma, sigma, 0))
        den = ndimage.gaussian_filter(weight, sigma=sigma)[..., None]
        out = np.where(mask[..., None], num / np.maximum(den, 1e-6), img)
        weight = np.where(mask, 0.5, 1.0)  # after the coarse pass, the fill itself guides finer passes
    return out


# ----------------------------------------------------------------------------------------------- render
def render_forgery(index: int, seed: int = 0, split: str = "train", cfg: SynthConfig = SynthConfig(),
                   source: str | os.PathLike | None = None) -> RenderedForgery:
    """Generate sample ``index`` of a split, deterministically."""
    if split not in _SPLIT_CODE:
        raise ConfigError(f"unknown split {split!r} (use train, val or test)")
    pool = photos(source, split)
    rng = np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])
    s = cfg.size
    weights = np.asarray(cfg.kind_weights, dtype=np.float64)
    kind = str(rng.choice(KINDS, p=weights / weights.sum()))
    host_id = int(rng.integers(len(pool)))
    params: dict[str, Any] = {"host": host_id}

    host = _crop(rng, pool[host_id], s)
    host_sigma = float(rng.uniform(*cfg.host_noise))
    host = _add_noise(rng, host, host_sigma)
    params["host_noise"] = round(host_sigma, 3)
    if rng.random() < cfg.first_jpeg_prob:
        q = int(rng.integers(*cfg.first_jpeg_quality))
        host, _ = _jpeg(host, q)
        params["first_jpeg"] = q

    mask = np.zeros((s, s), dtype=bool)
    if kind != "authentic":
        mask, params["mask_shape"] = _random_mask(rng, s, cfg.area)
        if kind == "splice":
            donor_id = int(rng.integers(len(pool) - 1))
            donor_id += donor_id >= host_id  # a different photo
            zoom = float(rng.uniform(*cfg.resample))
            region = _crop(rng, pool[donor_id], s, zoom=zoom)
            params.update(donor=donor_id, resample=round(zoom, 3))
        elif kind == "copymove":
            zoom = float(rng.uniform(*cfg.resample))
            shift = rng.integers(-s // 3, s // 3 + 1, size=2)
            zoomed = ndimage.zoom(host, (zoom, zoom, 1), order=3, mode="reflect")
            region = np.roll(_resize(zoomed, (s, s)) if zoomed.shape[0] != s else zoomed, tuple(shift), axis=(0, 1))
            params.update(resample=round(zoom, 3), shift=[int(v) for v in shift])
        else:  # removal
            region = _diffusion_fill(host, mask)
        region = _retouch(rng, region, cfg, host_sigma, params)
        host = np.where(mask[..., None], region, host)

    jpeg_bytes = None
    image = np.clip(host, 0, 255).round()
    if rng.random() < cfg.final_jpeg_prob:
        q = int(rng.integers(*cfg.final_jpeg_quality))
        image, jpeg_bytes = _jpeg(image, q)
        params["final_jpeg"] = q
    return RenderedForgery(image.astype(np.uint8), mask, kind, params, jpeg_bytes)


def sample_name(index: int, split: str, kind: str) -> str:
    return f"synth_{split}_{index:06d}_{kind}"


class SyntheticForgeries(torch.utils.data.Dataset):
    """``n`` synthetic samples of a split, generated on access (nothing touches the disk).

    Items are dicts ``{"image": 3xSxS float [0,1], "mask": 1xSxS {0,1}, "name", "label", "kind"}``,
    the same contract as the file-based datasets.
    """

    def __init__(self, n: int, seed: int = 0, split: str = "train", size: int = 128,
                 source: str | os.PathLike | None = None, cfg: SynthConfig | None = None) -> None:
        if n < 1:
            raise ConfigError(f"number of synthetic samples must be >= 1, got {n}")
        self.n, self.seed, self.split, self.source = n, seed, split, source
        self.cfg = cfg or SynthConfig(size=size)
        photos(source, split)  # fail early on a bad source

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        r = render_forgery(index, self.seed, self.split, self.cfg, self.source)
        return {
            "image": image_to_tensor(r.image),
            "mask": torch.from_numpy(r.mask[None].astype(np.float32)),
            "name": sample_name(index, self.split, r.kind),
            "label": int(r.kind != "authentic"),
            "kind": r.kind,
        }


def synthesize_folder(out_dir: str | os.PathLike, n: int, seed: int = 0, split: str = "train", size: int = 128,
                      source: str | os.PathLike | None = None, on_sample: Callable[[], None] | None = None) -> Path:
    """Write ``n`` samples in the standard layout: ``<id>.{png,jpg}`` + ``<id>_gt.png``, authentic images
    under ``authentic/``, and ``synth.json`` with the parameters of every sample.

    Resumable: every file is written atomically and existing complete samples are skipped, so re-running after
    an interruption (or with a larger ``n``) finishes the same folder. A folder is only resumed with the settings
    it was made with (:func:`check_synth_folder`): ``synth.json`` records them before the first sample.
    """
    out = Path(out_dir)
    cfg = SynthConfig(size=size)
    settings = json.loads(json.dumps({"seed": seed, "split": split, "config": asdict(cfg),  # as read back
                                      "source": str(Path(source).resolve()) if source is not None else None}))
    photos(source, split)  # a bad source fails before the folder is touched
    check_synth_folder(out, settings, n)
    write_json_atomic(out / "synth.json", {**settings, "n": n, "complete": False, "samples": []})
    records = []
    for i in range(n):
        r = render_forgery(i, seed, split, cfg, source)
        name = sample_name(i, split, r.kind)
        folder = out / "authentic" if r.kind == "authentic" else out
        ext = ".jpg" if r.jpeg_bytes is not None else ".png"
        img_path, gt_path = folder / f"{name}{ext}", out / f"{name}_gt.png"
        if not img_path.exists():
            with atomic_path(img_path) as tmp:
                if r.jpeg_bytes is not None:
                    tmp.write_bytes(r.jpeg_bytes)
                else:
                    Image.fromarray(r.image).save(tmp, format="PNG")
        if r.kind != "authentic" and not gt_path.exists():
            with atomic_path(gt_path) as tmp:
                Image.fromarray(r.mask.astype(np.uint8) * 255).save(tmp, format="PNG")
        records.append({"id": name, "kind": r.kind, "file": str(img_path.relative_to(out)), **r.params})
        if on_sample:
            on_sample()
    write_json_atomic(out / "synth.json", {**settings, "n": n, "complete": True, "samples": records})
    return out


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``["seed 0 -> 1", "config.size 128 -> 64"]``: what changed, for the refusal message."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} -> {b!r}")
    return out


def check_synth_folder(out: Path, settings: dict[str, Any], n: int) -> None:
    """Refuse to write into a non-empty folder unless it is a ``synth`` folder made with the same settings.

    Why: samples are named by split and index only, so writing seed 1 into a seed-0 folder would skip the
    existing files and leave a dataset that mixes both, with an index describing neither. Same settings resume
    (and a larger ``n`` extends); a smaller ``n`` is refused too, as the extra samples would stay in the folder."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    index = out / "synth.json"
    fix = "use a new --out folder, or delete it to regenerate"
    if not index.is_file():
        raise ConfigError(f"{out} is not empty and holds no synth.json (not made by ansm synth); {fix}")
    previous = read_json(index, DataError, "synth index")
    if not isinstance(previous, dict):
        raise DataError(f"{index}: synth index must be a JSON object; {fix}")
    recorded = {k: previous.get(k) for k in settings}
    if recorded != settings:
        changed = "; ".join(_differences(recorded, settings))
        raise ConfigError(f"{out} holds samples made with other settings ({changed}); {fix} (the same settings resume)")
    had = previous.get("n", len(previous.get("samples") or []))
    if isinstance(had, int) and had > n:
        raise ConfigError(f"{out} holds {had} samples, more than --n {n}; pass --n {had} or more to resume, or {fix}")


def iter_rendered(n: int, seed: int, split: str, cfg: SynthConfig) -> Iterator[RenderedForgery]:
    for i in range(n):
        yield render_forgery(i, seed, split, cfg)
