"""CPU latency of PyTorch eager vs ONNX Runtime on the graph ``slkd export`` writes.

For each model (seeded random weights: latency does not depend on the values) the graph is
exported with :func:`slkd.models.export.export_onnx` (``check=True``: it must match PyTorch
within 1e-4 first) and then timed against the PyTorch model with
:func:`slkd.models.complexity.compare_latency`: **interleaved** (PyTorch, ONNX Runtime,
PyTorch, ...), median of the timed runs, same input, both with ``--threads`` intra-op threads
(``torch.set_num_threads`` / ``intra_op_num_threads``; ONNX Runtime with one inter-op thread and
without spin-waiting, so that its idle threads do not take CPU from the PyTorch runs in between).
The ratio of the two medians, measured side by side in one run, is the result to quote; the
absolute numbers depend on the machine. The ONNX Runtime time includes the (zero-copy)
tensor↔numpy conversion.

Students (res-sl-tiny, res-sl) run at every ``--sizes``; the teacher (restormer) only at 256,
and only if its case fits ``--teacher-budget`` seconds. Each case first runs one untimed round
(it counts as the first warm-up and sizes the case): the number of timed runs is lowered, to no
fewer than 3, so that a case fits ``--case-budget`` seconds; the runs used are in the JSON.

    python -m benchmarks.onnx_latency                      # 256 and 1024, 2 threads
    python -m benchmarks.onnx_latency --sizes 256 --json /tmp/onnx.json

Writes ``benchmarks/results/onnx_latency.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import machine, refuse_existing
from slkd.cli.common import max_threads, number
from slkd.models import build_model, compare_latency
from slkd.models.export import export_onnx

STUDENTS = ("res-sl-tiny", "res-sl")
TEACHER, TEACHER_SIZE = "restormer", 256
MIN_RUNS = 3


class OrtModel(nn.Module):
    """An ONNX Runtime session behind the ``model(x)`` call that ``compare_latency`` times."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"input": x.numpy()})[0])


def _stats(report) -> dict:
    return {"median_ms": report.median_ms, "min_ms": report.min_ms, "max_ms": report.max_ms,
            "times_ms": [round(t, 2) for t in report.times_ms]}


def run_case(name: str, size: int, model: nn.Module, onnx_path: Path, args, budget: float) -> dict:
    pair = {"pytorch": model, "onnxruntime": OrtModel(onnx_path, args.threads)}
    shape = (1, 3, size, size)
    # one untimed round: first warm-up, and the time of one round to size the case
    start = time.perf_counter()
    compare_latency(pair, shape, runs=1, warmup=0, threads=args.threads)
    round_s = time.perf_counter() - start
    warmup = max(0, args.warmup - 1)
    fit = math.floor(budget / round_s) - warmup
    runs = min(args.runs, fit)
    row = {"model": name, "size": [size, size], "batch": 1, "round_s": round(round_s, 2),
           "budget_s": budget}
    if runs < MIN_RUNS:
        row["skipped"] = (f"one round takes {round_s:.1f} s: {MIN_RUNS} runs + {warmup} warm-up "
                          f"would not fit {budget:.0f} s")
        return row
    timings = compare_latency(pair, shape, runs=runs, warmup=warmup, threads=args.threads)
    torch_t, ort_t = timings["pytorch"], timings["onnxruntime"]
    row.update(runs=runs, warmup=warmup + 1, threads=torch_t.threads,
               pytorch=_stats(torch_t), onnxruntime=_stats(ort_t),
               speedup_onnxruntime=torch_t.median_ms / ort_t.median_ms)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=number(int, minimum=8), default=[256, 1024], metavar="S",
                   help="square input sides, multiples of 8 (default 256 1024)")
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=2,
                   help="intra-op threads for both (default 2)")
    p.add_argument("--runs", type=number(int, minimum=1), default=10, help="timed runs per case at most (default 10)")
    p.add_argument("--warmup", type=number(int, minimum=1), default=2, help="untimed rounds per case (default 2)")
    p.add_argument("--case-budget", type=number(float, above=0), default=180.0, metavar="SECONDS",
                   help="time one student case may take; fewer runs if needed (default 180)")
    p.add_argument("--teacher-budget", type=number(float, above=0), default=60.0, metavar="SECONDS",
                   help="restormer at 256 is measured only if it fits this (default 60)")
    p.add_argument("--json", default="benchmarks/results/onnx_latency.json", metavar="OUT")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    args = p.parse_args(argv)
    refuse_existing(args.json, args.overwrite)
    if any(s <= 0 or s % 8 for s in args.sizes):
        p.error("--sizes must be positive multiples of 8")
    if args.threads < 1 or args.runs < MIN_RUNS or args.warmup < 1:
        p.error(f"--threads >= 1, --runs >= {MIN_RUNS} and --warmup >= 1 please")
    import onnx
    import onnxruntime

    load_before = os.getloadavg()
    started = time.perf_counter()
    results, exports = [], {}
    names = list(STUDENTS) + ([TEACHER] if TEACHER_SIZE in args.sizes else [])
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            torch.manual_seed(0)
            model = build_model(name).eval()
            path = Path(tmp) / f"{name}.onnx"
            start = time.perf_counter()
            exported = export_onnx(model, path, model_name=name, check=True)
            exports[name] = {
                "export_s": round(time.perf_counter() - start, 2),
                "onnx_mb": round(exported.size_bytes / 1e6, 2),
                "check_max_abs_diff": max(c.max_abs_diff for c in exported.checks),
            }
            sizes = [TEACHER_SIZE] if name == TEACHER else args.sizes
            budget = args.teacher_budget if name == TEACHER else args.case_budget
            for size in sizes:
                row = run_case(name, size, model, path, args, budget)
                results.append(row)
                if "skipped" in row:
                    print(f"{name:<12} {size:>5}²  skipped: {row['skipped']}", flush=True)
                else:
                    print(f"{name:<12} {size:>5}²  pytorch {row['pytorch']['median_ms']:9.1f} ms  "
                          f"onnxruntime {row['onnxruntime']['median_ms']:9.1f} ms  "
                          f"ratio {row['speedup_onnxruntime']:.2f}×  ({row['runs']} runs)", flush=True)
            del model
    report = {
        "benchmark": "onnx_latency",
        "what": "median latency of one forward pass, batch 1, PyTorch eager (inference_mode) vs "
                "ONNX Runtime CPUExecutionProvider on the slkd export graph, timed interleaved "
                "in one process; speedup_onnxruntime = pytorch median / onnxruntime median",
        "command": "python -m benchmarks.onnx_latency " + " ".join(argv if argv is not None else sys.argv[1:]),
        "threads": args.threads,
        "onnxruntime_options": {"intra_op_num_threads": args.threads, "inter_op_num_threads": 1,
                                "execution_mode": "sequential", "allow_spinning": False,
                                "graph_optimization_level": "default (all)"},
        "machine": {**machine(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                    "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()]},
        "exports": exports,
        "results": results,
        "total_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
