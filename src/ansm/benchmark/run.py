"""``run_benchmark``: train or load every model, attack under every threat model, score every defense.

The work is split into *units*: one unit is one way of crafting adversarial images (threat model, attack, eps
and, for gray-box, adaptive and the check attacks, the defense attacked), run over the whole test set and scored
on the defenses it concerns. Besides the threat models, two units per defense exist for the sanity checks: the
adaptive attack at an unbounded budget, and the gradient-free Square attack. Each finished unit is written to ``<out>/cells/<unit>.json`` (per-image F1, IoU and AUC),
so a killed benchmark resumes at the first unfinished unit; the report is rebuilt from those files.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ansm.benchmark.config import BenchmarkConfig
from ansm.benchmark.defenses import Defense, Step, build_defenses
from ansm.benchmark.threats import adaptive_attack, fgsm, gradient_free_attack, pgd
from ansm.errors import CheckpointError
from ansm.eval.metrics import LocalizationMeter
from ansm.utils import resolve_device, seeded_generator, write_json_atomic

_PER_IMAGE = ("names", "forged", "f1", "iou", "auc", "fp_rate")  # what a cell file keeps per image
# Settings that may change between a run and its resumption (they do not change any number; `out` may be spelled
# relative or absolute, or the folder moved).
_RESUME_FREE = ("out", "device", "batch_size", "preset", "tolerance", "check_margin", "unbounded_f1_max")


@dataclass(frozen=True)
class Unit:
    threat: str  # clean | oblivious | transfer | gray-box | adaptive | unbounded | gradient-free
    attack: str | None  # fgsm | pgd | square | None (clean)
    eps: float | None
    defense: str | None = None  # the one defense attacked (gray-box, adaptive); None: scored on all

    @property
    def key(self) -> str:
        if self.threat == "clean":
            return "clean"
        return f"{self.threat}-{self.attack}-{self.eps * 255:g}" + (f"-{self.defense}" if self.defense else "")


def plan_units(cfg: BenchmarkConfig, defenses: list[Defense]) -> list[Unit]:
    units = [Unit("clean", None, None)]
    units += [Unit("oblivious", a, e) for a in ("fgsm", "pgd") for e in cfg.eps_grid]
    if "transfer" in cfg.threats:
        units += [Unit("transfer", "pgd", e) for e in cfg.eps_grid]
    if "gray-box" in cfg.threats:
        units += [Unit("gray-box", "pgd", e, d.key) for d in defenses if d.surrogate is not None for e in cfg.adaptive_eps]
    if "adaptive" in cfg.threats:
        units += [Unit("adaptive", "pgd", e, d.key) for d in defenses for e in cfg.adaptive_eps]
        units += [Unit("unbounded", "pgd", cfg.unbounded_eps, d.key) for d in defenses]
        units += [Unit("gradient-free", "square", cfg.eps_main, d.key) for d in defenses]
    return units


def _check_resume(out: Path, cfg: BenchmarkConfig) -> None:
    """Refuse to mix results of two configurations in one folder."""
    path = out / "benchmark.json"
    now = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
    if path.is_file():
        saved = json.loads(path.read_text()).get("config", {})
        # a setting added to BenchmarkConfig after the run started reads as its default (what the run used)
        defaults = BenchmarkConfig(out=cfg.out).to_dict()
        for key, value in now.items():
            if saved.get(key, defaults[key]) != value:
                raise CheckpointError(f"{out}: holds a benchmark run with {key}={saved.get(key)!r}, now {value!r} "
                                      "(use a new --out)")
    else:
        write_json_atomic(path, {"config": now})


def _load_batches(cfg: BenchmarkConfig) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    from ansm.data.datasets import open_data
    from ansm.eval.evaluate import same_size_batches

    kwargs = {"max_side": cfg.max_side, "resize_masks": cfg.max_side is not None} if cfg.max_side else {}
    data = open_data(cfg.data, size=cfg.size, seed=0, **kwargs)
    return [(torch.stack([it["image"] for it in b]), torch.stack([it["mask"] for it in b]), [str(it["name"]) for it in b])
            for b in same_size_batches(data, cfg.batch_size)]


def _meter_dict(meter: LocalizationMeter) -> dict[str, Any]:
    return {k: getattr(meter, k) for k in _PER_IMAGE}


def _generator(cfg: BenchmarkConfig, unit_key: str, batch: int) -> torch.Generator:
    """Randomness of one unit on one batch: a function of (seed, unit, batch), so any unit can recreate another's."""
    return seeded_generator(cfg.seed, zlib.crc32(unit_key.encode()), batch)


def oblivious_images(unit: Unit, cfg: BenchmarkConfig, target: torch.nn.Module, x: torch.Tensor, m: torch.Tensor,
                     b: int) -> torch.Tensor:
    """Exactly the images the oblivious unit ``unit`` crafts on batch ``b``."""
    gen = _generator(cfg, unit.key, b)
    attack = fgsm(target, unit.eps) if unit.attack == "fgsm" else pgd(target, unit.eps, cfg.pgd_steps)
    return attack(x, m, generator=gen)


def run_unit(unit: Unit, cfg: BenchmarkConfig, batches: list, defenses: list[Defense], target: torch.nn.Module,
             surrogate: torch.nn.Module | None, device: torch.device, advance: Callable[[int], None]) -> dict[str, Any]:
    """Craft the unit's adversarial images batch by batch and score the defenses concerned."""
    by_key = {d.key: d for d in defenses}
    scored = [by_key[unit.defense]] if unit.defense else defenses
    meters = {d.key: LocalizationMeter() for d in scored}
    gradient_only = LocalizationMeter()  # adaptive units: the gradient attacks alone, for the checks
    curves: dict[int, list[float]] = {}
    for b, (x, m, names) in enumerate(batches):
        x, m = x.to(device), m.to(device)
        gen = _generator(cfg, unit.key, b)
        # a random defense (the stochastic ANSM) draws from torch's global generator: seeded per (unit, batch),
        # so its draws, like every other, do not depend on which units ran before (resume gives the same numbers)
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=_generator(cfg, unit.key + "/draws", b))))
        if unit.threat == "clean":
            x_a = x
        elif unit.threat == "oblivious":
            x_a = oblivious_images(unit, cfg, target, x, m, b)
        elif unit.threat == "transfer":
            x_a = pgd(surrogate, unit.eps, cfg.pgd_steps)(x, m, generator=gen)
        elif unit.threat == "gray-box":
            x_a = pgd(scored[0].surrogate.attacker_view(), unit.eps, cfg.pgd_steps)(x, m, generator=gen)
        elif unit.threat == "gradient-free":
            x_a = gradient_free_attack(scored[0].logits, x, m, unit.eps, cfg.square_queries, cfg.adaptive_objectives, gen)
        elif unit.threat == "unbounded":
            x_a = adaptive_attack(scored[0].attacker_views(), scored[0].logits, x, m, unit.eps, cfg.unbounded_steps, 1,
                                  cfg.adaptive_objectives, gen).gradient
        else:
            d = scored[0]
            curve_at = cfg.steps_curve if abs(unit.eps - cfg.eps_main) < 1e-9 else ()
            ignore_defense = [oblivious_images(Unit("oblivious", a, unit.eps), cfg, target, x, m, b) for a in ("pgd", "fgsm")]
            res = adaptive_attack(d.attacker_views(), d.logits, x, m, unit.eps, cfg.adaptive_steps, cfg.adaptive_restarts,
                                  cfg.adaptive_objectives, gen, curve_at, ignore_defense)
            x_a = res.worst
            gradient_only.update(torch.sigmoid(d.logits(res.gradient)), m, names)
            for k, f1 in res.curve.items():
                curves.setdefault(k, []).extend(f1.cpu().tolist())
        for d in scored:
            meters[d.key].update(torch.sigmoid(d.logits(x_a)), m, names)
        advance(len(names))
    result: dict[str, Any] = {"unit": asdict(unit), "defenses": {k: _meter_dict(v) for k, v in meters.items()}}
    if unit.threat == "adaptive":
        result["gradient_only"] = {unit.defense: _meter_dict(gradient_only)}
    if curves:
        result["curve"] = {str(k): v for k, v in sorted(curves.items())}
    return result


def _training_times(models: Path) -> dict[str, float]:
    """Seconds each model took to train, from its checkpoint's JSON (the invocation that finished it)."""
    times = {}
    for meta_path in sorted(models.glob("*/*.json")):
        if meta_path.stem in ("localizer", "ansm"):
            training = json.loads(meta_path.read_text()).get("training", {})
            if "train_s" in training:
                times[meta_path.parent.name] = training["train_s"]
    return times


def run_benchmark(cfg: BenchmarkConfig, step: Step | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark (module docstring) and write ``report.{json,md,html}`` into ``cfg.out``; return the report."""
    from ansm.benchmark.report import build_report, write_reports
    from ansm.utils import seed_everything

    def noop(_desc: str, _total: int) -> Callable[[int], None]:
        return lambda _n=1: None

    step = step or noop
    t0 = time.perf_counter()
    batches = _load_batches(cfg)  # bad data fails here, before anything is trained or written
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    target, surrogate, defenses = build_defenses(cfg, device, step, log)
    t_models = time.perf_counter() - t0
    log(f"models ready ({t_models:.0f} s): {', '.join(d.key for d in defenses)}")

    n_images = sum(len(b[2]) for b in batches)
    units = plan_units(cfg, defenses)
    cells: dict[str, dict[str, Any]] = {}
    t_units: dict[str, float] = {}
    for unit in units:
        path = out / "cells" / f"{unit.key}.json"
        if path.is_file():
            cells[unit.key] = json.loads(path.read_text())
            continue
        t = time.perf_counter()
        label = unit.key if unit.threat == "clean" else f"{unit.threat} {unit.attack} {unit.eps * 255:g}/255" + (
            f" on {unit.defense}" if unit.defense else "")
        cells[unit.key] = run_unit(unit, cfg, batches, defenses, target, surrogate, device, step(label, n_images))
        t_units[unit.key] = round(time.perf_counter() - t, 1)
        cells[unit.key]["seconds"] = t_units[unit.key]
        write_json_atomic(path, cells[unit.key])
    report = build_report(cfg, defenses, units, cells)
    report["timings_s"] = {"models": round(t_models, 1), "attacks": round(time.perf_counter() - t0 - t_models, 1),
                           "total": round(time.perf_counter() - t0, 1), "per_model": _training_times(out / "models"),
                           "per_unit": {k: c.get("seconds") for k, c in cells.items()}}
    write_reports(out, report)
    for line in report["checks"]["lines"]:
        log(line)
    log(f"wrote {out / 'report.md'}, {out / 'report.json'}, {out / 'report.html'}")
    return report
