"""Teacher-initialised students: a student's weights cut out of its teacher's (``model.init_from_teacher``).

A Res-SL student has the teacher's topology with fewer blocks per stage and fewer channels per
feature space. Its initial weights are taken from the teacher: block *i* of a student stage from
block *i* of the teacher's stage (the first blocks), and within every tensor the channels of
each feature space that the student keeps. Which channels it keeps is one choice per feature
space, made consistently for every tensor that reads or writes that space, so the cut network
computes with the teacher's features restricted to the kept channels. [spec, our construction]

Feature spaces whose channels are blocks of equal parts keep the same channels in each part:

* the query/key/value projection (``attn.qkv``, ``attn.qkv_dwconv``): 3 × heads parts;
* the attention output read by ``attn.project_out``: heads parts;
* the gated feed-forward expansion (``ffn.project_in``, ``ffn.dwconv``): gate and value parts;
* the skip concatenations (``reduce_chan_level3/2`` inputs, and the whole of level 1's decoder,
  refinement and output input, which keep the 2·dim concatenation): upsampled and skip parts.

Pixel (un)shuffle keeps the first channels consistent on both sides of a resampling, so
everything else keeps the *first* channels of each part. (Choosing channels by their weights'
norm instead would have to be one choice for the residual streams of all levels at once, which
the resampling convolutions tie together; first channels are the simple consistent choice.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slkd.errors import SlkdError

__all__ = ["init_from_teacher", "slice_plan"]

#: stages whose residual stream is the 2·dim concatenation [upsampled | skip] (official design)
_CONCAT_STAGES = ("decoder_level1", "refinement")


def _family(model: nn.Module) -> str:
    from slkd.models.restormer import Restormer

    if type(model) is Restormer:
        return "restormer"
    raise SlkdError(f"init_from_teacher: supported for Restormer and its Res-SL students, not "
                    f"{type(model).__name__}")


def _heads(model: nn.Module, name: str) -> int:
    """Attention heads of the block a parameter ``name`` belongs to."""
    parts = name.split(".")
    module = model
    for part in parts[:2]:
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
    return int(module.attn.num_heads)


def _parts(model: nn.Module, name: str, dim: int) -> int:
    """How many equal parts the channels of dimension ``dim`` of parameter ``name`` form."""
    stage = name.split(".")[0]
    stream = 2 if stage in _CONCAT_STAGES else 1
    if name.startswith("reduce_chan_level"):
        return 2 if dim == 1 else 1
    if name.startswith("output."):
        return 2 if dim == 1 else 1
    if ".attn.qkv" in name:  # qkv and qkv_dwconv: output channels in q|k|v × heads parts
        return 3 * _heads(model, name) if dim == 0 else stream
    if ".attn.project_out" in name:
        return _heads(model, name) if dim == 1 else stream
    if ".ffn.project_in" in name or ".ffn.dwconv" in name:
        return 2 if dim == 0 else stream
    if ".ffn.project_out" in name:
        return 1 if dim == 1 else stream
    if ".norm" in name:
        return stream
    return 1  # patch embedding, resampling convolutions, temperatures


def _indices(teacher_size: int, student_size: int, parts: int, what: str) -> Tensor:
    if teacher_size % parts or student_size % parts:
        raise SlkdError(f"init_from_teacher: {what} has {teacher_size} teacher and {student_size} "
                        f"student channels, not divisible into its {parts} parts")
    t, s = teacher_size // parts, student_size // parts
    if s > t:
        raise SlkdError(f"init_from_teacher: {what} is wider in the student ({student_size}) than in "
                        f"the teacher ({teacher_size})")
    return torch.cat([torch.arange(p * t, p * t + s) for p in range(parts)])


def slice_plan(student: nn.Module, teacher: nn.Module) -> dict[str, list[Tensor | None]]:
    """Parameter name → per dimension, the teacher indices kept (None: the whole dimension)."""
    _family(student), _family(teacher)
    t_state = teacher.state_dict()
    plan: dict[str, list[Tensor | None]] = {}
    for name, s_value in student.state_dict().items():
        if name not in t_state:
            raise SlkdError(f"init_from_teacher: the teacher has no {name!r}: it is not the student's "
                            "architecture with more blocks and channels")
        t_value = t_state[name]
        if t_value.dim() != s_value.dim():
            raise SlkdError(f"init_from_teacher: {name} has {t_value.dim()} dimensions in the teacher "
                            f"and {s_value.dim()} in the student")
        dims: list[Tensor | None] = []
        for d, (ts, ss) in enumerate(zip(t_value.shape, s_value.shape)):
            dims.append(None if ts == ss else _indices(ts, ss, _parts(teacher, name, d), f"{name} dim {d}"))
        plan[name] = dims
    return plan


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module) -> dict[str, int]:
    """Overwrite ``student``'s weights with the cut of ``teacher``'s (see the module doc).

    Returns counts: parameters copied whole, cut, and the teacher blocks left out."""
    plan = slice_plan(student, teacher)
    t_state = teacher.state_dict()
    new = {}
    whole = cut = 0
    for name, dims in plan.items():
        value = t_state[name]
        for d, idx in enumerate(dims):
            if idx is not None:
                value = value.index_select(d, idx.to(value.device))
        new[name] = value.clone()
        if all(i is None for i in dims):
            whole += 1
        else:
            cut += 1
    student.load_state_dict(new, strict=True)
    left_out = {n.rsplit(".", 1)[0] for n in t_state if n not in new}
    return {"copied": whole, "cut": cut, "teacher_tensors_left_out": len([n for n in t_state if n not in new]),
            "teacher_modules_left_out": len(left_out)}
