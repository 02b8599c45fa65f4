"""Square attack (L-inf): score-based random search over squares, no gradients at all.

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box adversarial attack via
random search", ECCV 2020 (Algorithm 1 and its L-inf sampling distribution). Start from vertical stripes
(every column of every channel shifted by ``±eps``); then, for ``queries - 1`` iterations, pick a random
``s x s`` window per image, set it to a fresh ``±eps`` per channel, and keep the candidate only for the images
whose objective *strictly improves*. The side ``s = round(sqrt(p * H * W))`` shrinks with the paper's
piecewise-constant schedule of ``p`` (halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a
10,000-query run, rescaled to ``queries``).

Why it is here: it only reads the objective's value, so a defense that merely breaks the attacker's
*gradient* (a rounding step, a non-differentiable codec, saturated logits) does not stop it. If Square beats
PGD on a defense, PGD's number there is an artefact of masked gradients (AutoAttack's ``checks.py`` warns on
exactly that).

Queries are counted per image: one for the starting point, one per iteration; every image gets all of them
(there is no early stop, since a lower F1 is always worth more to the attacker than an already met threshold).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ansm.attacks.base import Attack, Model, check_budget, check_int, random_signs
from ansm.attacks.objectives import Objective
from ansm.attacks.registry import register_attack
from ansm.errors import ConfigError

# The paper's schedule: (iteration of a 10,000-query run after which p is divided by the factor, factor).
_P_HALVINGS = ((10, 2), (50, 4), (200, 8), (500, 16), (1000, 32), (2000, 64), (4000, 128), (6000, 256), (8000, 512))


def p_schedule(p_init: float, it: int, queries: int) -> float:
    """Fraction of the image the square covers at iteration ``it`` (0-based) of a ``queries`` budget.

    The reference implementation's ``p_selection``: the iteration is rescaled to a 10,000-query run, so a short
    budget goes through the same stages of coarse-to-fine search, only faster."""
    scaled = int(it / queries * 10000)
    factor = 1
    for start, f in _P_HALVINGS:
        if scaled > start:
            factor = f
    return p_init / factor


@register_attack("square")
class Square(Attack):
    """Square attack, L-inf, score-based (gradient-free). Defaults: ``eps=8/255, queries=1000, p_init=0.8``
    (AutoAttack's ``p_init``; the paper's 0.05 is tuned for 10,000 queries on ImageNet). Inputs and outputs in
    [0, 1]; every output lies in the eps ball around its input."""

    name = "square"
    norm = "linf"
    param_names = ("eps", "queries", "p_init")

    def __init__(self, model: Model, eps: float | str = 8 / 255, queries: int = 1000, p_init: float = 0.8,
                 objective: str | Objective = "untargeted", generator: torch.Generator | None = None) -> None:
        super().__init__(model, eps=eps, objective=objective, generator=generator)
        if not self.eps:
            raise ConfigError("square: eps must be > 0 (the search moves on the corners of the eps ball)")
        self.queries = check_int("queries", queries)
        self.p_init = check_budget("p_init", p_init)
        if not 0 < self.p_init <= 1:
            raise ConfigError(f"square: p_init must be in (0, 1], got {p_init}")

    def perturb(self, x: torch.Tensor, mask: torch.Tensor,
                generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
        if isinstance(generator, (list, tuple)):
            # one generator per image: attack each image alone, so its result does not depend on its batch
            return torch.cat([self._search(x[i:i + 1], mask[i:i + 1], g) for i, g in enumerate(generator)])
        return self._search(x, mask, generator)

    @torch.no_grad()
    def _gain(self, x_adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(x_adv)
        if logits.shape[0] != x_adv.shape[0] or logits.shape[-2:] != x_adv.shape[-2:]:
            raise ConfigError(f"model returned {tuple(logits.shape)} for input {tuple(x_adv.shape)}; expected Bx1xHxW logits")
        return self.objective.gain(logits, mask).float()

    @torch.no_grad()
    def _search(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, c, h, w = x.shape
        eps = float(self.eps)
        gen_device = generator.device if generator is not None else torch.device("cpu")

        def signs(*shape: int) -> torch.Tensor:
            return random_signs(shape, x, generator)

        # vertical stripes: one sign per (image, channel, column)
        best = self.project(x + eps * signs(b, c, 1, w), x)
        best_gain = self._gain(best, mask)
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        for it in range(self.queries - 1):
            p = p_schedule(self.p_init, it, self.queries)
            s = max(1, min(int(round(math.sqrt(p * h * w))), min(h, w) - 1)) if min(h, w) > 1 else 1
            r0 = torch.randint(0, h - s + 1, (b,), generator=generator, device=gen_device).to(x.device).view(b, 1, 1, 1)
            c0 = torch.randint(0, w - s + 1, (b,), generator=generator, device=gen_device).to(x.device).view(b, 1, 1, 1)
            window = (rows >= r0) & (rows < r0 + s) & (cols >= c0) & (cols < c0 + s)  # B x 1 x H x W
            delta = best - x
            colour = eps * signs(b, c, 1, 1)
            cand = self.project(x + torch.where(window, colour, delta), x)
            # the paper redraws the colours while clipping to [0, 1] leaves the window unchanged (a wasted query)
            for _ in range(10):
                same = ((cand - best).abs() * window).flatten(1).amax(1) < 1e-7
                if not same.any():
                    break
                colour = torch.where(same.view(b, 1, 1, 1), eps * signs(b, c, 1, 1), colour)
                cand = self.project(x + torch.where(window, colour, delta), x)
            gain = self._gain(cand, mask)
            better = gain > best_gain  # strict: a square is kept only if this image's objective improves
            best = torch.where(better.view(b, 1, 1, 1), cand, best)
            best_gain = torch.where(better, gain, best_gain)
        return best
