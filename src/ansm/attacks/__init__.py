"""Attacks on forgery localizers: one module per attack on one base (:class:`Attack`), objectives injected.

>>> from ansm.attacks import create_attack
>>> attack = create_attack("pgd", localizer, eps="8/255", steps=10, objective="hide")
>>> x_a = attack(images, masks)            # Bx3xHxW in [0, 1], ||x_a - images||_inf <= 8/255

Registered: ``fgsm``, ``bim``, ``pgd`` (L-inf), ``pgd-l2``, ``mifgsm``, ``cw-l2``, ``segpgd`` (gradient attacks) and
``square`` (score-based, gradient-free: the check against masked gradients) and ``noise-equalize`` (model-free: the
forger's noise-level equalization, which no defense can undo where it closes the gap).
"""

from ansm.attacks.base import Attack, eval_mode
from ansm.attacks.objectives import OBJECTIVES, Hide, Objective, Untargeted, get_objective
from ansm.attacks.registry import ATTACKS, create_attack, list_attacks, register_attack
from ansm.attacks import fgsm as _fgsm  # noqa: F401  (each import registers its attack)
from ansm.attacks import pgd as _pgd  # noqa: F401
from ansm.attacks import bim as _bim  # noqa: F401
from ansm.attacks import pgd_l2 as _pgd_l2  # noqa: F401
from ansm.attacks import mifgsm as _mifgsm  # noqa: F401
from ansm.attacks import segpgd as _segpgd  # noqa: F401
from ansm.attacks import cw as _cw  # noqa: F401
from ansm.attacks import square as _square  # noqa: F401
from ansm.attacks import equalize as _equalize  # noqa: F401
from ansm.attacks.fgsm import FGSM
from ansm.attacks.pgd import PGD
from ansm.attacks.bim import BIM
from ansm.attacks.pgd_l2 import PGDL2
from ansm.attacks.mifgsm import MIFGSM
from ansm.attacks.segpgd import SegPGD
from ansm.attacks.cw import CWL2
from ansm.attacks.square import Square
from ansm.attacks.equalize import NoiseEqualize

__all__ = [
    "ATTACKS", "Attack", "BIM", "CWL2", "FGSM", "Hide", "MIFGSM", "NoiseEqualize", "OBJECTIVES", "Objective", "PGD", "PGDL2",
    "SegPGD", "Square", "Untargeted", "create_attack", "eval_mode", "get_objective", "list_attacks", "register_attack",
]
