"""The restoration tasks slkd knows: one table, one entry per task, from which every other part
of slkd reads what a task means — the config's ``eval.task`` values, the metric convention
(:mod:`slkd.metrics.conventions`), the choices of ``--task``, how reports call the degraded
input, the paired folder layouts its data come in and whether its degraded images can be
synthesised from clean ones.

Adding a task is one :func:`register_task` call (it imports nothing of slkd, so every layer may
read it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskSpec", "benchmark_tasks", "register_task", "task_names", "task_spec"]


@dataclass(frozen=True)
class TaskSpec:
    """One restoration task."""

    name: str
    #: the metric convention the literature reports it with: PSNR/SSIM on BT.601 Y (True) or on
    #: the RGB channels (False); docs/spec.md §6
    y_channel: bool
    #: how reports and tables call the degraded input
    input_label: str
    #: the paired layouts (degraded folder, clean folder) its data sets come in; a folder reader
    #: accepts these besides the generic ones (:data:`slkd.data.folders.PAIRED_LAYOUTS`)
    layouts: tuple[tuple[str, str], ...] = ()
    #: the degradation (:data:`slkd.data.degrade.DEGRADATIONS`) that makes its degraded images
    #: from clean ones (a folder of clean images is then data of this task); None: pairs only
    synthetic: str | None = None
    #: a task of ``slkd eval --task``/``slkd compress --task``; False for checks used only while
    #: training (Teacher B's reconstruction)
    benchmark: bool = True


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the table (a name registered twice is an error)."""
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is registered already")
    _TASKS[spec.name] = spec
    return spec


def task_spec(name: str) -> TaskSpec:
    """The entry of task ``name``; an unknown name raises ``ValueError`` naming the known ones."""
    try:
        return _TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; known: {', '.join(_TASKS)}") from None


def task_names() -> tuple[str, ...]:
    """Every task, in registration order (the config's ``eval.task`` values)."""
    return tuple(_TASKS)


def benchmark_tasks() -> tuple[str, ...]:
    """The tasks a user names on the command line (``--task``), in registration order."""
    return tuple(name for name, spec in _TASKS.items() if spec.benchmark)


register_task(TaskSpec("denoise", y_channel=False, input_label="noisy input",
                       layouts=(("input", "target"), ("lq", "gt")), synthetic="gaussian_noise"))
register_task(TaskSpec("derain", y_channel=True, input_label="rainy input", layouts=(("input", "target"),)))
register_task(TaskSpec("deblur", y_channel=False, input_label="blurred input",
                       layouts=(("input", "target"), ("blurred", "gt"))))
register_task(TaskSpec("dehaze", y_channel=False, input_label="hazy input",
                       layouts=(("hazy", "clear"), ("hazy", "gt"))))
register_task(TaskSpec("real", y_channel=False, input_label="noisy input",
                       layouts=(("noisy", "mean"), ("input_crops", "target_crops"))))
#: Teacher B's clean → clean check while training
register_task(TaskSpec("reconstruct", y_channel=False, input_label="clean input", benchmark=False))
