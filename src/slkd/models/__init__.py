"""Restoration networks, their presets, checkpoints, feature taps and complexity."""

from slkd.models.checkpoint import (
    LoadReport,
    layer_norm_type,
    load_weights,
    read_state_dict,
    save_weights,
)
from slkd.models.complexity import (
    LatencyReport,
    MacReport,
    compare_latency,
    count_macs,
    count_parameters,
    format_count,
    measure_latency,
)
from slkd.models.registry import build_model, get_preset, list_models, preset_config
from slkd.models.restormer import Restormer
from slkd.models.taps import RESTORMER_DECODER_TAPS, RESTORMER_ENCODER_TAPS, FeatureTaps

__all__ = [
    "LatencyReport",
    "MacReport",
    "compare_latency",
    "count_macs",
    "count_parameters",
    "format_count",
    "measure_latency",
    "FeatureTaps",
    "LoadReport",
    "RESTORMER_DECODER_TAPS",
    "RESTORMER_ENCODER_TAPS",
    "Restormer",
    "build_model",
    "get_preset",
    "layer_norm_type",
    "list_models",
    "load_weights",
    "preset_config",
    "read_state_dict",
    "save_weights",
]
