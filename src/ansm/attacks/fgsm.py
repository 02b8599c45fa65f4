"""FGSM: one signed-gradient step of size ``eps``.

Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015. Norm: L-inf.
It is the weakest attack here and the cheapest (one forward+backward); the ANSM paper names it, and it is the
natural sanity check that a defense does more than mask gradients (a defense that beats PGD but not FGSM is
broken). ``x_a = clip_[0,1](x + eps * sign(grad_x gain(V(x), m)))``.
"""

from __future__ import annotations

import torch

from ansm.attacks.base import Attack, Model
from ansm.attacks.objectives import Objective
from ansm.attacks.registry import register_attack


@register_attack("fgsm")
class FGSM(Attack):
    """Fast Gradient Sign Method (L-inf). Defaults: ``eps=8/255``. Inputs and outputs in [0, 1]."""

    name = "fgsm"
    norm = "linf"
    param_names = ("eps",)

    def __init__(self, model: Model, eps: float | str = 8 / 255, objective: str | Objective = "untargeted",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(model, eps=eps, objective=objective, generator=generator)

    def perturb(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        _, grad, _ = self.gain_and_grad(x, mask)
        return self.project(x + self.eps * grad.sign(), x)
