"""The metric convention each restoration task is reported with (docs/spec.md §6), read from
the task table (:mod:`slkd.data.tasks`), the one list every part of slkd (config, ``slkd eval``,
evaluation) uses."""

from slkd.data.tasks import benchmark_tasks, task_names, task_spec

#: the benchmark tasks (``slkd eval --task``) built into slkd
BENCHMARK_TASKS = benchmark_tasks()

#: every built-in task: the benchmark tasks and "reconstruct", Teacher B's clean → clean check
#: (training validation only)
TASKS = task_names()


def task_uses_y_channel(task: str) -> bool:
    """True for a task reported on BT.601 Y (deraining), False for one reported on RGB."""
    return task_spec(task).y_channel
