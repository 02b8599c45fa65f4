"""PGD (L-inf): iterated signed-gradient steps from a random start, projected onto the eps ball.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018. ``x_{t+1} = Proj_{B_inf(x, eps) ∩ [0,1]}(x_t + alpha * sign(grad gain(V(x_t), m)))``, ``x_0``
uniform in the ball. With ``restarts > 1`` the attack runs again from new random starts and keeps, *per image*,
the restart with the highest final objective (AutoAttack's and torchattacks' practice), so more restarts can
only make each image's result stronger by the objective's measure.

This class is also the engine of BIM (no random start) and SegPGD (a reweighted per-step loss): a subclass
overrides :meth:`step_gain` to change what each step climbs, while the restart selection always uses the
attack's true objective.
"""

from __future__ import annotations

import torch

from ansm.attacks.base import Attack, Model, check_budget, check_int
from ansm.attacks.objectives import Objective
from ansm.attacks.registry import register_attack


@register_attack("pgd")
class PGD(Attack):
    """Projected Gradient Descent, L-inf. Defaults (torchattacks'): ``eps=8/255, alpha=2/255, steps=10,
    random_start=True, restarts=1``. Inputs and outputs in [0, 1]."""

    name = "pgd"
    norm = "linf"
    param_names = ("eps", "alpha", "steps", "random_start", "restarts")

    def __init__(self, model: Model, eps: float | str = 8 / 255, alpha: float | str = 2 / 255, steps: int = 10,
                 random_start: bool = True, restarts: int = 1, objective: str | Objective = "untargeted",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(model, eps=eps, objective=objective, generator=generator)
        self.alpha = check_budget("alpha", alpha)
        self.steps = check_int("steps", steps)
        self.restarts = check_int("restarts", restarts)
        self.random_start = bool(random_start)

    def step_gain(self, logits: torch.Tensor, mask: torch.Tensor, step: int) -> torch.Tensor:
        """What step ``step`` (0-based) climbs; plain PGD climbs the objective itself."""
        return self.objective.gain(logits, mask)

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, state: dict) -> torch.Tensor:
        """One ascent step followed by projection (L-inf: signed gradient)."""
        return self.project(x_adv + self.alpha * grad.sign(), x)

    def run_once(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        x_adv = self.random_init(x, generator) if self.random_start else x.clone()
        state: dict = {}
        for t in range(self.steps):
            _, grad, _ = self.gain_and_grad(x_adv, mask, lambda z, m, t=t: self.step_gain(z, m, t))
            x_adv = self.step(x_adv, grad, x, state)
        return x_adv

    def perturb(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        best = self.run_once(x, mask, generator)
        if self.restarts == 1:
            return best
        with torch.no_grad():
            best_gain = self.objective.gain(self.model(best), mask)
        for _ in range(self.restarts - 1):
            cand = self.run_once(x, mask, generator)
            with torch.no_grad():
                gain = self.objective.gain(self.model(cand), mask)
            better = gain > best_gain
            best = torch.where(better.view(-1, 1, 1, 1), cand, best)
            best_gain = torch.where(better, gain, best_gain)
        return best
