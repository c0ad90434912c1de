"""Peak memory (and wall time) of ``slkd restore`` on a large image, tiled and untiled.

Each case runs the real command line in a fresh child process and reads the child's peak
resident set size (``VmHWM``, :func:`benchmarks.common.run_measured_child`), so the number includes Python,
torch, the decoded image, the output canvases and the model's activations — what a user's
machine must hold.

    python -m benchmarks.restore_memory                   # default cases, 4000×3000
    python -m benchmarks.restore_memory --quick           # small image, for a smoke run
    python -m benchmarks.restore_memory --cases res-sl-tiny:512 res-sl-tiny:none@750x1000

Writes ``benchmarks/results/restore_memory.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, refuse_existing, run_slkd_child, write_report
from slkd.cli.common import max_threads, number

from slkd.data.image_io import write_image
from slkd.models import build_model, save_weights

#: MODEL:TILE[@HxW]; untiled runs use smaller images (untiled at 4000×3000 would need tens of GiB)
DEFAULT_CASES = (
    "res-sl-tiny:512", "res-sl-tiny:256", "res-sl:256",
    "res-sl-tiny:none@750x1000", "res-sl-tiny:none@1500x2000",
    "res-sl-tiny:256@750x1000", "res-sl-tiny:256@1500x2000",
)


def make_image(path: Path, height: int, width: int) -> None:
    """A textured RGB test image (smooth noise at several scales), saved as 8-bit PNG."""
    rng = np.random.default_rng(0)
    img = np.zeros((3, height, width), np.float32)
    for scale in (1, 8, 64):
        small = rng.random((3, -(-height // scale), -(-width // scale)), dtype=np.float32)
        img += np.kron(small, np.ones((1, scale, scale), np.float32))[:, :height, :width]
    write_image(path, torch.from_numpy(img / 3.0))


def run_case(model: str, tile: str, image: Path, work: Path, threads: int | None) -> dict:
    weights = work / f"{model}.pth"
    if not weights.exists():
        torch.manual_seed(0)
        save_weights(build_model(model), weights)
    out = work / f"out-{model}-{tile}.png"
    args = ["restore", "--model", model, "--weights", str(weights), "--device", "cpu", "--overwrite",
            str(image), str(out)]
    if tile != "none":
        args += ["--tile", tile, "--overlap", "32"]
    run = run_slkd_child(args, threads)
    code = run.exit_code
    return {
        "model": model,
        "tile": None if tile == "none" else int(tile),
        "overlap": None if tile == "none" else 32,
        "exit_code": code,
        "peak_rss_mib": run.peak_rss_bytes / 2**20,
        "seconds": run.seconds,
        "error": run.stderr.strip().splitlines()[-1] if code else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", nargs=2, type=number(int, minimum=1), default=(3000, 4000), metavar=("H", "W"))
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES),
                   help="MODEL:TILE[@HxW] (TILE 'none' = untiled; default size --size)")
    p.add_argument("--quick", action="store_true", help="600×800 image, tiny model only")
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=None)
    p.add_argument("--out", default="benchmarks/results/restore_memory.json")
    p.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    args = p.parse_args(argv)
    refuse_existing(args.out, args.overwrite, "--out")
    if args.quick:
        args.size, args.cases = (600, 800), ["res-sl-tiny:256", "res-sl-tiny:none"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in args.cases:
            spec, _, size = case.partition("@")
            model, tile = spec.split(":")
            h, w = (int(v) for v in size.split("x")) if size else args.size
            image = work / f"image-{h}x{w}.png"
            if not image.exists():
                make_image(image, h, w)
            row = {"image": f"{w}×{h}", **run_case(model, tile, image, work, args.threads)}
            results.append(row)
            print(f"{model:<14} {w}×{h} tile {str(row['tile']):>5}: peak RSS {row['peak_rss_mib']:8.0f} MiB, "
                  f"{row['seconds']:7.1f} s" + (f"  FAILED: {row['error']}" if row["exit_code"] else ""),
                  flush=True)
    report = {
        "benchmark": "restore_memory",
        "image": "textured RGB 8-bit PNG (see make_image)",
        "command": "python -m benchmarks.restore_memory " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "results": results,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
