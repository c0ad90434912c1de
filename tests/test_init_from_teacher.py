"""Teacher-initialised students (``model.init_from_teacher``): which teacher weights each student
tensor takes."""

from __future__ import annotations

import pytest
import torch

from slkd.errors import SlkdError
from slkd.models import build_model
from slkd.models.slicing import init_from_teacher, slice_plan

import benchmarks.families  # noqa: F401,E402  (res-sl-tiny-deep, the study's student, registers from there)


def _labelled_teacher():
    """restormer-tiny whose every weight holds its own flat index: a student weight then says
    exactly which teacher entry it was taken from."""
    teacher = build_model("restormer-tiny")
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.arange(p.numel(), dtype=p.dtype).view_as(p))
    return teacher


@pytest.mark.parametrize("student_name", ["res-sl-tiny", "res-sl-tiny-deep"])
def test_every_student_tensor_is_cut_from_the_teacher(student_name):
    student, teacher = build_model(student_name), build_model("restormer-tiny")
    counts = init_from_teacher(student, teacher)
    t = teacher.state_dict()
    for name, value in student.state_dict().items():
        idx = slice_plan(student, teacher)[name]
        expected = t[name]
        for d, i in enumerate(idx):
            if i is not None:
                expected = expected.index_select(d, i)
        assert torch.equal(value, expected), name
    assert counts["cut"] > 0 and counts["copied"] > 0
    if student_name == "res-sl-tiny":
        assert counts["teacher_modules_left_out"] > 0  # the second block of every stage


def test_query_key_value_keep_the_first_channels_of_each_head_part():
    teacher = _labelled_teacher()
    student = build_model("res-sl-tiny")
    init_from_teacher(student, teacher)
    # level 2: 2 heads of 16 teacher channels (8 in the student); rows of qkv are q|k|v × heads
    rows = student.encoder_level2[0].attn.qkv.weight[:, 0, 0, 0] / teacher.encoder_level2[0].attn.qkv.weight.shape[1]
    expected = torch.cat([torch.arange(p * 16, p * 16 + 8) for p in range(6)]).float()
    assert torch.equal(rows, expected)
    # the teacher's second block is not used: block 0 only
    assert len(student.encoder_level2) == 1


def test_level1_decoder_keeps_both_halves_of_the_skip_concatenation():
    teacher = _labelled_teacher()
    student = build_model("res-sl-tiny")
    init_from_teacher(student, teacher)
    # decoder level 1 and refinement run on [upsampled 16 | skip 16] in the teacher, [8 | 8] here
    norm = student.decoder_level1[0].norm1.body.weight
    assert torch.equal(norm, torch.cat([torch.arange(0, 8), torch.arange(16, 24)]).float())
    cols = student.output.weight[0, :, 0, 0] / 9  # 3×3 kernels: the flat index steps by 9 per channel
    assert torch.equal(cols, torch.cat([torch.arange(0, 8), torch.arange(16, 24)]).float())
    # reduce_chan_level3 reads [upsampled 64 | skip 64] in the teacher, [32 | 32] here
    w = student.reduce_chan_level3.weight[0, :, 0, 0]
    assert torch.equal(w, torch.cat([torch.arange(0, 32), torch.arange(64, 96)]).float())


def test_the_cut_student_runs_and_is_not_random():
    torch.manual_seed(0)
    teacher = build_model("restormer-tiny").eval()
    student = build_model("res-sl-tiny").eval()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    init_from_teacher(student, teacher)
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    with torch.inference_mode():
        assert torch.isfinite(student(torch.rand(1, 3, 32, 32))).all()


def test_refuses_what_it_cannot_cut():
    with pytest.raises(SlkdError, match="Restormer"):
        init_from_teacher(build_model("nafnet-sl-tiny"), build_model("restormer-tiny"))
    with pytest.raises(SlkdError, match="wider in the student"):
        init_from_teacher(build_model("restormer-tiny"), build_model("res-sl-tiny"))


def test_a_run_config_starts_any_role_from_the_teachers_cut(tmp_path):
    """model.init_from_teacher in a run config: the scratch student starts from the same cut a
    distilled one would (the comparison stays fair), and the key is checked."""
    from slkd.engine.builders import build_model_for_run
    from slkd.engine.config import ConfigError, TrainRunConfig, from_dict
    from slkd.models import save_weights

    torch.manual_seed(0)
    teacher = build_model("restormer-tiny")
    path = save_weights(teacher, tmp_path / "a.pth")
    data = {"name": "x", "role": "scratch", "model": {"name": "res-sl-tiny",
                                                     "init_from_teacher": {"name": "restormer-tiny", "weights": str(path)}},
            "data": {"train": {"type": "degraded", "roots": ["."], "patch_size": 16,
                               "degradation": {"name": "gaussian_noise"}}},
            "train": {"iters": 1}}
    model = build_model_for_run(from_dict(TrainRunConfig, data))
    reference = build_model("res-sl-tiny")
    init_from_teacher(reference, teacher)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    data["model"]["init_from"] = str(path)
    with pytest.raises(ConfigError, match="model.init_from_teacher: give init_from or init_from_teacher"):
        from_dict(TrainRunConfig, data)
