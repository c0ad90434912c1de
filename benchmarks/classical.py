"""The distilled student against the classical method a user would otherwise pick: CBM3D (the
``bm3d`` package, ``pip install bm3d``) on colour Gaussian denoising, PSNR and seconds per image
side by side in one run, on the same noisy images and with the same scoring as ``slkd eval``
(seeded test noise, uint8-quantised RGB PSNR/SSIM):

    python -m benchmarks.classical --data ../shared/data/CBSD68 --sigma 25 \\
        --student res-sl-tiny benchmarks/weights/denoise25/students/slkd_s0.safetensors

Both run on one thread by default (``--threads``), image by image, alternating; the JSON holds
every image's scores and seconds (``benchmarks/results/classical_<set>.json``, a committed
result: an existing file is replaced only with ``--overwrite``, checked before anything runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import machine, refuse_existing, write_report
from slkd.cli.common import max_threads, number
from slkd.data.folders import EvalSamples, scan_eval_folder
from slkd.engine.evaluation import Convention, evaluate
from slkd.errors import SlkdError
from slkd.models import load_pretrained

ROOT = Path(__file__).resolve().parents[1]


class CBM3D(nn.Module):
    """CBM3D as a module of N×3×H×W tensors in [0, 1], for the shared evaluation loop; it has
    no parameters and no gradient, and knows the noise level it was told."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        import bm3d  # the optional dependency, imported where it is needed

        self._bm3d, self.sigma = bm3d, sigma / 255.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = [torch.from_numpy(self._bm3d.bm3d_rgb(img.permute(1, 2, 0).double().numpy(), self.sigma))
               .permute(2, 0, 1).float() for img in x.cpu()]
        return torch.stack(out).clamp(0, 1)


class Timed(nn.Module):
    """``inner`` with the wall-clock seconds of each call recorded (one call per image)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.seconds = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        y = self.inner(x)
        self.seconds.append(time.perf_counter() - t0)
        return y


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="clean-only colour test folder (e.g. CBSD68)")
    p.add_argument("--sigma", type=number(float, above=0, maximum=255), default=25.0,
                   help="noise level on the 0-255 scale (default 25)")
    p.add_argument("--noise-seed", type=number(int, minimum=0, maximum=2**32 - 1), default=0)
    p.add_argument("--student", nargs=2, metavar=("PRESET", "WEIGHTS"), required=True)
    p.add_argument("--limit", type=number(int, minimum=1), help="first N images only")
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=1)
    p.add_argument("--json", type=Path, help="default benchmarks/results/classical_<set>.json")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    args = p.parse_args(argv)
    out = refuse_existing(args.json or ROOT / "benchmarks" / "results" / f"classical_{args.data.name}.json",
                          args.overwrite)
    try:
        import bm3d  # noqa: F401
    except ImportError:
        print("error: CBM3D needs the bm3d package: pip install bm3d", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        folder = scan_eval_folder(args.data)
        if folder.layout != "clean-only":
            raise SlkdError(f"{args.data} is {folder.layout}; CBM3D is compared on clean images with synthetic noise")
        for warning in folder.warnings:  # what the folder holds that is not scored, by name
            print(f"warning: {warning}", file=sys.stderr)
        items = folder.items[: args.limit] if args.limit else folder.items
        samples = EvalSamples(items, "denoise", sigma=args.sigma, seed=args.noise_seed)
        student = Timed(load_pretrained(args.student[0], args.student[1]))
    except SlkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cbm3d = Timed(CBM3D(args.sigma))
    convention = Convention.for_task("denoise")
    rows = {"student": [], "cbm3d": []}
    for i in range(len(samples)):  # alternate image by image, so that both see the same machine load
        try:
            one = [samples[i]]
        except SlkdError as exc:  # an unreadable image: named, nothing written
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for name, model in (("student", student), ("cbm3d", cbm3d)):
            r = evaluate(model, one, convention=convention, device=torch.device("cpu"))
            rows[name].append({**r.rows[0], "seconds": model.seconds[-1]})
        print(f"{one[0]['name']}: student {rows['student'][-1]['psnr']:.2f} dB "
              f"{rows['student'][-1]['seconds']:.2f} s, CBM3D {rows['cbm3d'][-1]['psnr']:.2f} dB "
              f"{rows['cbm3d'][-1]['seconds']:.2f} s", flush=True)
    summary = {name: {k: sum(r[k] for r in rs) / len(rs) for k in ("psnr", "ssim", "seconds")}
               for name, rs in rows.items()}
    summary["cbm3d_seconds_over_student"] = summary["cbm3d"]["seconds"] / summary["student"]["seconds"]
    report = {"command": "python -m benchmarks.classical " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine(threads=args.threads), "data": str(args.data), "sigma": args.sigma,
              "noise_seed": args.noise_seed, "student": args.student, "count": len(samples),
              "summary": summary, "images": rows}
    write_report(out, report)
    print(f"student {summary['student']['psnr']:.2f} dB, {summary['student']['seconds']:.2f} s/image; CBM3D "
          f"{summary['cbm3d']['psnr']:.2f} dB, {summary['cbm3d']['seconds']:.2f} s/image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
