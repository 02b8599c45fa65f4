"""Training data for ANSM: clean forgeries (synthetic, or a real dataset's split), plus adversarial pairs read from
``ansm attack`` folders.

ANSM is trained on triples ``(x_o, x_a, m)``. The clean pool gives ``(x_o, m)`` and the trainer attacks it online;
with a real dataset (:func:`real_clean_pool`) the pool is its split held at native resolution and cut into crops;
an anti-forensics folder (see :mod:`ansm.attacks.builder`) gives ready-made ``x_a``, whose original ``x_o`` is
found through the manifest's ``source_image`` (file datasets) or, for a synthetic source, by the image id in the
clean pool (build the attack set from the same ``SyntheticForgeries`` the pool renders, as ``ansm demo`` does).
Everything is held in memory as uint8/bool (a 400-image pool at 128x128 is 20 MB; CASIA v1's 626 forged train
images, attacked, with originals and masks, ~0.5 GB). Real attack sets mix sizes (CASIA v1 has landscape and
portrait photos): their triples are then kept as per-image lists and cropped one by one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ansm.data.io import read_image, read_mask
from ansm.data.synth import SyntheticForgeries
from ansm.errors import DataError

if TYPE_CHECKING:
    from ansm.data.real import RealTrainingSet


@dataclass
class Pool:
    """Images (N x 3 x H x W uint8), masks (N x 1 x H x W bool) and their ids; all images the same size."""

    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


# N x C x H x W when every image has one size, else a list of C x H x W tensors (native-resolution real photos)
Images = torch.Tensor | list[torch.Tensor]


@dataclass
class AdversarialPool:
    """Aligned originals, adversarial images and masks: uint8 / bool, stacked like :class:`Pool` when all images
    have one size, else per-image lists (then train with a crop)."""

    originals: Images
    adversarial: Images
    masks: Images
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def take(self, idx: torch.Tensor) -> list[Images]:
        """``[originals, adversarial, masks]`` of the images ``idx`` (stacked, or lists for mixed sizes)."""
        if isinstance(self.originals, torch.Tensor):
            return [self.originals[idx], self.adversarial[idx], self.masks[idx]]
        rows = idx.tolist()
        return [[t[i] for i in rows] for t in (self.originals, self.adversarial, self.masks)]


def _u8(image: torch.Tensor) -> torch.Tensor:
    return image.clamp(0, 1).mul(255).round().to(torch.uint8)


def render_clean_pool(n: int, seed: int, size: int, source: str | None = None,
                      on_item: Callable[[], None] | None = None) -> Pool:
    """Render ``n`` training-split synthetic forgeries (photos disjoint from the test split)."""
    ds = SyntheticForgeries(n, seed=seed, split="train", size=size, source=source)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    masks = torch.empty(n, 1, size, size, dtype=torch.bool)
    names = []
    for i in range(n):
        item = ds[i]
        images[i], masks[i] = _u8(item["image"]), item["mask"] > 0.5
        names.append(str(item["name"]))
        if on_item:
            on_item()
    return Pool(images, masks, names)


def _manifest_rows(folder: Path) -> list[dict]:
    from ansm.utils import read_json, read_jsonl

    manifest = folder / "manifest.jsonl"
    if manifest.is_file():
        rows = [(f"{manifest}:{i}", row) for i, row in read_jsonl(manifest, DataError, "attack-set manifest")]
    else:
        records = sorted((folder / "records").glob("*.json"))
        if not records:
            raise DataError(f"{folder}: not an attack set (no manifest.jsonl or records/; build one with `ansm attack`)")
        rows = [(str(p), read_json(p, DataError, "attack-set record")) for p in records]
    for where, row in rows:  # a hand-edited or truncated set: one line naming the row, not a KeyError later
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("image"), str)
                and isinstance(row.get("mask"), (str, type(None)))):
            raise DataError(f"{where}: not an attack-set record (needs string id and image, mask a string or null); "
                            "rebuild the set with `ansm attack`")
    return [row for _, row in rows]


def real_clean_pool(path: str | os.PathLike, split: str = "train", on_item: Callable[[], None] | None = None) -> RealTrainingSet:
    """The clean pool of a real dataset's split: its images at native resolution, cut into random crops per step
    (:class:`ansm.data.real.RealTrainingSet`, 3 forged crops in 4, the rest authentic).

    Only flips augment them (the trainer adds quarter turns): ANSM learns to remove attack noise from the photos
    the localizer sees, and rescaling, JPEG or blur would hand it clean images no attacker starts from."""
    from ansm.data.real import RealAugment, RealTrainingSet

    return RealTrainingSet(path, split=split, augment=RealAugment(flip=0.5, rescale=0, jpeg=0, blur=0, noise=0),
                           on_item=on_item)


def load_adversarial_pool(folders: Sequence[str | os.PathLike], clean: Pool | None = None) -> AdversarialPool:
    """Read ``(x_o, x_a, m)`` triples from attack-set folders (stacked when they share one size, else lists)."""
    by_name = {name: i for i, name in enumerate(clean.names)} if clean is not None else {}
    originals, adversarial, masks, names = [], [], [], []
    for folder in map(Path, folders):
        for row in _manifest_rows(folder):
            x_a = read_image(folder / row["image"])
            m = read_mask(folder / row["mask"]) if row.get("mask") else torch.zeros(1, *x_a.shape[-2:])
            src = row.get("source_image")
            if src and Path(src).is_file():
                x_o = _u8(read_image(src))
            elif row["id"] in by_name:
                x_o = clean.images[by_name[row["id"]]]
            else:
                raise DataError(f"{folder}: cannot find the original of {row['id']!r} (no readable source_image, and "
                                "not in the synthetic training pool; build the set from the same pool or from files)")
            if x_o.shape != x_a.shape:
                raise DataError(f"{folder}/{row['image']}: adversarial image {tuple(x_a.shape)} and original "
                                f"{tuple(x_o.shape)} differ in size")
            # ids alone do not identify a synthetic sample across seeds: check the pair is the one measured
            linf = row.get("linf")
            if linf is not None and float((_u8(x_a).float() - x_o.float()).abs().max()) > linf * 255 + 1.01:
                raise DataError(f"{folder}: the original of {row['id']!r} does not match its adversarial image "
                                f"(L-inf above the recorded {linf:.4f}); was the set built from another pool or seed?")
            originals.append(x_o)
            adversarial.append(_u8(x_a))
            masks.append(m > 0.5)
            names.append(str(row["id"]))
    if not names:
        raise DataError(f"attack sets {', '.join(map(str, folders))} hold no images")
    if len({tuple(t.shape) for t in originals}) > 1:
        return AdversarialPool(originals, adversarial, masks, names)
    return AdversarialPool(torch.stack(originals), torch.stack(adversarial), torch.stack(masks), names)


def random_crops(tensors: Sequence[Images], crop: int | None, generator: torch.Generator) -> list[torch.Tensor]:
    """The same random ``crop`` x ``crop`` window per image across ``tensors`` (N x C x H x W each, or per-image
    lists of C x H x W tensors whose sizes may differ from image to image)."""
    if isinstance(tensors[0], list):
        return _random_crops_per_image(tensors, crop, generator)
    if crop is None:
        return list(tensors)
    n, _, h, w = tensors[0].shape
    if crop > min(h, w):
        raise DataError(f"crop {crop} is larger than the training images ({h}x{w})")
    ys = torch.randint(h - crop + 1, (n,), generator=generator)
    xs = torch.randint(w - crop + 1, (n,), generator=generator)
    return [torch.stack([t[i, :, y:y + crop, x:x + crop] for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))])
            for t in tensors]


def _random_crops_per_image(tensors: Sequence[list[torch.Tensor]], crop: int | None,
                            generator: torch.Generator) -> list[torch.Tensor]:
    if crop is None:
        if len({tuple(t.shape) for t in tensors[0]}) > 1:
            raise DataError("training images differ in size: set a crop (e.g. --crop 256)")
        return [torch.stack(list(t)) for t in tensors]
    out: list[list[torch.Tensor]] = [[] for _ in tensors]
    for i, first in enumerate(tensors[0]):
        h, w = first.shape[-2:]
        if crop > min(h, w):
            raise DataError(f"crop {crop} is larger than a training image ({h}x{w})")
        y = int(torch.randint(h - crop + 1, (1,), generator=generator))
        x = int(torch.randint(w - crop + 1, (1,), generator=generator))
        for t, acc in zip(tensors, out):
            acc.append(t[i][:, y:y + crop, x:x + crop])
    return [torch.stack(acc) for acc in out]


def random_flip_rot90(tensors: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """One random horizontal flip and quarter turn, the same for every tensor (N x C x H x W each): an image, its
    attacked copy and its mask stay aligned, and a small pool yields 8 layouts of each image."""
    k = int(torch.randint(4, (1,), generator=generator))
    flip = torch.rand(1, generator=generator).item() < 0.5
    return [(t.flip(-1) if flip else t).rot90(k, dims=(-2, -1)) for t in tensors]
