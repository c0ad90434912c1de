"""Speed of distillation and of the students, measured side by side in one process.

1. **Distillation step vs its floor.** The floor of an SLKD step is what cannot be avoided: one
   student forward+backward+optimizer step plus one forward of each teacher at the same batch,
   each timed alone. The SLKD step (taps, SCMs, extractors, losses included) is timed in the
   same interleaved rounds; target ratio ≤ 1.15. Throughput (patches/s) of every method too.
2. **Inference: student vs teacher.** Latency at 256×256 and 1024×1024 (interleaved medians)
   against the MACs ratio; target: speed-up ≥ 80 % of the MACs ratio.
3. **Peak memory of a training step** (SLKD and scratch), each in a fresh child process
   (``VmHWM``, see :func:`benchmarks.common.run_measured_child`). Tiled inference memory is in
   ``benchmarks/restore_memory.py``.

    python -m benchmarks.speed                       # tiny pair, batch 8, patch 64
    python -m benchmarks.speed --quick               # smoke run (seconds)
    python -m benchmarks.speed --pair restormer res-sl --batch 2 --patch 96 --methods scratch slkd \
        --compile --parts step                   # the paper's pair; --compile adds compiled losses

Writes ``benchmarks/results/speed.json`` (or ``--json``). Rounds go A, B, C, A, B, C, … so that
machine noise falls on all variants alike; report ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from benchmarks.common import machine, refuse_existing, run_measured_child
from slkd.cli.common import max_threads, number
from slkd.distill import build_distiller, distill_config
from slkd.models import build_model
from slkd.models.complexity import compare_latency, count_macs

METHODS = ("scratch", "output_kd", "fitnet", "at", "fakd", "slkd")
CPU = torch.device("cpu")


def _models(pair: tuple[str, str], seed: int = 0, device: torch.device = CPU):
    torch.manual_seed(seed)
    teacher_a = build_model(pair[0]).eval().to(device)
    teacher_b = build_model(pair[0], global_residual=False).eval().to(device)
    return teacher_a, teacher_b


def _distiller(method: str, pair, teacher_a, teacher_b, device: torch.device = CPU, **options):
    torch.manual_seed(1)
    student = build_model(pair[1])
    d = build_distiller(distill_config(method, **options), student, {"a": teacher_a, "b": teacher_b})
    return d.to(device).train()


def compiled_check(pair, teacher_a, teacher_b, data, eager, device: torch.device = CPU) -> tuple[dict, "torch.nn.Module"]:
    """SLKD with ``compile_losses``: compilation seconds (first step) and how far its terms and
    gradients are from those of ``eager`` (the eager SLKD distiller, same initial weights) on
    the same batch; returns them and the compiled distiller."""
    grads, terms = {}, {}
    for flag in (False, True):
        d = _distiller("slkd", pair, teacher_a, teacher_b, device, compile_losses=True) if flag else eager
        start = time.perf_counter()
        loss, terms[flag] = d(data)
        loss.backward()
        _sync(device)
        seconds = time.perf_counter() - start
        grads[flag] = torch.cat([p.grad.flatten() for p in d.parameters() if p.grad is not None])
        d.zero_grad(set_to_none=True)
    return {"first_step_s": seconds,
            "max_abs_term_diff": max(float((terms[True][k] - terms[False][k]).abs()) for k in terms[False]),
            "grad_rel_diff": float((grads[True] - grads[False]).norm() / grads[False].norm())}, d


def _batch(batch: int, patch: int, device: torch.device = CPU) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(batch, 3, patch, patch, generator=g)
    return {"lq": (gt + 0.1 * torch.randn(gt.shape, generator=g)).to(device), "gt": gt.to(device)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device = CPU) -> float:
    """Wall-clock seconds of ``fn()``; on a GPU the queued kernels are waited for on both sides."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def step_times(pair, batch: int, patch: int, runs: int, methods=METHODS, compile_losses: bool = False,
               bf16: bool = False, device: torch.device = CPU) -> dict:
    """Median seconds per step of every method and of the floor's parts, interleaved; with
    ``compile_losses`` also SLKD with its feature terms compiled (``step_slkd_compiled``), with
    ``bf16`` every method under bf16 autocast as ``train.bf16`` runs it (``step_<m>_bf16``)."""
    teacher_a, teacher_b = _models(pair, device=device)
    data = _batch(batch, patch, device)
    fused = {"fused": True} if device.type == "cuda" else {}  # as the trainer builds AdamW
    fns = {}
    distillers = {m: _distiller(m, pair, teacher_a, teacher_b, device) for m in methods}
    compiled = None
    if compile_losses:
        compiled, distillers["slkd_compiled"] = compiled_check(pair, teacher_a, teacher_b, data,
                                                               distillers["slkd"], device)
    variants = [(m, d, False) for m, d in distillers.items()]
    if bf16:
        variants += [(f"{m}_bf16", _distiller(m, pair, teacher_a, teacher_b, device), True) for m in methods]
    for method, d, autocast in variants:
        opt = torch.optim.AdamW(d.parameters(), lr=1e-4, **fused)

        def step(d=d, opt=opt, autocast=autocast):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, _ = d(data)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        fns[f"step_{method}"] = step
    # the floor's parts, each alone: the student's own step and each teacher's forward
    torch.manual_seed(1)
    student = build_model(pair[1]).train().to(device)
    sopt = torch.optim.AdamW(student.parameters(), lr=1e-4, **fused)

    def student_step():
        loss = (student(data["lq"]) - data["gt"]).abs().mean()
        sopt.zero_grad(set_to_none=True)
        loss.backward()
        sopt.step()

    def forward(model, x):
        with torch.inference_mode():
            model(x)

    fns["floor_student_step"] = student_step
    fns["floor_teacher_a_forward"] = lambda: forward(teacher_a, data["lq"])
    fns["floor_teacher_b_forward"] = lambda: forward(teacher_b, data["gt"])
    for fn in fns.values():  # warm-up (allocator, oneDNN primitive caches, cuDNN autotuning)
        fn()
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            times[name].append(_timed(fn, device))
    med = {name: statistics.median(t) for name, t in times.items()}
    floor = med["floor_student_step"] + med["floor_teacher_a_forward"] + med["floor_teacher_b_forward"]
    out = {"median_s": med, "floor_s": floor}
    if "step_slkd" in med:
        out["slkd_over_floor"] = med["step_slkd"] / floor
    if compiled:
        out["compile_losses"] = {**compiled, "slkd_compiled_over_floor": med["step_slkd_compiled"] / floor,
                                 "speedup_over_eager_slkd": med["step_slkd"] / med["step_slkd_compiled"]}
    out["patches_per_s"] = {m: batch / med[f"step_{m}"] for m in methods}
    if bf16:
        out["bf16_speedup"] = {m: med[f"step_{m}"] / med[f"step_{m}_bf16"] for m in methods}
    return out


def inference(pair, sizes, runs: int, channels_last: bool = False, device: torch.device = CPU,
              compiled: bool | Callable[[torch.nn.Module], torch.nn.Module] = False) -> dict:
    """Teacher vs student latency (interleaved medians) against the MACs ratio; with
    ``channels_last`` both models are also timed in that memory format in the same rounds, with
    ``compiled`` also ``torch.compile``d, or compiled by ``compiled`` when it is a function of the
    model (the compilation happens in the warm-up round)."""
    teacher, student = (build_model(n).eval().to(device) for n in pair)
    models = {pair[0]: teacher, pair[1]: student}
    variants = {}
    if channels_last:
        variants["channels_last"] = lambda m: copy.deepcopy(m).to(memory_format=torch.channels_last)
    if compiled:
        variants["compiled"] = compiled if callable(compiled) else torch.compile
    for tag, make in variants.items():
        for name in pair:
            models[f"{name} ({tag})"] = make(models[name])
    rows = {}
    for size in sizes:
        shape = (1, 3, size, size)
        with torch.device("meta"):
            macs = {n: count_macs(build_model(n), shape, device="meta").total for n in pair}
        t = compare_latency(models, shape, runs=runs, warmup=1, device=device)
        speedup = t[pair[0]].median_ms / t[pair[1]].median_ms
        macs_ratio = macs[pair[0]] / macs[pair[1]]
        rows[str(size)] = {"teacher_ms": t[pair[0]].median_ms, "student_ms": t[pair[1]].median_ms,
                           "speedup": speedup, "macs_ratio": macs_ratio,
                           "speedup_over_macs_ratio": speedup / macs_ratio}
        for tag in variants:
            rows[str(size)][f"{tag}_ms"] = {n: t[f"{n} ({tag})"].median_ms for n in pair}
    return rows


def _child_peak(args: list[str]) -> float:
    """Run this module's ``--memory-child`` mode in a fresh process; its own peak RSS in MiB."""
    run = run_measured_child("benchmarks.speed", args)
    if run.exit_code != 0:
        raise RuntimeError(f"memory child {args} failed with exit code {run.exit_code}:\n{run.stderr[-2000:]}")
    return run.peak_rss_bytes / 2**20


def memory_child(method: str, pair, batch: int, patch: int) -> None:
    teacher_a, teacher_b = _models(pair)
    d = _distiller(method, pair, teacher_a, teacher_b)
    opt = torch.optim.AdamW(d.parameters(), lr=1e-4)
    data = _batch(batch, patch)
    for _ in range(2):
        loss, _ = d(data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", nargs=2, default=["restormer-tiny", "res-sl-tiny"], metavar=("TEACHER", "STUDENT"))
    p.add_argument("--batch", type=number(int, minimum=1), default=8)
    p.add_argument("--patch", type=number(int, minimum=8), default=64)
    p.add_argument("--runs", type=number(int, minimum=1), default=7)
    p.add_argument("--sizes", type=number(int, minimum=8), nargs="+", default=[256, 1024])
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=None,
                   help="intra-op threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="batch 2, patch 32, 2 runs, size 64")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="distillation methods whose step is timed (default all)")
    p.add_argument("--parts", nargs="+", choices=("step", "inference", "memory"),
                   default=["step", "inference", "memory"], help="what to measure (default all)")
    p.add_argument("--channels-last", action="store_true", help="also time inference in channels_last")
    p.add_argument("--bf16", action="store_true", help="also every method under bf16 autocast (train.bf16)")
    p.add_argument("--compile", action="store_true", help="also SLKD with distill.compile_losses (adds the "
                   "Inductor compilation, minutes on 2 cores, before the timed rounds)")
    p.add_argument("--json", default="benchmarks/results/speed.json")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.memory_child:
        refuse_existing(args.json, args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    pair = tuple(args.pair)
    if args.memory_child:
        memory_child(args.memory_child, pair, args.batch, args.patch)
        return 0
    if args.quick:
        args.batch, args.patch, args.runs, args.sizes = 2, 32, 2, [64]
    t0 = time.perf_counter()
    result = {
        "machine": machine(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads()),
        "pair": list(pair), "batch": args.batch, "patch": args.patch, "runs": args.runs,
    }
    if "step" in args.parts:
        _report_steps(result, pair, args)
    if "inference" in args.parts:
        print(f"inference latency {pair[0]} vs {pair[1]}, {torch.get_num_threads()} thread(s)")
        result["inference"] = inference(pair, args.sizes, max(3, args.runs), args.channels_last)
        for size, r in result["inference"].items():
            print(f"  {size}²: {r['teacher_ms']:.1f} vs {r['student_ms']:.1f} ms → {r['speedup']:.2f}× "
                  f"(MACs ratio {r['macs_ratio']:.2f}×, {100 * r['speedup_over_macs_ratio']:.0f}% of it)")
            if "channels_last_ms" in r:
                print("    channels_last: " + ", ".join(f"{n} {v:.1f} ms" for n, v in r["channels_last_ms"].items()))
    if "memory" in args.parts and not args.no_memory:
        common = ["--pair", *pair, "--batch", str(args.batch), "--patch", str(args.patch)]
        if args.threads:
            common += ["--threads", str(args.threads)]
        result["train_step_peak_rss_mib"] = {m: _child_peak(["--memory-child", m, *common])
                                             for m in ("scratch", "slkd")}
        print("peak RSS of a training step: " + ", ".join(
            f"{m} {v:.0f} MiB" for m, v in result["train_step_peak_rss_mib"].items()))
    result["seconds"] = time.perf_counter() - t0
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"written {args.json} ({result['seconds']:.0f} s)")
    return 0


def _report_steps(result: dict, pair, args) -> None:
    print(f"step times: {pair[0]} → {pair[1]}, batch {args.batch}, patch {args.patch}, {args.runs} rounds")
    result["step"] = step_times(pair, args.batch, args.patch, args.runs, tuple(args.methods),
                                compile_losses=args.compile and "slkd" in args.methods, bf16=args.bf16)
    s = result["step"]
    for name, v in s["median_s"].items():
        print(f"  {name:<26}{1000 * v:9.1f} ms")
    print(f"  floor (student step + both teacher forwards) {1000 * s['floor_s']:.1f} ms"
          + (f"; SLKD / floor = {s['slkd_over_floor']:.2f}" if "slkd_over_floor" in s else ""))
    if "compile_losses" in s:
        c = s["compile_losses"]
        print(f"  compiled feature terms: SLKD / floor = {c['slkd_compiled_over_floor']:.2f}, "
              f"{c['speedup_over_eager_slkd']:.2f}× the eager step; first step {c['first_step_s']:.0f} s; "
              f"|Δterm| ≤ {c['max_abs_term_diff']:.1e}, ‖Δgrad‖/‖grad‖ = {c['grad_rel_diff']:.1e}")
    print("  patches/s: " + ", ".join(f"{m} {v:.1f}" for m, v in s["patches_per_s"].items()))
    if "bf16_speedup" in s:
        print("  bf16 autocast, step speed-up: " + ", ".join(f"{m} {v:.2f}×" for m, v in s["bf16_speedup"].items()))


if __name__ == "__main__":
    raise SystemExit(main())
