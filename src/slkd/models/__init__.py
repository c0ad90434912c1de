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
from slkd.models.drsformer import DRSformer
from slkd.models.nafnet import NAFNet
from slkd.models.registry import build_model, get_preset, list_models, preset_config
from slkd.models.restormer import Restormer
from slkd.models.taps import (
    LEVEL_NAMES,
    RESTORMER_DECODER_TAPS,
    RESTORMER_ENCODER_TAPS,
    FeatureTaps,
    level_modules,
)
from slkd.models.uformer import Uformer

__all__ = [
    "LatencyReport",
    "MacReport",
    "compare_latency",
    "count_macs",
    "count_parameters",
    "format_count",
    "measure_latency",
    "DRSformer",
    "FeatureTaps",
    "LEVEL_NAMES",
    "LoadReport",
    "NAFNet",
    "RESTORMER_DECODER_TAPS",
    "RESTORMER_ENCODER_TAPS",
    "Restormer",
    "Uformer",
    "build_model",
    "get_preset",
    "layer_norm_type",
    "level_modules",
    "list_models",
    "load_weights",
    "preset_config",
    "read_state_dict",
    "save_weights",
]
