"""Run a localizer over a dataset and measure it: the one place predictions become numbers.

Items may differ in size (real datasets mix 384x256 JPEGs with 12 MP TIFFs): consecutive items of the same
size are batched together, others run alone, and every prediction is made at the image's own resolution.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn

from ansm.eval.metrics import LocalizationMeter

Transform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def same_size_batches(items: Iterable[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Group consecutive dataset items of equal image size into lists of at most ``batch_size``."""
    batch: list[dict[str, Any]] = []
    for item in items:
        if batch and (len(batch) == batch_size or batch[0]["image"].shape != item["image"].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


@torch.no_grad()
def predict(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Tampering probabilities B x 1 x H x W for images in [0, 1]."""
    return torch.sigmoid(model(images))


def evaluate(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], dataset: Iterable[dict[str, Any]], *,
             batch_size: int = 16, device: torch.device | str = "cpu", transform: Transform | None = None,
             on_item: Callable[[int], None] | None = None) -> dict[str, float]:
    """Localization metrics of ``model`` on ``dataset`` (see :class:`~ansm.eval.metrics.LocalizationMeter`).

    Args:
        transform: optional ``(images, masks) -> images`` applied before the model (an attack, a defense, or
            both); it runs with gradients enabled so attacks can use them.
        on_item: called with the number of items done after each batch (progress bars).
    """
    meter = LocalizationMeter()
    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    try:
        for batch in same_size_batches(dataset, batch_size):
            images = torch.stack([it["image"] for it in batch]).to(device)
            masks = torch.stack([it["mask"] for it in batch]).to(device)
            if transform is not None:
                with torch.enable_grad():
                    images = transform(images, masks).detach()
            meter.update(predict(model, images), masks, [str(it["name"]) for it in batch])
            if on_item:
                on_item(len(batch))
    finally:
        if was_training:
            model.train()
    return meter.compute()
