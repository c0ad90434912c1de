"""Model presets of the studies that are not slkd's own, registered from outside the library
the way any user's code registers presets (:func:`slkd.models.register_preset`).

``res-sl-tiny-deep``: a student of ``restormer-tiny`` cut in width only (dim 6, the teacher's
depth) — the same >= 80 % cut as ``res-sl-tiny`` without removing blocks, the student shape
MiPKD finds KD works for. The study that tried it (BENCHMARKS.md) kept ``res-sl-tiny``.
"""

from slkd.models import ModelPreset, Restormer, register_preset
from slkd.models.restormer import checkpoint_variant, restormer_options

DEEP_STUDENT = register_preset(ModelPreset(
    "res-sl-tiny-deep", Restormer,
    restormer_options(dim=6, num_blocks=[2, 2, 2, 2], num_refinement_blocks=2),
    "student of restormer-tiny cut in width only (dim 6, the teacher's depth): the same >= 80 % "
    "cut as res-sl-tiny without removing blocks, the student shape MiPKD finds KD works for",
    teacher="restormer-tiny",
    variants=checkpoint_variant,
)).name
