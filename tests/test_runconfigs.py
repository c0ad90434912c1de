"""The run configs built in code (slkd.engine.runconfigs): valid training configs of every
role, Teacher B derived from Teacher A in one place, the distill node's overrides."""

from __future__ import annotations

import pytest

from slkd.engine.config import TrainRunConfig, from_dict
from slkd.engine.runconfigs import (RUN_KEYS, Net, distill_node, distilled_run, scratch_run, teacher_a_run,
                                    teacher_b_run)

DATA = {"train": {"type": "paired", "roots": ["pairs"], "patch_size": 16}, "val": [], "batch_size": 2}
TRAIN = {"iters": 4}


def test_every_role_is_a_valid_training_config():
    a = Net("restormer-tiny", "runs/teacher_a", {"dim": 24})
    common = {"output_dir": "runs", "seed": 1, "data": DATA, "train": TRAIN}
    b_run = teacher_b_run("teacher_b", a, eval={"task": "reconstruct"}, **common)
    # Teacher B: Teacher A's preset and options without the global residual, started from A
    assert b_run["model"] == {"name": "restormer-tiny", "options": {"dim": 24, "global_residual": False},
                              "init_from": "runs/teacher_a"}
    runs = [teacher_a_run("teacher_a", a, **common), b_run,
            scratch_run("scratch", "res-sl-tiny", init_from_teacher=a, **common),
            distilled_run("slkd", "res-sl-tiny", "slkd", teacher_a=a, teacher_b=a.teacher_b("runs/teacher_b"),
                          **common),
            distilled_run("fitnet", "res-sl-tiny", "fitnet", teacher_a=a, **common),
            distilled_run("alone", "res-sl-tiny", "scratch", teacher_a=None, **common)]
    for run in runs:
        cfg = from_dict(TrainRunConfig, run)
        assert cfg.name == run["name"] and list(run) == [k for k in RUN_KEYS if k in run]
    assert runs[0]["model"] == {"name": "restormer-tiny", "options": {"dim": 24}}  # trained here: no weights
    assert runs[3]["teachers"]["b"] == {"name": "restormer-tiny", "weights": "runs/teacher_b",
                                        "options": {"dim": 24, "global_residual": False}}
    assert "teachers" not in runs[5] and runs[5]["role"] == "distill"


def test_distill_overrides_by_dotted_key_or_node_and_a_callers_key_order():
    assert distill_node("slkd", {"loss_weights.kl": 0.5, "drl": False, "loss_weights.nc": 0.1,
                                 "encoder_taps": ("latent",)}) == {
        "method": "slkd", "loss_weights": {"kl": 0.5, "nc": 0.1}, "drl": False, "encoder_taps": ["latent"]}
    nested = {"loss_weights": {"img": 0.5}}
    node = distill_node("fakd", nested)
    node["loss_weights"]["img"] = 0.0
    assert nested == {"loss_weights": {"img": 0.5}}  # a copy
    order = ("name", "output_dir", "role", "seed", "model", "data", "train")
    run = scratch_run("s", "res-sl-tiny", output_dir="runs", seed=0, data=DATA, train=TRAIN, order=order)
    assert list(run) == list(order)
    with pytest.raises(ValueError, match="eval"):
        scratch_run("s", "res-sl-tiny", output_dir="runs", seed=0, data=DATA, train=TRAIN, eval={}, order=order)
