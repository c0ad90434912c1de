"""Which SLKD term drives the student? Per-term gradient norms on real training batches.

For a distillation config (teachers and data as in training), each weighted term λ_i·L_i of the
SLKD objective is differentiated alone w.r.t. the student's parameters. Reported per term,
averaged over a few batches: the raw and weighted value, the gradient norm, its ratio to the
pixel term's gradient norm, and the cosine between its gradient and the pixel gradient (a term
whose gradient is large and orthogonal or opposed to L_pix pulls the student away from the task).

    python -m benchmarks.loss_balance --config runs/study/denoise25/configs/slkd_s0.yaml \
        --student runs/study/denoise25/scratch_s0/weights.pth

``--student`` evaluates the balance at trained student weights (default: the student's
initialisation). Overrides (KEY=VALUE) change the SLKD settings being measured, e.g.
``distill.loss_weights.nc=0.01``. Writes ``benchmarks/results/loss_balance.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

from benchmarks.common import machine, refuse_existing, write_report
from slkd.cli.common import number
from slkd.engine.builders import build_model_for_run, build_train_set
from slkd.data.sampler import TrainSampler
from slkd.engine.config import load_config
from slkd.engine.tasks import distiller_task
from slkd.engine.runstate import seed_everything
from slkd.models import load_weights


def term_gradients(distiller, batches) -> dict:
    """Mean over ``batches`` of value / gradient norm / cosine-to-pixel of each weighted term."""
    params = [p for p in distiller.model.parameters() if p.requires_grad]
    acc: dict[str, dict[str, list[float]]] = {}
    for batch in batches:
        terms = distiller.compute_terms(batch["lq"], batch["gt"])
        grads = {}
        for name, value in terms.items():
            w = distiller.weights.get(name, 0.0)
            if w == 0:
                continue
            g = torch.autograd.grad(w * value, params, retain_graph=True, allow_unused=True)
            grads[name] = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten()
                                     for x, p in zip(g, params)])
            row = acc.setdefault(name, {"value": [], "weighted": [], "grad_norm": [], "cos_pix": []})
            row["value"].append(float(value))
            row["weighted"].append(float(w * value))
            row["grad_norm"].append(float(grads[name].norm()))
        pix = grads["pix"]
        for name, g in grads.items():
            cos = torch.nn.functional.cosine_similarity(g, pix, dim=0)
            acc[name]["cos_pix"].append(float(cos))
    out = {name: {k: sum(v) / len(v) for k, v in row.items()} for name, row in acc.items()}
    for row in out.values():
        row["grad_over_pix"] = row["grad_norm"] / out["pix"]["grad_norm"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="an SLKD distillation config")
    p.add_argument("--student", help="student weights to measure at (default: initialisation)")
    p.add_argument("--batches", type=number(int, minimum=1), default=4)
    p.add_argument("--json", default="benchmarks/results/loss_balance.json")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = p.parse_args(argv)
    refuse_existing(args.json, args.overwrite)
    cfg = load_config(args.config, args.overrides)
    seed_everything(cfg.seed)
    model = build_model_for_run(cfg)
    if args.student:
        load_weights(model, args.student)
    distiller, _ = distiller_task(cfg, model, None)
    distiller.train()
    train_set = build_train_set(cfg)
    sampler = TrainSampler(len(train_set), cfg.data.batch_size, cfg.seed)  # the run's first batches
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.data.batch_size, sampler=sampler)
    batches = list(itertools.islice(iter(loader), args.batches))
    result = term_gradients(distiller, batches)
    report = {"machine": machine(), "config": args.config, "overrides": args.overrides,
              "student": args.student or "initialisation", "batches": args.batches,
              "batch_size": cfg.data.batch_size, "terms": result}
    write_report(args.json, report)
    print(f"{'term':<6}{'value':>10}{'λ·value':>10}{'|grad|':>10}{'/pix':>8}{'cos(pix)':>10}")
    for name, r in result.items():
        print(f"{name:<6}{r['value']:>10.4f}{r['weighted']:>10.4f}{r['grad_norm']:>10.4f}"
              f"{r['grad_over_pix']:>8.2f}{r['cos_pix']:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
