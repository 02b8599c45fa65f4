"""BIM / I-FGSM: PGD without the random start (and without restarts, which would all be identical).

Kurakin, Goodfellow, Bengio, "Adversarial Examples in the Physical World", ICLR Workshop 2017. Norm: L-inf.
``x_{t+1} = clip_{x,eps}(x_t + alpha * sign(grad gain))`` from ``x_0 = x``. It is deterministic, which makes it
the attack of choice when a result must not depend on a seed.
"""

from __future__ import annotations

import torch

from ansm.attacks.base import Model
from ansm.attacks.objectives import Objective
from ansm.attacks.pgd import PGD
from ansm.attacks.registry import register_attack


@register_attack("bim")
class BIM(PGD):
    """Basic Iterative Method (I-FGSM), L-inf. Defaults (torchattacks'): ``eps=8/255, alpha=2/255, steps=10``."""

    name = "bim"
    norm = "linf"
    param_names = ("eps", "alpha", "steps")

    def __init__(self, model: Model, eps: float | str = 8 / 255, alpha: float | str = 2 / 255, steps: int = 10,
                 objective: str | Objective = "untargeted", generator: torch.Generator | None = None) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=False, restarts=1,
                         objective=objective, generator=generator)
