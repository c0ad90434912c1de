"""Running networks on images."""

from slkd.engine.inference import (
    adapt_channels,
    model_in_channels,
    pad_to_multiple,
    restore,
    tile_starts,
    tile_weights,
)
from slkd.engine.memory import MemoryEstimate, available_memory, estimate_memory

__all__ = [
    "MemoryEstimate",
    "adapt_channels",
    "available_memory",
    "estimate_memory",
    "model_in_channels",
    "pad_to_multiple",
    "restore",
    "tile_starts",
    "tile_weights",
]
