"""Bring your own localizer: wrap a model ansm has never seen, train it briefly, attack it, score it.

Run:  .venv/bin/python examples/byo_model.py          (about 30 s on a 2-core CPU)

1. ``TinyLocalizer`` is *your* model: an ordinary ``nn.Module`` that takes ImageNet-normalised images and
   returns tampering **probabilities** at half resolution, like many published localizers do.
2. :func:`ansm.models.adapters.wrap_module` turns it into an ansm localizer: [0, 1] RGB in, logits at input
   resolution out, normalisation inside, layer names for feature taps checked up front.
3. A few hundred steps on ansm's synthetic forgeries (the adapter's logits go straight into BCE-with-logits).
4. PGD (L-inf, 8/255) from :mod:`ansm.attacks` attacks the wrapped model white-box; F1@0.5 is measured on clean
   and attacked test images with :mod:`ansm.eval.metrics`.

The same model can be used from the command line through a factory, e.g.
``ansm evaluate --model examples/byo_model.py:build ...`` (see docs/byo-localizer.md).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ansm.attacks import create_attack
from ansm.data.synth import SyntheticForgeries
from ansm.eval.metrics import LocalizationMeter
from ansm.models import FeatureTaps
from ansm.models.adapters import IMAGENET_MEAN, IMAGENET_STD, ModuleLocalizer, wrap_module
from ansm.utils import seed_everything


class TinyLocalizer(nn.Module):
    """A user's model: normalised image -> probabilities at H/2 x W/2 (it knows nothing about ansm).

    A high-pass first layer exposes noise traces; a global-mean branch lets each position compare itself
    with the whole image.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GroupNorm(4, width), nn.ReLU())
        self.encoder = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(4, 2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2), nn.GroupNorm(4, 2 * width), nn.ReLU(),
        )
        self.fuse = nn.Sequential(nn.Conv2d(4 * width, 2 * width, 1), nn.ReLU(), nn.Conv2d(2 * width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(self.stem(x))
        g = f.mean(dim=(2, 3), keepdim=True).expand_as(f)
        return torch.sigmoid(self.fuse(torch.cat([f, f - g], dim=1)))


def build(weights: str | None = None) -> ModuleLocalizer:
    """Factory for ``--model examples/byo_model.py:build [--weights my.pth]``."""
    net = TinyLocalizer()
    if weights is not None:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return wrap_module(net, "probs", mean=IMAGENET_MEAN, std=IMAGENET_STD, multiple=2,
                       taps=["stem", "encoder.2"])


def batches(ds: SyntheticForgeries, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    items = [ds[i] for i in range(len(ds))]
    return [
        (torch.stack([it["image"] for it in items[i : i + batch_size]]),
         torch.stack([it["mask"] for it in items[i : i + batch_size]]))
        for i in range(0, len(items), batch_size)
    ]


def train(model: ModuleLocalizer, data: list[tuple[torch.Tensor, torch.Tensor]], steps: int) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()
    for step in range(steps):
        images, masks = data[step % len(data)]
        logits = model(images)  # logits at input resolution, whatever the model's own output was
        loss = F.binary_cross_entropy_with_logits(logits, masks, pos_weight=torch.tensor(3.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {loss.item():.3f}")
    model.eval()


def score(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]], attack=None) -> dict[str, float]:
    meter = LocalizationMeter()
    for images, masks in data:
        if attack is not None:
            images = attack(images, masks)
        with torch.no_grad():
            meter.update(torch.sigmoid(model(images)), masks)
    return meter.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    seed_everything(args.seed)
    t0 = time.time()

    model = build()
    print(model.extra_repr())
    train_data = batches(SyntheticForgeries(256, seed=args.seed, split="train", size=args.size), 16)
    test_data = batches(SyntheticForgeries(48, seed=args.seed, split="test", size=args.size), 16)

    x = test_data[0][0][:2]
    with FeatureTaps(model, model.default_taps) as taps:
        model(x)
    print("taps:", {k: tuple(v.shape) for k, v in taps.features.items()})

    print(f"training {args.steps} steps on synthetic forgeries ({args.size}x{args.size})")
    train(model, train_data, args.steps)

    attack = create_attack("pgd", model, eps="8/255", steps=10)  # white-box, through the adapter
    clean = score(model, test_data)
    attacked = score(model, test_data, attack)
    print(f"F1@0.5 over forged test images: clean {clean['f1']:.3f} -> PGD-10 8/255 {attacked['f1']:.3f}   "
          f"(pixel AUC {clean['pixel_auc']:.3f} -> {attacked['pixel_auc']:.3f})")
    print(f"done in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
