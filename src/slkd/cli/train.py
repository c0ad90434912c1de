"""``slkd train``: train Teacher A, Teacher B, or a student from scratch, from a YAML config."""

from __future__ import annotations

import json
import sys

from slkd.cli.common import add_run_arguments, note
from slkd.engine.builders import build_model_for_run, build_train_set, build_val_sets
from slkd.engine.config import load_config
from slkd.engine.distributed import init_distributed, shutdown
from slkd.engine.tasks import SupervisedTask
from slkd.engine.trainer import Trainer, resolve_run_dir, seed_everything


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
    cfg = load_config(args.config, args.overrides)
    dist = init_distributed(args.device)
    try:
        run_dir = resolve_run_dir(cfg)
        seed_everything(cfg.seed)  # same initial weights on every rank and in every rerun
        model = build_model_for_run(cfg, log=note if dist.is_main else None)
        train_set = build_train_set(cfg)
        val_sets = build_val_sets(cfg)
        task = SupervisedTask(model, cfg.train.loss, clean_input=cfg.role == "teacher_b")
        trainer = Trainer(cfg, task, train_set, val_sets, run_dir=run_dir, dist=dist,
                          resume=args.resume, argv=sys.argv)
        result = trainer.run()
        if dist.is_main:
            print(json.dumps({"run_dir": str(run_dir), **result}))
    finally:
        shutdown()
    return 0
