"""Which metric convention each restoration task is reported with (PROTOCOLS.md)."""

#: tasks whose PSNR/SSIM the literature reports on BT.601 Y; every other task uses RGB
Y_CHANNEL_TASKS = frozenset({"derain"})

#: the tasks slkd knows; "reconstruct" is Teacher B's clean → clean check
TASKS = ("denoise", "derain", "deblur", "dehaze", "real", "reconstruct")


def task_uses_y_channel(task: str) -> bool:
    """True for deraining (Y channel), False for the other tasks (RGB)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return task in Y_CHANNEL_TASKS
