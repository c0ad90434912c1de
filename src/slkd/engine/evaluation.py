"""One evaluation loop for every command: training validation, ``slkd eval`` and ``slkd demo``.

:func:`evaluate` runs a model (or no model: the degraded inputs themselves) over a set of
evaluation samples and scores each output with the convention of the task (docs/spec.md §6):
PSNR/SSIM on uint8-quantised outputs, on BT.601 Y for deraining and on RGB otherwise, or the
no-reference BRISQUE/PIQE of inputs and outputs for real degradations without ground truth.

A sample is what a dataset's evaluation item is (:mod:`slkd.data.datasets`): a dict with
``"lq"`` (the degraded C×H×W image), ``"gt"`` (the clean one, None without ground truth) and
``"name"``; any sequence of them works (``PairedImageDataset``, ``DegradedImageDataset``,
:class:`slkd.data.folders.EvalSamples`). Means are plain sums over the images in their order
divided by the count, the same arithmetic for every caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from slkd.engine.distributed import all_reduce_sum
from slkd.engine.inference import restore
from slkd.errors import DatasetError
from slkd.metrics import create_metric, task_uses_y_channel

__all__ = ["AUTO_TILE", "Convention", "Evaluation", "FULL_REFERENCE", "NO_REFERENCE", "evaluate"]

#: the metrics of a benchmark with ground truth, and of one without
FULL_REFERENCE = ("psnr", "ssim")
NO_REFERENCE = ("brisque", "piqe")
#: ``tile="auto"``: images above this many pixels are restored in tiles of this size (overlap 32)
AUTO_TILE = {"pixels": 1024 * 1024, "tile": 512, "overlap": 32}


@dataclass(frozen=True)
class Convention:
    """How full-reference metrics are computed: Y (BT.601) or RGB, border crop, MATLAB rounding
    of Y. Outputs are always clamped and rounded to uint8 first."""

    y_channel: bool
    crop_border: int = 0
    matlab_compatible: bool = False

    @classmethod
    def for_task(cls, task: str, *, y_channel: bool | None = None, crop_border: int = 0,
                 matlab_compatible: bool = False) -> "Convention":
        """The task's convention (deraining → Y, other tasks → RGB) unless ``y_channel`` forces one."""
        y = task_uses_y_channel(task) if y_channel is None else bool(y_channel)
        return cls(y, int(crop_border), bool(matlab_compatible))

    def describe(self) -> str:
        space = "Y (BT.601)" if self.y_channel else "RGB"
        extra = ", MATLAB rounding of Y" if self.matlab_compatible else ""
        return f"{space} PSNR/SSIM on uint8-quantised outputs, border crop {self.crop_border}{extra}"

    def as_dict(self) -> dict[str, Any]:
        return {"y_channel": self.y_channel, "crop_border": self.crop_border,
                "matlab_compatible": self.matlab_compatible}


@dataclass
class Evaluation:
    """Scores of one model on one set of samples.

    ``rows``: one dict per image evaluated here (``{"name", "psnr", "ssim"}``; no-reference:
    ``{"name", "input": {...}, "output": {...}}``, ``output`` only with a model), in sample
    order; under ``shard`` only this process's images. ``mean``: the same keys averaged over
    ``count`` images, all processes included.
    """

    metrics: tuple[str, ...]
    convention: Convention | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    mean: dict[str, Any] = field(default_factory=dict)
    count: int = 0

    @property
    def no_reference(self) -> bool:
        return self.convention is None


def _tile_for(tile: int | str | None, overlap: int, image: torch.Tensor) -> tuple[int | None, int]:
    if tile != "auto":
        return tile, overlap
    big = image.shape[-1] * image.shape[-2] > AUTO_TILE["pixels"]
    return (AUTO_TILE["tile"], AUTO_TILE["overlap"]) if big else (None, overlap)


def evaluate(
    model: nn.Module | None,
    samples: Sequence[dict[str, Any]],
    *,
    task: str = "denoise",
    convention: Convention | None = None,
    metrics: Sequence[str] = FULL_REFERENCE,
    device: torch.device | str | None = None,
    tile: int | str | None = None,
    overlap: int = 32,
    blend: str = "average",
    clean_input: bool = False,
    shard: tuple[int, int] = (0, 1),
    on_image: Callable[[int, dict[str, Any], torch.Tensor, dict[str, Any]], None] | None = None,
) -> Evaluation:
    """Score ``model`` on ``samples`` (see the module docstring for a sample).

    Args:
        model: the network, run with :func:`~slkd.engine.inference.restore` (padding, optional
            tiling, eval mode, outputs clamped to [0, 1]); None scores the degraded inputs.
        task: sets the convention (deraining → Y channel) unless ``convention`` is given.
        metrics: :data:`FULL_REFERENCE` (PSNR, SSIM against ``"gt"``) or :data:`NO_REFERENCE`
            (BRISQUE, PIQE of the input and of the output, no ground truth needed).
        tile, overlap, blend: tiled restoration; ``tile="auto"`` tiles only images larger than
            :data:`AUTO_TILE` pixels.
        clean_input: feed the model the clean image instead of the degraded one (Teacher B's
            clean → clean reconstruction).
        shard: ``(rank, world_size)``: this process scores images ``rank, rank + world_size …``
            and the sums behind :attr:`Evaluation.mean` are added over the processes.
        on_image: called as ``on_image(index, sample, output, row)`` after each image (to save
            the output or report progress).
    """
    metric_objs = [create_metric(m) for m in metrics]
    refs = {m.needs_reference for m in metric_objs}
    if len(refs) != 1:
        raise ValueError(f"metrics: all full-reference or all no-reference, got {', '.join(metrics)}")
    no_reference = not refs.pop()
    if no_reference:
        convention = None
    elif convention is None:
        convention = Convention.for_task(task)
    if no_reference and clean_input:
        raise ValueError("clean_input needs ground truth; no-reference metrics have none")
    names = tuple(m.name for m in metric_objs)
    rank, world = shard
    rows: list[dict[str, Any]] = []
    for i in range(rank, len(samples), world):
        sample = samples[i]
        source = sample["gt"] if clean_input else sample["lq"]
        if model is None:
            output = source.clamp(0, 1)
        else:
            t, o = _tile_for(tile, overlap, source)
            output = restore(model, source[None], tile=t, overlap=o, blend=blend, device=device)[0]
        if no_reference:
            row = {"name": sample["name"], "input": {m.name: float(m(sample["lq"])) for m in metric_objs}}
            if model is not None:
                row["output"] = {m.name: float(m(output)) for m in metric_objs}
        else:
            gt = sample["gt"]
            if gt is None:
                raise DatasetError(f"{sample['name']}: no ground truth for {', '.join(names)}")
            if output.shape[0] != gt.shape[0]:
                raise DatasetError(f"{sample['name']}: output has {output.shape[0]} channel(s), "
                                   f"target {gt.shape[0]}")
            kw = convention.as_dict()
            row = {"name": sample["name"], **{m.name: float(m(output, gt, **kw)) for m in metric_objs}}
        rows.append(row)
        if on_image is not None:
            on_image(i, sample, output, row)
    if no_reference:
        keys = [(side, m) for side in ("input", "output")[: 1 if model is None else 2] for m in names]
    else:
        keys = [(m,) for m in names]
    result = Evaluation(names, convention, rows)
    _reduce(result, keys, world, device)
    return result


def _reduce(result: Evaluation, keys: list[tuple[str, ...]], world: int,
            device: torch.device | str | None) -> None:
    """Fill ``mean`` and ``count``: sums in image order, added over the ranks when sharded."""
    sums = []
    for key in keys:
        total = 0.0
        for row in result.rows:
            total += _get(row, key)
        sums.append(total)
    count = len(result.rows)
    if world > 1:
        packed = torch.tensor([*sums, float(count)], dtype=torch.float64,
                              device=torch.device(device) if device is not None else None)
        packed = all_reduce_sum(packed).cpu()
        sums, count = packed[:-1].tolist(), int(packed[-1].item())
    result.count = count
    mean: dict[str, Any] = {}
    for key, total in zip(keys, sums):
        node = mean
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = total / max(1, count)
    result.mean = mean


def _get(row: dict[str, Any], key: tuple[str, ...]) -> float:
    for part in key:
        row = row[part]
    return row
