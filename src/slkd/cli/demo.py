"""``slkd demo``: the whole distillation pipeline on one machine, offline, in minutes on a CPU
(BENCHMARKS.md has the measured times).

Colour Gaussian denoising (σ = 25) on small images that ship with the package (public domain
/ CC0, see ``slkd/assets/LICENSE.md``), or on your own folder of clean images (``--data``):

1. train Teacher A (restormer-tiny, noisy → clean);
2. for SLKD (``--method slkd``) only: train Teacher B (restormer-tiny without the global
   residual, clean → clean, from A);
3. cut the student (res-sl-tiny) out of Teacher A's weights and distil it with the library's
   default method (``--method`` for another: slkd, fitnet, ...; ``--init random`` for a
   randomly initialised student);
4. train the same student from scratch (same initialisation, data, iterations, seed; L1 only);
5. evaluate all of them on held-out images (seeded test noise, RGB PSNR/SSIM on uint8) and
   profile them (parameters, MACs and CPU latency at 256×256, timed side by side);
6. write ``summary.json``, ``report.md``, an image grid and the training curves.

It is a job of the compression pipeline behind ``slkd compress`` (:mod:`slkd.engine.compress`)
with Teacher A trained here: every stage is an ordinary run of the training engine, from a
config written to ``<out>/configs/`` (rerun one with ``slkd train/distill --config``).
Rerunning the demo with the same settings reuses finished stages and resumes an interrupted
one; nothing is thrown away.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from slkd.cli.common import device_option, note, number, resolve_device
from slkd.data.image_io import IMAGE_EXTENSIONS
from slkd.distill import DEFAULT_METHOD, registered_methods
from slkd.engine.compress import INITS, Job, StagePlan, check_out, claim_out, run_job
from slkd.engine.compress import Plan as PipelinePlan
from slkd.engine.compress.report import console_table
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes

TRAIN_IMAGES = ("astronaut", "coffee", "rocket")
HELD_OUT_IMAGES = ("chelsea", "ihc")
SIGMA = 25.0
TEACHER, STUDENT = "restormer-tiny", "res-sl-tiny"
#: the table's names of the models; the distilled student is "student (<method>)"
LABELS = {"input": "noisy input", "teacher_a": "Teacher A", "teacher_b": "Teacher B",
          "student_scratch": "student (scratch)"}


@dataclass(frozen=True)
class Plan:
    """Iterations and sizes of one demo flavour (chosen so that the default runs in minutes on a
    small CPU and ``--quick`` in a fraction of that; BENCHMARKS.md §9 has the measured times)."""

    teacher_a: int
    teacher_b: int
    student: int
    patch: int
    batch: int
    latency_runs: int

    def pipeline(self, scale: float) -> PipelinePlan:
        """The compression pipeline's plan: AdamW, the demo's learning rates, no validation
        while training (the held-out images are scored once, at the end)."""

        def iters(n: int) -> int:
            return max(1, round(n * scale))

        return PipelinePlan(student=StagePlan(iters(self.student), 2e-3),
                            teacher_b=StagePlan(iters(self.teacher_b), 5e-4),
                            teacher_a=StagePlan(iters(self.teacher_a), 2e-3), patch=self.patch,
                            batch=self.batch, optimizer="adamw", weight_decay=1e-4, val_images=None,
                            latency_runs=self.latency_runs)


PLANS = {
    "default": Plan(teacher_a=600, teacher_b=200, student=400, patch=48, batch=8, latency_runs=15),
    "quick": Plan(teacher_a=120, teacher_b=40, student=100, patch=32, batch=8, latency_runs=7),
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train a teacher, distil a student, compare with scratch",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder: new, empty or an earlier "
                   "demo's, outside --data (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a shorter version with fewer iterations")
    p.add_argument("--data", metavar="DIR", help="a folder of clean images to use instead of the "
                   "bundled ones; with train/ and test/ (or val/) sub-folders those are used, "
                   "otherwise every 10th image is held out")
    p.add_argument("--held-out", metavar="DIR", help="clean held-out images (default: see --data)")
    p.add_argument("--eval-images", type=number(int, minimum=1), default=None, metavar="N",
                   help="evaluate on at most N held-out images (default: all bundled, 10 with --data)")
    p.add_argument("--iters-scale", type=number(float, above=0, maximum=1000), default=1.0, metavar="F",
                   help="multiply every stage's iterations by F (e.g. 4 for a longer, better run)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=registered_methods(),
                   help=f"distillation method (default {DEFAULT_METHOD}, the study's best; slkd for SLKD)")
    p.add_argument("--init", default="teacher", choices=INITS[1:],
                   help="the students' initial weights: a cut of Teacher A's (default) or random")
    p.add_argument("--seed", type=number(int, minimum=0, maximum=2**63 - 1), default=0)
    p.add_argument("--device", type=device_option(indexed=False), default="auto",
                   help="auto (default), cpu or cuda")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------ data
def _image_files(folder: Path, recursive: bool) -> list[Path]:
    # a dangling link is listed, so that it is named instead of silently missing
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if (p.is_file() or (p.is_symlink() and not p.exists()))
                  and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _bundled(out: Path) -> tuple[Path, list[str] | None, list[Path]]:
    """Copy the bundled images into ``out/data`` (train/ and held_out/)."""
    assets = resources.files("slkd.assets")
    for folder, names in (("train", TRAIN_IMAGES), ("held_out", HELD_OUT_IMAGES)):
        for name in names:
            dest = out / "data" / folder / f"{name}.png"
            data = (assets / f"{name}.png").read_bytes()
            if not dest.is_file() or dest.read_bytes() != data:
                atomic_write_bytes(dest, data)
    return out / "data" / "train", None, _image_files(out / "data" / "held_out", False)


def _user_data(data: Path, held_out: Path | None) -> tuple[Path, list[str] | None, list[Path]]:
    """(training folder, stems to exclude from it, held-out files) for ``--data``."""
    if not data.is_dir():
        raise SlkdError(f"--data {data}: not a folder")
    if held_out is not None:
        if not held_out.is_dir():
            raise SlkdError(f"--held-out {held_out}: not a folder")
        return data, None, _image_files(held_out, True)
    split = next((data / s for s in ("test", "val") if (data / s).is_dir()), None)
    if (data / "train").is_dir() and split is not None:
        return data / "train", None, _image_files(split, True)
    files = _image_files(data, True)
    if len(files) < 2:
        raise SlkdError(f"--data {data}: found {len(files)} image(s); the demo needs at least two "
                        "(one to train on, one held out), or pass --held-out DIR")
    held = files[::10] if len(files) >= 10 else files[-1:]
    stems = [p.stem for p in held]
    if len(set(p.stem for p in files)) != len(files):
        raise SlkdError(f"--data {data}: image names repeat across sub-folders; pass --held-out DIR")
    return data, stems, held


# ------------------------------------------------------------------------------ main
def run(args) -> int:
    out = Path(args.out)
    if args.iters_scale <= 0:
        raise SlkdError(f"--iters-scale must be > 0, got {args.iters_scale}")
    if args.eval_images is not None and args.eval_images < 1:
        raise SlkdError(f"--eval-images must be >= 1, got {args.eval_images}")
    if args.held_out and not args.data:
        raise SlkdError("--held-out needs --data")
    resolve_device(args.device)
    # the demo is a job of the compression pipeline, and its folder follows the pipeline's rule:
    # new, empty or a job's (checked before anything is written, the bundled images included)
    reads = [Path(p) for p in (args.data, args.held_out) if p]
    check_out(out, reads, extra_entries={"data"})
    user = _user_data(Path(args.data), Path(args.held_out) if args.held_out else None) if args.data else None
    # from here the folder is this job's: locked (one writer), its job record written first
    lock = claim_out(out, reads, {"data"}, device=args.device)
    try:
        return _run(args, out, user)
    finally:
        if lock is not None:
            lock.release()


def _run(args, out: Path, user: tuple[Path, list[str] | None, list[Path]] | None) -> int:
    """The demo in its claimed folder (``user``: what :func:`_user_data` found in ``--data``)."""
    if user is not None:
        train_root, exclude, held_out = user
        held_out = held_out[: args.eval_images or 10]
    else:
        train_root, exclude, held_out = _bundled(out)
        held_out = held_out[: args.eval_images or len(held_out)]
    if not held_out:
        raise SlkdError("no held-out images found")
    argv = ["slkd", "demo"] + (["--quick"] if args.quick else []) + (
        [f"--data {args.data}"] if args.data else []) + (
        [f"--iters-scale {args.iters_scale:g}"] if args.iters_scale != 1 else []) + (
        [f"--method {args.method}"] if args.method != DEFAULT_METHOD else []) + (
        [f"--init {args.init}"] if args.init != "teacher" else [])
    job = Job(teacher=TEACHER, weights=None, task="denoise", train=train_root, val=held_out, out=out,
              student=STUDENT, method=args.method, init=args.init,
              plan=PLANS["quick" if args.quick else "default"].pipeline(args.iters_scale),
              compare_scratch=True, sigma=SIGMA, seed=args.seed, train_exclude=exclude,
              save_images=None, command=" ".join(argv), extra_entries=frozenset({"data"}))
    summary = run_job(job, device=args.device, log=note)
    if summary is None:  # another rank of torchrun
        return 0
    summary["settings"]["held_out"] = [p.name for p in held_out]
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    models = summary["models"]
    labels = {name: LABELS.get(name, f"student ({args.method})") for name in models}
    print("\n".join(console_table(models, models, labels, width=20)))
    print(summary["comparison"]["sentence"])
    print(summary["comparison"]["latency_sentence"])
    print(f"report: {out / 'report.md'}  summary: {out / 'summary.json'}  ({summary['seconds'] / 60:.1f} min)")
    return 0
