"""Calibrate and check the memory estimate of ``slkd restore`` against measured peak memory.

For each model and image size, ``slkd restore --force`` (untiled) runs in a fresh child process
and the child's own peak resident set size is read (``VmHWM``, see benchmarks/common.py);
each case runs ``--repeat`` times and the largest peak is kept.
The same command on a 16×16 image gives the baseline (Python, torch, the model), so
``measured = peak − baseline`` is what restoring the image added. Next to it:

* ``forward``: the peak of the tensors alive at once during the forward pass, traced on the meta
  device as :func:`slkd.engine.memory.estimate_memory` does (overhead factor 1);
* ``estimate``: what ``estimate_memory`` predicts (with its calibrated factors);
* ``ratio`` = (measured − image buffers − fixed overhead) / forward: the overhead factor this
  case needs (``ACTIVATION_OVERHEAD['cpu']`` must not be below any of them).

    python -m benchmarks.memory_model                   # the default cases (~10 min on 2 cores)
    python -m benchmarks.memory_model --cases res-sl-tiny@512x512

Writes ``benchmarks/results/memory_model.json``. CPU only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import machine, refuse_existing, run_slkd_child, write_report
from slkd.cli.common import max_threads, number

from benchmarks.restore_memory import make_image
from slkd.engine import memory
from slkd.engine.memory import estimate_memory
from slkd.models import build_model, save_weights

#: MODEL@HxW
DEFAULT_CASES = (
    "res-sl-tiny@512x512", "res-sl-tiny@750x1000", "res-sl-tiny@1500x2000",
    "restormer-tiny@512x512", "restormer-tiny@750x1000",
    "res-sl@512x512", "res-sl@750x1000",
    "restormer@256x256", "restormer@512x512",
)


def peak_rss(model: str, weights: Path, image: Path, out: Path, threads: int | None) -> tuple[float, float]:
    """(peak RSS in bytes, seconds) of one untiled ``slkd restore --force`` child."""
    args = ["restore", "--model", model, "--weights", str(weights), "--device", "cpu", "--force",
            "--overwrite", str(image), str(out)]
    run = run_slkd_child(args, threads)
    if run.exit_code:
        raise RuntimeError(f"slkd {' '.join(args)} failed: {run.stderr[-2000:]}")
    return run.peak_rss_bytes, run.seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="MODEL@HxW")
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=None)
    p.add_argument("--repeat", type=number(int, minimum=1), default=2,
                   help="runs per case; the largest peak is kept (peak RSS varies between runs)")
    p.add_argument("--out", default="benchmarks/results/memory_model.json")
    p.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    args = p.parse_args(argv)
    refuse_existing(args.out, args.overwrite, "--out")
    rows, baselines = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_image(work / "tiny.png", 16, 16)
        for case in args.cases:
            name, _, size = case.partition("@")
            h, w = (int(v) for v in size.split("x"))
            weights = work / f"{name}.pth"
            if not weights.exists():
                torch.manual_seed(0)
                save_weights(build_model(name), weights)
            if name not in baselines:
                baselines[name], _ = peak_rss(name, weights, work / "tiny.png", work / "o.png", args.threads)
            image = work / f"image-{h}x{w}.png"
            if not image.exists():
                make_image(image, h, w)
            runs = [peak_rss(name, weights, image, work / "out.png", args.threads) for _ in range(args.repeat)]
            peak, seconds = max(runs)
            model = build_model(name).eval()
            est = estimate_memory(model, h, w)
            forward = est.forward  # the traced peak (plus the model input)
            measured = peak - baselines[name]
            row = {
                "model": name, "image": f"{w}×{h}", "model_input": list(est.model_input),
                "peak_rss_mib": peak / 2**20, "peak_rss_runs_mib": [r[0] / 2**20 for r in runs],
                "baseline_rss_mib": baselines[name] / 2**20,
                "measured_mib": measured / 2**20, "forward_traced_mib": forward / 2**20,
                "buffers_mib": est.buffers / 2**20, "estimate_mib": est.total / 2**20,
                "ratio": (measured - est.buffers - memory.FIXED_OVERHEAD["cpu"]) / forward, "estimate_over_measured": est.total / measured,
                "forward_bytes_per_pixel": forward / (est.model_input[0] * est.model_input[1]),
                "seconds": seconds,
            }
            rows.append(row)
            print(f"{name:<15} {w}×{h}: peak {row['peak_rss_mib']:7.0f} MiB (baseline {row['baseline_rss_mib']:4.0f}), "
                  f"measured {row['measured_mib']:7.0f}, traced forward {row['forward_traced_mib']:7.0f}, "
                  f"estimate {row['estimate_mib']:7.0f} MiB, ratio {row['ratio']:.2f}, "
                  f"estimate/measured {row['estimate_over_measured']:.2f}  ({seconds:.0f} s)", flush=True)
    report = {
        "benchmark": "memory_model",
        "command": "python -m benchmarks.memory_model " + " ".join(argv or sys.argv[1:]),
        "activation_overhead_cpu": memory.ACTIVATION_OVERHEAD["cpu"],
        "fixed_overhead_cpu_mib": memory.FIXED_OVERHEAD["cpu"] / 2**20,
        "buffer_bytes_per_sample": memory.BUFFER_BYTES_PER_SAMPLE,
        "machine": machine(threads=args.threads or torch.get_num_threads()),
        "results": rows,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
