"""How each threat model crafts its adversarial images (who the attacker attacks, and with what).

* **oblivious** (the paper's setting): FGSM / PGD against the bare target localizer ``V``; the defense is
  unknown to the attacker. The same images are scored on every defense.
* **transfer**: PGD against a *different* localizer (the surrogate architecture); scored on every defense.
* **gray-box**: the attacker knows the defense's recipe but not its weights: PGD through a surrogate copy
  trained with another seed (``Defense.surrogate``), scored on the real one.
* **adaptive** (white-box): PGD through the defended pipeline end to end (BPDA where it is not differentiable),
  ``adaptive_steps`` steps with a step-size decay, ``adaptive_restarts`` random starts per objective, and per
  image the worst case over objectives (untargeted BCE and the targeted "hide") and restarts, judged by the
  defended F1 (a white-box attacker knows the ground truth it is trying to break); like AutoAttack, each run
  attacks only the forged images whose F1 is still above 0. The oblivious attacks' images are candidates too: an attacker who knows the defense can still choose to ignore it, and BPDA through
  a JPEG codec is a poor enough gradient that ignoring it is sometimes the stronger move (measured: on a small
  run, BPDA-PGD through JPEG-75 left F1 0.16 where the oblivious PGD left 0.01). The gradient attacks' own worst
  case is kept apart (``AdaptiveResult.gradient``) for the sanity checks, which must be able to fail.
* **gradient-free** (a check, not a threat model of its own): the Square attack on the defended pipeline's output.
* **unbounded** (a check): the adaptive attack at an eps no defense survives (64/255 by default).

:class:`TrackedPGD` keeps, per image, the iterate with the best objective so far (AutoAttack's practice), and
snapshots it at the step counts of the convergence curve, so "F1 after k steps" comes from the same run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from ansm.attacks import create_attack
from ansm.attacks.pgd import PGD
from ansm.eval.metrics import f1_score

Model = Callable[[torch.Tensor], torch.Tensor]


class TrackedPGD(PGD):
    """L-inf PGD with best-iterate tracking and step-size halving at 50% and 75% of the steps.

    After :meth:`__call__`, ``snapshots[k]`` holds the best iterate after ``k`` steps for each ``k`` in
    ``checkpoints`` (a step count past ``steps`` is ignored).
    """

    def __init__(self, model: Model, eps: float, steps: int, objective: str = "untargeted",
                 checkpoints: Sequence[int] = ()) -> None:
        super().__init__(model, eps=eps, alpha=eps / 4, steps=steps, random_start=True, objective=objective)
        self.checkpoints = {int(k) for k in checkpoints if 0 <= int(k) <= steps}
        self.snapshots: dict[int, torch.Tensor] = {}

    def run_once(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        x_adv = self.random_init(x, generator)
        best, best_gain = x_adv.clone(), torch.full((x.shape[0],), -math.inf, device=x.device)
        self.snapshots = {}
        for t in range(self.steps + 1):  # t = steps taken so far; the last pass only scores the final iterate
            gain, grad, _ = self.gain_and_grad(x_adv, mask)
            better = gain > best_gain
            best = torch.where(better.view(-1, 1, 1, 1), x_adv, best)
            best_gain = torch.where(better, gain, best_gain)
            if t in self.checkpoints:
                self.snapshots[t] = best.clone()
            if t < self.steps:
                alpha = self.alpha * (0.5 if t >= self.steps // 2 else 1.0) * (0.5 if t >= 3 * self.steps // 4 else 1.0)
                x_adv = self.project(x_adv + alpha * grad.sign(), x)
        return best


def pgd(model: Model, eps: float, steps: int) -> PGD:
    """The fixed-budget PGD of the oblivious, transfer and gray-box threats (alpha = 2.5 eps / steps, Madry)."""
    return create_attack("pgd", model, eps=eps, alpha=2.5 * eps / steps, steps=steps)


def fgsm(model: Model, eps: float):
    return create_attack("fgsm", model, eps=eps)


@torch.no_grad()
def _f1(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return f1_score(torch.sigmoid(logits_fn(x)), m).to(x.device)


@dataclass
class AdaptiveResult:
    """What one white-box attack on one batch found.

    Attributes:
        gradient: per image, the gradient attacks' worst case alone (every attacker view, objective and
            restart): the number the sanity checks judge, since nothing is folded into it by construction.
        worst: per image, the lower-F1 of ``gradient`` and the candidates (the oblivious images): the attacker
            who knows the defense may still ignore it; this is the adaptive row of the report.
        curve: ``{k: per-image defended F1 of the gradient worst case after k steps}``.
    """

    gradient: torch.Tensor
    worst: torch.Tensor
    curve: dict[int, torch.Tensor] = field(default_factory=dict)


def _keep_lower(best: torch.Tensor, best_f1: torch.Tensor, cand: torch.Tensor, f1: torch.Tensor,
                idx: torch.Tensor | None = None) -> None:
    """In place: where ``f1`` is lower, take ``cand`` (on the rows ``idx``, or all)."""
    rows = slice(None) if idx is None else idx
    f1 = f1.to(best_f1.dtype)
    better = f1 < best_f1[rows]
    best[rows] = torch.where(better.view(-1, 1, 1, 1), cand, best[rows])
    best_f1[rows] = torch.where(better, f1, best_f1[rows])


def adaptive_attack(views: Model | Mapping[str, Model], score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    m: torch.Tensor, eps: float, steps: int, restarts: int, objectives: Sequence[str],
                    generator: torch.Generator, checkpoints: Sequence[int] = (), candidates: Sequence[torch.Tensor] = (),
                    ) -> AdaptiveResult:
    """White-box worst case, per image, by the defended F1 (:class:`AdaptiveResult`).

    Args:
        views: the attacker's differentiable model(s) of the defended pipeline (logits), e.g. BPDA with the
            identity and with a differentiable JPEG; each is attacked and the per-image worst kept.
        score: the defended pipeline as the analyst runs it (logits, exact preprocessing).
        candidates: adversarial images from other attacks (the oblivious ones), folded into ``worst`` only.
    """
    views = dict(views) if isinstance(views, Mapping) else {"view": views}
    grad, grad_f1 = x.clone(), torch.full((x.shape[0],), math.inf, device=x.device)
    curve: dict[int, torch.Tensor] = {int(k): grad_f1.clone() for k in checkpoints if 0 <= int(k) <= steps}
    forged = m.flatten(1).any(1)
    for view in views.values():
        for objective in objectives:
            for _ in range(restarts):
                # AutoAttack's practice: each run attacks only the images still standing (forged, F1 > 0); an image
                # already at F1 0 cannot get worse, and authentic images do not enter the forged-image means.
                idx = ((grad_f1 > 0) & forged).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                atk = TrackedPGD(view, eps=eps, steps=steps, objective=objective, checkpoints=list(curve))
                cand = atk(x[idx], m[idx], generator=generator)
                _keep_lower(grad, grad_f1, cand, _f1(score, cand, m[idx]), idx)
                for k, snap in atk.snapshots.items():
                    curve[k][idx] = torch.minimum(curve[k][idx], _f1(score, snap.to(x.device), m[idx]).to(grad_f1.dtype))
    # images never attacked (authentic, or at F1 0 from the start) keep their clean score
    untouched = torch.isinf(grad_f1)
    if untouched.any():
        grad_f1[untouched] = _f1(score, x[untouched], m[untouched]).to(grad_f1.dtype)
        for k in curve:
            curve[k][untouched] = grad_f1[untouched]
    worst, worst_f1 = grad.clone(), grad_f1.clone()
    for cand in candidates:
        _keep_lower(worst, worst_f1, cand, _f1(score, cand, m))
    return AdaptiveResult(grad, worst, curve)


def gradient_free_attack(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, m: torch.Tensor, eps: float,
                         queries: int, objectives: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """Square attack (score-based, no gradients) on the defended pipeline itself, per image worst over objectives.

    It sees only the analyst's output, so gradient masking (a rounding step, a hard clip, BPDA that points the
    wrong way) cannot hide the defense's weakness from it: if it beats the gradient attacks, they were fooled.
    """
    worst, worst_f1 = x.clone(), torch.full((x.shape[0],), math.inf, device=x.device)
    for objective in objectives:
        cand = create_attack("square", score, eps=eps, queries=queries, objective=objective)(x, m, generator=generator)
        _keep_lower(worst, worst_f1, cand, _f1(score, cand, m))
    return worst
