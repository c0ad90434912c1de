"""``slkd train``: train Teacher A, Teacher B, or a student from scratch, from a YAML config."""

from __future__ import annotations

from slkd.cli.common import add_run_arguments, run_training
from slkd.engine.tasks import supervised_task


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a teacher or a scratch student from a config",
        description="Train from a YAML config (see configs/). Overrides like train.iters=500 "
        "or model.options.dim=16 follow the config path. Under torchrun the same command runs "
        "DistributedDataParallel over the launched ranks.",
    )
    add_run_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return run_training(args, roles=("teacher_a", "teacher_b", "scratch"), command="train",
                        make_task=supervised_task)
