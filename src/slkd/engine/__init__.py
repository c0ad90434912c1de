"""Running networks on images."""

from slkd.engine.inference import (
    adapt_channels,
    model_in_channels,
    pad_to_multiple,
    restore,
    tile_starts,
    tile_weights,
)

__all__ = [
    "adapt_channels",
    "model_in_channels",
    "pad_to_multiple",
    "restore",
    "tile_starts",
    "tile_weights",
]
