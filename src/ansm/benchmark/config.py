"""What a benchmark run is: one dataclass, three presets.

``quick`` is sized for 2 CPU cores in about an hour and a half (95 min measured): 64x64 held-out synthetic images
of the test split, the demo's localizer recipe, the benchmark's own ANSM recipe "online FFA + MgR", fewer seeds and
restarts, each cut said in the report. ``full`` is the same grid at the sizes a paper table needs, for a GPU.
``informed`` is quick's sizes with the defenses an informed attacker is tested against (plain and robust ANSM,
adversarial fine-tuning), 3 seeds each. Every field can be overridden on top of a preset (``ansm benchmark --preset
quick --set adaptive_steps=200``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ansm.errors import ConfigError
from ansm.utils import parse_eps
from ansm.validate import check_fields

DEFENSE_GROUPS = ("none", "ansm", "ansm-robust", "ansm-stochastic", "jpeg", "median", "blur", "bit-depth", "denoiser-pixel", "denoiser-feature",
                  "adv-finetune")
# the groups whose defense is a trained ANSM (one per seed; ansm.benchmark.defenses.ansm_recipe says how each trains)
ANSM_GROUPS = ("ansm", "ansm-robust", "ansm-stochastic")
# the stochastic ANSM is opt-in (`--set defenses=...`): its white-box rows attack through 20 draws per step (EOT)
DEFAULT_DEFENSES = tuple(g for g in DEFENSE_GROUPS if g != "ansm-stochastic")
THREATS = ("oblivious", "transfer", "gray-box", "adaptive")


@dataclass
class BenchmarkConfig:
    preset: str = "quick"
    out: str = "runs/benchmark-quick"
    data: str = "synthetic:32"  # `synthetic:N` (held-out test split) or a dataset folder
    size: int = 64  # synthetic image side (training and test)
    max_side: int | None = None  # real datasets: downscale the longer side to this (None: native size)
    seed: int = 0
    device: str = "auto"
    batch_size: int = 16
    # --- models -------------------------------------------------------------------------------------------
    localizer: str | None = None  # None: train the built-in twostream with the recipe below; else a checkpoint
    loc_steps: int = 500
    loc_batch: int = 16
    loc_pool: int = 800
    surrogate_arch: str = "unet-small"  # transfer attacks are crafted on this architecture, trained the same way
    ansm_seeds: int = 2  # ANSM seeds (>= 2: each seed's gray-box surrogate is the next seed's ANSM)
    baseline_seeds: int = 1  # seeds of the trained baselines (denoisers, adversarial fine-tuning)
    # The benchmark's ANSM recipe is labelled "online FFA + MgR" in its report: online attacks only, FFA 40 + MgR 180
    # steps (the demo's is MgR alone from offline attack sets, which need building first; docs/benchmark.md
    # says why they differ). Its baselines get the same step budget.
    ansm_stage1_steps: int = 40
    ansm_stage2_steps: int = 180
    ansm_batch: int = 16
    ansm_pool: int = 400
    eps_d: float = 16 / 255
    # The robust ANSM ("ansm-robust", adversarially trained: ansm.defense.trainer's robust recipe): ANSM's steps,
    # batch and seeds, with this share of the online attacks crafted through ANSM + localizer, PGD of this many
    # steps (FGSM and PGD are the online mix), the budget ramped over this share of the steps, and the
    # clean-preservation KL at this weight. Chosen on the synthetic val split (experiments/robust_val.py; the table
    # in docs/benchmark.md: every variant tied near F1 0 under the adaptive attack, so the cheapest, without the KL)
    robust_defended_fraction: float = 1.0
    robust_pgd_steps: int = 3
    robust_curriculum: float = 0.5
    robust_clean_kl: float = 0.0
    # weight of the pixel term L1(ANSM(x_a), x_o) + L1(ANSM(x_o), x_o) (TrainANSMConfig.mgr_pixel and ffa_pixel, in
    # 1/255 units) in the robust recipe: it anchors ANSM to the clean image where the min-max alone let it collapse
    # into a constant colour shift (docs/benchmark.md, "Attackers who know ANSM")
    robust_pixel: float = 0.0
    # the online attacks' budget range in robust training (TrainANSMConfig.eps_min / eps_max, whose defaults these are)
    robust_eps_min: float = 4 / 255
    robust_eps_max: float = 10 / 255
    # The stochastic ANSM ("ansm-stochastic", opt-in): the robust recipe with Gaussian noise of this std on ANSM's
    # network input (ansm_net.py), in training and at inference; the analyst's mask is the mean probability over
    # `stochastic_samples` passes, and white-box attackers average `eot_samples` draws per step (EOT) or fix one.
    stochastic_noise_std: float = 8 / 255
    stochastic_samples: int = 8
    eot_samples: int = 20
    # PGD adversarial fine-tuning, starting from the target localizer: None = ANSM's budget (stage 1 + stage 2
    # steps at ANSM's batch, every example adversarial), with the target's benign-noise augmentation kept
    advft_steps: int | None = None
    advft_eps: float = 8 / 255
    # > 0: the fine-tuning is TRADES with this beta (TrainLocalizerConfig.trades_beta) instead of PGD training
    advft_trades: float = 0.0
    # --- baselines -----------------------------------------------------------------------------------------
    defenses: list[str] = field(default_factory=lambda: list(DEFAULT_DEFENSES))
    jpeg_qualities: list[int] = field(default_factory=lambda: [75, 90])
    median_size: int = 3
    blur_sigma: float = 1.0
    bit_depth: int = 5
    # --- attacks -------------------------------------------------------------------------------------------
    threats: list[str] = field(default_factory=lambda: list(THREATS))
    eps_grid: list[float] = field(default_factory=lambda: [2 / 255, 4 / 255, 8 / 255, 16 / 255])
    eps_main: float = 8 / 255  # the budget of the summary table
    pgd_steps: int = 10  # oblivious / transfer / gray-box PGD (alpha = 2.5 eps / steps)
    adaptive_steps: int = 100
    adaptive_restarts: int = 1  # per objective
    adaptive_objectives: list[str] = field(default_factory=lambda: ["untargeted", "hide"])
    adaptive_eps: list[float] = field(default_factory=lambda: [4 / 255, 8 / 255])  # >= 2: the eps check runs
    steps_curve: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100])
    # --- sanity checks (each can fail; docs/benchmark.md) ---------------------------------------------------
    unbounded_eps: float = 64 / 255  # the adaptive attack at this budget must take every defense's F1 to ~0
    unbounded_steps: int = 50
    unbounded_f1_max: float = 0.05  # "~0"
    square_queries: int = 300  # gradient-free Square attack per objective
    check_margin: float = 0.05  # F1 by which Square may beat, or doubling the steps may lower, the gradient attack
    tolerance: float = 0.01  # F1 noise allowed where F1 should not rise (larger eps)

    def __post_init__(self) -> None:
        for name in ("eps_d", "advft_eps", "eps_main", "unbounded_eps", "stochastic_noise_std", "robust_eps_min",
                     "robust_eps_max"):
            setattr(self, name, budget(name, getattr(self, name)))
        self.eps_grid = budgets("eps_grid", self.eps_grid)
        self.adaptive_eps = budgets("adaptive_eps", self.adaptive_eps)
        if not any(abs(e - self.eps_main) < 1e-9 for e in self.eps_grid):
            raise ConfigError(f"eps_main {self.eps_main * 255:.1f}/255 must be one of eps_grid")
        if "adaptive" in self.threats and not any(abs(e - self.eps_main) < 1e-9 for e in self.adaptive_eps):
            raise ConfigError(f"eps_main {self.eps_main * 255:.1f}/255 must be one of adaptive_eps")
        bad = sorted(set(self.defenses) - set(DEFENSE_GROUPS))
        if bad or "none" not in self.defenses:
            raise ConfigError(f"defenses must include 'none' and come from {', '.join(DEFENSE_GROUPS)}; got {bad or self.defenses}")
        bad = sorted(set(self.threats) - set(THREATS))
        if bad or "oblivious" not in self.threats:
            raise ConfigError(f"threats must include 'oblivious' and come from {', '.join(THREATS)}; got {bad or self.threats}")
        if "gray-box" in self.threats and set(ANSM_GROUPS) & set(self.defenses) and self.ansm_seeds < 2:
            raise ConfigError("the gray-box threat needs ansm_seeds >= 2 (a surrogate ANSM trained with another seed)")
        if set(self.adaptive_objectives) - {"untargeted", "hide"} or not self.adaptive_objectives:
            raise ConfigError(f"adaptive_objectives must be among untargeted, hide; got {self.adaptive_objectives}")
        for name in ("batch_size", "loc_steps", "ansm_seeds", "baseline_seeds", "pgd_steps", "adaptive_steps",
                     "adaptive_restarts", "size", "unbounded_steps", "square_queries"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.robust_eps_min <= self.robust_eps_max <= 1:
            raise ConfigError(f"need 0 <= robust_eps_min <= robust_eps_max <= 1, got {self.robust_eps_min}, {self.robust_eps_max}")
        if self.advft_steps is not None and int(self.advft_steps) < 1:
            raise ConfigError(f"advft_steps must be >= 1 (or None: ANSM's budget), got {self.advft_steps}")
        # the convergence check compares the gradient attack after half its steps with after all of them
        self.steps_curve = sorted({int(s) for s in self.steps_curve if 1 <= int(s) <= self.adaptive_steps}
                                  | {self.adaptive_steps, max(1, self.adaptive_steps // 2)})
        for name in ("tolerance", "check_margin", "unbounded_f1_max"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        # NaN passes every comparison above: ansm.validate refuses it in every float field
        check_fields(self, "--set {name}", non_negative=("tolerance", "robust_clean_kl", "robust_pixel", "advft_trades"), positive=("blur_sigma",),
                     fraction=("robust_defended_fraction", "robust_curriculum", "stochastic_noise_std"),
                     non_negative_int=("ansm_stage1_steps", "ansm_stage2_steps"),
                     positive_int=("loc_batch", "loc_pool", "ansm_batch", "ansm_pool", "median_size", "bit_depth",
                                   "max_side", "robust_pgd_steps", "stochastic_samples", "eot_samples"))

    @property
    def advft_budget(self) -> int:
        """Adversarial fine-tuning steps: ``advft_steps`` or ANSM's total steps (equal budgets)."""
        return int(self.advft_steps) if self.advft_steps is not None else self.ansm_stage1_steps + self.ansm_stage2_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def budget(name: str, value: Any) -> float:
    """One L-inf budget setting, in pixel units: ``"8/255"`` or ``0.0314``. Budgets above 1 are refused here
    (``parse_eps`` allows them, since L2 budgets are larger): they are always a missing ``/255``."""
    try:
        eps = parse_eps(value)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if eps > 1:
        raise ConfigError(f"{name}: budgets are in pixel units (values in [0, 1]): write {value}/255, not {value}")
    return eps


def budgets(name: str, value: Any) -> list[float]:
    """A sorted list of budgets from a list, one number, or a comma-separated string ("4/255,8/255")."""
    items = value.split(",") if isinstance(value, str) else (value if isinstance(value, (list, tuple)) else [value])
    if not items or items == [""]:
        raise ConfigError(f"{name}: give at least one budget")
    return sorted(budget(name, e.strip() if isinstance(e, str) else e) for e in items)


PRESETS: dict[str, dict[str, Any]] = {
    # 2 CPU cores, ~95 min: 32 held-out 64x64 images, 2 ANSM seeds, 1 seed per baseline, adaptive PGD 100
    # steps x 1 restart per objective at 4/255 and 8/255 (the adaptive attacks are ~half of the run time).
    "quick": {},
    # One GPU: 200 held-out 128x128 images, the default train-localizer recipe, 3 seeds of everything,
    # 200-step adaptive attacks with 3 restarts per objective over the whole eps grid.
    "full": {"out": "runs/benchmark-full", "data": "synthetic:200", "size": 128, "loc_steps": 1200, "loc_batch": 8,
             "loc_pool": 1200, "ansm_seeds": 3, "baseline_seeds": 3, "ansm_stage1_steps": 200,
             "ansm_stage2_steps": 1000, "ansm_pool": 1200, "adaptive_steps": 200, "unbounded_steps": 100,
             "square_queries": 1000,
             "adaptive_restarts": 3, "adaptive_eps": [2 / 255, 4 / 255, 8 / 255, 16 / 255],
             "steps_curve": [1, 2, 5, 10, 20, 50, 100, 200], "batch_size": 32},
    # Attackers who know the defense (docs/benchmark.md): the quick preset's sizes and budgets, with the plain ANSM,
    # the robust ANSM and PGD adversarial fine-tuning of the localizer side by side at equal step budgets, 3 seeds of
    # each, under oblivious, gray-box and white-box adaptive attacks (PGD-100, 2 restarts per objective) at 2, 4
    # and 8 /255.
    "informed": {"out": "runs/benchmark-informed", "ansm_seeds": 3, "baseline_seeds": 3,
                 "defenses": ["none", "ansm", "ansm-robust", "adv-finetune"],
                 "threats": ["oblivious", "gray-box", "adaptive"], "adaptive_restarts": 2,
                 "adaptive_eps": [2 / 255, 4 / 255, 8 / 255]},
}


def preset_config(name: str, **overrides: Any) -> BenchmarkConfig:
    """The preset's configuration with ``overrides`` applied (unknown names are a one-line error)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    known = {f.name for f in fields(BenchmarkConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ConfigError(f"unknown benchmark setting(s): {', '.join(bad)}")
    return BenchmarkConfig(**{"preset": name, **PRESETS[name], **overrides})
