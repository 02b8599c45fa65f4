"""What the ``val`` probes of issue 14 share (renoise_probe, at_scale_probe, erasability): the target localizer
they all start from, the ``val`` images, and the command line that prints a table and, with ``--docs``, writes it
into docs/benchmark.md.

The target is the quick preset's localizer trained by ``experiments/robust_val.py`` (500 clean steps), so every
probe's bare row is the same model the robust-recipe tables attack.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

if TYPE_CHECKING:
    from ansm.models.train import TrainLocalizerConfig

TARGET = REPO / "runs" / "experiments" / "robust-val" / "plain" / "models" / "target" / "localizer"


def require_target() -> None:
    if not TARGET.with_suffix(".json").is_file():
        sys.exit(f"error: no target localizer at {TARGET}: run `python experiments/robust_val.py --only plain` first")


def val_batches(n: int = 32, batch_size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` synthetic ``val`` images (64x64; photos and scenes of neither train nor test), as
    (images, masks) batches."""
    from ansm.data.datasets import open_data
    from ansm.eval.evaluate import same_size_batches

    data = open_data(f"synthetic:{n}:val", size=64, seed=0)
    return [(torch.stack([it["image"] for it in b]), torch.stack([it["mask"] for it in b]))
            for b in same_size_batches(data, batch_size)]


def frozen(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def fine_tune(localizer: nn.Module, cfg: TrainLocalizerConfig, pool_seed: int,
              transform: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> nn.Module:
    """Train ``localizer`` ``cfg.steps`` more steps the way ``ansm train-localizer`` does (its augmented batches from
    the pool rendered with ``pool_seed``, its loss and lr schedule, AdamW, gradients clipped at 5), each batch passed
    through ``transform(x, m, step)`` first: the one knob the probes differ in. Returns it in eval mode."""
    from ansm.models.train import augmented_batch, lr_at, render_pool, segmentation_loss

    images, masks = render_pool(cfg.pool, pool_seed, cfg.size, cfg.source)
    opt = torch.optim.AdamW(localizer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed)
    localizer.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, m = augmented_batch(images, masks, step, cfg)
        loss = segmentation_loss(localizer(transform(x, m, step)), m, cfg.dice_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(localizer.parameters(), 5.0)
        opt.step()
    return localizer.eval()


def run(doc: str | None, section: str, measure: Callable[[], dict], table: Callable[[dict], str]) -> None:
    """``python <probe>.py [--docs]``: measure (resumable), print the table, and with ``--docs`` write it into the
    ``<!-- ansm:<section> -->`` block of docs/benchmark.md."""
    from ansm.eval.readme import update_readme_section

    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("--docs", action="store_true", help="write the table into docs/benchmark.md")
    args = ap.parse_args()
    text = table(measure())
    print(text)
    if args.docs:
        update_readme_section(section, text, REPO / "docs" / "benchmark.md")


def forged_f1(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, m: torch.Tensor) -> list[float]:
    """F1@0.5 of each forged image of the batch (authentic images have no F1)."""
    from ansm.eval.metrics import f1_score

    with torch.no_grad():
        return f1_score(torch.sigmoid(model(x)), m)[m.flatten(1).amax(1) > 0.5].tolist()


def mean_f1(model: Callable[[torch.Tensor], torch.Tensor], batches: list) -> tuple[float, int]:
    """Clean F1 over the forged images, and how many there are."""
    scores = [v for x, m in batches for v in forged_f1(model, x, m)]
    return sum(scores) / len(scores), len(scores)


def white_box_f1(model: nn.Module, batches: list, eps: float, steps: int, eight_bit: bool = False) -> float:
    """Mean F1 over the forged images under the white-box PGD (``steps``, untargeted and hide, one restart each,
    the worst per image; ``ansm.benchmark.threats.adaptive_attack``) at ``eps``/255. ``eight_bit``: the attacked
    image rounded to 8 bits first, as a forger's published PNG is (is the number owed to float precision?)."""
    from ansm.benchmark.threats import adaptive_attack
    from ansm.utils import seeded_generator

    scores = []
    for k, (x, m) in enumerate(batches):
        res = adaptive_attack(model, model, x, m, eps / 255, steps, 1, ["untargeted", "hide"], seeded_generator(0, k))
        scores += forged_f1(model, (res.worst * 255).round() / 255 if eight_bit else res.worst, m)
    return sum(scores) / len(scores)
