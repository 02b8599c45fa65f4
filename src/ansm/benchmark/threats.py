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
  run, BPDA-PGD through JPEG-75 left F1 0.16 where the oblivious PGD left 0.01).

:class:`TrackedPGD` keeps, per image, the iterate with the best objective so far (AutoAttack's practice), and
snapshots it at the step counts of the convergence curve, so "F1 after k steps" comes from the same run.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

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


def adaptive_attack(view: Model, score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, m: torch.Tensor,
                    eps: float, steps: int, restarts: int, objectives: Sequence[str], generator: torch.Generator,
                    checkpoints: Sequence[int] = (), candidates: Sequence[torch.Tensor] = (),
                    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """White-box worst case: per image, the candidate with the lowest defended F1.

    Args:
        view: the attacker's differentiable model of the defended pipeline (logits).
        score: the defended pipeline as the analyst runs it (logits, exact preprocessing).
        candidates: adversarial images from other attacks (the oblivious ones) that join the worst case from step 0.
    Returns:
        (adversarial images, ``{k: per-image defended F1 of the worst case after k steps}``).
    """
    worst, worst_f1 = x.clone(), torch.full((x.shape[0],), math.inf, device=x.device)
    for cand in candidates:
        f1 = _f1(score, cand, m)
        better = f1 < worst_f1
        worst = torch.where(better.view(-1, 1, 1, 1), cand, worst)
        worst_f1 = torch.where(better, f1, worst_f1)
    curve: dict[int, torch.Tensor] = {int(k): worst_f1.clone() for k in checkpoints if 0 <= int(k) <= steps}
    forged = m.flatten(1).any(1)
    for objective in objectives:
        for _ in range(restarts):
            # AutoAttack's practice: each run attacks only the images still standing (forged, F1 > 0); an image
            # already at F1 0 cannot get worse, and authentic images do not enter the forged-image means.
            idx = ((worst_f1 > 0) & forged).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            atk = TrackedPGD(view, eps=eps, steps=steps, objective=objective, checkpoints=list(curve))
            cand = atk(x[idx], m[idx], generator=generator)
            f1 = _f1(score, cand, m[idx])
            better = f1 < worst_f1[idx]
            worst[idx] = torch.where(better.view(-1, 1, 1, 1), cand, worst[idx])
            worst_f1[idx] = torch.where(better, f1, worst_f1[idx])
            for k, snap in atk.snapshots.items():
                curve[k][idx] = torch.minimum(curve[k][idx], _f1(score, snap.to(x.device), m[idx]))
    return worst, curve
