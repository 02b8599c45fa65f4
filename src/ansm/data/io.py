"""Image and mask files <-> tensors. The only place uint8 and file formats appear.

Inside the library an image is float32 RGB in [0, 1], shape 3xHxW, and a mask is float32 {0, 1},
shape 1xHxW (1 = tampered). Masks are binarised at > 127 on the 8-bit scale whatever their mode
(L, LA, RGB, RGBA, P, 16-bit I;16/I, float F): see :func:`mask_from_pil`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ansm.errors import DataError
from ansm.utils import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def _open(path: str | os.PathLike) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{p}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    return img


def image_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """3xHxW (or 1xHxW) float in [0, 1] -> HxWxC uint8, rounding to nearest (what a PNG stores)."""
    arr = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return arr.transpose(1, 2, 0)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read any Pillow-readable image as 3xHxW float32 RGB in [0, 1] (alpha dropped, grey expanded)."""
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / (65535.0 if arr.max() > 255 else 255.0)
        arr = np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=2)
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float()
    return image_to_tensor(np.asarray(img.convert("RGB")))


def mask_from_pil(img: Image.Image) -> np.ndarray:
    """Binarise a mask of any mode: a pixel is tampered when its 8-bit level is > 127.

    Colour masks count a pixel as tampered when any channel is > 127 (CASIA/IMD2020 ship white-on-black
    RGB and RGBA masks). 16-bit masks are rescaled to 8 bits first; float masks use > 0.5.
    """
    if img.mode in ("I;16", "I;16B", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if arr.max() > 255 else 255.0
        return arr * (255.0 / scale) > 127
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        return arr > (0.5 if arr.max() <= 1.0 else 127)
    if img.mode == "1":
        return np.asarray(img, dtype=bool)
    if img.mode in ("RGBA", "LA"):
        img = img.convert(img.mode[:-1])  # alpha is not the mask
    if img.mode == "P":
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.ndim == 3:
        return (arr > 127).any(axis=2)
    return arr > 127


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """Read a ground-truth mask as 1xHxW float32 {0, 1}."""
    return torch.from_numpy(mask_from_pil(_open(path))[None].astype(np.float32))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) without decoding the pixels."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{p}: not a readable image ({exc})") from None


def check_same_size(image: torch.Tensor, mask: torch.Tensor, image_path: object, mask_path: object) -> None:
    if image.shape[-2:] != mask.shape[-2:]:
        ih, iw = image.shape[-2:]
        mh, mw = mask.shape[-2:]
        raise DataError(
            f"mask {mask_path} is {mw}x{mh} but image {image_path} is {iw}x{ih} "
            "(pass --resize-masks to resize masks with nearest neighbour)"
        )


def write_png(path: str | os.PathLike, image: torch.Tensor) -> None:
    """Write a 3xHxW image or 1xHxW mask losslessly as PNG, atomically."""
    arr = tensor_to_uint8(image)
    if arr.shape[2] == 1:
        arr = arr[..., 0]
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def write_mask(path: str | os.PathLike, mask: torch.Tensor) -> None:
    """Write a {0,1} (or probability) 1xHxW mask as a 0/255 8-bit PNG, atomically."""
    write_png(path, (mask > 0.5).float())
