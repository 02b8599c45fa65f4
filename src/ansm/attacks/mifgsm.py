"""MI-FGSM: signed steps along an accumulated, L1-normalised gradient (momentum).

Dong, Liao, Pang, Su, Zhu, Hu, Li, "Boosting Adversarial Attacks with Momentum", CVPR 2018. Norm: L-inf.
``g_{t+1} = decay * g_t + grad_t / mean|grad_t|``, ``x_{t+1} = clip_{x,eps}(x_t + alpha * sign(g_{t+1}))``.
Momentum stabilises the update direction, which is why MI-FGSM examples *transfer* better than PGD's: use it
when crafting noise on a surrogate localizer to attack an unseen one.
"""

from __future__ import annotations

import torch

from ansm.attacks.base import Model, check_budget
from ansm.attacks.objectives import Objective
from ansm.attacks.pgd import PGD
from ansm.attacks.registry import register_attack


@register_attack("mifgsm")
class MIFGSM(PGD):
    """Momentum Iterative FGSM, L-inf. Defaults (torchattacks'): ``eps=8/255, alpha=2/255, steps=10, decay=1.0``
    and no random start."""

    name = "mifgsm"
    norm = "linf"
    param_names = ("eps", "alpha", "steps", "decay")

    def __init__(self, model: Model, eps: float | str = 8 / 255, alpha: float | str = 2 / 255, steps: int = 10,
                 decay: float = 1.0, objective: str | Objective = "untargeted",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=False, restarts=1,
                         objective=objective, generator=generator)
        self.decay = check_budget("decay", decay)

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, state: dict) -> torch.Tensor:
        grad = grad / grad.abs().flatten(1).mean(1).view(-1, 1, 1, 1).clamp_min(1e-12)
        momentum = self.decay * state.get("momentum", torch.zeros_like(grad)) + grad
        state["momentum"] = momentum
        return self.project(x_adv + self.alpha * momentum.sign(), x)
