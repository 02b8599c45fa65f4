"""Typed errors raised at the library boundary.

The CLI turns any :class:`AnsmError` into a one-line message and exit code 2, so a user sees
"error: masks/x_gt.png is 300x200 but images/x.jpg is 384x256" instead of a PyTorch traceback.
"""


class AnsmError(Exception):
    """Base class for every error ansm raises on purpose (bad input, bad configuration)."""


class DataError(AnsmError):
    """An image, mask, manifest or dataset layout is unreadable or inconsistent."""


class ConfigError(AnsmError):
    """An argument or configuration value is invalid (unknown name, bad range)."""


class CheckpointError(AnsmError):
    """A checkpoint is missing, unsafe to load, or does not fit the architecture."""


class OutputError(AnsmError):
    """An output cannot be written where the user asked: the path is a folder (or a file where a folder is
    needed), the folder is read-only, or the disk is full. The message names the path."""
