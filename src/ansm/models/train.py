"""Train a localizer on synthetic forgeries (nanoGPT-style: one config dataclass, one readable loop).

The same loop does **PGD adversarial fine-tuning** (Madry et al., the classic model-side defense the benchmark
compares ANSM with): start from a trained checkpoint (``init``) and replace a share ``adv_fraction`` of every
batch by PGD examples crafted against the current weights (``adv_eps``, ``adv_steps``). Keeping part of the
batch clean is what keeps clean F1 from collapsing on a small model. With ``trades_beta`` > 0 the loop does
**TRADES** instead (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML
2019): the mask is learned on clean images only, and a KL term pulls each prediction under attack towards the
clean one.

Deterministic per seed: the training pool is rendered from ``(seed, index)``; the batch of step ``t`` is drawn
from a generator seeded with ``(seed, t)``; so a run resumed from its last checkpoint takes exactly the
steps an uninterrupted run would. The checkpoint ``<out>/train_state`` is rewritten atomically every
``ckpt_every`` steps; the final model is ``<out>/localizer.{safetensors,json}``.

On a GPU: ``device="cuda"`` (or ``auto``) runs there, with mixed precision (fp16 autocast and a gradient scaler)
unless ``amp`` is off; under ``torchrun`` every rank takes its slice of each global batch, the model is wrapped in
``DistributedDataParallel`` (gradients averaged) and rank 0 validates and writes the files. The batches do not
depend on the number of processes, so one CPU process and N GPUs train on the same examples, adversarial ones
included (a PGD random start is drawn from the image's place in the global batch).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ansm.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_state_dict_strict,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from ansm.data.synth import SyntheticForgeries
from ansm.errors import CheckpointError, ConfigError
from ansm.eval.evaluate import evaluate
from ansm.models.registry import create_localizer, save_localizer
from ansm.utils import environments_so_far, mixed_precision, run_environment, seeded_generator
from ansm.validate import check_fields

if TYPE_CHECKING:
    from ansm.defense.ddp import DistContext


@dataclass
class TrainLocalizerConfig:
    arch: str = "twostream"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/localizer"
    seed: int = 0
    # Defaults measured on 2 CPU cores: ~0.17 s per step of 8 crops of 96x96 (a batch of 16 costs ~2.5x, not 2x, on
    # a CPU), so more, smaller steps learn more per second; ~4 min in all with data rendering and evaluation.
    steps: int = 1200
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 30
    size: int = 128
    crop: int | None = 96  # train on random crops of this side (cheaper steps); None trains on whole images
    pool: int = 1200  # training images rendered once, then augmented with flips and 90-degree rotations
    source: str | None = None  # None: photos bundled with scikit-image; else a folder of authentic images
    ckpt_every: int = 100
    eval_n: int = 200  # held-out synthetic test images (unseen photos) evaluated at the end; 0 skips
    dice_weight: float = 1.0
    # Benign-noise augmentation: a share ``noise_prob`` of training images gets Gaussian noise of a standard deviation
    # uniform in [0, noise_std] ("3/255" accepted), re-quantised to 8 bits as a saved file would be. A localizer
    # trained without it can lose half its F1 to random +-4/255 noise, which no defense in front of it can undo.
    noise_std: float = 0.0
    noise_prob: float = 0.5
    init: str | None = None  # start from this localizer checkpoint (its architecture wins over ``arch``)
    adv_eps: float = 0.0  # > 0: PGD adversarial training at this L-inf budget ("8/255" accepted)
    adv_steps: int = 3
    adv_fraction: float = 0.5  # share of each batch replaced by adversarial examples
    # > 0 (with adv_eps): TRADES (Zhang et al., ICML 2019) instead of PGD adversarial training. Every step learns
    # the mask on the clean batch and adds ``trades_beta`` x the per-pixel Bernoulli KL from the clean prediction to
    # the prediction on a PGD example that maximises that KL; no adversarial example is fitted to the mask, which
    # is where PGD training on masks gave up clean F1 (docs/benchmark.md). ``adv_fraction`` is not used.
    trades_beta: float = 0.0
    # Real data: a dataset folder with a splits.json (e.g. ../shared/real/casia1). Trains on ``split`` with
    # augmented random crops of side ``crop`` at native resolution (ansm.data.real), evaluates on ``val_split``
    # every ``val_every`` steps, and keeps the checkpoint with the best val F1@0.5 as the final model.
    data: str | None = None
    split: str = "train"
    val_split: str | None = "val"
    val_every: int = 250
    forged_fraction: float = 0.75
    device: str = "auto"  # cpu, cuda, cuda:1 or auto (under torchrun: one device per process)
    amp: bool | None = None  # mixed precision; None: on for CUDA, off on a CPU

    def __post_init__(self) -> None:
        from ansm.utils import parse_eps

        for name in ("adv_eps", "noise_std"):
            try:
                setattr(self, name, parse_eps(getattr(self, name)))
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if not 0 <= self.noise_prob <= 1:
            raise ConfigError(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        if self.trades_beta > 0 and self.adv_eps <= 0:
            raise ConfigError(f"trades_beta {self.trades_beta} needs an adversarial budget (adv_eps > 0)")
        if self.adv_steps < 1 or not 0 < self.adv_fraction <= 1:
            raise ConfigError(f"need adv_steps >= 1 and 0 < adv_fraction <= 1, got {self.adv_steps}, {self.adv_fraction}")
        if self.init is not None:
            self.init = str(self.init)
        if self.crop is not None and not 16 <= self.crop:
            raise ConfigError(f"crop must be >= 16 (or None), got {self.crop}")
        if self.data is not None:
            self.data = str(self.data)
        for name in ("steps", "batch_size", "pool", "ckpt_every", "size", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        # NaN passes the comparisons above: ansm.validate refuses it in every float field
        check_fields(self, positive=("lr",), non_negative=("weight_decay", "dice_weight", "trades_beta"),
                     fraction=("noise_prob", "adv_fraction"), non_negative_int=("warmup", "eval_n"),
                     positive_int=("steps", "batch_size", "pool", "ckpt_every", "size", "adv_steps"))


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Pixel BCE plus soft Dice (Dice keeps small forged regions from being drowned by the background)."""
    bce = F.binary_cross_entropy_with_logits(logits, mask)
    if dice_weight == 0:
        return bce
    prob = torch.sigmoid(logits)
    inter = (prob * mask).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + mask.sum(dim=(1, 2, 3)) + 1)
    return bce + dice_weight * dice.mean()


def bernoulli_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``KL(p || q)`` of the Bernoulli distributions ``p = sigmoid(logits_p)``, ``q = sigmoid(logits_q)``,

        KL = p (log p - log q) + (1 - p) (log(1 - p) - log(1 - q)),

    from log-sigmoids (stable where p or q is near 0 or 1), differentiable in both arguments (TRADES trains
    through the clean prediction too)."""
    p = torch.sigmoid(logits_p)
    return (p * (F.logsigmoid(logits_p) - F.logsigmoid(logits_q))
            + (1 - p) * (F.logsigmoid(-logits_p) - F.logsigmoid(-logits_q)))


def lr_at(step: int, cfg: TrainLocalizerConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def render_pool(n: int, seed: int, size: int, source: str | None, split: str = "train",
                on_item: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``n`` synthetic samples into uint8 image and bool mask tensors (compact in memory)."""
    ds = SyntheticForgeries(n, seed=seed, split=split, size=size, source=source)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    masks = torch.empty(n, 1, size, size, dtype=torch.bool)
    for i in range(n):
        item = ds[i]
        images[i] = item["image"].mul(255).round().to(torch.uint8)
        masks[i] = item["mask"] > 0.5
        if on_item:
            on_item()
    return images, masks


def augmented_batch(images: torch.Tensor, masks: torch.Tensor, step: int, cfg: TrainLocalizerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of step ``step``: a function of (seed, step) only, so resuming reproduces it."""
    g = seeded_generator(cfg.seed, step)
    idx = torch.randint(len(images), (cfg.batch_size,), generator=g)
    x = images[idx].float().div_(255)
    m = masks[idx].float()
    if cfg.crop and cfg.crop < cfg.size:
        # Random crops, not resizes: resizing would blur exactly the noise and resampling traces we learn from.
        # They start on the 8x8 JPEG grid, so a crop keeps its blocks' quantisation traces where a whole image has them.
        ys = (torch.randint((cfg.size - cfg.crop) // 8 + 1, (cfg.batch_size,), generator=g) * 8).tolist()
        xs = (torch.randint((cfg.size - cfg.crop) // 8 + 1, (cfg.batch_size,), generator=g) * 8).tolist()
        c = cfg.crop
        xm = torch.cat([x, m], dim=1)  # crop image and mask together
        xm = torch.stack([xm[i, :, y:y + c, x0:x0 + c] for i, (y, x0) in enumerate(zip(ys, xs))])
        x, m = xm[:, :3], xm[:, 3:]
    if torch.rand(1, generator=g).item() < 0.5:
        x, m = x.flip(-1), m.flip(-1)
    k = int(torch.randint(4, (1,), generator=g))
    x, m = x.rot90(k, dims=(-2, -1)), m.rot90(k, dims=(-2, -1))
    if cfg.noise_std > 0:  # drawn last: the batch is otherwise the one a run without noise takes
        hit = torch.rand(cfg.batch_size, 1, 1, 1, generator=g) < cfg.noise_prob
        std = torch.rand(cfg.batch_size, 1, 1, 1, generator=g) * cfg.noise_std * hit
        x = (x + torch.randn(x.shape, generator=g) * std).mul_(255).round_().clamp_(0, 255).div_(255)
    return x, m


def _start_generators(cfg: TrainLocalizerConfig, step: int, rows: range) -> list[torch.Generator]:
    """One generator per image of the global batch's ``rows``, seeded by ``(seed, step, row)`` and apart from the
    batch's own stream: a PGD random start depends on the image's place in the global batch, not on how many
    processes share the batch, so one process and N under ``torchrun`` craft the same adversarial examples."""
    return [seeded_generator(cfg.seed, step + 7_919, i) for i in rows]


def _rows_in_batch(x: torch.Tensor, cfg: TrainLocalizerConfig, rows: slice | None) -> tuple[int, range]:
    """(global batch size, ``x``'s rows in it): ``x`` is the whole batch (``rows`` None) or the slice ``rows`` of
    ``batch_size``."""
    size = x.shape[0] if rows is None else cfg.batch_size
    here = range(size)[rows or slice(None)]
    if len(here) != x.shape[0]:  # a programming error, not a user's
        raise ValueError(f"{x.shape[0]} images for rows {rows} of a batch of {size}")
    return size, here


def adversarial_share(model: nn.Module, x: torch.Tensor, m: torch.Tensor, step: int,
                      cfg: TrainLocalizerConfig, rows: slice | None = None) -> torch.Tensor:
    """Replace the first ``adv_fraction`` of the global batch by PGD examples against the current weights.

    ``x`` is the rows ``rows`` of the global batch (this process's slice under ``torchrun``; None: all of it), so
    which images are attacked, and from which random start, is the same for any number of processes. The attack
    runs the model in eval mode and gives each submodule its mode back, so training resumes as it was.
    """
    from ansm.attacks import create_attack

    size, rows_here = _rows_in_batch(x, cfg, rows)
    k = max(1, round(cfg.adv_fraction * size))  # attacked: global rows 0..k-1
    local = sum(1 for i in rows_here if i < k)
    if local == 0:
        return x
    pgd = create_attack("pgd", model, eps=cfg.adv_eps, alpha=2.5 * cfg.adv_eps / cfg.adv_steps, steps=cfg.adv_steps)
    return torch.cat([pgd(x[:local], m[:local], generator=_start_generators(cfg, step, rows_here[:local])), x[local:]])


def trades_example(model: nn.Module, x: torch.Tensor, step: int, cfg: TrainLocalizerConfig,
                   rows: slice | None = None) -> torch.Tensor:
    """TRADES' inner maximisation: PGD (``adv_steps``, from a random start in the ``adv_eps`` ball) on the
    Bernoulli KL from the model's clean prediction. Maximising BCE against the soft labels ``sigmoid(V(x))`` is
    the same problem (the KL minus a constant in ``x'``), so the untargeted PGD of ``ansm.attacks`` does it as is.
    ``rows``: as :func:`adversarial_share`'s (the random starts follow the global batch)."""
    from ansm.attacks import create_attack
    from ansm.attacks.base import eval_mode

    _, rows_here = _rows_in_batch(x, cfg, rows)
    with torch.no_grad(), eval_mode(model):
        soft = torch.sigmoid(model(x)).float()
    pgd = create_attack("pgd", model, eps=cfg.adv_eps, alpha=2.5 * cfg.adv_eps / cfg.adv_steps, steps=cfg.adv_steps)
    return pgd(x, soft, generator=_start_generators(cfg, step, rows_here))


def _save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, cfg: TrainLocalizerConfig,
                val_history: list[dict[str, Any]] | None = None,
                environments: list[dict[str, Any]] | None = None) -> None:
    opt_tensors, opt_meta = optimizer_to_tensors(opt)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | opt_tensors
    save_checkpoint(path, tensors, {"kind": "train_state", "step": step, "config": asdict(cfg), "optimizer": opt_meta,
                                    "val_history": val_history or [], "environments": environments or []})


def _load_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                cfg: TrainLocalizerConfig) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    tensors, meta = load_checkpoint(path)
    saved = meta.get("config", {})
    for key in ("arch", "arch_kwargs", "seed", "size", "crop", "pool", "source", "batch_size", "steps", "init",
                "adv_eps", "adv_steps", "adv_fraction", "trades_beta", "noise_std", "noise_prob", "data", "split", "val_split",
                "val_every", "forged_fraction"):
        was = saved.get(key, getattr(TrainLocalizerConfig, key, None))  # a state saved before the field existed
        if was != asdict(cfg).get(key):
            raise CheckpointError(f"{path}: cannot resume, {key} was {was!r} but is now {asdict(cfg).get(key)!r}")
    load_state_dict_strict(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    optimizer_from_tensors(opt, tensors, meta["optimizer"])
    return int(meta["step"]), list(meta.get("val_history", [])), list(meta.get("environments", []))


def train_localizer(cfg: TrainLocalizerConfig, on_step: Callable[[int, float], None] | None = None,
                    on_pool_item: Callable[[], None] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train, checkpoint, and return (model in eval mode, summary dict with timings)."""
    from ansm.defense.ddp import setup_distributed, teardown

    ctx = setup_distributed(cfg.device)
    try:
        return _train(cfg, ctx, on_step, on_pool_item)
    finally:
        teardown(ctx)


def _train(cfg: TrainLocalizerConfig, ctx: DistContext, on_step: Callable[[int, float], None] | None,
           on_pool_item: Callable[[], None] | None) -> tuple[nn.Module, dict[str, Any]]:
    from ansm.defense.ddp import all_reduce_mean, barrier

    if cfg.batch_size % ctx.world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {ctx.world_size} processes")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.init is not None:
        from ansm.models.registry import load_localizer

        model = load_localizer(cfg.init)
        cfg.arch, cfg.arch_kwargs = model.name, {}
    else:
        model = create_localizer(cfg.arch, **cfg.arch_kwargs)
    model.to(ctx.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp, scaler = mixed_precision(cfg.amp, ctx.device)
    net: nn.Module = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                                  else None)
    rows = ctx.batch_slice(cfg.batch_size)
    state_path = out / "train_state"
    start, val_history, environments = (_load_state(state_path, model, opt, cfg)
                                        if checkpoint_paths(state_path)[1].exists() else (0, [], []))
    environments = environments_so_far(environments, run_environment(ctx.device))
    real = val_set = None
    if cfg.data is not None:
        from ansm.data.datasets import open_dataset
        from ansm.data.real import RealTrainingSet

        real = RealTrainingSet(cfg.data, cfg.split, cfg.forged_fraction, on_item=on_pool_item)
        val_set = open_dataset(cfg.data, split=cfg.val_split) if cfg.val_split else None
    else:
        images, masks = render_pool(cfg.pool, cfg.seed, cfg.size, cfg.source, on_item=on_pool_item)
    t_data = time.perf_counter() - t0
    best_path = out / "best_on_val"

    def validate(step: int) -> None:
        """Measure val F1 and keep the best checkpoint (the selection the issue's protocol asks for)."""
        result = evaluate(model, val_set, batch_size=cfg.batch_size, device=ctx.device)
        best = max((h["f1"] for h in val_history), default=-1.0)
        val_history.append({"step": step, **{k: result[k] for k in ("f1", "iou", "f1_best", "pixel_auc")}})
        if result["f1"] > best:
            save_localizer(model, best_path, training={"step": step, "val": result})
        model.train()

    model.train()
    loss_value = float("nan")
    for step in range(start, cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, m = real.batch(cfg.batch_size, cfg.crop, cfg.seed, step) if real else augmented_batch(images, masks, step, cfg)
        x, m = x[rows].to(ctx.device), m[rows].to(ctx.device)  # this rank's slice of the global batch
        x_trades = None
        if cfg.adv_eps > 0 and cfg.trades_beta > 0:
            x_trades = trades_example(model, x, step, cfg, rows)
        elif cfg.adv_eps > 0:
            x = adversarial_share(model, x, m, step, cfg, rows)
        with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=amp):
            # TRADES: clean and adversarial halves in one pass (DDP allows one forward per backward)
            logits = net(x if x_trades is None else torch.cat([x, x_trades]))
        logits, logits_adv = (logits, None) if x_trades is None else logits.split(len(x))
        loss = segmentation_loss(logits.float(), m, cfg.dice_weight)
        if logits_adv is not None:
            loss = loss + cfg.trades_beta * bernoulli_kl(logits.float(), logits_adv.float()).mean()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        scaler.step(opt)
        scaler.update()
        loss_value = float(all_reduce_mean(loss.detach(), ctx))
        if on_step:
            on_step(step, loss_value)
        done = step + 1
        if val_set is not None and (done % cfg.val_every == 0 or done == cfg.steps) \
                and all(h["step"] != done for h in val_history):
            if ctx.is_main:
                validate(done)
            barrier(ctx)
        if ctx.is_main and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            _save_state(state_path, model, opt, done, cfg, val_history, environments)
    model.eval()
    t_train = time.perf_counter() - t0
    summary: dict[str, Any] = {"arch": cfg.arch, "steps": cfg.steps, "resumed_from": start, "final_loss": loss_value,
                               "data_s": round(t_data, 1), "train_s": round(t_train, 1), "config": asdict(cfg),
                               "environments": environments, "amp": amp}
    if ctx.is_main:  # (only rank 0 validated, so only it knows the best step)
        if val_set is not None and val_history:
            # the final model is the checkpoint chosen on val, never the last step by default
            from ansm.models.registry import load_localizer

            best = max(val_history, key=lambda h: h["f1"])
            model.load_state_dict(load_localizer(best_path).state_dict())
            model.eval()
            summary.update(val_history=val_history, chosen_step=best["step"], val=best)
        if cfg.eval_n > 0 and real is None:
            # Held-out: the test split renders photos the training split never uses (seed 0 = `synthetic:N`).
            heldout = SyntheticForgeries(cfg.eval_n, seed=0, split="test", size=cfg.size, source=cfg.source)
            summary["heldout"] = evaluate(model, heldout, batch_size=cfg.batch_size, device=ctx.device)
            summary["eval_s"] = round(time.perf_counter() - t0 - t_train, 1)
        summary["world_size"] = ctx.world_size
        save_localizer(model.cpu(), out / "localizer", training=summary)
    barrier(ctx)
    summary["world_size"] = ctx.world_size
    return model.cpu(), summary
