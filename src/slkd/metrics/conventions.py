"""The restoration tasks slkd knows, and the metric convention each is reported with
(docs/spec.md §6): the one list every part of slkd (config, ``slkd eval``, evaluation) uses."""

#: the benchmark tasks (``slkd eval --task``)
BENCHMARK_TASKS = ("denoise", "derain", "deblur", "dehaze", "real")

#: every task: the benchmark tasks and "reconstruct", Teacher B's clean → clean check
#: (training validation only)
TASKS = BENCHMARK_TASKS + ("reconstruct",)

#: tasks whose PSNR/SSIM the literature reports on BT.601 Y; every other task uses RGB
Y_CHANNEL_TASKS = frozenset({"derain"})


def task_uses_y_channel(task: str) -> bool:
    """True for deraining (Y channel), False for the other tasks (RGB)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return task in Y_CHANNEL_TASKS
