"""Training batches from a real forgery dataset (e.g. ``shared/real/casia1``, split ``train``).

Images stay at native resolution in memory as uint8 (CASIA v1's 626 + 539 train images take ~330 MB), and every
batch is cut from them by random crops, so no resize ever blurs the traces a localizer learns from unless the
augmentation asks for it. The augmentations are the ones the field trains with (MVSS-Net, CAT-Net, IMDLBenCo's
defaults): flips, a random rescale, JPEG re-compression, Gaussian blur and Gaussian noise, each with its own
probability. JPEG runs through Pillow on the crop, the way a saved and re-shared photo is re-compressed.

Deterministic per ``(seed, step)``: the batch of step ``t`` is drawn from a generator seeded with those, so a
resumed run takes the same batches an uninterrupted run would.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ansm.data.datasets import open_dataset
from ansm.errors import DataError
from ansm.utils import seeded_generator


@dataclass(frozen=True)
class RealAugment:
    """Probabilities and ranges of the training augmentations (all drawn per crop)."""

    flip: float = 0.5
    rescale: float = 0.2  # rescale the whole image by a factor in [0.7, 1.3] before cropping
    jpeg: float = 0.3  # re-compress the crop at quality in [60, 95]
    blur: float = 0.1  # Gaussian blur, sigma in [0.3, 1.2]
    noise: float = 0.2  # Gaussian noise, std in [0, 3/255], re-quantised to 8 bits


class RealTrainingSet:
    """A dataset split held in memory as uint8 images and bool masks, cut into augmented crops on demand.

    Args:
        path: dataset folder (any layout :func:`~ansm.data.datasets.open_dataset` reads).
        split: split of its ``splits.json`` (required: training on a folder without one would leave nothing
            held out for validation).
        forged_fraction: share of crops drawn from forged images; the rest come from authentic ones (when the
            split has any), which teaches the localizer to leave pristine photos empty.
    """

    def __init__(self, path: str | os.PathLike, split: str = "train", forged_fraction: float = 0.75,
                 augment: RealAugment | None = None, on_item: Callable[[], None] | None = None) -> None:
        ds = open_dataset(path, split=split)
        self.forged: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.authentic: list[torch.Tensor] = []
        for i in range(len(ds)):
            item = ds[i]
            img = item["image"].mul(255).round().to(torch.uint8)
            if item["label"]:
                self.forged.append((img, item["mask"] > 0.5))
            else:
                self.authentic.append(img)
            if on_item:
                on_item()
        if not self.forged:
            raise DataError(f"{path}: split {split!r} holds no forged image to train on")
        self.forged_fraction = forged_fraction if self.authentic else 1.0
        self.augment = augment or RealAugment()

    def __len__(self) -> int:
        return len(self.forged) + len(self.authentic)

    def batch(self, batch_size: int, crop: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images B x 3 x crop x crop in [0, 1] and masks B x 1 x crop x crop for step ``step``."""
        g = seeded_generator(seed, step, 104_729)
        xs, ms = [], []
        for _ in range(batch_size):
            if torch.rand(1, generator=g).item() < self.forged_fraction:
                img, mask = self.forged[int(torch.randint(len(self.forged), (1,), generator=g))]
            else:
                img = self.authentic[int(torch.randint(len(self.authentic), (1,), generator=g))]
                mask = torch.zeros(1, *img.shape[-2:], dtype=torch.bool)
            x, m = self._augmented_crop(img, mask, crop, g)
            xs.append(x)
            ms.append(m)
        return torch.stack(xs), torch.stack(ms)

    def _augmented_crop(self, img: torch.Tensor, mask: torch.Tensor, crop: int,
                        g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.augment
        x, m = img.float().div(255), mask.float()

        def draw() -> float:
            return torch.rand(1, generator=g).item()

        if draw() < a.rescale:
            s = 0.7 + 0.6 * draw()
            size = (max(8, round(x.shape[-2] * s)), max(8, round(x.shape[-1] * s)))
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
            m = (F.interpolate(m[None], size=size, mode="nearest")[0] > 0.5).float()
        # crop (zero-pad images smaller than the crop); offsets on the 8x8 JPEG grid keep its block traces aligned
        h, w = x.shape[-2:]
        if h < crop or w < crop:
            x = F.pad(x, (0, max(0, crop - w), 0, max(0, crop - h)))
            m = F.pad(m, (0, max(0, crop - w), 0, max(0, crop - h)))
            h, w = x.shape[-2:]
        y0 = int(torch.randint((h - crop) // 8 + 1, (1,), generator=g)) * 8
        x0 = int(torch.randint((w - crop) // 8 + 1, (1,), generator=g)) * 8
        x, m = x[:, y0:y0 + crop, x0:x0 + crop], m[:, y0:y0 + crop, x0:x0 + crop]
        if draw() < a.flip:
            x, m = x.flip(-1), m.flip(-1)
        if draw() < a.blur:
            x = _gaussian_blur(x, 0.3 + 0.9 * draw())
        if draw() < a.jpeg:
            x = _jpeg(x, int(60 + 35 * draw()))
        if draw() < a.noise:
            std = draw() * 3 / 255
            x = (x + torch.randn(x.shape, generator=g) * std).mul(255).round().clamp(0, 255).div(255)
        return x.contiguous(), m.contiguous()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, round(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.conv2d(F.pad(x[None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return y[0].clamp(0, 1)  # a weighted mean of ones can round to 1.0000001


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    arr = x.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()
