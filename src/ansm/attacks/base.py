"""The one attack interface every attack in :mod:`ansm.attacks` shares.

Modelled on torchattacks' ``Attack`` (the base owns the bookkeeping, a subclass writes only the step logic),
without its classification assumptions:

* the **model** is any differentiable callable ``images (Bx3xHxW in [0,1]) -> mask logits (Bx1xHxW)``: a bare
  localizer, ANSM + localizer end to end (an adaptive, white-box attack on the defense), or a surrogate
  (a transfer attack);
* the **objective** is injected (:mod:`ansm.attacks.objectives`), never a hard-coded cross-entropy;
* an ``nn.Module`` model is switched to eval mode for the attack and *every* submodule gets its own previous
  mode back afterwards (a frozen localizer inside a training ANSM stays as it was);
* gradients are taken with :func:`torch.autograd.grad` w.r.t. the image only, so the model's ``.grad`` fields
  are never touched and its parameters' ``requires_grad`` flags need no switching;
* randomness comes from a ``torch.Generator`` (argument or attribute) or, without one, from the global seed,
  and is drawn on the CPU so a seed gives the same noise on every device;
* inputs and outputs are in [0, 1]; outputs are projected onto the budget ball and the [0, 1] box.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
import torch.nn as nn

from ansm.attacks.objectives import Objective, get_objective
from ansm.errors import ConfigError, DataError
from ansm.utils import parse_eps

Model = Callable[[torch.Tensor], torch.Tensor]
# how far outside [0, 1] an input may lie and still be taken as float rounding (a 40th of one grey level)
RANGE_SLACK = 1e-4


@contextlib.contextmanager
def eval_mode(model: Model) -> Iterator[None]:
    """Put an ``nn.Module`` in eval mode and restore each submodule's own ``training`` flag afterwards."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def model_device(model: Model, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer; ``fallback`` for plain callables."""
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            return t.device
    return fallback


def check_budget(name: str, value: float | str) -> float:
    """Parse a step size or budget (``"8/255"`` accepted) naming the parameter in the error."""
    try:
        return parse_eps(value)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def random_signs(shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform {-1, +1} of ``shape``, drawn on the generator's device (the CPU without one, so a seed gives the same
    signs on every device), returned on ``like``'s device and dtype."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return (torch.randint(0, 2, tuple(shape), generator=generator, device=gen_device) * 2 - 1).to(like)


def check_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class Attack:
    """Base class. Subclasses set ``name``/``norm``/``param_names`` and implement :meth:`perturb`.

    Args:
        model: differentiable callable returning mask logits.
        eps: budget (L-inf for ``norm == "linf"``, L2 over the whole image for ``"l2"``); ``"8/255"`` accepted.
        objective: ``"untargeted"``, ``"hide"`` or an :class:`~ansm.attacks.objectives.Objective`.
        generator: source of randomness (random starts); ``None`` uses the global RNG. A call may instead pass a
            sequence with one generator per image, which makes each image's random start independent of the batch
            it is attacked in (the attack-set builder attacks in batches with per-image seeds that way).
    """

    name: ClassVar[str] = "attack"
    norm: ClassVar[str] = "linf"
    param_names: ClassVar[tuple[str, ...]] = ("eps",)

    def __init__(self, model: Model, eps: float | str | None = 8 / 255, objective: str | Objective = "untargeted",
                 generator: torch.Generator | None = None) -> None:
        if not callable(model):
            raise ConfigError(f"{self.name}: model must be a callable images -> mask logits, got {type(model).__name__}")
        self.model = model
        self.eps: float | None = None if eps is None else check_budget("eps", eps)
        self.objective = get_objective(objective)
        self.generator = generator

    # ------------------------------------------------------------------------------------------ public
    def params(self) -> dict[str, Any]:
        """The hyperparameters that define this attack (for manifests and reports)."""
        return {"objective": self.objective.name, **{k: getattr(self, k) for k in self.param_names}}

    def __call__(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Attack a batch. ``mask`` (Bx1xHxW {0,1}) is the ground truth; without it the model's own clean
        prediction is used as the label (so an untargeted attack needs no annotation)."""
        self._check_inputs(images, mask)
        if isinstance(generator, (list, tuple)) and len(generator) != images.shape[0]:
            raise ConfigError(f"{self.name}: {len(generator)} generators for {images.shape[0]} images (one per image)")
        device = model_device(self.model, images.device)
        x = images.detach().to(device=device, dtype=torch.float32).clamp(0, 1)  # (within RANGE_SLACK: rounding)
        gen = generator if generator is not None else self.generator
        with eval_mode(self.model), torch.enable_grad():
            if mask is None:
                with torch.no_grad():
                    mask = (self.model(x) > 0).float()
            m = mask.detach().to(device=device, dtype=torch.float32)
            adv = self.perturb(x, m, gen)
        return adv.detach().clamp(0, 1).to(device=images.device, dtype=images.dtype)

    def perturb(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The step logic: return adversarial images for clean ``x`` (already on the model's device)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------------------- helpers for subclasses
    def gain_and_grad(self, x_adv: torch.Tensor, mask: torch.Tensor,
                      gain_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-image gain B, its gradient w.r.t. ``x_adv``, logits). The batch loss is the *sum* of per-image
        means, so the gradient of image i does not depend on the other images in the batch."""
        x_adv = x_adv.detach().requires_grad_(True)
        logits = self.model(x_adv)
        if logits.shape[0] != x_adv.shape[0] or logits.shape[-2:] != x_adv.shape[-2:]:
            raise ConfigError(f"model returned {tuple(logits.shape)} for input {tuple(x_adv.shape)}; expected Bx1xHxW logits")
        gain = (gain_fn or self.objective.gain)(logits, mask)
        try:
            (grad,) = torch.autograd.grad(gain.sum(), x_adv)
        except RuntimeError as exc:
            raise ConfigError(f"{self.name}: the model's output is not differentiable w.r.t. its input ({exc})") from None
        return gain.detach(), grad.detach(), logits.detach()

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project onto the ``eps`` ball around ``x`` (L-inf or L2) and the [0, 1] box."""
        delta = x_adv - x
        if self.eps is not None and self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        elif self.eps is not None and self.norm == "l2":
            norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            delta = delta * (self.eps / norms.clamp_min(1e-12)).clamp(max=1.0)
        return (x + delta).clamp(0, 1)

    def random_init(self, x: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
        """A uniform point of the L-inf ball, or a uniform-radius point of the L2 ball (Madry et al.).

        With one generator per image, image ``i``'s start is drawn from ``generator[i]`` alone: the same start as
        attacking that image on its own."""
        if isinstance(generator, (list, tuple)):
            return torch.cat([self.random_init(x[i:i + 1], g) for i, g in enumerate(generator)])
        eps = self.eps or 0.0
        gen_device = generator.device if generator is not None else torch.device("cpu")
        if self.norm == "l2":
            d = torch.randn(x.shape, generator=generator, device=gen_device)
            r = torch.rand((x.shape[0], 1, 1, 1), generator=generator, device=gen_device)
            d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clamp_min(1e-12) * r * eps
        else:
            d = torch.rand(x.shape, generator=generator, device=gen_device) * (2 * eps) - eps
        return self.project(x + d.to(x.device), x)

    # ------------------------------------------------------------------------------------------ checks
    def _check_inputs(self, images: torch.Tensor, mask: torch.Tensor | None) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise DataError(f"{self.name}: images must be a Bx3xHxW tensor, got {shape}")
        if not images.is_floating_point():
            raise DataError(f"{self.name}: images must be float in [0, 1], got {images.dtype}")
        # a blur or resize of an image in [0, 1] can end a float rounding outside it (1.0000001): that is taken
        # (and clamped in __call__); anything further out is another scale (0-255, mean/std normalised), refused
        if images.numel() and (images.min() < -RANGE_SLACK or images.max() > 1 + RANGE_SLACK):
            raise DataError(f"{self.name}: images must lie in [0, 1] (got [{images.min():.6g}, {images.max():.6g}]; "
                            "0-255 images: divide by 255)")
        if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != images.shape[0]
                                 or mask.shape[-2:] != images.shape[-2:]):
            raise DataError(f"{self.name}: mask must be Bx1xHxW matching images {tuple(images.shape)}, got {tuple(mask.shape)}")
