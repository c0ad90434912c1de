"""``slkd distill``: distil frozen teachers into a student (SLKD or a baseline) from a config."""

from __future__ import annotations

import json
import sys

from slkd.cli.common import add_run_arguments, note
from slkd.distill import build_distiller
from slkd.engine.builders import build_model_for_run, build_teacher, build_train_set, build_val_sets
from slkd.engine.config import ConfigError, load_config
from slkd.engine.distributed import init_distributed, shutdown
from slkd.engine.trainer import Trainer, resolve_run_dir, seed_everything


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


def run(args) -> int:
    cfg = load_config(args.config, args.overrides)
    if cfg.role != "distill":
        raise ConfigError(f"role: {args.config} is a {cfg.role!r} config; use `slkd train` for it")
    dist = init_distributed(args.device)
    log = note if dist.is_main else None
    try:
        run_dir = resolve_run_dir(cfg)
        seed_everything(cfg.seed)
        student = build_model_for_run(cfg, log=log)
        method = cfg.distill.method
        teacher_a = teacher_b = None
        if method != "scratch":
            teacher_a = build_teacher(cfg.teachers.a, "teachers.a", log)
            uses_b = method == "slkd" and cfg.distill.irl and cfg.distill.teacher_b == "separate"
            if uses_b:
                teacher_b = build_teacher(cfg.teachers.b, "teachers.b", log)
        distiller = build_distiller(cfg.distill, student, teacher_a, teacher_b)
        if log:
            log(f"{method}: adapters {distiller.adapter_parameter_count():,} parameters "
                "(trained with the student, not exported)")
        trainer = Trainer(cfg, distiller, build_train_set(cfg), build_val_sets(cfg), run_dir=run_dir,
                          dist=dist, resume=args.resume, argv=sys.argv)
        result = trainer.run()
        if dist.is_main:
            print(json.dumps({"run_dir": str(run_dir), "method": method, **result}))
    finally:
        shutdown()
    return 0
