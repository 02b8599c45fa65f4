"""Two-stage ANSM training: stage 1 FFA, then stage 2 MgR, with the localizer frozen throughout.

One loop, read top to bottom (nanoGPT style). Step ``t`` (global over both stages) is a pure function of
``(seed, t)``: its source (attack set or online attack), its images, crops, attack, budget and objective are drawn
from a generator seeded with ``(seed, t)``, and the online attack's random start from ``(seed, t, rank)``. So a run
killed at any point and started again resumes from ``<out>/train_state`` to exactly the weights an uninterrupted
run ends with (same machine, same world size).

Adversarial inputs come from two places, mixed per step:

* **online**: the frozen localizer is attacked on the current batch with an attack drawn from ``attacks``
  (FGSM or a short PGD by default), a budget uniform in ``[eps_min, eps_max]`` and an objective from
  ``objectives``. Fresh adversarial noise every step is what keeps ANSM from memorising a fixed attack set;
* **offline**: triples read from anti-forensics folders built by ``ansm attack`` (``adv_data``), used for a
  share ``adv_fraction`` of the steps.

**Robust recipe** (adversarially trained ANSM, ``defended_fraction > 0``): for that share of the online steps the
attack is crafted *through* the current ANSM and the frozen localizer, ``V(ANSM(x + delta))``, the min-max of
adversarial training, so ANSM learns against an attacker who knows it (an oblivious attacker only ever shows it
noise made for the bare localizer). Its companions: a budget curriculum (``curriculum`` steps over which the
largest budget grows linearly from ``eps_min`` to ``eps_max``: early on, a weak ANSM facing the full budget only
learns to give up) and a clean-preservation term (``clean_kl``: the per-pixel Bernoulli KL from ``V(x_o)`` to
``V(ANSM(x_o))``, which keeps the defended clean prediction the bare localizer's where the dual-mask BCE alone
would let it drift towards the ground truth and away from what the analyst's localizer says). The dual-mask
constraint of MgR is kept for the clean images.

**Stochastic ANSM** (``noise_std > 0``): ANSM's ``g`` reads its input with Gaussian noise added (``ansm_net.py``),
in training as at inference, so it learns a perturbation that works whatever the noise draw. The noise of step
``t`` comes from a generator seeded with ``(seed, t, rank)``, so resume stays exact.

**Distillation** (``teacher``, ``distill > 0``): a cheaper ANSM (``arch="fast"``, a narrower body) learns to
match a trained one's outputs, an L1 term on ``x_a`` and ``x_o`` beside its own losses. The teacher's output is a
dense per-pixel target, where MgR's signal reaches ANSM only through the localizer's gradient; it costs one more
teacher forward per step, and nothing at inference. Off by default: distilling the default network into
``arch="fast"`` lowered its mean recovery on val (0.37 -> 0.24; docs/ansm.md, "A cheaper ANSM").

Distributed: under ``torchrun`` every rank takes its slice of the global batch, ANSM is wrapped in
``DistributedDataParallel`` (gradients averaged), rank 0 writes checkpoints. ``batch_size`` is the global batch.
On CUDA the losses run under fp16 autocast with a gradient scaler (``amp``; the localizer trainer does the same),
the online attacks in full precision: an attack's sign steps should not depend on fp16 rounding. A resumed run
starts its loss scale afresh (the scaler's state is not checkpointed), so a GPU resume is close to, not equal to,
an uninterrupted run.

Outputs in ``out``: ``ansm_stage1`` (the model after stage 1: the stage-1-only ablation), ``ansm`` (final),
``train_state`` (resumable), ``summary.json``. Checkpoint JSON records the localizer spec and taps.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from ansm.attacks import create_attack
from ansm.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_state_dict_strict,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from ansm.defense.ansm_net import ANSM, ARCHS, save_ansm
from ansm.defense.data import (AdversarialPool, Pool, load_adversarial_pool, random_crops, random_flip_rot90,
                               real_clean_pool, render_clean_pool)
from ansm.defense.ddp import DistContext, all_reduce_mean, barrier, setup_distributed, teardown
from ansm.defense.losses import (REDUCTIONS, clean_kl_loss, distill_loss, feature_l1_loss, ffa_loss, mgr_loss,
                                 pixel_denoiser_loss)
from ansm.errors import CheckpointError, ConfigError
from ansm.models.taps import FeatureTaps, resolve_layers
from ansm.utils import environments_so_far, mixed_precision, parse_eps, run_environment, seeded_generator, write_json_atomic
from ansm.validate import check_fields

if TYPE_CHECKING:
    from ansm.data.real import RealTrainingSet

ONLINE_ATTACKS = ("fgsm", "pgd", "bim", "mifgsm")
# "ansm": stage 1 FFA then stage 2 MgR (the paper). The others train the same network as single-stage baselines
# for the benchmark: "pixel" (pixel-guided denoiser) and "feature" (HGD-style L1 on the tapped features).
LOSSES = ("ansm", "pixel", "feature")
# Settings that define the result: a resume with any of them changed is refused.
_RESUME_KEYS = ("loss", "localizer", "seed", "stage1_steps", "stage2_steps", "batch_size", "crop", "lr", "stage2_lr", "eps_d",
                "width", "dilations", "norm", "arch", "taps", "ffa_weight", "ffa_alpha", "ffa_reduction", "mgr_lambda", "mgr_dice", "mgr_ffa", "attacks",
                "objectives", "mgr_pixel", "ffa_pixel", "eps_min", "eps_max", "pgd_steps", "adv_data", "adv_fraction", "pool", "pool_seed", "size", "source", "data", "split",
                "defended_fraction", "curriculum", "clean_kl", "noise_std", "teacher", "distill")


@dataclass
class TrainANSMConfig:
    """Everything that defines an ANSM training run (see docs/ansm.md for why each default)."""

    localizer: str = "runs/localizer/localizer"  # checkpoint path, registered name or module:callable
    out: str = "runs/ansm"
    loss: str = "ansm"  # see LOSSES
    seed: int = 0
    stage1_steps: int = 60  # FFA
    stage2_steps: int = 200  # MgR
    batch_size: int = 16  # global batch (split over DDP ranks)
    crop: int | None = 64  # random training crops (ANSM is fully convolutional); None = whole images
    lr: float = 5e-3
    stage2_lr: float | None = None  # peak lr of stage 2 (None: lr); lower it to fine-tune what stage 1 learned
    warmup: int = 10
    eps_d: float = 16 / 255
    width: int = 16
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4])
    norm: str = "none"  # "group": GroupNorm inside ANSM (see ansm_net.py)
    arch: str = "full"  # "fast": ANSM's body at half resolution (ansm_net.py; cost in bench/ansm_latency.py)
    taps: list[str] | None = None  # None: the localizer's default_taps
    ffa_weight: float = 1.0  # weight of FFA in stage 1 (0 with ffa_pixel > 0: stage 1 aligns pixels only)
    ffa_alpha: float = 1e-6
    ffa_reduction: str = "mean"
    mgr_lambda: float = 1.0
    mgr_dice: float = 0.0
    mgr_ffa: float = 0.0  # weight of an FFA term kept in stage 2
    mgr_pixel: float = 0.0  # weight of a pixel term in stage 2: L1(ANSM(x_a), x_o) + L1(ANSM(x_o), x_o), in 1/255 units
    ffa_pixel: float = 0.0  # the same pixel term, kept beside FFA in stage 1 (docs/ansm.md, "What stage 1 aligns")
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    objectives: list[str] = field(default_factory=lambda: ["untargeted"])
    eps_min: float = 4 / 255
    eps_max: float = 10 / 255
    pgd_steps: int = 3
    # the robust recipe (module docstring): share of online steps attacked through ANSM + localizer, steps of the
    # budget curriculum, weight of the clean-preservation KL (all 0: the paper's ANSM, attacked on V alone)
    defended_fraction: float = 0.0
    curriculum: int = 0
    clean_kl: float = 0.0
    noise_std: float = 0.0  # > 0: the stochastic ANSM (noise on g's input; ansm_net.py)
    # distillation (module docstring): a trained ANSM checkpoint whose outputs this one learns to match, and the
    # weight of that L1 term (in 1/255 units, like the pixel term)
    teacher: str | None = None
    distill: float = 0.0
    adv_data: list[str] = field(default_factory=list)  # folders built by `ansm attack`
    adv_fraction: float = 0.3  # share of steps taken from adv_data (when given)
    pool: int = 400  # clean synthetic training images
    # seed of the rendered clean pool (None: seed); set it to vary ANSM's seed against fixed data and attack sets
    pool_seed: int | None = None
    size: int = 128
    source: str | None = None
    data: str | None = None  # a real dataset folder: its `split` is the clean pool instead (pool/size/source unused)
    split: str = "train"
    ckpt_every: int = 25
    device: str = "auto"
    amp: bool | None = None  # mixed precision (fp16 autocast); None: on for CUDA, off on a CPU

    def __post_init__(self) -> None:
        for name in ("eps_d", "eps_min", "eps_max", "noise_std"):
            try:
                setattr(self, name, parse_eps(getattr(self, name)))
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        for name in ("stage1_steps", "stage2_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.arch not in ARCHS:
            raise ConfigError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.loss != "ansm" and self.stage1_steps:
            raise ConfigError(f"loss {self.loss!r} is a single-stage baseline: set stage1_steps to 0")
        if self.stage1_steps + self.stage2_steps < 1:
            raise ConfigError("nothing to train: stage1_steps + stage2_steps must be >= 1")
        for name in ("batch_size", "pool", "ckpt_every", "pgd_steps", "size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.data is not None:  # native-resolution photos of many sizes: crops (checked against each image)
            if self.crop is None or self.crop < 8:
                raise ConfigError(f"training on a real dataset needs crop >= 8 (e.g. 256), got {self.crop}")
        elif self.crop is not None and not 8 <= self.crop <= self.size:
            raise ConfigError(f"crop must be in [8, size={self.size}] or None, got {self.crop}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.eps_d <= 1 or self.eps_min > self.eps_max:
            raise ConfigError(f"need 0 < eps_d <= 1 and eps_min <= eps_max (got {self.eps_d}, {self.eps_min}, {self.eps_max})")
        for name in ("mgr_pixel", "ffa_pixel", "ffa_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.stage1_steps and self.loss == "ansm" and self.ffa_weight == 0 and self.ffa_pixel == 0:
            raise ConfigError("stage 1 has no loss: ffa_weight and ffa_pixel are both 0")
        if self.stage2_lr is not None and not self.stage2_lr > 0:
            raise ConfigError(f"stage2_lr must be > 0, got {self.stage2_lr}")
        if self.ffa_reduction not in REDUCTIONS:
            raise ConfigError(f"ffa_reduction must be one of {', '.join(REDUCTIONS)}, got {self.ffa_reduction!r}")
        bad = sorted(set(self.attacks) - set(ONLINE_ATTACKS))
        if not self.attacks or bad:
            raise ConfigError(f"online attacks must be among {', '.join(ONLINE_ATTACKS)}, got {self.attacks}")
        # NaN passes every comparison above (a NaN weight trained an all-NaN ANSM): ansm.validate refuses it
        check_fields(self, positive=("lr", "stage2_lr"), fraction=("adv_fraction", "defended_fraction", "noise_std"),
                     non_negative=("ffa_weight", "ffa_alpha", "mgr_lambda", "mgr_dice", "mgr_ffa", "mgr_pixel", "ffa_pixel",
                                   "clean_kl", "distill"),
                     non_negative_int=("stage1_steps", "stage2_steps", "warmup", "curriculum", "pool_seed"),
                     positive_int=("batch_size", "pool", "ckpt_every", "pgd_steps", "size", "width"))
        if (self.distill > 0) != (self.teacher is not None):
            raise ConfigError(f"distillation needs both a teacher checkpoint and distill > 0, got teacher="
                              f"{self.teacher!r}, distill={self.distill}")
        if self.teacher is not None and self.loss != "ansm":
            raise ConfigError(f"a teacher is for the ANSM loss, not the {self.loss!r} baseline")
        if not self.objectives or set(self.objectives) - {"untargeted", "hide"}:
            raise ConfigError(f"objectives must be among untargeted, hide; got {self.objectives}")
        if not 0 <= self.adv_fraction <= 1:
            raise ConfigError(f"adv_fraction must be in [0, 1], got {self.adv_fraction}")
        if self.adv_fraction == 1 and not self.adv_data:
            raise ConfigError("adv_fraction is 1 but no adv_data folders were given")
        self.dilations = [int(d) for d in self.dilations]
        self.taps = list(self.taps) if self.taps is not None else None
        self.adv_data = [str(p) for p in self.adv_data]

    @property
    def total_steps(self) -> int:
        return self.stage1_steps + self.stage2_steps


def stage_of(step: int, cfg: TrainANSMConfig) -> int:
    return 1 if step < cfg.stage1_steps else 2


def lr_at(step: int, cfg: TrainANSMConfig) -> float:
    """Per stage: linear warm-up, then cosine decay to 5% (each stage restarts the schedule, stage 2 from
    ``stage2_lr`` when set)."""
    stage = stage_of(step, cfg)
    start, length = (0, cfg.stage1_steps) if stage == 1 else (cfg.stage1_steps, cfg.stage2_steps)
    peak = cfg.stage2_lr if stage == 2 and cfg.stage2_lr is not None else cfg.lr
    t = step - start
    warm = min(cfg.warmup, max(1, length // 5))
    if t < warm:
        return peak * (t + 1) / warm
    progress = (t - warm) / max(1, length - warm)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def eps_max_at(step: int, cfg: TrainANSMConfig) -> float:
    """The largest online budget at ``step``: ``eps_max``, or under the curriculum a linear ramp from ``eps_min``
    reaching ``eps_max`` after ``curriculum`` steps."""
    if cfg.curriculum <= 0 or step >= cfg.curriculum:
        return cfg.eps_max
    return cfg.eps_min + (cfg.eps_max - cfg.eps_min) * step / cfg.curriculum


@dataclass
class Batch:
    x_o: torch.Tensor
    x_a: torch.Tensor
    mask: torch.Tensor
    source: str  # "online:<attack>/<objective>/<eps>[/defended]" or "offline"


def make_batch(step: int, cfg: TrainANSMConfig, ctx: DistContext, localizer: nn.Module,
               pool: Pool | RealTrainingSet, adv: AdversarialPool | None, ansm: nn.Module | None = None) -> Batch:
    """This rank's slice of step ``step``'s batch, with its adversarial images (a function of (seed, step, rank)
    and, on the robust recipe's defended steps, of ANSM's current weights)."""
    g = seeded_generator(cfg.seed, step)
    rows = ctx.batch_slice(cfg.batch_size)
    use_offline = adv is not None and torch.rand(1, generator=g).item() < cfg.adv_fraction
    if use_offline:
        idx = torch.randint(len(adv), (cfg.batch_size,), generator=g)
        triple = random_crops(adv.take(idx), cfg.crop, g)
        # the whole triple turns together: the pair stays an image and its exact attack noise
        x_o, x_a, m = (t[rows].to(ctx.device).float() for t in random_flip_rot90(triple, g))
        return Batch(x_o / 255, x_a / 255, m, "offline")
    if isinstance(pool, Pool):
        idx = torch.randint(len(pool), (cfg.batch_size,), generator=g)
        x_o, m = random_crops([pool.images[idx], pool.masks[idx]], cfg.crop, g)
    else:  # a real split: native-resolution crops (its own generator, also a function of (seed, step))
        x_o, m = pool.batch(cfg.batch_size, cfg.crop, cfg.seed, step)
        x_o, m = x_o.mul(255).round().to(torch.uint8), m > 0.5
    x_o, m = random_flip_rot90([x_o, m], g)  # clean images are flipped/rotated before the attack
    name = cfg.attacks[int(torch.randint(len(cfg.attacks), (1,), generator=g))]
    objective = cfg.objectives[int(torch.randint(len(cfg.objectives), (1,), generator=g))]
    eps = cfg.eps_min + (eps_max_at(step, cfg) - cfg.eps_min) * torch.rand(1, generator=g).item()
    # g's last draw: the robust recipe's choice changes none of the draws above
    defended = torch.rand(1, generator=g).item() < cfg.defended_fraction
    if defended and ansm is None:
        raise ConfigError("the robust recipe (defended_fraction > 0) attacks through ANSM: pass ansm to make_batch")
    x_o = x_o[rows].to(ctx.device).float() / 255
    m = m[rows].to(ctx.device).float()
    kwargs: dict[str, Any] = {"eps": eps, "objective": objective}
    if name != "fgsm":
        # enough step size to reach the ball's boundary in pgd_steps steps (2.5 eps / steps, Madry's ratio)
        kwargs |= {"steps": cfg.pgd_steps, "alpha": 2.5 * eps / cfg.pgd_steps}
    # the robust recipe's min-max: the attacker differentiates through the ANSM being trained (the attack takes
    # gradients w.r.t. the image only, so ANSM's .grad is untouched)
    target = (lambda z: localizer(ansm(z))) if defended else localizer
    attack = create_attack(name, target, **kwargs)
    x_a = attack(x_o, m, generator=seeded_generator(cfg.seed, step, ctx.rank, 7))
    return Batch(x_o, x_a, m, f"online:{name}/{objective}/{eps * 255:.1f}" + ("/defended" if defended else ""))


def ansm_losses(ansm: nn.Module, localizer: nn.Module, batch: Batch, stage: int, taps: list[str],
                cfg: TrainANSMConfig, teacher: nn.Module | None = None) -> torch.Tensor:
    """Stage 1: FFA(V(ANSM(x_a)), V(x_o)) (+ optional pixel term). Stage 2: MgR dual-mask loss (+ optional FFA,
    pixel and clean-preservation KL terms). In both stages, with ``teacher`` and ``cfg.distill`` > 0: the
    distillation term ``distill * 255 * (L1(ANSM(x_a), T(x_a)) + L1(ANSM(x_o), T(x_o)))``.

    With ``cfg.loss`` "pixel" or "feature" the single stage trains a baseline denoiser instead (see losses.py)."""
    if cfg.loss != "ansm":
        return _baseline_loss(ansm, localizer, batch, taps, cfg.loss)
    ffa_weight = cfg.ffa_weight if stage == 1 else cfg.mgr_ffa
    need_ffa = ffa_weight > 0
    feats_o: dict[str, torch.Tensor] = {}
    if need_ffa:
        with torch.no_grad(), FeatureTaps(localizer, taps) as t:
            localizer(batch.x_o)
            feats_o = {k: v.float() for k, v in t.features.items()}  # (fp32 losses under autocast too)
    b = batch.x_a.shape[0]
    # stage 2 needs x_po too: one pass over [x_a; x_o] (ANSM and V treat images independently, so this equals two
    # passes, and it keeps DistributedDataParallel to one forward per backward)
    # (stage 1's pixel term needs ANSM(x_o) as well, but not V(ANSM(x_o)): the localizer sees only the first half)
    pixel_weight = cfg.ffa_pixel if stage == 1 else cfg.mgr_pixel
    distill = teacher if cfg.distill > 0 else None
    both = stage == 2 or pixel_weight > 0 or distill is not None
    inputs = torch.cat([batch.x_a, batch.x_o]) if both else batch.x_a
    defended = ansm(inputs)
    pixel = (pixel_weight * 255 * pixel_denoiser_loss(defended[:b], defended[b:], batch.x_o) if pixel_weight > 0
             else None)
    terms = [] if pixel is None else [pixel]
    if distill is not None:
        with torch.no_grad():
            target = distill(inputs)
        terms.append(cfg.distill * 255 * distill_loss(defended, target))
    if stage == 2 or need_ffa:  # (stage 1 with ffa_weight 0 aligns pixels only and never runs the localizer)
        tapper = FeatureTaps(localizer, taps) if need_ffa else None
        with tapper or contextlib.nullcontext():
            logits = localizer(defended if stage == 2 else defended[:b]).float()
        if tapper:
            feats = {k: v[:b].float() for k, v in tapper.features.items()}
            terms.append(ffa_weight * ffa_loss(feats, feats_o, cfg.ffa_alpha, cfg.ffa_reduction))
        if stage == 2:
            terms.append(mgr_loss(logits[:b], logits[b:], batch.mask, cfg.mgr_lambda, cfg.mgr_dice))
            if cfg.clean_kl > 0:
                with torch.no_grad():
                    bare = localizer(batch.x_o).float()
                terms.append(cfg.clean_kl * clean_kl_loss(logits[b:], bare))
    return torch.stack(terms).sum()


def _baseline_loss(ansm: nn.Module, localizer: nn.Module, batch: Batch, taps: list[str], kind: str) -> torch.Tensor:
    b = batch.x_a.shape[0]
    defended = ansm(torch.cat([batch.x_a, batch.x_o]))
    if kind == "pixel":
        return pixel_denoiser_loss(defended[:b], defended[b:], batch.x_o)
    with torch.no_grad(), FeatureTaps(localizer, taps) as t:
        localizer(batch.x_o)
        feats_o = dict(t.features)
    with FeatureTaps(localizer, taps) as t:
        localizer(defended)
        feats = dict(t.features)
    return (feature_l1_loss({k: v[:b] for k, v in feats.items()}, feats_o)
            + feature_l1_loss({k: v[b:] for k, v in feats.items()}, feats_o))


def load_teacher(path: str, device: torch.device) -> ANSM:
    """The trained ANSM a cheaper one is distilled from, frozen like the localizer (a checkpoint, never pickled
    code)."""
    from ansm.defense.ansm_net import load_ansm

    return freeze(load_ansm(path)[0]).to(device)


def frozen_copy(localizer: nn.Module | None, spec: str | None) -> nn.Module:
    """The localizer the trainers attack through: a frozen copy of the caller's module (theirs keeps its modes,
    ``requires_grad`` flags and memory layout, as the trainers' docstrings promise), or ``spec`` resolved and frozen.
    The copy costs the localizer's weights once more, which a frozen model's training run can afford."""
    from ansm.models.resolve import resolve_localizer

    return freeze(copy.deepcopy(localizer) if localizer is not None else resolve_localizer(spec))


def freeze(localizer: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients: the localizer is never changed by ANSM training.

    Its 4-D weights are also laid out channels-last (same values, another memory order): with ANSM's channels-last
    outputs that makes the localizer's forward and backward ~1.3x faster on a CPU (bench: 0.28 vs 0.36 s for
    32x3x64x64 on one thread)."""
    localizer.eval()
    for p in localizer.parameters():
        p.requires_grad_(False)
    return localizer.to(memory_format=torch.channels_last)


def _save_state(path: Path, ansm: ANSM, opt: torch.optim.Optimizer, step: int, cfg: TrainANSMConfig,
                environments: list[dict[str, Any]]) -> None:
    opt_tensors, opt_meta = optimizer_to_tensors(opt)
    tensors = {f"model.{k}": v for k, v in ansm.state_dict().items()} | opt_tensors
    save_checkpoint(path, tensors, {"kind": "ansm_train_state", "step": step, "config": asdict(cfg), "optimizer": opt_meta,
                                    "environments": environments})


def _load_state(path: Path, ansm: ANSM, opt: torch.optim.Optimizer,
                cfg: TrainANSMConfig) -> tuple[int, list[dict[str, Any]]]:
    tensors, meta = load_checkpoint(path)
    saved, now = meta.get("config", {}), asdict(cfg)
    defaults = asdict(TrainANSMConfig())  # a state written before a field existed was trained with its default
    for key in _RESUME_KEYS:
        if saved.get(key, defaults.get(key)) != now.get(key):
            raise CheckpointError(f"{path}: cannot resume, {key} was {saved.get(key)!r} but is now {now.get(key)!r} "
                                  "(use a new --out to change it)")
    load_state_dict_strict(ansm, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    optimizer_from_tensors(opt, tensors, meta["optimizer"])
    return int(meta["step"]), list(meta.get("environments", []))


def train_ansm(cfg: TrainANSMConfig, localizer: nn.Module | None = None,
               on_step: Callable[[int, int, float], None] | None = None,
               on_pool_item: Callable[[], None] | None = None) -> tuple[ANSM, dict[str, Any]]:
    """Train ANSM against a frozen localizer; return (ANSM in eval mode, summary). See the module docstring.

    Args:
        localizer: the model to protect; resolved from ``cfg.localizer`` when omitted. ANSM trains against a
            frozen copy (eval mode, ``requires_grad=False``, channels-last); the module passed in is left as it was.
        on_step: ``on_step(step, stage, loss)`` after every step (on every rank).
    """
    t0 = time.perf_counter()
    ctx = setup_distributed(cfg.device)
    try:
        if cfg.batch_size % ctx.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {ctx.world_size} processes")
        amp, scaler = mixed_precision(cfg.amp, ctx.device)
        localizer = frozen_copy(localizer, cfg.localizer).to(ctx.device)
        taps = list(cfg.taps) if cfg.taps is not None else list(getattr(localizer, "default_taps", ()))
        uses_ffa = cfg.loss == "ansm" and ((cfg.stage1_steps and cfg.ffa_weight > 0) or (cfg.stage2_steps and cfg.mgr_ffa > 0))
        if not taps and (cfg.loss == "feature" or uses_ffa):
            raise ConfigError("FFA needs layers to tap: the localizer has no default_taps, pass taps")
        if taps:
            resolve_layers(localizer, taps)

        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        ansm = ANSM(cfg.eps_d, cfg.width, cfg.dilations, cfg.norm, cfg.arch, cfg.noise_std).to(ctx.device)
        opt = torch.optim.Adam(ansm.parameters(), lr=cfg.lr)
        teacher = load_teacher(cfg.teacher, ctx.device) if cfg.teacher is not None else None
        state_path = out / "train_state"
        start, environments = _load_state(state_path, ansm, opt, cfg) if checkpoint_paths(state_path)[1].exists() \
            else (0, [])
        environments = environments_so_far(environments, run_environment(ctx.device))

        pool = (real_clean_pool(cfg.data, cfg.split, on_item=on_pool_item) if cfg.data is not None
                else render_clean_pool(cfg.pool, cfg.seed if cfg.pool_seed is None else cfg.pool_seed, cfg.size,
                                       cfg.source, on_item=on_pool_item))
        synthetic = pool if isinstance(pool, Pool) else None  # (real attack sets find x_o by source_image)
        adv = load_adversarial_pool(cfg.adv_data, synthetic) if cfg.adv_data and cfg.adv_fraction > 0 else None
        t_data = time.perf_counter() - t0
        model: nn.Module = ansm
        if ctx.distributed:
            model = nn.parallel.DistributedDataParallel(ansm, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        meta = {"localizer": cfg.localizer, "taps": taps, "train_config": asdict(cfg), "world_size": ctx.world_size}

        losses: dict[int, list[float]] = {1: [], 2: []}
        model.train()
        for step in range(start, cfg.total_steps):
            stage = stage_of(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            if ansm.stochastic:  # the stochastic ANSM's noise, a function of (seed, step, rank) like every draw
                ansm.noise_generator = seeded_generator(cfg.seed, step, ctx.rank, 11)
            batch = make_batch(step, cfg, ctx, localizer, pool, adv, ansm)  # (attacks in full precision)
            with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=amp):
                loss = ansm_losses(model, localizer, batch, stage, taps, cfg, teacher)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(ansm.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            value = float(all_reduce_mean(loss.detach(), ctx))
            losses[stage].append(value)
            if on_step:
                on_step(step, stage, value)
            done = step + 1
            if ctx.is_main and done == cfg.stage1_steps:
                save_ansm(ansm, out / "ansm_stage1", stage="stage1", steps=done, **meta)
            if ctx.is_main and (done % cfg.ckpt_every == 0 or done == cfg.total_steps or done == cfg.stage1_steps):
                _save_state(state_path, ansm, opt, done, cfg, environments)
            barrier(ctx)
        ansm.eval()
        ansm.noise_generator = None
        summary: dict[str, Any] = {
            "resumed_from": start, "steps": cfg.total_steps, "world_size": ctx.world_size,
            "final_loss_stage1": losses[1][-1] if losses[1] else None,
            "final_loss_stage2": losses[2][-1] if losses[2] else None,
            "data_s": round(t_data, 1), "train_s": round(time.perf_counter() - t0, 1), "taps": taps,
            "environments": environments, "amp": amp,
        }
        if ctx.is_main:
            stage = "full" if cfg.stage1_steps and cfg.stage2_steps else ("stage1" if cfg.stage1_steps else "stage2")
            stage = stage if cfg.loss == "ansm" else f"baseline-{cfg.loss}"
            save_ansm(ansm, out / "ansm", stage=stage, steps=cfg.total_steps, training=summary, **meta)
            write_json_atomic(out / "summary.json", {**summary, "config": asdict(cfg)})
        barrier(ctx)
        return ansm, summary
    finally:
        teardown(ctx)
