"""Read forgery datasets in the layouts the IFL field uses.

* **Pairs folder** (the layout of ``shared/data``): ``<id>.<ext>`` + ``<id>_gt.png``; authentic images in
  ``authentic/`` (empty masks). Also accepted for the mask: ``<id>_mask.png``, ``<id>_gt.<ext>``.
* **Tp/Gt folders** (IMDLBenCo's ManiDataset): ``Tp/<id>.<ext>`` and ``Gt/<id>{,_gt,_mask}.<ext>``, paired by
  name (not by sorted order, which silently mispairs when one file is missing).
* **JSON list** (IMDLBenCo's JsonDataset): ``[[image_path, mask_path_or_"Negative"], ...]``; relative paths are
  resolved against the JSON file's folder, and no path may escape that root (a manifest cannot make us read
  ``/etc/passwd``); pass ``root=`` to resolve against another folder.
* A folder whose subfolders are datasets (``shared/data``: casia1, imd2020, comofod): see :func:`discover_datasets`.
* **Splits**: a dataset folder may hold ``splits.json`` = ``{"train": [ids], "val": [ids], "test": [ids]}`` (ids are
  file stems, forged and authentic alike; ``shared/real/casia1`` has one, grouped by source photo). ``split="test"``
  keeps only that split's records; see :func:`read_split`.

Images are returned at native size unless the caller asks otherwise (``max_side`` downscales keeping the aspect
ratio; ``size`` resizes to a fixed HxW). A mask whose size differs from its image is an error naming both files,
unless ``resize_masks=True`` (nearest neighbour).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from ansm.data.io import IMAGE_EXTENSIONS, check_same_size, read_image, read_mask
from ansm.errors import DataError

MASK_SUFFIXES = ("_gt", "_mask", "_gt_target", "_gt_source")
SPLITS_FILE = "splits.json"
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    name: str
    image: Path
    mask: Path | None  # None = authentic (all-zero mask)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _is_mask_name(stem: str) -> bool:
    return any(stem.endswith(s) for s in MASK_SUFFIXES)


def _find_mask(folder: Path, stem: str, suffixes: tuple[str, ...] = ("_gt", "_mask", "")) -> Path | None:
    for suffix in suffixes:
        for ext in (".png", ".tif", ".tiff", ".bmp", ".jpg"):
            p = folder / f"{stem}{suffix}{ext}"
            if p.is_file():
                return p
    return None


def _inside(root: Path, path: Path, manifest: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise DataError(f"{manifest}: path {path} escapes the dataset root {root}")
    return resolved


def records_from_pairs_folder(root: Path) -> list[Record]:
    records = []
    for img in sorted(p for p in root.iterdir() if _is_image(p) and not _is_mask_name(p.stem)):
        mask = _find_mask(root, img.stem, suffixes=("_gt", "_mask"))
        if mask is None:
            raise DataError(f"{img}: no mask found (expected {img.stem}_gt.png beside it, or put authentic images in authentic/)")
        records.append(Record(img.stem, img, mask))
    auth = root / "authentic"
    if auth.is_dir():
        records += [Record(p.stem, p, None) for p in sorted(auth.iterdir()) if _is_image(p)]
    return records


def records_from_tp_gt(root: Path) -> list[Record]:
    tp, gt = root / "Tp", root / "Gt"
    records = []
    for img in sorted(p for p in tp.iterdir() if _is_image(p)):
        mask = _find_mask(gt, img.stem)
        if mask is None:
            raise DataError(f"{img}: no mask in {gt} (looked for {img.stem}.png, {img.stem}_gt.png, {img.stem}_mask.png)")
        records.append(Record(img.stem, img, mask))
    au = root / "Au"
    if au.is_dir():
        records += [Record(p.stem, p, None) for p in sorted(au.iterdir()) if _is_image(p)]
    return records


def records_from_json(path: Path, root: Path | None = None) -> list[Record]:
    from ansm.utils import read_json

    entries = read_json(path, DataError, "dataset JSON")  # unreadable, not UTF-8 or malformed: one line naming it
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of [image_path, mask_path or \"Negative\"]")
    base = (root or path.parent).resolve()
    records = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
            raise DataError(f"{path}: entry {i} is not [image_path, mask_path or \"Negative\"]: {entry!r}")
        img = _inside(base, base / entry[0], path)
        mask = None if entry[1] == "Negative" else _inside(base, base / entry[1], path)
        for p in (img, mask):
            if p is not None and not p.is_file():
                raise DataError(f"{path}: entry {i} names {p}, which does not exist")
        records.append(Record(img.stem, img, mask))
    return records


def list_records(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Record]:
    """Detect the layout of ``path`` and list its samples."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        recs = records_from_json(p, Path(root) if root else None)
    elif p.is_dir() and (p / "Tp").is_dir() and (p / "Gt").is_dir():
        recs = records_from_tp_gt(p)
    elif p.is_dir():
        recs = records_from_pairs_folder(p)
    else:
        raise DataError(f"{p}: dataset not found (expected a folder or an IMDLBenCo .json list)")
    if not recs:
        raise DataError(f"{p}: no images found (supported: {', '.join(IMAGE_EXTENSIONS)})")
    names = [r.name for r in recs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise DataError(f"{p}: duplicate image ids {dup} (ids must be unique within a dataset)")
    return recs


def splits_file(path: str | os.PathLike) -> Path | None:
    """``<path>/splits.json`` if the dataset folder has one (a JSON-list dataset never has)."""
    p = Path(path)
    f = p / SPLITS_FILE
    return f if p.is_dir() and f.is_file() else None


def read_split(path: str | os.PathLike, split: str) -> set[str]:
    """The ids of ``split`` in ``<path>/splits.json``, checked: the three splits must be lists of strings that share
    no id, so a broken file cannot silently put a test image into training."""
    from ansm.utils import read_json

    if split not in SPLIT_NAMES:
        raise DataError(f"unknown split {split!r} (use one of {', '.join(SPLIT_NAMES)})")
    f = splits_file(path)
    if f is None:
        raise DataError(f"{path}: no {SPLITS_FILE} in this dataset folder, so it has no {split!r} split "
                        "(write one: {\"train\": [ids], \"val\": [ids], \"test\": [ids]}, ids = file stems)")
    doc = read_json(f, DataError, "splits file")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in SPLIT_NAMES):
        raise DataError(f"{f}: expected an object with lists \"train\", \"val\" and \"test\" of image ids")
    sets = {}
    for k in SPLIT_NAMES:
        if not all(isinstance(i, str) for i in doc[k]):
            raise DataError(f"{f}: split {k!r} holds a non-string id")
        sets[k] = set(doc[k])
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(sets[a] & sets[b])
        if shared:
            raise DataError(f"{f}: {len(shared)} ids are in both {a} and {b}, e.g. {shared[0]}")
    return sets[split]


def filter_split(records: list[Record], path: str | os.PathLike, split: str) -> list[Record]:
    """Keep the records of one split. Ids the split names but the folder lacks are allowed (a user's partial copy);
    a split that keeps nothing is an error, as it always means the wrong folder or file."""
    ids = read_split(path, split)
    kept = [r for r in records if r.name in ids]
    if not kept:
        raise DataError(f"{path}: none of its images is in split {split!r} of {SPLITS_FILE}")
    return kept


class ForgeryDataset(torch.utils.data.Dataset):
    """Items: ``{"image": 3xHxW, "mask": 1xHxW, "name", "label", "image_path", "mask_path"}``."""

    def __init__(self, path: str | os.PathLike, *, root: str | os.PathLike | None = None, max_side: int | None = None,
                 size: tuple[int, int] | None = None, resize_masks: bool = False, records: list[Record] | None = None,
                 split: str | None = None) -> None:
        self.path = Path(path)
        self.records = records if records is not None else list_records(path, root)
        self.split = split
        if split is not None:
            self.records = filter_split(self.records, path, split)
        self.max_side, self.size, self.resize_masks = max_side, size, resize_masks
        if max_side is not None and max_side < 8:
            raise DataError(f"max_side must be >= 8, got {max_side}")

    def __len__(self) -> int:
        return len(self.records)

    def _target_size(self, h: int, w: int) -> tuple[int, int] | None:
        if self.size is not None:
            return self.size
        if self.max_side is not None and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            return max(1, round(h * scale)), max(1, round(w * scale))
        return None

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        image = read_image(rec.image)
        if rec.mask is None:
            mask = torch.zeros(1, *image.shape[-2:])
        else:
            mask = read_mask(rec.mask)
            if mask.shape[-2:] != image.shape[-2:] and self.resize_masks:
                mask = F.interpolate(mask[None], size=image.shape[-2:], mode="nearest")[0]
            check_same_size(image, mask, rec.image, rec.mask)
        target = self._target_size(*image.shape[-2:])
        if target is not None:
            image = F.interpolate(image[None], size=target, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
            mask = (F.interpolate(mask[None], size=target, mode="nearest")[0] > 0.5).float()
        return {
            "image": image,
            "mask": mask,
            "name": rec.name,
            "label": int(mask.any()),
            "image_path": str(rec.image),
            "mask_path": str(rec.mask) if rec.mask else "",
        }


def open_dataset(path: str | os.PathLike, **kwargs: Any) -> ForgeryDataset:
    """Open one dataset (pairs folder, Tp/Gt folders, or IMDLBenCo JSON list)."""
    return ForgeryDataset(path, **kwargs)


def discover_datasets(path: str | os.PathLike, split: str | None = None, **kwargs: Any) -> dict[str, ForgeryDataset]:
    """``{name: dataset}``: the folder itself if it holds images, else each subfolder that is a dataset.

    ``split``: the folder itself must then have a ``splits.json``; in a folder of datasets it restricts those
    subfolders that have one (``shared/real``: casia1 to its test split) and the others are used whole, as the
    cross-dataset protocol wants. Each dataset's ``.split`` says which happened."""
    p = Path(path)
    if p.is_file() or (p.is_dir() and (any(_is_image(c) for c in p.iterdir()) or (p / "Tp").is_dir())):
        return {p.stem if p.is_file() else p.name: open_dataset(p, split=split, **kwargs)}
    if not p.is_dir():
        raise DataError(f"{p}: dataset not found")
    found = {}
    for sub in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")):
        if any(_is_image(c) for c in sub.iterdir()) or (sub / "Tp").is_dir():
            found[sub.name] = open_dataset(sub, split=split if splits_file(sub) else None, **kwargs)
    if not found:
        raise DataError(f"{p}: no dataset found in it or in its subfolders")
    return found


def collect_datasets(specs: Iterable[str], *, size: int = 128,
                     **kwargs: Any) -> tuple[dict[str, torch.utils.data.Dataset], dict[str, str]]:
    """Every ``--data`` of a command -> (``{key: dataset}``, ``{key: source}``), keys unique.

    Why: keys come from folder names, so ``x/casia`` and ``y/casia`` (or two folders of datasets that both hold
    ``casia1``) would overwrite each other and one would vanish from the results. A later dataset whose name is
    taken gets ``<name>-2``, ``<name>-3``, ... and the sources say which folder each key is; the same path
    given twice is evaluated once."""
    datasets: dict[str, torch.utils.data.Dataset] = {}
    sources: dict[str, str] = {}
    for spec in specs:
        if str(spec).startswith("synthetic:"):
            found: dict[str, Any] = {str(spec): open_data(spec, size=size)}
            where = {str(spec): str(spec)}
        else:
            found = discover_datasets(spec, **kwargs)
            where = {name: str(Path(getattr(ds, "path", spec)).resolve()) for name, ds in found.items()}
        for name, ds in found.items():
            if where[name] in sources.values():
                continue  # the same dataset named twice
            key, i = name, 1
            while key in datasets:
                i += 1
                key = f"{name}-{i}"
            datasets[key], sources[key] = ds, where[name]
    return datasets, sources


def open_data(spec: str | os.PathLike, *, size: int = 128, seed: int = 0, **kwargs: Any) -> torch.utils.data.Dataset:
    """What every ``--data`` option accepts: ``synthetic:N`` (N held-out synthetic forgeries: the test split,
    photos never seen in training, at ``size`` x ``size``), ``synthetic:N:val`` (the val split's photos, where
    recipes are chosen) or a dataset path (see :func:`open_dataset`)."""
    text = str(spec)
    if text.startswith("synthetic:"):
        from ansm.data.synth import SyntheticForgeries

        parts = text.split(":")
        try:
            n, split = int(parts[1]), (parts[2] if len(parts) == 3 else "test")
        except (ValueError, IndexError):
            raise DataError(f"cannot read {text!r}: write synthetic:N or synthetic:N:val, e.g. synthetic:50") from None
        if len(parts) > 3 or split not in ("val", "test"):
            raise DataError(f"cannot read {text!r}: the split after synthetic:N must be val or test")
        return SyntheticForgeries(n, seed=seed, split=split, size=size)
    return open_dataset(text, **kwargs)
