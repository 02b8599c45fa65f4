"""Image and mask files <-> tensors. The only place uint8 and file formats appear.

Inside the library an image is float32 RGB in [0, 1], shape 3xHxW, and a mask is float32 {0, 1},
shape 1xHxW (1 = tampered). Files are read as the user meant them:

* **Orientation**: the EXIF orientation tag is applied to images and masks alike (``ImageOps.exif_transpose``),
  so a phone JPEG and a mask drawn on it as displayed stay aligned; :func:`image_size` reports the displayed size.
* **Sample scale** (:func:`pil_to_array`): 8-bit modes are /255; 16-bit modes (``I;16``, ``I;16B``, ``I;16L``,
  and ``I`` holding 16-bit PNG/TIFF samples) are /65535, by their bit depth, never by the data's maximum (a dark
  16-bit photo stays dark); float images (``F``, e.g. float32 TIFF) with values in [0, 1] are taken as they are,
  float images with a maximum above 1 are taken as 0..255. 32-bit integer images are refused (no scale to trust).
* **Masks** (:func:`mask_from_pil`): an integer mask whose every value is 0 or 1 is a 0/1 binary mask (1 =
  tampered), whatever its mode; otherwise a pixel is tampered above half of its scale: > 127 for ordinary 0/255
  8-bit masks (L, LA, RGB, RGBA, P; any channel of a colour mask), > 32767 for 16-bit masks (a 16-bit mask holding
  only 0 and 255 is an 8-bit mask stored in 16 bits), > 0.5 for float masks in [0, 1] (> 127 above 1).
* **Refusals**: a missing, truncated or corrupt file, or one over Pillow's decompression-bomb pixel limit, is one
  :class:`~ansm.errors.DataError` line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ansm.errors import DataError
from ansm.utils import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
# Single-channel modes Pillow's RGB conversion would clip (16-bit to white) or truncate (float to 0/1).
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ORIENTATION = 0x0112  # EXIF tag; values 5-8 swap width and height
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


def _bomb_message(p: object, exc: Exception) -> str:
    """Why the file is refused and what the user can do: the limit guards against decompression bombs, and
    neither tiling nor --max-side help because both act after the pixels are decoded."""
    limit = Image.MAX_IMAGE_PIXELS
    limit_text = f"{2 * limit / 1e6:.0f} MP" if limit else "none"
    return (f"{p}: over Pillow's pixel limit of {limit_text} ({str(exc).rstrip('.')}); ansm tiles large images "
            "(--tile) and --max-side downscales them, but only after decoding: downscale the file with another "
            "tool, or, if you trust it, raise PIL.Image.MAX_IMAGE_PIXELS when calling ansm from Python")


def _open(path: str | os.PathLike) -> Image.Image:
    """Decode a file with its EXIF orientation applied; every failure is one DataError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        img = Image.open(p)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # keeps mode, format and TIFF tags (bit depth) of img
    except Image.DecompressionBombError as exc:
        raise DataError(_bomb_message(p, exc)) from None
    except _READ_ERRORS as exc:
        raise DataError(f"{p}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    return img


def image_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """3xHxW (or 1xHxW) float in [0, 1] -> HxWxC uint8, rounding to nearest (what a PNG stores)."""
    arr = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return arr.transpose(1, 2, 0)


def bit_depth(img: Image.Image, name: object = "image") -> int:
    """Bits per sample of an integer single-channel image: 16 for ``I;16*``; for mode ``I`` (a 32-bit container)
    what the file states: a PNG sample is at most 16 bits, a TIFF says so in BitsPerSample. 32-bit or unknown
    depths are refused rather than guessed from the data (a guess makes dark images bright)."""
    if img.mode.startswith("I;16"):
        return 16
    if img.mode != "I":
        return 8
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else (16 if img.format == "PNG" else None)
    if isinstance(bits, tuple):
        bits = max(bits) if bits else None
    if bits in (8, 16):
        return int(bits)
    raise DataError(f"{name}: {bits or 'unknown'}-bit integer samples (mode I); ansm reads 8- and 16-bit integer "
                    "and float images: convert it to a 16-bit PNG or TIFF")


def high_depth_to_unit(img: Image.Image, name: object = "image") -> np.ndarray:
    """A 16-bit or float single-channel image (:data:`HIGH_DEPTH_MODES`) -> HxW float32 in [0, 1].

    Integers are divided by their bit depth's maximum (:func:`bit_depth`). Float images in [0, 1] are kept as
    they are (a float32 TIFF from a pipeline that speaks [0, 1]); a float image with a value above 1 is taken
    as 0..255, the other common convention. Non-finite values are refused."""
    arr = np.asarray(img, dtype=np.float32)
    if img.mode == "F":
        if not np.isfinite(arr).all():
            raise DataError(f"{name}: float image holds NaN or infinite values")
        if arr.size and arr.max() > 1.0:
            arr = arr / 255.0
    else:
        arr = arr / float(2 ** bit_depth(img, name) - 1)
    return np.clip(arr, 0.0, 1.0)


def pil_to_tensor(img: Image.Image, name: object = "image") -> torch.Tensor:
    """A decoded Pillow image (orientation already applied) -> 3xHxW float32 RGB in [0, 1], alpha dropped,
    grey expanded, 16-bit and float greyscale scaled as the module docstring states. ``name`` is for errors."""
    if img.mode in HIGH_DEPTH_MODES:
        return torch.from_numpy(np.repeat(high_depth_to_unit(img, name)[None], 3, axis=0))
    return image_to_tensor(np.asarray(img.convert("RGB")))


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read any Pillow-readable image as 3xHxW float32 RGB in [0, 1] (see the module docstring)."""
    return pil_to_tensor(_open(path), path)


def _binary_or(arr: np.ndarray, threshold: float) -> np.ndarray:
    """A 0/1 mask is binary (1 = tampered); anything else is tampered above ``threshold``."""
    if arr.size and arr.max() <= 1 and arr.min() >= 0:
        return arr > 0
    return arr > threshold


def mask_from_pil(img: Image.Image, name: object = "mask") -> np.ndarray:
    """Binarise a mask of any mode (HxW bool, True = tampered), by the rules of the module docstring.

    Colour masks count a pixel as tampered when any channel is tampered (CASIA/IMD2020 ship white-on-black RGB
    and RGBA masks); alpha is not the mask. Only integer masks can be 0/1 masks: a float mask in [0, 1] is a
    probability map, thresholded at 0.5."""
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise DataError(f"{name}: float mask holds NaN or infinite values")
        return arr > (0.5 if arr.size == 0 or arr.max() <= 1.0 else 127)
    if img.mode in HIGH_DEPTH_MODES:
        arr = np.asarray(img, dtype=np.int64)
        if arr.size and np.isin(arr, (0, 255)).all() and (arr == 255).any():
            return arr > 127  # an 8-bit 0/255 mask stored in 16 bits (Pillow writes integer arrays so)
        return _binary_or(arr, (2 ** bit_depth(img, name) - 1) / 2)
    if img.mode == "1":
        return np.asarray(img, dtype=bool)
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert(img.mode[:-1])  # alpha is not the mask
    if img.mode != "L" and img.mode != "RGB":
        img = img.convert("RGB")  # P (palette colours, not indices), CMYK, YCbCr, ...
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return _binary_or(arr, 127)


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """Read a ground-truth mask as 1xHxW float32 {0, 1}, EXIF orientation applied like its image's."""
    return torch.from_numpy(mask_from_pil(_open(path), path)[None].astype(np.float32))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied, as :func:`read_image` does), without decoding the
    pixels. The same one-line errors as :func:`read_image`, the pixel limit included."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with Image.open(p) as img:
            w, h = img.size
            orientation = img.getexif().get(_ORIENTATION, 1)
    except Image.DecompressionBombError as exc:
        raise DataError(_bomb_message(p, exc)) from None
    except _READ_ERRORS as exc:
        raise DataError(f"{p}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


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
