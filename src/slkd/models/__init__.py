"""Restoration networks, their presets, checkpoints, feature taps and complexity."""

# the model families, each registering its presets (slkd.models.registry) in this order: adding
# a family is its own file and one line here
from slkd.models import restormer  # noqa: F401  (first: the others reuse its blocks)
from slkd.models import uformer  # noqa: F401
from slkd.models import drsformer  # noqa: F401
from slkd.models import nafnet  # noqa: F401
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
from slkd.models.pretrained import load_pretrained, weights_path
from slkd.models.registry import (ModelPreset, build_model, default_student, get_preset, list_models, preset_config,
                                  register_preset)
from slkd.models.restormer import Restormer
from slkd.models.protocol import RestorationModel, decoder_taps, default_taps, input_channels, size_multiple
from slkd.models.slicing import init_from_teacher
from slkd.models.taps import (
    DECODER_LEVELS,
    ENCODER_LEVELS,
    LEVEL_NAMES,
    FeatureTaps,
    level_modules,
)
from slkd.models.uformer import Uformer

__all__ = [
    "init_from_teacher",
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
    "ModelPreset",
    "NAFNet",
    "DECODER_LEVELS",
    "ENCODER_LEVELS",
    "Restormer",
    "RestorationModel",
    "Uformer",
    "build_model",
    "decoder_taps",
    "default_student",
    "default_taps",
    "get_preset",
    "input_channels",
    "layer_norm_type",
    "level_modules",
    "list_models",
    "load_pretrained",
    "load_weights",
    "preset_config",
    "read_state_dict",
    "register_preset",
    "save_weights",
    "size_multiple",
    "weights_path",
]
