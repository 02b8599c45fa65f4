"""An adversarial-input detector: a light head that says, per image, "this image was attacked".

ANSM removes adversarial noise; an analyst also wants to *know* an image was attacked. :class:`AttackDetector`
reads the image's high-frequency residual ``(x - blur(x)) / eps_ref`` (the band :meth:`ANSM.high_pass` feeds
ANSM, where L-inf attack noise lives) beside the centred image, runs four 3x3 convolutions (two at stride 2),
pools globally (mean and max of every channel) and returns one logit per image (> 0: attacked). Fully
convolutional, any H and W; 17k parameters at the default width.

Training (:func:`train_detector`), one loop, step ``t`` a pure function of ``(seed, t)`` so a resumed run ends with
the weights of an uninterrupted one:

* **positives**: half of every batch, attacked images of the training pool, read from offline attack sets built by
  ``ansm attack`` (``adv_data``, for a share ``adv_fraction`` of the steps; read as the ANSM trainer reads them,
  :func:`ansm.defense.data.load_adversarial_pool`) or attacked online on the frozen localizer (an attack from
  ``attacks``, an objective from ``objectives``, a budget uniform in ``[eps_min, eps_max]``), rounded to 8 bits
  inside the budget as a saved PNG would be. ``aware-pgd`` among ``attacks`` is adversarial training of the
  detector: a PGD on the localizer *and the detector as it is at that step* (:class:`DetectorAware`, a weight from
  ``aware_weights``), the attacker an analyst will face once the detector is public;
* **negatives**: the other half, clean training images (authentic and forged alike: a forgery is not an attack),
  of which a share ``benign_prob`` gets a *benign* change first: Gaussian noise of std uniform in
  ``[0, noise_std]`` (3/255 by default, sensor-noise level) or a JPEG re-encode at quality uniform in
  ``[jpeg_min, jpeg_max]`` (70-95), both re-quantised to 8 bits. Without them the head learns "any
  high-frequency energy" and flags every noisy or recompressed photo; with them it must learn what attack noise
  looks like. Noise stronger than ``noise_std`` is not a negative in training: how often it is flagged is
  reported (:func:`evaluate_detector`'s ``benign`` rows), not hidden.

At the end the flag threshold is calibrated on ``calib_n`` clean ``val`` images (half with the same benign
changes) to a 5% false-positive rate and stored in the checkpoint's JSON (``threshold``, a probability), so
``ansm defend --detector`` flags with the operating point the reported TPR@5%FPR describes.

Evaluation (:func:`evaluate_detector`): per attack, image-level ROC AUC and TPR at 5% FPR (clean images of the same
split are the negatives), each with a bootstrap 95% interval over images, and the localizer's F1 on the attacked
images. A *detector-aware* attack (:class:`DetectorAware`) is a PGD whose gain is the localizer's objective minus
``weight`` times the BCE pushing the detector's logit to "clean"; it must fool both at once, and its row shows the
trade-off (detector AUC vs localizer F1 reached). With a threshold, each row also says how many forged images
the attack *evaded* with: not flagged, and localizer F1 <= ``EVADED_F1``; the number the analyst cares about
(the clean row's is the localizer's own misses no one attacked).
"""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ansm.attacks.objectives import Objective, get_objective
from ansm.checkpoint import (build_from_config, checkpoint_paths, load_checkpoint, load_state_dict_strict,
                             optimizer_from_tensors, optimizer_to_tensors, save_checkpoint)
from ansm.defense.ansm_net import blur_kernel, high_pass
from ansm.errors import CheckpointError, ConfigError, DataError
from ansm.utils import environments_so_far, parse_eps, run_environment, seeded_generator, write_json_atomic
from ansm.validate import check_fields

TARGET_FPR = 0.05
# A forged image counts as "evaded" when the detector does not flag it and the localizer's F1 on it is at most this
# (the untargeted attack's own success bar, ansm.attacks.objectives.Untargeted): the analyst sees no flag and a
# wrong mask, the only outcome in which a detector-aware attacker has won.
EVADED_F1 = 0.1
# online attacks for training; "aware-pgd" is a PGD that must fool the detector being trained as well as the localizer
# (DetectorAware through JointTarget, a weight drawn from ``aware_weights``): adversarial training of the detector
ONLINE_ATTACKS = ("fgsm", "pgd", "bim", "mifgsm", "aware-pgd")


class AttackDetector(nn.Module):
    """Image -> one "attacked" logit (shape B). See the module docstring.

    Args:
        width: channels of the first two convolutions (the strided ones have ``2 * width``).
        eps_ref: scale of the residual input (a residual of ``eps_ref`` reads about 1).
        use_image: also feed the centred image (6 input channels) so the head can tell noise from texture.
    """

    def __init__(self, width: int = 16, eps_ref: float | str = 8 / 255, use_image: bool = True) -> None:
        super().__init__()
        try:
            eps = parse_eps(eps_ref)
        except ConfigError as exc:
            raise ConfigError(f"eps_ref: {exc}") from None
        if not 0 < eps <= 1 or isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(f"AttackDetector needs width >= 1 and 0 < eps_ref <= 1, got {width!r}, {eps_ref!r}")
        self.eps_ref = float(eps)
        self.use_image = bool(use_image)
        self.config: dict[str, Any] = {"width": int(width), "eps_ref": self.eps_ref, "use_image": self.use_image}
        self.register_buffer("blur", blur_kernel(), persistent=False)
        w = int(width)
        self.features = nn.Sequential(
            nn.Conv2d(6 if use_image else 3, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Linear(4 * w, 1)

    def high_pass(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - blur(x)) / eps_ref`` with replicate padding, as :meth:`ansm.defense.ansm_net.ANSM.high_pass`."""
        return high_pass(x, self.blur, self.eps_ref)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < 4:
            raise DataError(f"AttackDetector expects images Bx3xHxW (H, W >= 4), got {tuple(x.shape)}")
        hp = self.high_pass(x)
        feats = self.features(torch.cat([(x - 0.5) * 4.0, hp], 1) if self.use_image else hp)
        pooled = torch.cat([feats.mean((2, 3)), feats.amax((2, 3))], 1)
        return self.head(pooled)[:, 0]


def save_detector(model: AttackDetector, path: str | os.PathLike, **extra: Any) -> Path:
    """Weights in ``<path>.safetensors``, ``{"kind": "detector", "config", ...extra}`` in ``<path>.json``."""
    if not isinstance(model, AttackDetector):
        raise CheckpointError(f"save_detector needs an AttackDetector, got {type(model).__name__}")
    return save_checkpoint(path, model.state_dict(), {"kind": "detector", "config": model.config, **extra})


def load_detector(path: str | os.PathLike) -> tuple[AttackDetector, dict[str, Any]]:
    """Rebuild a detector from its checkpoint (strict), in eval mode; return it with the checkpoint's JSON."""
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "detector":
        raise CheckpointError(f"{path}: not an attack-detector checkpoint (kind={meta.get('kind')!r}; "
                              "train one with `ansm train-detector`)")
    model = build_from_config(AttackDetector, meta.get("config", {}), path)
    load_state_dict_strict(model, tensors, path)
    threshold = meta.get("threshold", 0.5)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
        raise CheckpointError(f"{path}: threshold must be a probability in [0, 1], got {threshold!r}")
    return model.eval(), meta


@torch.no_grad()
def attack_probability(detector: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """P(attacked) per image (shape B) for Bx3xHxW images in [0, 1]."""
    return torch.sigmoid(detector(x))


# --------------------------------------------------------------------------------------------- benign changes
def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus Gaussian noise of ``std`` (per image: a tensor of B stds, or one float), rounded to 8 bits."""
    std_t = torch.as_tensor(std, dtype=x.dtype).reshape(-1, 1, 1, 1).to(x.device)
    noise = torch.randn(x.shape, generator=generator).to(x)
    return ((x + std_t * noise).clamp(0, 1) * 255).round() / 255


def jpeg(x: torch.Tensor, quality: int | Sequence[int]) -> torch.Tensor:
    """Re-encode each image as a JPEG of ``quality`` (one int, or one per image) with Pillow, decoded again."""
    from PIL import Image

    qs = [int(quality)] * x.shape[0] if isinstance(quality, int) else [int(q) for q in quality]
    out = torch.empty_like(x)
    arrays = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i, arr in enumerate(arrays):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=qs[i])
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
        out[i] = torch.from_numpy(dec).permute(2, 0, 1).to(out)
    return out


def benign_change(x: torch.Tensor, generator: torch.Generator, prob: float, noise_std: float,
                  jpeg_range: tuple[int, int]) -> torch.Tensor:
    """Each image, with probability ``prob``: Gaussian noise (std U[0, noise_std]) or JPEG (quality U[range]),
    half and half; the others unchanged."""
    b = x.shape[0]
    pick = torch.rand(b, generator=generator)
    kind = torch.rand(b, generator=generator) < 0.5
    stds = torch.rand(b, generator=generator) * noise_std
    quals = torch.randint(jpeg_range[0], jpeg_range[1] + 1, (b,), generator=generator)
    noisy = gaussian_noise(x, stds.tolist(), generator)
    out = x.clone()
    for i in range(b):
        if pick[i] < prob:
            out[i] = noisy[i] if kind[i] else jpeg(x[i:i + 1], int(quals[i]))[0]
    return out


# ---------------------------------------------------------------------------------------- detector-aware attack
class JointTarget(nn.Module):
    """What a detector-aware attack differentiates: ``[V(x), D(x)]`` as Bx2xHxW (the detector's logit broadcast
    over the pixels), so any :mod:`ansm.attacks` attack can climb :class:`DetectorAware` through it."""

    def __init__(self, localizer: nn.Module, detector: nn.Module) -> None:
        super().__init__()
        self.localizer, self.detector = localizer, detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.localizer(x)
        d = self.detector(x).view(-1, 1, 1, 1).expand(-1, 1, *logits.shape[-2:])
        return torch.cat([logits, d.to(logits.dtype)], 1)


class DetectorAware(Objective):
    """``gain = base.gain(V(x), m) - weight * BCE(D(x), clean)`` per image, on :class:`JointTarget`'s output.

    ``BCE(d, clean) = softplus(d)``: ~0 once the detector says "clean" with confidence, ~d while it flags, so the
    attacker spends effort on the detector only while it is flagging. ``weight`` 1 puts one unit of pixel BCE
    (the localizer's objective) against one unit of detector BCE."""

    name = "detector-aware"

    def __init__(self, base: str | Objective = "untargeted", weight: float = 1.0) -> None:
        self.base = get_objective(base)
        self.weight = float(weight)

    def adversarial_target(self, mask: torch.Tensor) -> torch.Tensor:
        return self.base.adversarial_target(mask)

    def pixel_gain(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.base.pixel_gain(logits[:, :1], mask) - self.weight * F.softplus(logits[:, 1:2])

    def success(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.base.success(logits[:, :1], mask) & (logits[:, 1].flatten(1)[:, 0] < 0)

    def pixel_fooled(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.base.pixel_fooled(logits[:, :1], mask)

    def margin(self, logits: torch.Tensor, mask: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
        return self.base.margin(logits[:, :1], mask, kappa) + self.weight * F.softplus(logits[:, 1:2])

    def __repr__(self) -> str:
        return f"DetectorAware(base={self.base.name!r}, weight={self.weight:g})"


# -------------------------------------------------------------------------------------------------- training
_RESUME_KEYS = ("localizer", "seed", "steps", "batch_size", "lr", "width", "eps_ref", "use_image", "attacks",
                "objectives", "eps_min", "eps_max", "pgd_steps", "aware_weights", "adv_data", "adv_fraction", "benign_prob",
                "noise_std", "jpeg_min", "jpeg_max", "pool", "size", "source")


@dataclass
class TrainDetectorConfig:
    """Everything that defines a detector training run (module docstring for the data)."""

    localizer: str = "runs/localizer/localizer"
    out: str = "runs/detector"
    seed: int = 0
    steps: int = 300
    batch_size: int = 32  # half clean negatives, half attacked positives
    lr: float = 2e-3
    warmup: int = 10
    width: int = 16
    eps_ref: float = 8 / 255
    use_image: bool = True
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    objectives: list[str] = field(default_factory=lambda: ["untargeted", "hide"])
    eps_min: float = 2 / 255
    eps_max: float = 10 / 255
    pgd_steps: int = 5
    aware_weights: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0])  # for "aware-pgd", one per batch
    adv_data: list[str] = field(default_factory=list)  # folders built by `ansm attack` on the same training pool
    adv_fraction: float = 0.5  # share of steps whose positives come from adv_data (when given)
    benign_prob: float = 0.5  # share of clean negatives given benign noise or JPEG
    noise_std: float = 3 / 255
    jpeg_min: int = 70
    jpeg_max: int = 95
    pool: int = 512
    size: int = 64
    source: str | None = None
    calib_n: int = 128  # clean val images for the 5%-FPR threshold (0: threshold 0.5)
    ckpt_every: int = 50
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("eps_ref", "eps_min", "eps_max", "noise_std"):
            try:
                setattr(self, name, parse_eps(getattr(self, name)))
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        check_fields(self, positive=("lr", "eps_ref"), fraction=("adv_fraction", "benign_prob"),
                     non_negative=("eps_min", "noise_std"), positive_int=("steps", "batch_size", "width", "pgd_steps",
                                                                           "pool", "size", "ckpt_every"),
                     non_negative_int=("warmup", "calib_n", "jpeg_min", "jpeg_max"))
        if self.batch_size < 2:
            raise ConfigError(f"batch_size (--batch-size) must be >= 2 (half clean, half attacked), got {self.batch_size}")
        if not 0 < self.eps_max <= 1 or self.eps_min > self.eps_max:
            raise ConfigError(f"need 0 < eps_max <= 1 and eps_min <= eps_max, got {self.eps_min}, {self.eps_max}")
        if not 1 <= self.jpeg_min <= self.jpeg_max <= 100:
            raise ConfigError(f"need 1 <= jpeg_min <= jpeg_max <= 100, got {self.jpeg_min}, {self.jpeg_max}")
        bad = sorted(set(self.attacks) - set(ONLINE_ATTACKS))
        if not self.attacks or bad:
            raise ConfigError(f"online attacks must be among {', '.join(ONLINE_ATTACKS)}, got {self.attacks}")
        if not self.objectives or set(self.objectives) - {"untargeted", "hide"}:
            raise ConfigError(f"objectives must be among untargeted, hide; got {self.objectives}")
        self.aware_weights = [float(w) for w in self.aware_weights]
        if "aware-pgd" in self.attacks and (not self.aware_weights or min(self.aware_weights) <= 0):
            raise ConfigError(f"aware_weights must be positive numbers for the aware-pgd attack, got {self.aware_weights}")
        if self.adv_fraction == 1 and not self.adv_data:
            raise ConfigError("adv_fraction is 1 but no adv_data folders were given")
        self.adv_data = [str(p) for p in self.adv_data]
        self.attacks, self.objectives = list(self.attacks), list(self.objectives)


def lr_at(step: int, cfg: TrainDetectorConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def online_attack(localizer: nn.Module, x: torch.Tensor, m: torch.Tensor, g: torch.Generator,
                  attacks: Sequence[str], objectives: Sequence[str], eps_min: float, eps_max: float,
                  pgd_steps: int, detector: nn.Module | None = None,
                  aware_weights: Sequence[float] = ()) -> tuple[torch.Tensor, str]:
    """Attack ``x`` on ``localizer`` with an attack, objective and budget drawn from ``g``; 8-bit rounded.

    ``aware-pgd`` attacks ``[localizer, detector]`` together (:class:`DetectorAware`, a weight drawn from
    ``aware_weights``): the detector in training sees the attacker that knows it, as an adversarially trained
    classifier sees PGD on itself."""
    from ansm.attacks import create_attack
    from ansm.attacks.builder import quantize

    name = attacks[int(torch.randint(len(attacks), (1,), generator=g))]
    objective: str | Objective = objectives[int(torch.randint(len(objectives), (1,), generator=g))]
    eps = eps_min + (eps_max - eps_min) * torch.rand(1, generator=g).item()
    eps = max(eps, 1 / 255)
    model: nn.Module = localizer
    label = f"{name}/{objective}/{eps * 255:.1f}"
    if name == "aware-pgd":
        if detector is None or not aware_weights:
            raise ConfigError("the aware-pgd online attack needs the detector and at least one weight")
        weight = aware_weights[int(torch.randint(len(aware_weights), (1,), generator=g))]
        model, objective, name = JointTarget(localizer, detector), DetectorAware(objective, weight), "pgd"
        label += f"/w{weight:g}"
    kwargs: dict[str, Any] = {"eps": eps, "objective": objective}
    if name != "fgsm":
        kwargs |= {"steps": pgd_steps, "alpha": 2.5 * eps / pgd_steps}
    x_a = create_attack(name, model, **kwargs)(x, m, generator=seeded_generator(int(g.initial_seed() % 2**31), 7))
    return quantize(x_a, x, eps), label


def make_batch(step: int, cfg: TrainDetectorConfig, localizer: nn.Module, pool: Any, adv: Any,
               device: torch.device, detector: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Step ``step``'s (images, labels, source of the positives): a function of ``(seed, step)`` and, for the
    ``aware-pgd`` attack, of the detector's current weights (``detector``, put in eval mode while it is attacked)."""
    from ansm.defense.data import random_flip_rot90

    g = seeded_generator(cfg.seed, step)
    n_neg = cfg.batch_size // 2
    n_pos = cfg.batch_size - n_neg
    idx = torch.randint(len(pool), (n_neg,), generator=g)
    (clean,) = random_flip_rot90([pool.images[idx]], g)
    clean = benign_change(clean.float() / 255, g, cfg.benign_prob, cfg.noise_std, (cfg.jpeg_min, cfg.jpeg_max))
    if adv is not None and torch.rand(1, generator=g).item() < cfg.adv_fraction:
        j = torch.randint(len(adv), (n_pos,), generator=g)
        (pos,) = random_flip_rot90([adv.adversarial[j]], g)
        pos, source = pos.float() / 255, "offline"
    else:
        j = torch.randint(len(pool), (n_pos,), generator=g)
        x, m = random_flip_rot90([pool.images[j], pool.masks[j]], g)
        pos, source = online_attack(localizer, x.float().to(device) / 255, m.float().to(device), g, cfg.attacks,
                                    cfg.objectives, cfg.eps_min, cfg.eps_max, cfg.pgd_steps, detector,
                                    cfg.aware_weights)
        source = "online:" + source
    images = torch.cat([clean.to(device), pos.to(device)])
    labels = torch.cat([torch.zeros(n_neg), torch.ones(n_pos)]).to(device)
    return images, labels, source


def calibrate_threshold(detector: nn.Module, images: torch.Tensor, fpr: float = TARGET_FPR) -> float:
    """The probability above which at most ``fpr`` of ``images`` (clean, Bx3xHxW) are flagged."""
    with torch.no_grad():
        p = torch.cat([attack_probability(detector, images[i:i + 64]) for i in range(0, len(images), 64)])
    return threshold_at_fpr(p.cpu().numpy(), fpr)


def threshold_at_fpr(neg_scores: np.ndarray, fpr: float = TARGET_FPR) -> float:
    """Smallest score ``t`` with ``mean(neg > t) <= fpr`` (flags are ``score > t``)."""
    s = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    k = int(math.floor(fpr * len(s)))  # at most k negatives may lie above the threshold
    return float(s[k]) if k < len(s) else float(s[-1])


def _save_state(path: Path, det: AttackDetector, opt: torch.optim.Optimizer, step: int, cfg: TrainDetectorConfig,
                environments: list[dict[str, Any]]) -> None:
    opt_tensors, opt_meta = optimizer_to_tensors(opt)
    tensors = {f"model.{k}": v for k, v in det.state_dict().items()} | opt_tensors
    save_checkpoint(path, tensors, {"kind": "detector_train_state", "step": step, "config": asdict(cfg),
                                    "optimizer": opt_meta, "environments": environments})


def _load_state(path: Path, det: AttackDetector, opt: torch.optim.Optimizer,
                cfg: TrainDetectorConfig) -> tuple[int, list[dict[str, Any]]]:
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "detector_train_state":
        raise CheckpointError(f"{path}: not a detector training state (kind={meta.get('kind')!r}); use a new --out")
    saved, now = meta.get("config", {}), asdict(cfg)
    for key in _RESUME_KEYS:
        if saved.get(key) != now.get(key):
            raise CheckpointError(f"{path}: cannot resume, {key} was {saved.get(key)!r} but is now {now.get(key)!r} "
                                  "(use a new --out to change it)")
    load_state_dict_strict(det, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    optimizer_from_tensors(opt, tensors, meta["optimizer"])
    return int(meta["step"]), list(meta.get("environments", []))


def train_detector(cfg: TrainDetectorConfig, localizer: nn.Module | None = None,
                   on_step: Callable[[int, float], None] | None = None,
                   on_pool_item: Callable[[], None] | None = None) -> tuple[AttackDetector, dict[str, Any]]:
    """Train the detector against a frozen localizer; return (detector in eval mode, summary).

    Writes ``<out>/detector`` (final, with the calibrated ``threshold``), a resumable ``<out>/train_state`` (every
    ``ckpt_every`` steps) and ``<out>/summary.json``."""
    from ansm.data.synth import SyntheticForgeries
    from ansm.defense.data import load_adversarial_pool, render_clean_pool
    from ansm.defense.trainer import frozen_copy
    from ansm.utils import resolve_device

    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    localizer = frozen_copy(localizer, cfg.localizer).to(device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    det = AttackDetector(cfg.width, cfg.eps_ref, cfg.use_image).to(device)
    opt = torch.optim.Adam(det.parameters(), lr=cfg.lr)
    state_path = out / "train_state"
    start, environments = _load_state(state_path, det, opt, cfg) if checkpoint_paths(state_path)[1].exists() else (0, [])
    environments = environments_so_far(environments, run_environment(device))
    pool = render_clean_pool(cfg.pool, cfg.seed, cfg.size, cfg.source, on_item=on_pool_item)
    adv = load_adversarial_pool(cfg.adv_data, pool) if cfg.adv_data and cfg.adv_fraction > 0 else None
    losses: list[float] = []
    det.train()
    for step in range(start, cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        images, labels, _src = make_batch(step, cfg, localizer, pool, adv, device, det)
        loss = F.binary_cross_entropy_with_logits(det(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if on_step:
            on_step(step, losses[-1])
        done = step + 1
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            _save_state(state_path, det, opt, done, cfg, environments)
    det.eval()
    threshold, calib = 0.5, None
    if cfg.calib_n:
        val = SyntheticForgeries(cfg.calib_n, seed=cfg.seed, split="val", size=cfg.size, source=cfg.source)
        x = torch.stack([val[i]["image"] for i in range(cfg.calib_n)])
        x = benign_change(x, seeded_generator(cfg.seed, 99), cfg.benign_prob, cfg.noise_std, (cfg.jpeg_min, cfg.jpeg_max))
        threshold = calibrate_threshold(det, x.to(device))
        calib = {"split": "val", "n_images": cfg.calib_n, "target_fpr": TARGET_FPR, "benign_prob": cfg.benign_prob}
    summary = {"resumed_from": start, "steps": cfg.steps, "final_loss": losses[-1] if losses else None,
               "threshold": threshold, "calibration": calib, "train_s": round(time.perf_counter() - t0, 1),
               "environments": environments}
    save_detector(det, out / "detector", localizer=cfg.localizer, threshold=threshold, calibration=calib,
                  train_config=asdict(cfg), training=summary)
    write_json_atomic(out / "summary.json", {**summary, "config": asdict(cfg)})
    return det, summary


# ------------------------------------------------------------------------------------------------ evaluation
@dataclass(frozen=True)
class DetectorAttack:
    """A named attack for :func:`evaluate_detector`: registry name and keyword arguments; ``aware_weight`` not
    None makes it detector-aware (:class:`DetectorAware` with that weight, through :class:`JointTarget`)."""

    name: str
    attack: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    aware_weight: float | None = None


def auc_and_tpr(pos: np.ndarray, neg: np.ndarray, fpr: float = TARGET_FPR) -> tuple[float, float]:
    """(ROC AUC, TPR at the threshold that flags at most ``fpr`` of the negatives)."""
    from ansm.eval.metrics import roc_auc

    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    auc = roc_auc(np.concatenate([pos, neg]), np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]))
    return auc, float((pos > threshold_at_fpr(neg, fpr)).mean())


def bootstrap_auc_tpr(pos: np.ndarray, neg: np.ndarray, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile bootstrap intervals of (AUC, TPR@5%FPR), positives and negatives resampled independently."""
    rng = np.random.default_rng(seed)
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    aucs, tprs = [], []
    for _ in range(n_boot):
        p, q = pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))]
        a, t = auc_and_tpr(p, q)
        aucs.append(a)
        tprs.append(t)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return (tuple(np.quantile(aucs, [lo, hi]).tolist()), tuple(np.quantile(tprs, [lo, hi]).tolist()))  # type: ignore[return-value]


def evaluate_detector(detector: nn.Module, localizer: nn.Module, data: Iterable[dict[str, Any]],
                      attacks: Sequence[DetectorAttack], *,
                      benign: Mapping[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] | None = None,
                      batch_size: int = 16, device: torch.device | str = "cpu", seed: int = 0, n_boot: int = 1000,
                      threshold: float | None = None, on_item: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Image-level detection numbers per attack, clean images of ``data`` the negatives (module docstring).

    Every attack image is rounded to 8 bits inside its budget (a PNG). ``benign`` rows (name -> change) report
    how often benign changes are flagged: AUC against clean (0.5 = indistinguishable) and the share flagged at
    the clean 5%-FPR threshold. ``threshold`` (a probability, e.g. the checkpoint's calibrated one) adds each
    row's flag rate at that operating point, and ``evaded``: the share of forged images neither flagged nor
    localized (F1 <= ``EVADED_F1``).

    Returns ``{"n_images", "n_forged", "clean": {...}, "attacks": {name: {"auc", "auc_ci", "tpr_at_5fpr",
    "tpr_ci", "f1_loc", "f1_loc_ci", "mean_p", "flag_rate", ...}}, "benign": {...}}``.
    """
    from ansm.attacks import create_attack
    from ansm.attacks.base import eval_mode
    from ansm.attacks.builder import quantize
    from ansm.eval.evaluate import same_size_batches
    from ansm.eval.metrics import f1_score
    from ansm.eval.stats import bootstrap_ci

    benign = dict(benign or {})
    joint = JointTarget(localizer, detector)
    scores: dict[str, list[float]] = {"clean": []}
    f1s: dict[str, list[float]] = {"clean": []}
    forged_all: list[bool] = []
    with eval_mode(localizer), eval_mode(detector):
        for b, batch in enumerate(same_size_batches(data, batch_size)):
            x = torch.stack([it["image"] for it in batch]).to(device)
            m = torch.stack([it["mask"] for it in batch]).to(device)
            forged = m.flatten(1).amax(1) > 0.5
            forged_all += forged.tolist()
            with torch.no_grad():
                scores["clean"] += attack_probability(detector, x).tolist()
                f1s["clean"] += f1_score(torch.sigmoid(localizer(x)), m).tolist()
            for a, spec in enumerate(attacks):
                kwargs = dict(spec.kwargs)
                if spec.aware_weight is None:
                    atk = create_attack(spec.attack, localizer, **kwargs)
                else:
                    kwargs["objective"] = DetectorAware(kwargs.get("objective", "untargeted"), spec.aware_weight)
                    atk = create_attack(spec.attack, joint, **kwargs)
                with torch.enable_grad():
                    x_a = atk(x, m, generator=seeded_generator(seed, b, a)).detach()
                x_a = quantize(x_a, x, getattr(atk, "eps", None) if atk.norm == "linf" else None)
                with torch.no_grad():
                    scores.setdefault(spec.name, []).extend(attack_probability(detector, x_a).tolist())
                    f1s.setdefault(spec.name, []).extend(f1_score(torch.sigmoid(localizer(x_a)), m).tolist())
            for k, (bname, change) in enumerate(benign.items()):
                with torch.no_grad():
                    scores.setdefault(bname, []).extend(
                        attack_probability(detector, change(x, seeded_generator(seed, b, 1000 + k))).tolist())
            if on_item:
                on_item(len(batch))
    neg = np.array(scores["clean"])
    forged_idx = np.array(forged_all, dtype=bool)
    clean_thr = threshold_at_fpr(neg)

    def row(name: str) -> dict[str, Any]:
        pos = np.array(scores[name])
        auc, tpr = auc_and_tpr(pos, neg)
        auc_ci, tpr_ci = bootstrap_auc_tpr(pos, neg, n_boot=n_boot, seed=seed)
        r = {"n_pos": len(pos), "n_neg": len(neg), "auc": auc, "auc_ci": list(auc_ci), "tpr_at_5fpr": tpr,
             "tpr_ci": list(tpr_ci), "mean_p": float(pos.mean()),
             "flagged_at_clean_5fpr": float((pos > clean_thr).mean())}
        if threshold is not None:
            r["flag_rate"] = float((pos > threshold).mean())
        if name in f1s:
            f = np.array(f1s[name])[forged_idx]
            r |= {"f1_loc": float(f.mean()) if len(f) else None, "f1_loc_ci": list(bootstrap_ci(f, seed=seed))}
            if threshold is not None:
                r["evaded"] = evaded(pos, np.array(f1s[name]))
        return r

    def evaded(p: np.ndarray, f1: np.ndarray) -> float | None:
        hit = (p <= threshold) & (f1 <= EVADED_F1)
        return float(hit[forged_idx].mean()) if forged_idx.any() else None

    clean_f1 = np.array(f1s["clean"])[forged_idx]
    return {"n_images": len(neg), "n_forged": int(forged_idx.sum()), "target_fpr": TARGET_FPR,
            "clean": {"mean_p": float(neg.mean()), "f1_loc": float(clean_f1.mean()) if len(clean_f1) else None,
                      "f1_loc_ci": list(bootstrap_ci(clean_f1, seed=seed)),
                      **({"flag_rate": float((neg > threshold).mean()),
                          "evaded": evaded(neg, np.array(f1s["clean"]))} if threshold is not None else {})},
            "attacks": {spec.name: {**row(spec.name), "attack": spec.attack, "kwargs": _jsonable(spec.kwargs),
                                    "aware_weight": spec.aware_weight} for spec in attacks},
            "benign": {name: row(name) for name in benign}}


def _jsonable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in kwargs.items()}


__all__ = ["AttackDetector", "DetectorAttack", "DetectorAware", "JointTarget", "TrainDetectorConfig",
           "attack_probability", "auc_and_tpr", "benign_change", "evaluate_detector", "gaussian_noise", "jpeg",
           "load_detector",
           "save_detector", "threshold_at_fpr", "train_detector"]
