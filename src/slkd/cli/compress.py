"""``slkd compress``: distil your own restoration network on your own data, in one command.

Give the trained network (a preset and its weights; the official Restormer, Uformer, DRSformer
and NAFNet checkpoints load as they are), the task and two folders:

    slkd compress --teacher restormer:deraining.pth --task derain \\
        --train Datasets/train/Rain13K --val Datasets/test/Rain100L

It picks the student preset of the teacher's family (>= 80 % fewer parameters and MACs;
--student to choose), starts it from a cut of your teacher's weights where the two networks
allow it (--init), distils it with the library's default method, FAKD with its teacher-output
term, the best the study measured (--method slkd for SLKD, which also trains Teacher B, clean →
clean, from your teacher; --method for any other), optionally trains the same student from scratch
(--compare-scratch), evaluates everything on --val with the task's metric convention (derain:
Y channel, BT.601; the rest RGB), profiles teacher and student, and writes into --out the
student's weights (student.safetensors), student.onnx (with the export extra installed),
summary.json and report.md (table, image grid, training curves). --deploy int8 also writes
student.int8.onnx (statically quantised by ONNX Runtime, calibrated on crops of --train, refused
when it loses too much on held-out crops; see slkd export --int8) and adds the float and INT8
ONNX files' PSNR and CPU latency to the table.

Data: paired folders in any layout `slkd eval` reads (input/+target/, lq/+gt/, hazy/+clear/,
hazy/+gt/, blurred/+gt/, noisy/+mean/, input_crops/+target_crops/), names matched by file
name; --val may also be a folder of such sets (Restormer's Datasets/test/), each scored
separately. For --task denoise, folders of clean images work too: Gaussian noise of --sigma is
added (seeded, as `slkd eval` adds it, for validation).

Every problem with the inputs is reported in one line before any training. Rerunning the same
command after a stop continues it (finished stages are skipped, an interrupted one resumes); an
--out folder holding another run's settings is refused, and so is one that holds anything but
no job record (compress.json, written first) or that another slkd process is writing. --quick runs a few-minute version to
check the whole pipeline first. Runs under torchrun unchanged (stages train on every rank;
evaluation and the report on rank 0).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from slkd.cli.common import device_option, note, number, resolve_device
from slkd.distill import DEFAULT_METHOD, registered_methods
from slkd.data.tasks import benchmark_tasks, task_spec
from slkd.engine.compress import DEPLOYS, INITS, PLANS, Job, run_job
from slkd.engine.compress.report import DEPLOYED, console_table
from slkd.errors import SlkdError
from slkd.models import default_student


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("compress", help="distil a trained network into a student on your data "
                              "(Teacher B, distillation, evaluation, report)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, metavar="MODEL:WEIGHTS",
                   help="the trained network: a preset (slkd models) and its weights file or run "
                   "folder, e.g. restormer:deraining.pth; MODEL alone trains Teacher A on --train first")
    p.add_argument("--task", required=True, choices=benchmark_tasks(),
                   help="sets the metric convention (derain: Y channel; others RGB)")
    p.add_argument("--train", required=True, metavar="DIR", help="training pairs (or clean images "
                   "for denoise)")
    p.add_argument("--val", required=True, metavar="DIR", help="validation pairs, or a folder of "
                   "sets (or clean images for denoise)")
    p.add_argument("--student", metavar="NAME", help="student preset (default: the one sized "
                   "against the teacher, see slkd models)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=registered_methods(),
                   help=f"distillation method (default {DEFAULT_METHOD}, the study's best; slkd for SLKD)")
    p.add_argument("--init", default="auto", choices=INITS,
                   help="the student's initial weights (and its scratch twin's): teacher = a cut of "
                   "Teacher A's blocks and channels, random, or auto (default: teacher where the "
                   "networks allow the cut, i.e. Restormer and its Res-SL students)")
    p.add_argument("--out", metavar="DIR", help="output folder: new, empty or this command's earlier "
                   "one (default runs/compress-TASK-STUDENT)")
    p.add_argument("--iters", type=number(int, minimum=1), metavar="N",
                   help=f"student iterations (default {PLANS['default'].student.iters}, --quick "
                   f"{PLANS['quick'].student.iters}); Teacher B's scale alike (default "
                   f"{PLANS['default'].teacher_b.iters}, --quick {PLANS['quick'].teacher_b.iters})")
    p.add_argument("--quick", action="store_true", help="a few-minute run (fewer iterations, patch "
                   f"{PLANS['quick'].patch}) to see the pipeline work before the real one")
    p.add_argument("--compare-scratch", action="store_true",
                   help="also train the student from scratch (same data, iterations, seed) and compare")
    p.add_argument("--sigma", type=number(float, minimum=0, maximum=255), metavar="S",
                   help="Gaussian noise (0-255) added to clean images, denoise only (default 25)")
    p.add_argument("--patch", type=number(int, minimum=8), metavar="P",
                   help="training crop size, a multiple of 8 (default 128, --quick 32)")
    p.add_argument("--batch", type=number(int, minimum=1), metavar="B", help="batch size per "
                   "process (default 8)")
    p.add_argument("--eval-images", type=number(int, minimum=1), metavar="N",
                   help=f"score the first N images of each validation set (default all; "
                   f"{QUICK_EVAL_IMAGES} with --quick)")
    p.add_argument("--deploy", choices=DEPLOYS, default=None,
                   help="also write student.int8.onnx beside student.onnx and score and time both "
                   "ONNX files in the report (needs the export extra)")
    p.add_argument("--seed", type=number(int, minimum=0, maximum=2**63 - 1), default=0)
    p.add_argument("--device", type=device_option(indexed=False), default="auto",
                   help="auto (default), cpu or cuda")
    p.set_defaults(func=run)


#: --quick scores this many images per validation set unless --eval-images says otherwise (the
#: evaluation of four models on a full test set took longer than all the quick training)
QUICK_EVAL_IMAGES = 10


def parse_teacher(spec: str) -> tuple[str, str | None]:
    """``MODEL:WEIGHTS`` → (model, weights); ``MODEL`` → (model, None). Split at the first
    colon: preset names have none, paths may."""
    model, sep, weights = spec.partition(":")
    if not model:
        raise SlkdError(f"--teacher {spec!r}: expected MODEL:WEIGHTS, e.g. restormer:deraining.pth")
    if sep and not weights:
        raise SlkdError(f"--teacher {spec!r}: no weights after the colon (MODEL:WEIGHTS, or MODEL "
                        "alone to train Teacher A here)")
    return model, (weights or None)


def _command(args) -> str:
    """The command as the report shows it, rebuilt from the parsed options."""
    parts = ["slkd compress", f"--teacher {args.teacher}", f"--task {args.task}",
             f"--train {args.train}", f"--val {args.val}"]
    for option in ("student", "out", "iters", "sigma", "patch", "batch", "eval_images"):
        value = getattr(args, option)
        if value is not None:
            parts.append(f"--{option.replace('_', '-')} {value}")
    if args.method != DEFAULT_METHOD:
        parts.append(f"--method {args.method}")
    if args.init != "auto":
        parts.append(f"--init {args.init}")
    if args.seed:
        parts.append(f"--seed {args.seed}")
    if args.deploy:
        parts.append(f"--deploy {args.deploy}")
    parts += [flag for flag, on in (("--quick", args.quick), ("--compare-scratch", args.compare_scratch)) if on]
    return " ".join(parts)


def job_from_args(args) -> Job:
    teacher, weights = parse_teacher(args.teacher)
    plan = PLANS["quick" if args.quick else "default"]
    if args.iters is not None:
        plan = plan.with_student_iters(args.iters)
    if args.patch is not None:
        if args.patch % 8:
            raise SlkdError(f"--patch must be a multiple of 8, got {args.patch}")
        plan = replace(plan, patch=args.patch)
    if args.batch is not None:
        plan = replace(plan, batch=args.batch)
    out = args.out
    if out is None:
        named = args.student
        if named is None:
            try:
                named = default_student(teacher)
            except SlkdError:  # prepare() names the problem
                named = "student"
        out = f"runs/compress-{args.task}-{named}"
    return Job(teacher=teacher, weights=weights, task=args.task, train=args.train, val=args.val,
               out=out, student=args.student, method=args.method, init=args.init, plan=plan,
               compare_scratch=args.compare_scratch, sigma=args.sigma, seed=args.seed,
               eval_images=args.eval_images or (QUICK_EVAL_IMAGES if args.quick else None),
               command=_command(args), deploy=args.deploy)


def run(args) -> int:
    resolve_device(args.device)  # a CUDA request on a machine without one fails now
    job = job_from_args(args)
    summary = run_job(job, device=args.device, log=note)
    if summary is None:  # another rank of torchrun
        return 0
    label = {"input": task_spec(job.task).input_label, "teacher_a": "Teacher A", "teacher_b": "Teacher B ¹",
             f"student_{job.method}": f"student ({job.method})", "student_scratch": "student (scratch)",
             **{name: words for name, (words, _) in DEPLOYED.items()}}
    for set_name, result in summary["evaluation"]["sets"].items():
        print(f"{set_name} ({result['count']} images, {summary['settings']['convention']})")
        print("\n".join(console_table(summary["models"], result["means"], label)))
    if "teacher_b" in summary["models"]:
        print("¹ Teacher B reconstructs the clean image (its training task), not the degraded one")
    print(summary["comparison"]["sentence"])
    print(summary["comparison"]["latency_sentence"])
    if "deploy_sentence" in summary["comparison"]:
        print(summary["comparison"]["deploy_sentence"])
    files = summary["files"]
    out = job.out
    print(f"student: {files['student_weights']}" + (f"  onnx: {files['onnx']}" if files["onnx"] else "")
          + (f"  int8: {files['int8']}" if files.get("int8") else "")
          + f"  report: {out}/report.md  summary: {out}/summary.json  ({summary['seconds'] / 60:.1f} min)")
    return 0
