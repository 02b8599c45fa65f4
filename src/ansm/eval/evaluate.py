"""Run a localizer over a dataset and measure it: the one place predictions become numbers.

Items may differ in size (real datasets mix 384x256 JPEGs with 12 MP TIFFs): consecutive items of the same
size are batched together, others run alone, and every prediction is made at the image's own resolution.
Large images (over ``ansm.tiling.AUTO_TILE_PIXELS`` by default, or any side over ``tile``) run alone and in
overlapping tiles (:mod:`ansm.tiling`), so memory is bounded by the tile rather than the image.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn

from ansm.eval.metrics import LocalizationMeter
from ansm.tiling import model_align, resolve_tile, tiled_apply

Transform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def same_size_batches(items: Iterable[dict[str, Any]], batch_size: int,
                      alone: Callable[[dict[str, Any]], bool] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Group consecutive dataset items of equal image size into lists of at most ``batch_size``.

    Items for which ``alone(item)`` is true (large images) come in lists of one, so a batch never holds
    several large images at once."""
    batch: list[dict[str, Any]] = []
    for item in items:
        single = alone is not None and alone(item)
        if batch and (single or len(batch) == batch_size or batch[0]["image"].shape != item["image"].shape):
            yield batch
            batch = []
        batch.append(item)
        if single:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def predict(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
            tile: int | None = 0) -> torch.Tensor:
    """Tampering probabilities B x 1 x H x W for images in [0, 1].

    ``tile`` as in :func:`ansm.tiling.resolve_tile` (``0``: whole images, ``None``: automatic); tiled images
    run one at a time so the model's memory is that of one tile."""
    t = resolve_tile(tile, *images.shape[-2:])
    if t is None:
        return torch.sigmoid(model(images))
    align = model_align(model)
    return torch.cat([torch.sigmoid(tiled_apply(model, images[i:i + 1], tile=t, align=align))
                      for i in range(images.shape[0])])


def evaluate(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], dataset: Iterable[dict[str, Any]], *,
             batch_size: int = 16, device: torch.device | str = "cpu", transform: Transform | None = None,
             on_item: Callable[[int], None] | None = None, tile: int | None = None) -> dict[str, float]:
    """Localization metrics of ``model`` on ``dataset`` (see :class:`~ansm.eval.metrics.LocalizationMeter`).

    Args:
        transform: optional ``(images, masks) -> images`` applied before the model (an attack, a defense, or
            both); it runs with gradients enabled so attacks can use them.
        on_item: called with the number of items done after each batch (progress bars).
        tile: tile side for large images (:func:`ansm.tiling.resolve_tile`): ``None`` tiles images over
            ``AUTO_TILE_PIXELS`` automatically, ``0`` never tiles, ``N`` tiles images with a side over ``N``.
            The transform, when given, sees the whole image.
    """
    meter = LocalizationMeter()
    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    try:
        def alone(item: dict[str, Any]) -> bool:
            return resolve_tile(tile, *item["image"].shape[-2:]) is not None

        for batch in same_size_batches(dataset, batch_size, alone):
            images = torch.stack([it["image"] for it in batch]).to(device)
            masks = torch.stack([it["mask"] for it in batch]).to(device)
            if transform is not None:
                with torch.enable_grad():
                    images = transform(images, masks).detach()
            meter.update(predict(model, images, tile), masks, [str(it["name"]) for it in batch])
            if on_item:
                on_item(len(batch))
    finally:
        if was_training:
            model.train()
    return meter.compute()
