"""User-facing errors.

Anything the user can cause (a wrong model name, a missing file, a checkpoint for another
configuration, an unreadable image) raises a subclass of :class:`SlkdError` whose message names
the problem in plain words. The command line prints these messages without a traceback.
"""


class SlkdError(Exception):
    """Base class of every error caused by user input rather than by a bug."""


class CheckpointError(SlkdError):
    """A weights file is missing, unsafe, or does not fit the model."""


class ImageReadError(SlkdError):
    """An image file cannot be read or decoded."""


class DatasetError(SlkdError):
    """A dataset folder has an unknown layout or unmatched pairs."""


class ConfigError(SlkdError):
    """A configuration value is invalid; the message names the key (``train.optimizer.lr: …``).

    Raised by the engine's YAML schema and by the distillation methods' own configs
    (:class:`slkd.distill.DistillerConfig`), which the schema embeds."""
