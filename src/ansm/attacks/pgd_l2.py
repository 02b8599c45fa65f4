"""PGD (L2): steps along the L2-normalised gradient, projected onto the L2 ball of radius ``eps``.

Madry et al., ICLR 2018 (L2 threat model). ``x_{t+1} = Proj_{B_2(x, eps) ∩ [0,1]}(x_t + alpha * g / ||g||_2)``;
the random start draws a uniform direction and a uniform radius in [0, eps] (torchattacks' PGDL2). The norm is
taken over the whole image (3·H·W values), so the same ``eps`` is a smaller per-pixel change on a larger image:
compare L2 budgets only at equal resolution.
"""

from __future__ import annotations

import torch

from ansm.attacks.base import Model
from ansm.attacks.objectives import Objective
from ansm.attacks.pgd import PGD
from ansm.attacks.registry import register_attack


@register_attack("pgd-l2")
class PGDL2(PGD):
    """PGD under an L2 budget. Defaults (torchattacks'): ``eps=1.0, alpha=0.2, steps=10, random_start=True``."""

    name = "pgd-l2"
    norm = "l2"
    param_names = ("eps", "alpha", "steps", "random_start", "restarts")

    def __init__(self, model: Model, eps: float | str = 1.0, alpha: float | str = 0.2, steps: int = 10,
                 random_start: bool = True, restarts: int = 1, objective: str | Objective = "untargeted",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, restarts=restarts,
                         objective=objective, generator=generator)

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, state: dict) -> torch.Tensor:
        norms = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clamp_min(1e-12)
        return self.project(x_adv + self.alpha * grad / norms, x)
