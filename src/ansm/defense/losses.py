"""ANSM's two training losses, kept outside the models (the localizer only ever returns logits).

**FFA** (forgery-relevant features alignment, stage 1). For each tapped layer with features ``F`` (B x c x h x w)
every channel is turned into a distribution over its h*w positions, ``D = softmax(F.flatten(2), -1)``, and
the defended adversarial image's distributions are pulled onto the original image's:

    KL(p || q) = sum_k p_k * log((p_k + alpha) / (q_k + alpha)),   p = D(x_pa), q = D(x_o)

``alpha`` smooths positions where either distribution is ~0 (the log would otherwise blow up). The spatial
softmax makes the loss care about *where* a channel fires, not how strongly: the forgery-relevant part of an
intermediate feature is its spatial layout. With ``reduction="mean"`` (the default) the KL is averaged over
images, channels and layers (the 1/N in front of the sum in the review we follow: N = number of
channel-distributions); ``"sum"`` sums over channels and averages over images and layers.

**MgR** (mask-guided refinement, stage 2) with the dual-mask constraint: both the defended adversarial image
and the defended *original* image must give the ground-truth mask,

    L_MgR = BCE(V(x_pa), m) + lam * BCE(V(x_po), m)   [+ dice_weight * (Dice(V(x_pa), m) + lam * Dice(V(x_po), m))]

The second term is what keeps ANSM harmless on clean inputs (a defense is applied to every image, and most
are not attacked).

Two **baseline** objectives train the same network for the benchmark, so that the comparison isolates what FFA+MgR
add (``ansm benchmark``): a pixel-guided denoiser, ``L1(D(x_a), x_o) + L1(D(x_o), x_o)`` (HGD's "PGD" baseline),
and a feature-guided one, the L1 distance between the localizer's tapped features of ``D(x_a)`` / ``D(x_o)`` and
of ``x_o`` (HGD's idea: guide the denoiser by the frozen model's features, not by pixels).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from ansm.errors import ConfigError

REDUCTIONS = ("mean", "sum")


def spatial_softmax(features: torch.Tensor) -> torch.Tensor:
    """B x c x h x w -> B x c x (h*w): each channel's softmax over its positions."""
    if features.dim() < 3:
        raise ConfigError(f"FFA needs spatial features (B x c x h x w), got shape {tuple(features.shape)}")
    return torch.softmax(features.flatten(2).float(), dim=-1)


def smoothed_kl(p: torch.Tensor, q: torch.Tensor, alpha: float) -> torch.Tensor:
    """``sum_k p_k log((p_k + alpha) / (q_k + alpha))`` over the last dimension."""
    return (p * (torch.log(p + alpha) - torch.log(q + alpha))).sum(-1)


def ffa_loss(feats_defended: Mapping[str, torch.Tensor], feats_original: Mapping[str, torch.Tensor],
             alpha: float = 1e-6, reduction: str = "mean") -> torch.Tensor:
    """FFA between the features of ``V(ANSM(x_a))`` and ``V(x_o)`` at the same layers (the targets are detached).

    Args:
        feats_defended: ``{layer: B x c x h x w}`` of the defended adversarial images (with gradients).
        feats_original: same layers and shapes, from the original images.
        alpha: smoothing constant (> 0).
        reduction: ``"mean"`` (1/N over channels) or ``"sum"`` over channels; always mean over images and layers.
    """
    if reduction not in REDUCTIONS:
        raise ConfigError(f"FFA reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if not alpha > 0:
        raise ConfigError(f"FFA alpha must be > 0, got {alpha}")
    if not feats_defended or set(feats_defended) != set(feats_original):
        raise ConfigError(f"FFA needs the same non-empty layers on both sides, got {sorted(feats_defended)} "
                          f"and {sorted(feats_original)}")
    per_layer = []
    for name, fd in feats_defended.items():
        fo = feats_original[name]
        if fd.shape != fo.shape:
            raise ConfigError(f"FFA layer {name!r}: shapes differ, {tuple(fd.shape)} vs {tuple(fo.shape)}")
        kl = smoothed_kl(spatial_softmax(fd), spatial_softmax(fo.detach()), alpha)  # B x c
        per_layer.append(kl.mean() if reduction == "mean" else kl.sum(1).mean())
    return torch.stack(per_layer).mean()


def soft_dice(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over images of ``1 - (2|P∩M| + 1) / (|P| + |M| + 1)`` with P = sigmoid(logits)."""
    prob = torch.sigmoid(logits)
    inter = (prob * mask).flatten(1).sum(1)
    return (1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + mask.flatten(1).sum(1) + 1)).mean()


def mask_loss(logits: torch.Tensor, mask: torch.Tensor, dice_weight: float = 0.0) -> torch.Tensor:
    """Pixel BCE (mean) plus optional soft Dice."""
    if logits.shape != mask.shape:
        raise ConfigError(f"logits {tuple(logits.shape)} and mask {tuple(mask.shape)} differ in shape")
    loss = F.binary_cross_entropy_with_logits(logits, mask)
    return loss + dice_weight * soft_dice(logits, mask) if dice_weight else loss


def mgr_loss(logits_defended_adv: torch.Tensor, logits_defended_orig: torch.Tensor, mask: torch.Tensor,
             lam: float = 1.0, dice_weight: float = 0.0) -> torch.Tensor:
    """Dual-mask constraint: ``mask_loss(V(x_pa), m) + lam * mask_loss(V(x_po), m)``."""
    if lam < 0 or dice_weight < 0:
        raise ConfigError(f"MgR weights must be >= 0, got lam={lam}, dice_weight={dice_weight}")
    loss = mask_loss(logits_defended_adv, mask, dice_weight)
    if lam:
        loss = loss + lam * mask_loss(logits_defended_orig, mask, dice_weight)
    return loss


def clean_kl_loss(logits_defended_orig: torch.Tensor, logits_orig: torch.Tensor) -> torch.Tensor:
    """Clean preservation (the robust recipe): mean over pixels of the Bernoulli KL from the bare localizer's
    prediction ``p = sigmoid(V(x_o))`` (detached) to the defended one ``q = sigmoid(V(ANSM(x_o)))``,

        KL(p || q) = p log(p / q) + (1 - p) log((1 - p) / (1 - q)) = BCE(q; p) - BCE(p; p),

    computed from logits (stable where p or q is near 0 or 1). It is 0 exactly when ANSM leaves the clean
    prediction as it was, whatever the ground truth says."""
    if logits_defended_orig.shape != logits_orig.shape:
        raise ConfigError(f"clean KL: logits {tuple(logits_defended_orig.shape)} and {tuple(logits_orig.shape)} differ")
    from ansm.models.train import bernoulli_kl

    return bernoulli_kl(logits_orig.detach().float(), logits_defended_orig.float()).mean()


def pixel_denoiser_loss(defended_adv: torch.Tensor, defended_orig: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Pixel-guided denoiser: mean L1 of ``D(x_a)`` and of ``D(x_o)`` to the original image ``x_o``."""
    target = original.detach()
    return (defended_adv - target).abs().mean() + (defended_orig - target).abs().mean()


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean L1 between a cheaper ANSM's output and a trained one's on the same inputs (teacher detached): a dense,
    per-pixel target next to MgR's signal, which reaches ANSM only through the localizer's gradient."""
    return (student - teacher.detach()).abs().mean()


def feature_l1_loss(feats_defended: Mapping[str, torch.Tensor], feats_original: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """HGD-style guidance: mean absolute difference of tapped features, averaged over layers (targets detached)."""
    if not feats_defended or set(feats_defended) != set(feats_original):
        raise ConfigError(f"feature loss needs the same non-empty layers on both sides, got {sorted(feats_defended)} "
                          f"and {sorted(feats_original)}")
    return torch.stack([(feats_defended[k].float() - feats_original[k].detach().float()).abs().mean()
                        for k in feats_defended]).mean()
