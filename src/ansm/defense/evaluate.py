"""Measure a defense the way the paper does, plus the adaptive attacker the paper does not.

For each batch the clean images go through the localizer with and without each defense once; then each attack
produces ``x_a`` once and every defense is scored on it, so all defenses see the *same* adversarial images.

* paper setting (``adaptive=None``): the attack targets the bare localizer V, then ANSM is applied;
* adaptive (``adaptive="<defense>"``): the attack targets V∘ANSM end to end (white-box through the defense),
  the honest number for a differentiable preprocessing defense.

Per attack the numbers are F1@0.5 averaged over forged images: ``f1_clean`` = V(x_o), ``f1_adv`` = V(x_a), and per
defense ``f1_def`` = V(D(x_a)), ``f1_clean_def`` = V(D(x_o)), ``recovery = (f1_def - f1_adv) / (f1_clean - f1_adv)``
(``None`` when the attack did not lower F1).

Recovery is only printed where it means something: its reference is the same attack on the bare localizer (an
adaptive attack names that attack in ``AttackSpec.reference``; without one it has no recovery), the attack took
at least ``RECOVERY_MIN_GAP`` F1 away, and at least ``RECOVERY_MIN_IMAGES`` forged images were scored (a 5-image
ratio of two small differences once read 1.68). Every per-attack entry also carries a bootstrap 95% interval of
``f1_def`` over images and the pixel false-positive rate on authentic images (clean, attacked, defended).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn

from ansm.attacks import create_attack
from ansm.attacks.base import eval_mode, random_signs
from ansm.eval.evaluate import same_size_batches
from ansm.eval.metrics import LocalizationMeter
from ansm.eval.stats import bootstrap_ci
from ansm.errors import ConfigError
from ansm.utils import read_json, seeded_generator, write_json_atomic

RECOVERY_MIN_GAP = 0.05  # F1 the attack must take away before a recovery ratio is reported
RECOVERY_MIN_IMAGES = 20  # forged images needed before a recovery ratio is reported


@dataclass(frozen=True)
class AttackSpec:
    """A named attack: registry name, keyword arguments, and optionally the defense it is adaptive to."""

    name: str
    attack: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    adaptive: str | None = None
    reference: str | None = None  # adaptive attacks: the attack (by name) whose bare-localizer F1 is recovery's reference


@torch.no_grad()
def perturbation_profile(ansm: nn.Module, x: torch.Tensor, noise_eps: float = 4 / 255, seed: int = 0) -> dict[str, float]:
    """What a trained ANSM does to images ``x``, beyond F1: a collapsed one shows here first.

    * ``mean_abs``: mean |ANSM(x) - x|, in 1/255 units;
    * ``at_bound``: share of pixel values moved to within 5% of eps_d (tanh saturated: no gradient reaches g there);
    * ``let_through``: the share of random sign noise ``d`` of size ``noise_eps`` that survives ANSM,
      ``<ANSM(x + d) - ANSM(x), d> / <d, d>``: 1 for the identity or a constant shift (an attacker's noise passes
      untouched), below 1 where ANSM removes noise.

    The adversarially trained ANSM of the benchmark's quick budget collapsed into a constant colour shift (at_bound
    up to 1.0, let_through 1.00) while its F1 looked like the bare localizer's (docs/benchmark.md)."""
    d = random_signs(x.shape, x, torch.Generator().manual_seed(seed)) * noise_eps
    y, y_d = ansm(x), ansm(x + d)
    move = (y - x).abs()
    return {"mean_abs": move.mean().item() * 255,
            "at_bound": (move > 0.95 * float(ansm.eps_d)).float().mean().item(),
            "let_through": ((y_d - y) * d).sum().item() / (d * d).sum().item()}


def recovery(f1_clean: float, f1_adv: float, f1_def: float) -> float | None:
    """Share of the F1 the attack took away that the defense gives back (None if nothing was taken away)."""
    gap = f1_clean - f1_adv
    if not math.isfinite(gap) or gap <= 1e-6:
        return None
    return (f1_def - f1_adv) / gap


def reportable_recovery(f1_clean: float, f1_ref: float | None, f1_def: float, n_forged: int) -> float | None:
    """:func:`recovery` where it means something (module docstring), else ``None``."""
    if f1_ref is None or n_forged < RECOVERY_MIN_IMAGES or not f1_clean - f1_ref >= RECOVERY_MIN_GAP:
        return None
    return recovery(f1_clean, f1_ref, f1_def)


@torch.no_grad()
def _prob(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(model(x))


def evaluate_defenses(localizer: nn.Module, dataset: Iterable[dict[str, Any]], attacks: list[AttackSpec],
                      defenses: Mapping[str, nn.Module], *, batch_size: int = 16, device: torch.device | str = "cpu",
                      seed: int = 0, on_item: Callable[[int], None] | None = None,
                      keep: int = 0, progress_file: str | os.PathLike | None = None,
                      on_resumed: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Score ``defenses`` against ``attacks`` on ``dataset``; see the module docstring for the numbers.

    Args:
        keep: keep the first ``keep`` forged examples' images and probability maps (for figures).
        progress_file: a JSON file holding the finished batches' per-image numbers, rewritten atomically after
            every batch. A call given the same file (same attacks, defenses, seed and batch size) skips those
            batches, so an evaluation killed after an hour resumes at the next batch, with the numbers an
            unbroken run gives (each batch's attacks are seeded by the batch's index). ``keep`` examples are
            not kept across a resume.
        on_resumed: called instead of ``on_item`` for each batch skipped because ``progress_file`` has it (so a
            progress bar can tell them from timed work); by default ``on_item`` is called for them too.
    Returns:
        ``{"attacks": {name: {"f1_clean", "f1_adv", "defenses": {d: {"f1_def", "f1_clean_def", "recovery",
        ...}}}}, "clean": {...}, "n_images", "n_forged", "examples": [...]}``.
    """
    names = {spec.name for spec in attacks}
    for spec in attacks:
        if spec.adaptive is not None and spec.adaptive not in defenses:
            raise ValueError(f"attack {spec.name}: adaptive to unknown defense {spec.adaptive!r}")
        if spec.reference is not None and spec.reference not in names:
            raise ValueError(f"attack {spec.name}: reference {spec.reference!r} is not among the attacks")
    progress = _Progress(progress_file, {"attacks": [[a.name, a.attack, repr(sorted(a.kwargs.items())), a.adaptive]
                                                     for a in attacks], "defenses": list(defenses), "seed": seed,
                                         "batch_size": batch_size})
    meters = progress.meters

    def meter(*key: str) -> LocalizationMeter:
        return meters.setdefault(key, LocalizationMeter())

    examples: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        for module in (localizer, *defenses.values()):
            stack.enter_context(eval_mode(module))
        for b, batch in enumerate(same_size_batches(dataset, batch_size)):
            names = [str(it["name"]) for it in batch]
            if progress.skip(b, names):  # finished before a resume
                if on_resumed or on_item:
                    (on_resumed or on_item)(len(batch))
                continue
            x = torch.stack([it["image"] for it in batch]).to(device)
            m = torch.stack([it["mask"] for it in batch]).to(device)
            p_clean = _prob(localizer, x)
            meter("clean", "none").update(p_clean, m, names)
            p_clean_def = {}
            for d, defense in defenses.items():
                p_clean_def[d] = _prob(localizer, defense(x))
                meter("clean", d).update(p_clean_def[d], m, names)
            record: dict[str, Any] = {}
            for a, spec in enumerate(attacks):
                target = localizer if spec.adaptive is None else (lambda z, d=defenses[spec.adaptive]: localizer(d(z)))
                atk = create_attack(spec.attack, target, **spec.kwargs)
                with torch.enable_grad():
                    x_a = atk(x, m, generator=seeded_generator(seed, b, a)).detach()
                p_adv = _prob(localizer, x_a)
                meter(spec.name, "none").update(p_adv, m, names)
                record[spec.name] = {"x_a": x_a, "none": p_adv}
                for d, defense in defenses.items():
                    p_def = _prob(localizer, defense(x_a))
                    meter(spec.name, d).update(p_def, m, names)
                    record[spec.name][d] = p_def
            for i, it in enumerate(batch):
                if len(examples) < keep and bool(it["mask"].any()):
                    examples.append({"name": names[i], "image": x[i].cpu(), "mask": m[i].cpu(),
                                     "clean": p_clean[i].cpu(), **{f"clean_{d}": p[i].cpu() for d, p in p_clean_def.items()},
                                     "attacks": {k: {kk: vv[i].cpu() for kk, vv in v.items()} for k, v in record.items()}})
            progress.save(names)
            if on_item:
                on_item(len(batch))

    clean = meters[("clean", "none")].compute()
    out: dict[str, Any] = {"n_images": clean["n_images"], "n_forged": clean["n_forged"], "clean": clean, "attacks": {}}
    adv = {spec.name: meters[(spec.name, "none")].compute() for spec in attacks}
    for spec in attacks:
        f1_clean, f1_adv = clean["f1"], adv[spec.name]["f1"]
        # the bare localizer under the same attack; an adaptive attack's own f1_adv (V on images crafted through
        # V∘D) is not that, so it needs a named reference
        f1_ref = adv[spec.reference]["f1"] if spec.reference else (None if spec.adaptive else f1_adv)
        entry: dict[str, Any] = {"attack": spec.attack, "params": {k: v for k, v in spec.kwargs.items()},
                                 "adaptive_to": spec.adaptive, "reference": spec.reference, "f1_clean": f1_clean,
                                 "f1_adv": f1_adv, "f1_ref": f1_ref, "fp_clean": clean["authentic_fp_rate"],
                                 "fp_adv": adv[spec.name]["authentic_fp_rate"], "defenses": {}}
        for d in defenses:
            m_def = meters[(spec.name, d)]
            res, res_clean = m_def.compute(), meters[("clean", d)].compute()
            per_image = [f for f, forged in zip(m_def.f1, m_def.forged) if forged]
            entry["defenses"][d] = {"f1_def": res["f1"], "f1_def_ci": bootstrap_ci(per_image, seed=seed),
                                    "f1_clean_def": res_clean["f1"],
                                    "recovery": reportable_recovery(f1_clean, f1_ref, res["f1"], clean["n_forged"]),
                                    "fp_def": res["authentic_fp_rate"], "fp_clean_def": res_clean["authentic_fp_rate"]}
        out["attacks"][spec.name] = entry
    out["examples"] = examples
    return out


class _Progress:
    """``evaluate_defenses``' finished batches on disk (``progress_file``): the settings they were made with, the
    image names of each batch, and every meter's per-image values."""

    def __init__(self, path: str | os.PathLike | None, settings: dict[str, Any]) -> None:
        self.path, self.settings = (Path(path) if path is not None else None), settings
        self.meters: dict[tuple[str, str], LocalizationMeter] = {}
        self.batches: list[list[str]] = []
        if self.path is None or not self.path.is_file():
            return
        state = read_json(self.path, ConfigError, "evaluation progress file")
        try:
            if state["settings"] != json.loads(json.dumps(settings)):
                raise ConfigError(f"{self.path}: written by an evaluation with other attacks, defenses, seed or "
                                  "batch size; delete it to start this one afresh")
            self.batches = state["batches"]
            for entry in state["meters"]:
                values = {k: [math.nan if v is None else v for v in vs] if isinstance(vs, list) else vs
                          for k, vs in entry["values"].items()}  # (strict JSON wrote NaN as null)
                self.meters[tuple(entry["key"])] = LocalizationMeter(**values)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: not a readable evaluation progress file ({exc})") from None

    def skip(self, b: int, names: list[str]) -> bool:
        """Whether batch ``b`` was finished before; its images must then be the ones it was finished with."""
        if b >= len(self.batches):
            return False
        if self.batches[b] != names:
            raise ConfigError(f"{self.path}: batch {b} was finished on other images ({', '.join(self.batches[b][:3])} "
                              f"...), not {', '.join(names[:3])} ...; delete it to evaluate this dataset afresh")
        return True

    def save(self, names: list[str]) -> None:
        self.batches.append(names)
        if self.path is not None:
            write_json_atomic(self.path, {"settings": self.settings, "batches": self.batches,
                                          "meters": [{"key": list(k), "values": asdict(v)} for k, v in self.meters.items()]})
