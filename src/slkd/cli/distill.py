"""``slkd distill``: distil frozen teachers into a student (SLKD or a baseline) from a config."""

from __future__ import annotations

from slkd.cli.common import add_run_arguments, run_training
from slkd.engine.tasks import distiller_task


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        help="distil teachers into a student with SLKD or a baseline",
        description="Distil from a YAML config with role: distill (see configs/). Teachers are "
        "weight files or run folders of `slkd train`; official Restormer checkpoints work as "
        "Teacher A. Overrides like distill.method=fitnet or distill.irl=false follow the config "
        "path. Each loss term is logged separately in metrics.jsonl. The run folder's weights.pth "
        "holds the student only (adapters are dropped). A method of your own: --plugin my_method.py.",
    )
    add_run_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return run_training(args, roles=("distill",), command="distill", make_task=distiller_task)
