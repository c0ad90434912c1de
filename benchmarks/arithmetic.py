"""At the speed of the arithmetic: the CPU's side of it, measured side by side in one run.

1. **Data.** Crops per second of the training data at patch 128 (CBSD432, Gaussian σ = 25,
   random crop + flip/rotation, batch 8, one thread): the DataLoader path (what every run used
   before) against the device-resident path (:mod:`slkd.data.device`, device = cpu), in
   interleaved rounds.
2. **Training steps** at the tiny pair (restormer-tiny → res-sl-tiny, batch 8, patch 64): scratch,
   FAKD and SLKD, each eagerly (the step every run took before) and as ``train.compile`` builds it
   (the whole step forward compiled), interleaved; the compilation's seconds with an empty cache
   (cold) and a filled one (warm), each in a fresh process.
3. **Inference**, student against teacher (the tiny pair and the paper's pair at 256², the tiny
   pair at 1024² too): every path of :data:`slkd.engine.inference.INFERENCE_PATHS` for each model,
   interleaved; the speed-up of the student's fastest path over the teacher's fastest, against
   the MACs ratio.
4. **Traffic** (nothing timed): the elements every operator of an eager inference forward writes,
   teacher against student, beside the MACs ratio. A network whose time follows the memory it
   moves, not its MACs, can only be as much faster as it writes less.

    python -m benchmarks.arithmetic --threads 2          # everything (~30 min on 2 cores)
    python -m benchmarks.arithmetic --parts data         # one part
    python -m benchmarks.arithmetic --parts traffic --json benchmarks/results/arithmetic_traffic.json
    python -m benchmarks.arithmetic --quick --json /tmp/a.json   # toy sizes (seconds)

Run it on a quiet machine (nothing else busy: two busy PyTorch processes slow each other down by
far more than any effect measured here). Writes ``benchmarks/results/arithmetic.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

from benchmarks.common import machine, refuse_existing, write_report
from slkd.cli.common import max_threads, number
from slkd.data import DegradedImageDataset, TrainSampler, build_degradation
from slkd.data.device import DeviceBatches
from slkd.distill import build_distiller, distill_config
from slkd.engine.compiled import compile_step
from slkd.engine.inference import INFERENCE_PATHS, inference_model
from slkd.models import build_model
from slkd.models.complexity import compare_latency, count_macs

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _data_root(arg: str | None) -> Path:
    return Path(arg or os.environ.get("SLKD_DATA") or ROOT.parent / "shared" / "data")


# ------------------------------------------------------------------------------------ data


def data_throughput(data: Path, patch: int, batch: int, batches: int, rounds: int) -> dict:
    """Crops per second of the DataLoader path and of the device path (cpu), ``rounds``
    interleaved rounds of ``batches`` batches each; medians."""
    ds = DegradedImageDataset(data / "BSDS500", build_degradation("gaussian_noise", sigma=25), patch_size=patch,
                              augment=True, recursive=True, exclude=data / "CBSD68", cache="memory")
    loader = iter(DataLoader(ds, batch_size=batch, sampler=TrainSampler(len(ds), batch, seed=0)))
    device = iter(DeviceBatches(ds, batch, seed=0, device=CPU))
    paths = {"dataloader": loader, "device": device}
    for it in paths.values():  # warm-up
        next(it)
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, it in paths.items():
            start = time.perf_counter()
            for _ in itertools.islice(it, batches):
                pass
            rates[name].append(batches * batch / (time.perf_counter() - start))
    med = {name: statistics.median(r) for name, r in rates.items()}
    return {"images": len(ds), "patch": patch, "batch": batch, "crops_per_s": med, "rounds": rates,
            "speedup": med["device"] / med["dataloader"], "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------ steps


def _batch(batch: int, patch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(batch, 3, patch, patch, generator=g)
    return {"lq": gt + 0.1 * torch.randn(gt.shape, generator=g), "gt": gt}


def _stepper(method: str, pair, compiled: bool, data: dict):
    torch.manual_seed(0)
    teachers = {"a": build_model(pair[0]), "b": build_model(pair[0], global_residual=False)}
    torch.manual_seed(1)
    student = build_model(pair[1])
    cfg = distill_config(method)
    d = build_distiller(cfg, student, {r: teachers[r] for r in cfg.teacher_roles()}).train()
    network = compile_step(d, CPU) if compiled else d
    opt = torch.optim.AdamW([p for p in d.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        loss, _ = network(data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def step_times(pair, batch: int, patch: int, runs: int, methods) -> dict:
    """Median ms per step, eager and compiled, every method, interleaved; the first (compiling)
    call of each compiled step is timed on its own."""
    data = _batch(batch, patch)
    fns, first = {}, {}
    for method in methods:
        for compiled in (False, True):
            name = f"{method} {'compiled' if compiled else 'eager'}"
            fns[name] = _stepper(method, pair, compiled, data)
            start = time.perf_counter()
            fns[name]()
            first[name] = time.perf_counter() - start
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - start))
    med = {name: statistics.median(t) for name, t in times.items()}
    return {"median_ms": med, "first_call_s": first,
            "speedup": {m: med[f"{m} eager"] / med[f"{m} compiled"] for m in methods},
            "patches_per_s": {name: 1000 * batch / v for name, v in med.items()}}


def compile_seconds(method: str, pair, batch: int, patch: int) -> dict:
    """The first compiled step's seconds in a fresh process with an empty cache, then in another
    with the cache the first one filled."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "warm"):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            run = subprocess.run([sys.executable, "-m", "benchmarks.arithmetic", "--compile-child", method,
                                  "--pair", *pair, "--batch", str(batch), "--patch", str(patch)],
                                 capture_output=True, text=True, env=env, cwd=ROOT)
            if run.returncode != 0:
                raise RuntimeError(f"compile child failed: {run.stderr[-2000:]}")
            out[label] = float(run.stdout.strip().splitlines()[-1])
    return out


def compile_child(method: str, pair, batch: int, patch: int) -> None:
    step = _stepper(method, pair, True, _batch(batch, patch))
    start = time.perf_counter()
    step()
    print(time.perf_counter() - start)


# ------------------------------------------------------------------------------------ inference


def inference(pair, size: int, runs: int, paths=INFERENCE_PATHS) -> dict:
    """Every path of each model, interleaved; the student's fastest against the teacher's."""
    models = {}
    for name in pair:
        for path in paths:
            torch.manual_seed(0)
            models[(name, path)] = inference_model(build_model(name).eval(), CPU, path)
    keyed = {f"{n} {p}": m for (n, p), m in models.items()}
    t = compare_latency(keyed, (1, 3, size, size), runs=runs, warmup=1)
    ms = {key: r.median_ms for key, r in t.items()}
    best = {n: min(paths, key=lambda p: ms[f"{n} {p}"]) for n in pair}
    with torch.device("meta"):
        macs = {n: count_macs(build_model(n), (1, 3, size, size), device="meta").total for n in pair}
    speedup = ms[f"{pair[0]} {best[pair[0]]}"] / ms[f"{pair[1]} {best[pair[1]]}"]
    ratio = macs[pair[0]] / macs[pair[1]]
    eager = ms[f"{pair[0]} eager"] / ms[f"{pair[1]} eager"]
    return {"size": size, "median_ms": ms, "fastest": best, "speedup": speedup, "macs_ratio": ratio,
            "share_of_macs_ratio": speedup / ratio, "eager_speedup": eager, "eager_share": eager / ratio}


class _Written(TorchDispatchMode):
    """Counts the elements written by every operator (its outputs) that runs under it."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        self.elements += sum(t.numel() for t in outs if isinstance(t, torch.Tensor))
        return out


def traffic(pair, size: int) -> dict:
    """Elements written by one eager forward of each model at ``size``², against its MACs."""
    written, macs = {}, {}
    for name in pair:
        torch.manual_seed(0)
        model = build_model(name).eval()
        with torch.inference_mode(), _Written() as counter:
            model(torch.rand(1, 3, size, size))
        written[name] = counter.elements
        macs[name] = count_macs(model, (1, 3, size, size)).total
    return {"size": size, "pair": list(pair), "written_elements": written, "macs": macs,
            "written_ratio": written[pair[0]] / written[pair[1]], "macs_ratio": macs[pair[0]] / macs[pair[1]]}


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=("data", "steps", "inference", "traffic"),
                   default=["data", "steps", "inference"])
    p.add_argument("--data", help="benchmark data folder (default $SLKD_DATA, else ../shared/data)")
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=None)
    p.add_argument("--runs", type=number(int, minimum=1), default=7)
    p.add_argument("--quick", action="store_true", help="toy sizes: checks the script, numbers mean nothing")
    p.add_argument("--json", default="benchmarks/results/arithmetic.json")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.add_argument("--compile-child", help=argparse.SUPPRESS)
    p.add_argument("--pair", nargs=2, default=["restormer-tiny", "res-sl-tiny"], help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--patch", type=int, default=64, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile_child:
        compile_child(args.compile_child, tuple(args.pair), args.batch, args.patch)
        return 0
    refuse_existing(args.json, args.overwrite)
    quick = args.quick
    if quick:  # trace the same graphs without Inductor's code generation (minutes on a CPU)
        os.environ.setdefault("SLKD_COMPILE_BACKEND", "eager")
    t0 = time.perf_counter()
    report = {"machine": machine(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads()),
              "command": "python -m benchmarks.arithmetic " + " ".join(argv if argv is not None else sys.argv[1:])}
    tiny = ("restormer-tiny", "res-sl-tiny")
    if "data" in args.parts:
        with _threads(1):
            report["data"] = data_throughput(_data_root(args.data), 32 if quick else 128, 8, 2 if quick else 40,
                                             2 if quick else args.runs)
        d = report["data"]
        print(f"data, patch {d['patch']}: DataLoader {d['crops_per_s']['dataloader']:.0f} crops/s, device path "
              f"{d['crops_per_s']['device']:.0f} crops/s → {d['speedup']:.2f}×", flush=True)
    if "steps" in args.parts:
        batch, patch = (2, 16) if quick else (8, 64)
        report["steps"] = step_times(tiny, batch, patch, 2 if quick else args.runs, ("scratch", "fakd", "slkd"))
        report["steps"].update(batch=batch, patch=patch, pair=list(tiny))
        if not quick:
            report["steps"]["compile_seconds"] = {m: compile_seconds(m, tiny, batch, patch) for m in ("fakd", "slkd")}
        for name, ms in report["steps"]["median_ms"].items():
            print(f"  step {name:<18}{ms:9.1f} ms", flush=True)
    if "inference" in args.parts:
        cases = [(tiny, 64, 2)] if quick else [(tiny, 256, args.runs), (("restormer", "res-sl"), 256, 3),
                                              (tiny, 1024, 3)]
        report["inference"] = [inference(pair, size, runs) for pair, size, runs in cases]
        for r, (pair, _, _) in zip(report["inference"], cases):
            print(f"  inference {pair[0]} → {pair[1]} at {r['size']}²: {r['speedup']:.2f}× "
                  f"({100 * r['share_of_macs_ratio']:.0f} % of the MACs ratio {r['macs_ratio']:.2f}×; "
                  f"fastest paths {r['fastest']}; eager {100 * r['eager_share']:.0f} %)", flush=True)
    if "traffic" in args.parts:
        cases = [(tiny, 32)] if quick else [(tiny, 256), (("restormer", "res-sl"), 256), (tiny, 1024)]
        report["traffic"] = [traffic(pair, size) for pair, size in cases]
        for r in report["traffic"]:
            print(f"  traffic {r['pair'][0]} → {r['pair'][1]} at {r['size']}²: writes {r['written_ratio']:.2f}× "
                  f"less, MACs ratio {r['macs_ratio']:.2f}×", flush=True)
    report["seconds"] = time.perf_counter() - t0
    write_report(args.json, report)
    return 0


class _threads:
    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


if __name__ == "__main__":
    raise SystemExit(main())
