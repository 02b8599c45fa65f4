"""Localizers: the contract (:class:`Localizer`), registry/factory, feature taps, built-ins."""

from ansm.models.base import InputConfig, Localizer
from ansm.models.registry import (
    LOCALIZERS,
    create_localizer,
    list_localizers,
    load_localizer,
    register_localizer,
    save_localizer,
)
from ansm.models.taps import FeatureTaps, extract_features, resolve_layers
from ansm.models import twostream as _twostream  # noqa: F401  (registers "twostream")
from ansm.models import unet as _unet  # noqa: F401  (registers "unet-small")
from ansm.models import noiseprint as _noiseprint  # noqa: F401  (registers "noiseprint-head")
from ansm.models import mobilenet as _mobilenet  # noqa: F401  (registers "mobilenet-unet")
from ansm.models import imdlbenco as _imdlbenco  # noqa: F401  (registers "imdlbenco:<Name>"; imports IMDLBenCo lazily)

__all__ = [
    "InputConfig",
    "Localizer",
    "LOCALIZERS",
    "create_localizer",
    "list_localizers",
    "load_localizer",
    "register_localizer",
    "save_localizer",
    "FeatureTaps",
    "extract_features",
    "resolve_layers",
]
