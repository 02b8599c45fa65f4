"""The ANSM defense: the network, its FFA and MgR losses, two-stage training, evaluation and inference.

>>> from ansm.defense import ANSM, TrainANSMConfig, train_ansm, load_ansm
>>> ansm, summary = train_ansm(TrainANSMConfig(localizer="runs/localizer/localizer", out="runs/ansm"))
>>> logits = localizer(ansm(x_a))          # the localizer itself is never modified
"""

from ansm.defense.ansm_net import ANSM, count_parameters, load_ansm, save_ansm
from ansm.defense.losses import ffa_loss, mask_loss, mgr_loss, smoothed_kl, spatial_softmax
from ansm.defense.trainer import TrainANSMConfig, train_ansm

__all__ = [
    "ANSM", "TrainANSMConfig", "count_parameters", "ffa_loss", "load_ansm", "mask_loss", "mgr_loss", "save_ansm",
    "smoothed_kl", "spatial_softmax", "train_ansm",
]
