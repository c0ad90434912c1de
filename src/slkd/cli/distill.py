"""``slkd distill``: distil frozen teachers into a student (SLKD or a baseline) from a config."""

from __future__ import annotations

from slkd.cli.common import add_run_arguments, run_training
from slkd.distill import build_distiller
from slkd.engine.builders import build_teacher


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        help="distil teachers into a student with SLKD or a baseline",
        description="Distil from a YAML config with role: distill (see configs/). Teachers are "
        "weight files or run folders of `slkd train`; official Restormer checkpoints work as "
        "Teacher A. Overrides like distill.method=fitnet or distill.irl=false follow the config "
        "path. Each loss term is logged separately in metrics.jsonl. The run folder's weights.pth "
        "holds the student only (adapters are dropped).",
    )
    add_run_arguments(p)
    p.set_defaults(func=run)


def distiller_task(cfg, student, log):
    method = cfg.distill.method
    # a teacher whose terms all have weight 0 is not loaded (DistillConfig.uses_teacher_a/_b)
    teacher_a = build_teacher(cfg.teachers.a, "teachers.a", log) if cfg.distill.uses_teacher_a() else None
    teacher_b = build_teacher(cfg.teachers.b, "teachers.b", log) if cfg.distill.uses_teacher_b() else None
    distiller = build_distiller(cfg.distill, student, teacher_a, teacher_b, pixel_loss=cfg.train.loss)
    if log:
        log(f"{method}: adapters {distiller.adapter_parameter_count():,} parameters "
            "(trained with the student, not exported)")
    return distiller, {"method": method}


def run(args) -> int:
    return run_training(args, roles=("distill",), command="distill", make_task=distiller_task)
