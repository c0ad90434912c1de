"""Throughput of the training data loader: CBSD432 (BSDS500 minus CBSD68), Gaussian σ = 25.

For every combination of patch size, DataLoader worker count and cache mode, it builds a
:class:`~slkd.data.DegradedImageDataset` with random crops, flips and rotations, iterates a
DataLoader driven by :class:`~slkd.data.TrainSampler`, and reports samples per second over
``--batches`` batches after the first (the first batch, which includes starting the worker
processes, is timed separately). The time to build the dataset (decoding every image into the
cache, or only reading the headers for ``cache="none"``) is reported too.

With ``workers 0`` the samples are made in the main process with torch's intra-op thread pool;
on a small or busy machine that pool's synchronisation can cost more than the work itself
(elementwise ops on a 3×128×128 patch), so those cases are timed with torch's default thread
count and with one thread (``--main-threads``). Worker processes always use one thread.

    python -m benchmarks.loader_speed                       # data from $SLKD_DATA or ../shared/data
    python -m benchmarks.loader_speed --data /path/to/data --batches 100
    python -m benchmarks.loader_speed --quick               # fewer batches, for a smoke run

Writes ``benchmarks/results/loader_speed.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks.common import refuse_existing
from slkd.cli.common import max_threads, number
from slkd.data import DegradedImageDataset, TrainSampler, build_degradation

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "loader_speed.json"


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("SLKD_DATA"):
        return Path(os.environ["SLKD_DATA"])
    return ROOT.parent / "shared" / "data"


def build(data: Path, patch: int, cache: str) -> tuple[DegradedImageDataset, float]:
    start = time.perf_counter()
    ds = DegradedImageDataset(
        data / "BSDS500", build_degradation("gaussian_noise", sigma=25), patch_size=patch,
        augment=True, recursive=True, exclude=data / "CBSD68", cache=cache,
    )
    return ds, time.perf_counter() - start


def measure(ds: DegradedImageDataset, batch: int, workers: int, batches: int) -> dict:
    sampler = TrainSampler(len(ds), batch_size=batch, seed=0)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers)
    start = time.perf_counter()
    it = iter(loader)
    first = next(it)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for b in itertools.islice(it, batches):
        pass
    seconds = time.perf_counter() - start
    del it
    assert first["lq"].shape[0] == batch and b["gt"].shape[-1] == ds.patch_size
    return {"first_batch_s": first_s, "seconds": seconds, "samples": batches * batch,
            "samples_per_s": batches * batch / seconds, "ms_per_batch": 1000 * seconds / batches}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="benchmark data folder (default $SLKD_DATA, else ../shared/data)")
    p.add_argument("--batches", type=number(int, minimum=1), default=60, help="timed batches per case")
    p.add_argument("--batch-size", type=number(int, minimum=1), default=8)
    p.add_argument("--patches", type=number(int, minimum=1), nargs="+", default=[64, 128])
    p.add_argument("--workers", type=number(int, minimum=0, maximum=64), nargs="+", default=[0, 2])
    p.add_argument("--caches", nargs="+", default=["memory", "none"], choices=["memory", "none"])
    p.add_argument("--main-threads", type=number(int, minimum=1, maximum=max_threads()), nargs="+", default=None,
                   help="torch threads of the main process for the workers=0 cases "
                        "(default: torch's default, and 1)")
    p.add_argument("--quick", action="store_true", help="10 batches per case")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    args = p.parse_args(argv)
    refuse_existing(args.out, args.overwrite, "--out")
    data = data_dir(args.data)
    if not (data / "BSDS500").is_dir() or not (data / "CBSD68").is_dir():
        print(f"BSDS500 and CBSD68 not found in {data} (use --data or SLKD_DATA)", file=sys.stderr)
        return 2
    batches = 10 if args.quick else args.batches
    default_threads = torch.get_num_threads()
    main_threads = args.main_threads or sorted({default_threads, 1}, reverse=True)

    builds, rows = [], []
    for cache in args.caches:
        for patch in args.patches:
            ds, build_s = build(data, patch, cache)
            builds.append({"cache": cache, "patch": patch, "images": len(ds), "build_s": build_s,
                           "cache_bytes": ds.image_cache.nbytes,
                           "estimated_bytes": ds.image_cache.estimated_bytes})
            for workers in args.workers:
                for threads in (main_threads if workers == 0 else [default_threads]):
                    torch.set_num_threads(threads)
                    row = {"patch": patch, "batch": args.batch_size, "workers": workers,
                           "cache": cache, "main_threads": threads}
                    row.update(measure(ds, args.batch_size, workers, batches))
                    torch.set_num_threads(default_threads)
                    rows.append(row)
                    print(f"patch {patch:4d}  workers {workers}  threads {threads}  cache {cache:6s}  "
                          f"{row['samples_per_s']:8.1f} samples/s  ({row['ms_per_batch']:.1f} ms/batch, "
                          f"first batch {row['first_batch_s']:.2f} s)", flush=True)

    print("\nDataset construction (CBSD432, {} images):".format(builds[0]["images"]))
    for b in builds:
        print(f"  cache {b['cache']:6s} patch {b['patch']:4d}: {b['build_s']:.2f} s, "
              f"held {b['cache_bytes'] / 2**20:.1f} MiB (estimate {b['estimated_bytes'] / 2**20:.1f} MiB)")
    print("\n| patch | workers | main threads | cache | samples/s | ms/batch |\n|---|---|---|---|---|---|")
    for r in rows:
        threads = r["main_threads"] if r["workers"] == 0 else "-"
        print(f"| {r['patch']} | {r['workers']} | {threads} | {r['cache']} | "
              f"{r['samples_per_s']:.1f} | {r['ms_per_batch']:.1f} |")

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result = {
        "benchmark": "loader_speed",
        "dataset": "CBSD432 (BSDS500 recursive minus CBSD68), gaussian_noise sigma=25, augment",
        "data": str(data),
        "batches_timed": batches,
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "torch_threads_default": default_threads,
            "platform": platform.platform(), "load_average_at_end": load,
        },
        "builds": builds,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
