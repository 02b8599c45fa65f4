"""What an attack optimises, kept apart from how it optimises (the style guide's "objective is injected").

torchattacks bakes ``CrossEntropyLoss`` over class logits into every attack; a forgery localizer returns one
logit per *pixel*, and an attacker may want two different things from it:

* ``untargeted``: make the mask wrong anywhere -- maximise the per-pixel BCE against the ground truth ``m``.
* ``hide`` (targeted): make the image look authentic -- drive every pixel to "authentic", i.e. minimise the
  BCE against an all-zero mask. This is the anti-forensics goal: a forger hides the edit.

Every objective reduces pixels with a *per-image mean* and attacks sum those over the batch, so a step's
gradient for one image does not depend on the batch size or on the image's resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ansm.errors import ConfigError
from ansm.eval.metrics import f1_score


class Objective:
    """Base objective. ``gain`` is what the attacker *maximises* (per image, shape B).

    Subclasses define the per-pixel labels the attacker wants to see (:meth:`adversarial_target`), the
    per-pixel gain (:meth:`pixel_gain`) and when an image counts as successfully attacked (:meth:`success`).
    """

    name = "objective"

    def adversarial_target(self, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-pixel {0,1} labels the attacker wants the localizer to predict."""
        raise NotImplementedError

    def pixel_gain(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-pixel quantity to maximise, shape Bx1xHxW."""
        raise NotImplementedError

    def success(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-image bool (shape B): has the attack reached its goal on this image?"""
        raise NotImplementedError

    def gain(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-image mean of :meth:`pixel_gain` (shape B)."""
        return self.pixel_gain(logits, mask).flatten(1).mean(1)

    def pixel_fooled(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-pixel bool: the prediction (logit > 0) already equals the adversarial target."""
        return (logits > 0) == (self.adversarial_target(mask) > 0.5)

    def margin(self, logits: torch.Tensor, mask: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
        """C&W hinge per pixel, ``max(kappa - s * z, 0)`` with ``s = +1`` where the target is 1, else ``-1``.

        For one logit ``z = Z_1 - Z_0`` this is Carlini & Wagner's ``max(Z_true - Z_target, -kappa)`` shifted by
        ``kappa`` so it is zero exactly when the pixel is fooled with confidence ``kappa``.
        """
        s = self.adversarial_target(mask) * 2 - 1
        return (kappa - s * logits).clamp_min(0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Untargeted(Objective):
    """Maximise BCE against the ground truth. Success: F1@0.5 of the prediction drops to ``success_f1`` or below."""

    name = "untargeted"

    def __init__(self, success_f1: float = 0.1) -> None:
        self.success_f1 = success_f1

    def adversarial_target(self, mask: torch.Tensor) -> torch.Tensor:
        return 1 - mask

    def pixel_gain(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, mask, reduction="none")

    def success(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return f1_score(torch.sigmoid(logits.detach()), mask).to(logits.device) <= self.success_f1


class Hide(Objective):
    """Minimise BCE against an all-zero mask. Success: at most ``max_area`` of the pixels predicted tampered."""

    name = "hide"

    def __init__(self, max_area: float = 0.001) -> None:
        self.max_area = max_area

    def adversarial_target(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(mask)

    def pixel_gain(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")

    def success(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (logits.detach() > 0).flatten(1).float().mean(1) <= self.max_area


OBJECTIVES: dict[str, type[Objective]] = {"untargeted": Untargeted, "hide": Hide}


def get_objective(objective: str | Objective) -> Objective:
    """An :class:`Objective` instance from a name (``"untargeted"``, ``"hide"``) or an instance (returned as is)."""
    if isinstance(objective, Objective):
        return objective
    if objective not in OBJECTIVES:
        import difflib

        close = difflib.get_close_matches(str(objective), OBJECTIVES, n=2, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown objective {objective!r}{hint} (known: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[objective]()
