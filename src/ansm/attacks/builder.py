"""Build an anti-forensics dataset: attack every image of a dataset and save the results as a new dataset.

Output layout (the "pairs folder" that :func:`ansm.data.datasets.open_dataset` reads back)::

    <out>/<id>.png              adversarial forged image (lossless PNG, uint8)
    <out>/<id>_gt.png           its ground-truth mask, unchanged
    <out>/authentic/<id>.png    adversarial authentic image (empty mask: no _gt file, as in the source layout)
    <out>/records/<id>.json     one record per finished image (written last: "record exists" = "image done")
    <out>/attack.json           the run's settings and the sha256 of the model's weights; a restart with
                                different settings, or against retrained weights at the same path, is refused
    <out>/manifest.jsonl        one line per image, sorted by id, assembled from the records once all exist

Resumable and shardable by construction:

* every file is written atomically and the record is written after the image and mask, so a run killed at any
  moment leaves only complete files, and a restart skips exactly the images that have records;
* the randomness of image ``id`` comes from a generator seeded with ``hash(seed, id)``, never from a global
  stream, so an image gets the same pixels whatever ran before it, in which shard, and after how many restarts;
* ``shard=(k, n)`` takes the images at positions ``k, k + n, k + 2n, ...`` of the dataset's (sorted) order; the
  shard that completes the set writes the manifest, whose bytes do not depend on how the work was split.

Large images (see :func:`ansm.tiling.resolve_tile`) are attacked alone and tile by tile
(:func:`ansm.tiling.tiled_attack`: a bounded-memory attacker); their F1 before/after is measured on tiled predictions.

Measurements are taken on what is saved: the uint8 PNG pixels against the source image, so L-inf/L2 include
the rounding (an L-inf attack is re-clipped after rounding so the saved file still respects ``eps``).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from skimage.metrics import structural_similarity

from ansm.attacks.base import Attack, eval_mode
from ansm.data.io import write_png
from ansm.errors import ConfigError, DataError
from ansm.eval.metrics import f1_score
from ansm.tiling import model_align, resolve_tile, tiled_apply, tiled_attack
from ansm.utils import dumps_json, read_json, read_jsonl, write_json_atomic, write_text_atomic

FORMAT_VERSION = 1


@dataclass(frozen=True)
class BuildResult:
    out: Path
    n_images: int  # in the whole dataset
    n_shard: int  # in this shard
    n_attacked: int  # attacked by this run
    n_skipped: int  # already complete (resumed)
    manifest: Path | None  # None until every shard has finished


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"k/n"`` (0-based k) -> ``(k, n)``; ``None`` -> ``(0, 1)``."""
    if text is None:
        return (0, 1)
    if isinstance(text, tuple):
        k, n = text
    else:
        try:
            k_s, n_s = str(text).split("/")
            k, n = int(k_s), int(n_s)
        except ValueError:
            raise ConfigError(f"cannot read shard {text!r}: write k/n with 0 <= k < n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= k < n):
        raise ConfigError(f"shard {k}/{n} is out of range: need 0 <= k < n")
    return (k, n)


def image_seed(seed: int, image_id: str) -> int:
    """A 63-bit seed from ``(seed, id)``: stable across processes and Python versions (no ``hash()``)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def quantize(adv: torch.Tensor, x: torch.Tensor, eps: float | None) -> torch.Tensor:
    """Round to the uint8 grid (what a PNG stores); with an L-inf ``eps``, keep the rounded image in the ball."""
    q = (adv.clamp(0, 1) * 255).round()
    if eps is not None:
        lo = torch.ceil((x - eps) * 255 - 1e-4).clamp(0, 255)
        hi = torch.floor((x + eps) * 255 + 1e-4).clamp(0, 255)
        ok = lo <= hi
        q = torch.where(ok, torch.minimum(torch.maximum(q, lo), hi), (x * 255).round())
    return q / 255


def _r(v: float) -> float | None:
    """Round for the manifest; non-finite values (PSNR of an unchanged image) become ``null``."""
    return round(float(v), 6) if math.isfinite(float(v)) else None


def _check_id(image_id: Any) -> str:
    name = str(image_id)
    if not name or name.startswith(".") or "/" in name or "\\" in name or name.endswith("_gt"):
        raise DataError(f"image id {name!r} cannot be used as a file name (no path separators, no leading dot, no _gt suffix)")
    return name


def _item_id(dataset: Any, index: int) -> str | None:
    """The id without decoding the image, when the dataset lists its records (file-based datasets do)."""
    records = getattr(dataset, "records", None)
    if records is not None and hasattr(records[index], "name"):
        return _check_id(records[index].name)
    return None


STRIP_ROWS = 512
"""Images taller than this are quantized and measured in row strips: the same numbers (up to float summation
order), with float64 temporaries the size of one strip (whole-image SSIM needed ~2 GB at 12 MP)."""


def _ssim_strips(x: torch.Tensor, adv_q: torch.Tensor, rows: int = STRIP_ROWS) -> float:
    """skimage's SSIM (7x7 uniform window, data range 1, mean over channels) in row strips with a 3-row halo.

    The window reaches 3 rows, so the kept rows of each strip's SSIM map equal the whole image's map; the map's
    3-pixel border is left out of the mean, as skimage does."""
    h, w = x.shape[-2:]
    pad = 3
    per_channel = []
    for c in range(x.shape[0]):
        total, count = 0.0, 0
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            lo, hi = max(0, r0 - pad), min(h, r1 + pad)
            lo = max(0, min(lo, hi - 7))  # a short last strip still holds one window
            _, smap = structural_similarity(x[c, lo:hi].double().numpy(), adv_q[c, lo:hi].double().numpy(),
                                            data_range=1.0, win_size=7, full=True)
            k0, k1 = max(r0, pad), min(r1, h - pad)
            if k1 > k0:
                total += float(smap[k0 - lo:k1 - lo, pad:w - pad].sum(dtype=np.float64))
                count += (k1 - k0) * (w - 2 * pad)
        per_channel.append(total / count)
    return float(np.mean(per_channel))


def measure(x: torch.Tensor, adv_q: torch.Tensor) -> dict[str, float | None]:
    """L-inf, L2 (whole image, [0,1] units), PSNR (dB, peak 1) and SSIM of the saved image against the source."""
    if x.shape[-2] > STRIP_ROWS and min(x.shape[-2:]) >= 7:  # large: per channel and in strips, same numbers
        diff32 = adv_q - x
        sq = sum(float(diff32[c].double().pow(2).sum()) for c in range(diff32.shape[0]))
        mse = sq / diff32.numel()
        return {"linf": _r(diff32.abs().max()), "l2": _r(math.sqrt(sq)),
                "psnr": _r(10 * math.log10(1.0 / mse)) if mse > 0 else None, "ssim": _r(_ssim_strips(x, adv_q))}
    diff = (adv_q - x).double()
    mse = float(diff.pow(2).mean())
    a = x.permute(1, 2, 0).double().numpy()
    b = adv_q.permute(1, 2, 0).double().numpy()
    win = min(7, *a.shape[:2]) | 1 if min(a.shape[:2]) >= 3 else None
    ssim = structural_similarity(a, b, channel_axis=2, data_range=1.0, win_size=win) if win else float("nan")
    return {
        "linf": _r(diff.abs().max()),
        "l2": _r(diff.pow(2).sum().sqrt()),
        "psnr": _r(10 * math.log10(1.0 / mse)) if mse > 0 else None,
        "ssim": _r(ssim),
    }


def attack_one(attack: Attack, localizer: Callable[[torch.Tensor], torch.Tensor], item: dict[str, Any],
               seed: int, device: torch.device | None = None,
               tile: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Attack one dataset item; return the quantized adversarial image (3xHxW) and its measurements."""
    return attack_batch(attack, localizer, [item], seed, device, tile)[0]


def attack_batch(attack: Attack, localizer: Callable[[torch.Tensor], torch.Tensor], items: list[dict[str, Any]],
                 seed: int, device: torch.device | None = None,
                 tile: int | None = None) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """Attack same-size dataset items in one batch; per item, the quantized adversarial image and measurements.

    Each image draws its randomness from its own generator (``image_seed(seed, id)``), so batching changes only
    floating-point summation order inside the model, not which random start an image gets. ``tile``
    (:func:`ansm.tiling.resolve_tile`) decides whether images are attacked and measured tile by tile."""
    xs, ms, gens = [], [], []
    for item in items:
        image_id = _check_id(item["name"])
        x, m = item["image"].float(), item["mask"].float()
        if x.dim() != 3 or x.shape[0] != 3 or m.shape != (1, *x.shape[-2:]):
            raise DataError(f"{image_id}: expected image 3xHxW and mask 1xHxW, got {tuple(x.shape)} and {tuple(m.shape)}")
        if xs and x.shape != xs[0].shape:
            raise DataError(f"{image_id}: a batch needs images of one size, got {tuple(x.shape)} and {tuple(xs[0].shape)}")
        xs.append(x)
        ms.append(m)
        gens.append(torch.Generator().manual_seed(image_seed(seed, image_id)))
    x, m = torch.stack(xs), torch.stack(ms)
    dev = device or x.device
    t = resolve_tile(tile, *x.shape[-2:])
    if t is None:
        adv = attack(x.to(dev), m.to(dev), generator=gens).cpu()
    else:  # one image at a time, tile by tile, each with its own generator
        align = model_align(attack.model)
        adv = torch.cat([tiled_attack(attack, x[i:i + 1].to(dev), m[i:i + 1].to(dev), generator=[gens[i]], tile=t,
                                      align=align).cpu() for i in range(len(items))])
    eps = attack.eps if attack.norm == "linf" else None
    if t is None:
        adv_q = torch.stack([quantize(adv[i], x[i], eps) for i in range(len(items))])
    else:  # elementwise, so row strips give the same pixels with strip-sized temporaries
        adv_q = torch.stack([torch.cat([quantize(adv[i][:, r:r + STRIP_ROWS], x[i][:, r:r + STRIP_ROWS], eps)
                                        for r in range(0, x.shape[-2], STRIP_ROWS)], dim=1) for i in range(len(items))])
    del adv
    with torch.no_grad(), eval_mode(localizer):
        if t is None:
            prob = torch.sigmoid(localizer(torch.cat([x, adv_q]).to(dev)).float().cpu())
        else:
            align = model_align(localizer)
            prob = torch.cat([torch.sigmoid(tiled_apply(localizer, img[None].to(dev), tile=t,
                                                        align=align).float().cpu()) for img in (*x, *adv_q)])
    n = len(items)
    f1 = f1_score(prob, torch.cat([m, m]))
    area = (prob > 0.5).flatten(1).float().mean(1)
    return [(adv_q[i], {**measure(x[i], adv_q[i]), "f1_before": _r(f1[i]), "f1_after": _r(f1[n + i]),
                        "pred_area_before": _r(area[i]), "pred_area_after": _r(area[n + i])}) for i in range(n)]


def _write_result(root: Path, item: dict[str, Any], adv_q: torch.Tensor, stats: dict[str, Any], attack: Attack,
                  seed: int) -> None:
    """Image and mask first, the record last (atomically): "record exists" means "image done"."""
    image_id = _check_id(item["name"])
    forged = bool(item["mask"].any())
    img_path, gt_path = _paths(root, image_id, forged)
    write_png(img_path, adv_q)
    if gt_path is not None:
        write_png(gt_path, (item["mask"] > 0.5).float())
    record = {
        "id": image_id,
        "image": img_path.relative_to(root).as_posix(),
        "mask": gt_path.relative_to(root).as_posix() if gt_path else None,
        "label": int(forged),
        "source_image": item.get("image_path") or None,
        "source_mask": item.get("mask_path") or None,
        "attack": attack.name,
        "params": attack.params(),
        "seed": image_seed(seed, image_id),
        **stats,
    }
    write_text_atomic(root / "records" / f"{image_id}.json", dumps_json(record, sort_keys=True) + "\n")


def _paths(out: Path, image_id: str, forged: bool) -> tuple[Path, Path | None]:
    if forged:
        return out / f"{image_id}.png", out / f"{image_id}_gt.png"
    return out / "authentic" / f"{image_id}.png", None


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes, bytes), as loaded.

    Why the state dict and not the checkpoint file: a model can come from a checkpoint, a registered name with
    --weights, or code (module:callable), and the loaded tensors are what the images were attacked against in
    every case. Retraining a model at the same path changes the hash, so a resume cannot mix images attacked
    against the old and the new weights."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / "attack.json"
    if path.exists():
        previous = read_json(path, DataError, "attack settings (delete it or use a new output folder)")
        if not isinstance(previous, dict):
            raise DataError(f"{path}: attack settings must be a JSON object; delete it or use a new output folder")
        old, new = previous.get("model_sha256"), settings.get("model_sha256")
        if old != new and {k: v for k, v in previous.items() if k != "model_sha256"} == \
                {k: v for k, v in settings.items() if k != "model_sha256"}:
            model = f" {settings['model']!r}" if "model" in settings else ""
            if old is None:  # made before attack.json recorded the weights: a resume could not be checked
                raise ConfigError(f"{out} was built by an older ansm that did not record which weights of the "
                                  f"model{model} it attacked, so resuming it could mix two models' images: delete it "
                                  "to rebuild it, or use a new output folder")
            raise ConfigError(f"{out} was attacked against other weights of the model{model} (sha256 "
                              f"{str(old)[:12]} recorded, {str(new)[:12]} now: retrained or replaced?); its images "
                              "would mix both: use a new output folder, or delete this one to rebuild it")
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise ConfigError(f"{out} was built with different settings ({', '.join(changed)} differ); "
                              "use a new output folder to change them")
    else:
        write_json_atomic(path, settings)


def assemble_manifest(out: str | os.PathLike, n_images: int) -> Path | None:
    """Write ``manifest.jsonl`` (records sorted by id) when all ``n_images`` records exist; else return None."""
    root = Path(out)
    records = sorted((root / "records").glob("*.json"))
    if len(records) < n_images:
        return None
    rows = [read_json(p, DataError, "attack record") for p in records]
    bad = [str(p) for p, r in zip(records, rows) if not (isinstance(r, dict) and isinstance(r.get("id"), str))]
    if bad:
        raise DataError(f"{bad[0]}: not an attack record (no string id); delete it and re-run to redo that image")
    rows.sort(key=lambda r: r["id"])
    path = root / "manifest.jsonl"
    write_text_atomic(path, "".join(dumps_json(r, sort_keys=True) + "\n" for r in rows))
    return path


def build_adversarial_dataset(dataset: Any, localizer: Callable[[torch.Tensor], torch.Tensor], attack: Attack,
                              out: str | os.PathLike, *, seed: int = 0, shard: str | tuple[int, int] | None = None,
                              describe: dict[str, Any] | None = None, device: torch.device | None = None,
                              on_item: Callable[[str, bool], None] | None = None, batch_size: int = 1,
                              tile: int | None = None) -> BuildResult:
    """Attack every image of ``dataset`` (items ``{"image", "mask", "name", ...}``) and write the results.

    Args:
        dataset: a map-style dataset of item dicts (file-based or synthetic).
        localizer: the model the F1 before/after is measured on (usually the attacked one).
        attack: a built attack (see :func:`ansm.attacks.create_attack`).
        out: output folder (created); re-running on it resumes.
        seed: base seed; image ``id`` uses ``image_seed(seed, id)``.
        shard: ``"k/n"`` to process one deterministic n-th of the images.
        describe: extra settings recorded in ``attack.json`` (e.g. dataset and checkpoint names); a restart
            must pass the same.
        on_item: called as ``on_item(id, attacked)`` after each image of the shard (attacked or skipped).
        batch_size: images attacked together (consecutive images of one size). Every image keeps its own random
            start, so the results do not depend on it beyond floating-point rounding; a killed run loses at most
            the batch in flight.
        tile: tile side for large images (:func:`ansm.tiling.resolve_tile`; ``None``: automatic above
            ``AUTO_TILE_PIXELS``, ``0``: never). Tiled images are attacked alone, whatever ``batch_size``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    k, n = parse_shard(shard)
    root = Path(out)
    n_images = len(dataset)
    if n_images == 0:
        raise DataError("the dataset is empty")
    settings = {"format": FORMAT_VERSION, "attack": attack.name, "params": attack.params(), "seed": int(seed),
                "n_images": n_images, **(describe or {})}
    if isinstance(localizer, torch.nn.Module):
        settings["model_sha256"] = weights_sha256(localizer)
    root.mkdir(parents=True, exist_ok=True)
    _check_settings(root, settings)

    indices = range(k, n_images, n)
    attacked = skipped = 0
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal attacked
        for item, (adv_q, stats) in zip(pending, attack_batch(attack, localizer, pending, seed, device, tile)):
            _write_result(root, item, adv_q, stats, attack, seed)
            attacked += 1
            if on_item:
                on_item(item["name"], True)
        pending.clear()

    for index in indices:
        image_id = _item_id(dataset, index)
        if image_id is not None and (root / "records" / f"{image_id}.json").exists():
            skipped += 1
            if on_item:
                on_item(image_id, False)
            continue
        item = dataset[index]
        image_id = _check_id(item["name"])
        if (root / "records" / f"{image_id}.json").exists():
            skipped += 1
            if on_item:
                on_item(image_id, False)
            continue
        alone = resolve_tile(tile, *item["image"].shape[-2:]) is not None  # large: attacked on its own
        if pending and (alone or item["image"].shape != pending[0]["image"].shape):
            flush()  # one image size per batch: file datasets are attacked in runs of equal-size images
        pending.append(item)
        if alone or len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    manifest = assemble_manifest(root, n_images)
    return BuildResult(root, n_images, len(indices), attacked, skipped, manifest)


def summarize_manifest(path: str | os.PathLike) -> dict[str, float]:
    """Means over the manifest's images: F1 before/after (forged images only), L-inf/L2 max/mean, PSNR, SSIM."""
    rows = [row for _, row in read_jsonl(path, DataError, "attack-set manifest")]
    forged = [r for r in rows if r["label"] == 1]

    def mean(values: list[Any]) -> float:
        v = [float(x) for x in values if x is not None]
        return float(np.mean(v)) if v else math.nan

    return {
        "n_images": len(rows),
        "n_forged": len(forged),
        "f1_before": mean([r["f1_before"] for r in forged]),
        "f1_after": mean([r["f1_after"] for r in forged]),
        "linf_max": max((r["linf"] for r in rows), default=math.nan),
        "l2_mean": mean([r["l2"] for r in rows]),
        "psnr_mean": mean([r["psnr"] for r in rows]),
        "ssim_mean": mean([r["ssim"] for r in rows]),
    }
