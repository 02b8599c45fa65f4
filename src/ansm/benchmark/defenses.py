"""The defenses a benchmark compares, and the models they need (trained here, resumably, or loaded).

A :class:`Defense` is "what the analyst runs": an optional preprocessing module followed by a localizer (the
target ``V`` for preprocessing defenses, a fine-tuned ``V'`` for adversarial fine-tuning). Trained defenses come
in several seeds, one :class:`Defense` per seed, grouped by ``group`` in the report.

Every model is trained into ``<out>/models/<name>`` by the library's own trainers (``train_localizer``,
``train_ansm``), so a killed benchmark resumes each one from its last checkpoint and skips finished ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ansm.benchmark.config import ANSM_GROUPS, BenchmarkConfig
from ansm.benchmark.transforms import JPEG, BitDepth, DiffJPEG, GaussianBlur, Median, bpda
from ansm.errors import ConfigError

Step = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)


@dataclass
class Defense:
    """One defended pipeline ``localizer(pre(x))``.

    Args:
        group: the report's row (``ansm``, ``jpeg-75``, ...); seeds of one method share it.
        family: ``none`` | ``ansm`` | ``transform`` | ``denoiser`` | ``model`` (what kind of defense it is).
        seed: training seed, ``None`` for untrained defenses.
        surrogate: another seed's copy, which a gray-box attacker attacks instead (``None``: no secret weights).
        samples: passes averaged by :meth:`logits` when ``pre`` is random (the stochastic ANSM): the analyst's
            mask is the mean probability over that many defended passes.
        eot_samples: noise draws an EOT attacker averages per gradient step (:meth:`attacker_views`).
    """

    group: str
    family: str
    localizer: nn.Module
    pre: nn.Module | None = None
    seed: int | None = None
    surrogate: "Defense | None" = None
    samples: int = 8
    eot_samples: int = 20

    @property
    def key(self) -> str:
        return self.group if self.seed is None else f"{self.group}@s{self.seed}"

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.pre, "stochastic", False))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """What the analyst sees: exact preprocessing, then the localizer (for a random preprocessing, the logit of
        the mean probability over ``samples`` passes)."""
        if not self.stochastic:
            return self.localizer(self.pre(x) if self.pre is not None else x)
        return torch.logit(_mean_over_draws(lambda z: torch.sigmoid(self.localizer(self.pre(z))), x, self.samples),
                           eps=1e-6)

    def attacker_view(self, view: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """A differentiable stand-in for :meth:`logits`, by name (see :meth:`attacker_views`); ``None`` gives the
        first one: the defense itself when it is differentiable, else BPDA with the identity backward pass."""
        views = self.attacker_views()
        if view is None:
            return next(iter(views.values()))
        if view not in views:
            raise ConfigError(f"defense {self.key!r} has no attacker view {view!r} (it has: {', '.join(views)})")
        return views[view]

    def attacker_views(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Every differentiable stand-in for :meth:`logits` an adaptive attacker has here, by name, default first.

        * ``white-box``: the pipeline itself (no preprocessing, or differentiable preprocessing: ANSM, median,
          blur, a denoiser);
        * ``bpda-identity``: exact preprocessing forward, identity backward (JPEG, bit depth);
        * ``bpda-diffjpeg`` (JPEG only): the exact codec forward, the gradient of :class:`DiffJPEG` at the same
          quality backward. The identity pretends JPEG keeps every frequency; DiffJPEG's gradient knows which
          ones it quantises away, so an attack through it need not waste its budget on them.

        A defense is only as strong as its weakest view, so an adaptive evaluation attacks through each and
        keeps the worst case per image (and reports each view's number: which gradient did the damage).
        """
        pre, loc = self.pre, self.localizer
        if pre is None:
            return {"white-box": loc}
        if self.stochastic:
            return stochastic_views(pre, loc, self.eot_samples)
        if not self.uses_bpda:
            return {"white-box": lambda z: loc(pre(z))}
        views: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"bpda-identity": lambda z: loc(bpda(pre, z))}
        if isinstance(pre, JPEG):
            approx = DiffJPEG(pre.quality)
            views["bpda-diffjpeg"] = lambda z: loc(bpda(pre, z, backward=approx))
        return views

    @property
    def uses_bpda(self) -> bool:
        return self.pre is not None and not getattr(self.pre, "differentiable", True)


# pixels per forward of stacked draws: more draws than fit are run in chunks (at the quick preset's 32 images of
# 64x64 all 20 EOT draws are one batch; a 1-megapixel photo gets 4 draws per forward, not 20)
DRAW_CHUNK_PIXELS = 1 << 22


def _mean_over_draws(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, draws: int) -> torch.Tensor:
    """``mean_k fn(x)`` over ``draws`` independent random draws, stacked into batches of at most
    ``DRAW_CHUNK_PIXELS`` pixels (without gradients that bounds the memory; under autograd, as in an EOT step,
    every chunk's graph is kept until the backward pass, so memory still grows with ``draws``)."""
    per_chunk = max(1, DRAW_CHUNK_PIXELS // max(1, x.numel() // max(1, x.shape[1])))
    parts = []  # (k, B, ...) per chunk; one chunk, the usual case, is exactly one batch of draws * B images
    for start in range(0, draws, per_chunk):
        k = min(per_chunk, draws - start)
        out = fn(x.repeat(k, 1, 1, 1))
        parts.append(out.view(k, *x.shape[:1], *out.shape[1:]))
    return torch.cat(parts).mean(0)


def stochastic_views(pre: nn.Module, loc: nn.Module, eot_samples: int,
                     fixed_seed: int = 20260) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The attacker views of a random preprocessing (the stochastic ANSM), the two that make randomness honest:

    * ``eot-<n>``: Expectation over Transformation (Athalye et al. 2018): every gradient step goes through the
      mean logits of ``n`` independent draws, so the attacker follows the expected gradient, not one sample's;
    * ``fixed-noise``: one draw, the same at every step (a generator re-seeded per call): the attack sees a
      deterministic network and can converge on it; it is scored, like every attack, on fresh draws.

    A single-draw gradient is deliberately not a view: it is the weak attack randomness is known to fool.
    """
    def fixed(z: torch.Tensor) -> torch.Tensor:
        before = pre.noise_generator
        pre.noise_generator = torch.Generator().manual_seed(fixed_seed)
        try:
            return loc(pre(z))
        finally:
            pre.noise_generator = before

    return {f"eot-{eot_samples}": lambda z: _mean_over_draws(lambda v: loc(pre(v)), z, eot_samples),
            "fixed-noise": fixed}


def _frozen(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _train_localizer(out: Path, cfg: BenchmarkConfig, arch: str, step: Step, label: str, **extra) -> nn.Module:
    from ansm.models.registry import load_localizer
    from ansm.models.train import TrainLocalizerConfig, train_localizer

    if (out / "localizer.json").is_file():
        return load_localizer(out / "localizer")
    lcfg = TrainLocalizerConfig(arch=arch, out=str(out), seed=extra.pop("seed", cfg.seed), size=cfg.size,
                                steps=extra.pop("steps", cfg.loc_steps),
                                batch_size=extra.pop("batch_size", cfg.loc_batch), pool=cfg.loc_pool, warmup=20, eval_n=0, ckpt_every=50, **extra)
    render, train = step(f"rendering data ({label})", lcfg.pool), step(f"training {label}", lcfg.steps)
    model, _ = train_localizer(lcfg, on_step=lambda s, _l: train(1), on_pool_item=lambda: render(1))
    return model


def robust_recipe(cfg: BenchmarkConfig) -> dict[str, Any]:
    """TrainANSMConfig fields of the robust ANSM (on top of the plain ANSM's steps, batch, pool and eps_d)."""
    total = cfg.ansm_stage1_steps + cfg.ansm_stage2_steps
    return {"defended_fraction": cfg.robust_defended_fraction, "pgd_steps": cfg.robust_pgd_steps,
            "curriculum": round(cfg.robust_curriculum * total), "clean_kl": cfg.robust_clean_kl,
            "mgr_pixel": cfg.robust_pixel, "ffa_pixel": cfg.robust_pixel, "eps_min": cfg.robust_eps_min,
            "eps_max": cfg.robust_eps_max}


def ansm_recipe(group: str, cfg: BenchmarkConfig) -> tuple[str, dict[str, Any]]:
    """(label, TrainANSMConfig fields on top of the plain ANSM's) of one of ``ANSM_GROUPS``."""
    if group == "ansm":
        return "ANSM", {}
    if group == "ansm-robust":
        return "robust ANSM", robust_recipe(cfg)
    if group == "ansm-stochastic":
        return "stochastic robust ANSM", robust_recipe(cfg) | {"noise_std": cfg.stochastic_noise_std}
    raise ConfigError(f"{group!r} is not an ANSM group ({', '.join(ANSM_GROUPS)})")


def _train_preprocessor(out: Path, cfg: BenchmarkConfig, localizer_path: str, localizer: nn.Module, seed: int,
                        loss: str, step: Step, label: str, **recipe: Any) -> nn.Module:
    from ansm.defense.ansm_net import load_ansm
    from ansm.defense.trainer import TrainANSMConfig, train_ansm

    if (out / "ansm.json").is_file():
        return load_ansm(out / "ansm")[0]
    s1, s2 = cfg.ansm_stage1_steps, cfg.ansm_stage2_steps
    # The baselines get ANSM's network and its whole step budget, in one stage (their loss has no stage 1).
    stage1, stage2 = (s1, s2) if loss == "ansm" else (0, s1 + s2)
    tcfg = TrainANSMConfig(localizer=localizer_path, out=str(out), loss=loss, seed=seed, stage1_steps=stage1,
                           stage2_steps=stage2, batch_size=cfg.ansm_batch, crop=None, eps_d=cfg.eps_d,
                           pool=cfg.ansm_pool, size=cfg.size, device=cfg.device, **recipe)
    advance = step(f"training {label}", tcfg.total_steps)
    model, _ = train_ansm(tcfg, localizer, on_step=lambda s, st, l: advance(1))
    return model


def _target_noise_std(cfg: BenchmarkConfig) -> float:
    """The benign-noise augmentation of the built-in target (0 for a user's localizer: we do not know theirs)."""
    from ansm.demo import DemoConfig

    return DemoConfig().loc_noise_std if cfg.localizer is None else 0.0


def build_defenses(cfg: BenchmarkConfig, device: torch.device, step: Step,
                   log: Callable[[str], None]) -> tuple[nn.Module, nn.Module | None, list[Defense]]:
    """Train or load every model the benchmark needs; return (target, transfer surrogate, defenses)."""
    from ansm.models.resolve import resolve_localizer

    models = Path(cfg.out) / "models"
    if cfg.localizer is None:
        target_path = str(models / "target" / "localizer")
        from ansm.demo import DEFENDED_LOCALIZER_KWARGS

        target = _train_localizer(models / "target", cfg, "twostream", step, "target localizer",
                                  arch_kwargs=dict(DEFENDED_LOCALIZER_KWARGS), noise_std=_target_noise_std(cfg))
    else:
        target_path, target = cfg.localizer, resolve_localizer(cfg.localizer)
    target = _frozen(target, device)
    log(f"target localizer: {target_path}")
    surrogate = None
    if "transfer" in cfg.threats:
        surrogate = _frozen(_train_localizer(models / f"surrogate-{cfg.surrogate_arch}", cfg, cfg.surrogate_arch, step,
                                             f"surrogate localizer ({cfg.surrogate_arch})"), device)

    defenses: list[Defense] = [Defense("none", "none", target)]
    groups = set(cfg.defenses)
    seeds = [cfg.seed + k for k in range(cfg.ansm_seeds)]
    for group in ANSM_GROUPS:
        if group not in groups:
            continue
        label, recipe = ansm_recipe(group, cfg)
        ansm = [Defense(group, "ansm", target, _frozen(_train_preprocessor(
                    models / f"{group}-s{s}", cfg, target_path, target, s, "ansm", step, f"{label} (seed {s})",
                    **recipe), device), s, samples=cfg.stochastic_samples, eot_samples=cfg.eot_samples) for s in seeds]
        for k, d in enumerate(ansm):  # gray-box: each seed's surrogate is the next seed's copy of the same recipe
            d.surrogate = ansm[(k + 1) % len(ansm)] if len(ansm) > 1 else None
        defenses += ansm
    fixed: list[tuple[str, str, nn.Module]] = []
    if "jpeg" in groups:
        fixed += [("jpeg", f"jpeg-{q}", JPEG(q)) for q in cfg.jpeg_qualities]
    if "median" in groups:
        fixed.append(("median", f"median-{cfg.median_size}", Median(cfg.median_size)))
    if "blur" in groups:
        fixed.append(("blur", f"blur-{cfg.blur_sigma:g}", GaussianBlur(cfg.blur_sigma)))
    if "bit-depth" in groups:
        fixed.append(("bit-depth", f"bits-{cfg.bit_depth}", BitDepth(cfg.bit_depth)))
    defenses += [Defense(name, "transform", target, module.to(device)) for _, name, module in fixed]
    base_seeds = [cfg.seed + k for k in range(cfg.baseline_seeds)]
    for kind in ("pixel", "feature"):
        if f"denoiser-{kind}" in groups:
            defenses += [Defense(f"denoiser-{kind}", "denoiser", target,
                                 _frozen(_train_preprocessor(models / f"denoiser-{kind}-s{s}", cfg, target_path, target, s,
                                                             kind, step, f"{kind}-loss denoiser (seed {s})"), device), s)
                         for s in base_seeds]
    if "adv-finetune" in groups:
        for s in base_seeds:
            # ANSM's budget (steps, batch, every example adversarial) and the target's benign-noise augmentation
            tuned = _train_localizer(models / f"adv-finetune-s{s}", cfg, "twostream", step,
                                     f"PGD adversarial fine-tuning (seed {s})", seed=s, steps=cfg.advft_budget,
                                     init=target_path, adv_eps=cfg.advft_eps, adv_fraction=1.0, lr=1e-3,
                                     trades_beta=cfg.advft_trades,
                                     batch_size=cfg.ansm_batch, noise_std=_target_noise_std(cfg))
            defenses.append(Defense("adv-finetune", "model", _frozen(tuned, device), None, s))
    return target, surrogate, defenses
