"""Apply a trained ANSM to images on disk: defended images and masks with and without the defense, plus overlays.

For every input image ``<id>`` the output folder gets

* ``<id>_defended.png``   ANSM(x), lossless (what the localizer sees);
* ``<id>_mask.png``       V(ANSM(x)) > 0.5, the defended prediction;
* ``<id>_mask_nodef.png`` V(x) > 0.5, the prediction without the defense;
* ``<id>_overlay.png``    input | prediction without defense | prediction with defense, tampered pixels in red,
  for a person to look at;

and ``defend.json`` lists per-image predicted tampered area with and without the defense. With an attack
detector (:mod:`ansm.defense.detector`) each row also holds ``attack_p`` (its probability that the input was
attacked, on the image as read) and ``attack_flag`` (``attack_p`` above the checkpoint's calibrated threshold). ``<id>`` is the
file's stem, unless two inputs share one (``a.png`` and ``a.jpg``): then each keeps its extension in its id
(``a_png``, ``a_jpg``), so no output overwrites another (:func:`output_ids`); ``defend.json`` names every
input. Images run one at a time at native size (or downscaled to ``max_side``); large ones (see ``tile``) in overlapping tiles
(:mod:`ansm.tiling`), so the networks' memory is that of one tile. Every file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ansm.data.io import IMAGE_EXTENSIONS, read_image, tensor_to_uint8, write_mask, write_png
from ansm.errors import DataError
from ansm.tiling import model_align, resolve_tile, tiled_apply
from ansm.utils import atomic_path, write_json_atomic
from ansm.validate import positive_int


def list_images(path: str | os.PathLike) -> list[Path]:
    """One image file, or the images of a folder (not recursive; ``*_gt`` / ``*_mask`` files are skipped)."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"{p}: not a supported image ({', '.join(IMAGE_EXTENSIONS)})")
        return [p]
    if not p.is_dir():
        raise DataError(f"{p}: no such file or folder")
    files = sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_EXTENSIONS
                   and not c.name.startswith(".") and not c.stem.endswith(("_gt", "_mask")))
    if not files:
        raise DataError(f"{p}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def output_ids(files: list[Path]) -> list[str]:
    """One output id per input: the stem, or ``<stem>_<ext>`` for stems shared by several inputs.

    Why only on collision: ids stay the familiar stems for the usual folder; why the extension: it says which
    input an output came from. Stems are compared case-insensitively (``A.png`` and ``a.jpg`` would overwrite
    each other's outputs on macOS and Windows); a derived id that is still taken gets ``-2``, ``-3``, ..."""
    counts: dict[str, int] = {}
    for f in files:
        counts[f.stem.lower()] = counts.get(f.stem.lower(), 0) + 1
    ids: list[str] = []
    taken = {f.stem.lower() for f in files if counts[f.stem.lower()] == 1}
    for f in files:
        if counts[f.stem.lower()] == 1:
            ids.append(f.stem)
            continue
        base = f"{f.stem}_{f.suffix.lstrip('.').lower()}"
        new, i = base, 1
        while new.lower() in taken:
            i += 1
            new = f"{base}-{i}"
        taken.add(new.lower())
        ids.append(new)
    return ids


def overlay(image: torch.Tensor, prob: torch.Tensor, color: tuple[float, float, float] = (1.0, 0.0, 0.0),
            strength: float = 0.55) -> torch.Tensor:
    """Blend ``color`` into ``image`` (3xHxW) where ``prob`` (1xHxW) > 0.5."""
    tint = torch.tensor(color, dtype=image.dtype).view(3, 1, 1)
    sel = (prob > 0.5).to(image.dtype)
    return image * (1 - strength * sel) + tint * strength * sel


def side_by_side(panels: list[torch.Tensor], gap: int = 4) -> torch.Tensor:
    """Concatenate 3xHxW panels horizontally with white gaps."""
    h = panels[0].shape[-2]
    spacer = torch.ones(3, h, gap)
    parts: list[torch.Tensor] = []
    for i, p in enumerate(panels):
        parts += ([spacer] if i else []) + [p]
    return torch.cat(parts, dim=-1)


@torch.no_grad()
def defend_images(ansm: nn.Module, localizer: nn.Module, inputs: str | os.PathLike, out: str | os.PathLike, *,
                  max_side: int | None = None, device: torch.device | str = "cpu",
                  on_item: Callable[[str], None] | None = None, tile: int | None = None,
                  detector: nn.Module | None = None, detector_threshold: float = 0.5,
                  stochastic_passes: int = 8) -> dict[str, Any]:
    """Defend every image of ``inputs`` (file or folder) and write the outputs listed in the module docstring.

    ``tile`` (:func:`ansm.tiling.resolve_tile`): ``None`` tiles images over ``AUTO_TILE_PIXELS`` automatically,
    ``0`` never, ``N`` whenever a side exceeds ``N``. ANSM is fully convolutional with a receptive field inside
    the overlap, so the tiled defended image equals the untiled one; the localizer's predictions are close.

    ``detector``: flag each input as attacked when its probability exceeds ``detector_threshold`` (whole image,
    never tiled: its global pooling reads the image at once; it is a few convolutions, cheap at any size).

    ``stochastic_passes``: for a stochastic ANSM (``noise_std > 0``), the defended mask is the mean probability
    over this many passes, each with fresh noise (a fixed seed would hand an attacker the noise to attack)."""
    positive_int(stochastic_passes, "stochastic_passes")
    files = list_images(inputs)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    ansm.eval()
    localizer.eval()
    passes = stochastic_passes if getattr(ansm, "stochastic", False) else 1
    rows = []
    for path, stem in zip(files, output_ids(files)):
        x = read_image(path)
        if max_side is not None and max(x.shape[-2:]) > max_side:
            scale = max_side / max(x.shape[-2:])
            size = [max(1, round(s * scale)) for s in x.shape[-2:]]
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
        xb = x[None].to(device)
        attack_p = float(torch.sigmoid(detector(xb))[0]) if detector is not None else None
        t = resolve_tile(tile, *x.shape[-2:])
        align = model_align(localizer) if t is not None else None

        def run(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
            return model(z) if t is None else tiled_apply(model, z, tile=t, align=align)

        p_nodef = torch.sigmoid(run(localizer, xb))[0].cpu()
        # a stochastic ANSM (fresh noise per call): the mask is the mean probability over `passes` defended passes,
        # as the benchmark scores it; the defended image written is the first pass
        x_d = run(ansm, xb)
        p_def = torch.sigmoid(run(localizer, x_d))[0].cpu()
        for _ in range(passes - 1):
            p_def += torch.sigmoid(run(localizer, run(ansm, xb)))[0].cpu()
        p_def /= passes
        del xb
        x_d = x_d[0].cpu()
        write_png(root / f"{stem}_defended.png", x_d)
        write_mask(root / f"{stem}_mask.png", p_def)
        write_mask(root / f"{stem}_mask_nodef.png", p_nodef)
        # panels to uint8 one at a time, then joined: the same pixels as joining floats, a quarter of the memory
        panels = [tensor_to_uint8(p) for p in (x, overlay(x, p_nodef), overlay(x, p_def))]
        gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)  # side_by_side's white 4 px gaps
        panel = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
        del panels
        with atomic_path(root / f"{stem}_overlay.png") as tmp:
            Image.fromarray(panel).save(tmp, format="PNG")
        rows.append({"id": stem, "input": str(path), "height": int(x.shape[-2]), "width": int(x.shape[-1]),
                     "area_nodef": round(float((p_nodef > 0.5).float().mean()), 6),
                     "area_def": round(float((p_def > 0.5).float().mean()), 6),
                     "max_abs_change": round(float((x_d - x).abs().max()), 6)})
        if attack_p is not None:
            rows[-1] |= {"attack_p": round(attack_p, 6), "attack_flag": attack_p > detector_threshold}
        if on_item:
            on_item(stem)
    summary = {"n_images": len(rows), "images": rows,
               "mean_area_nodef": float(np.mean([r["area_nodef"] for r in rows])),
               "mean_area_def": float(np.mean([r["area_def"] for r in rows])), "defended_passes": passes}
    if detector is not None:
        summary |= {"detector_threshold": detector_threshold, "n_flagged": sum(r["attack_flag"] for r in rows)}
    write_json_atomic(root / "defend.json", summary)
    return summary
