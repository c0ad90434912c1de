"""The study's command line (``python -m benchmarks.study``):
plan the chosen studies, run their jobs, summarise, and write the JSON files, plots and tables."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import machine
from benchmarks.study import __doc__ as study_doc
from benchmarks.study.compression import compression
from benchmarks.study.configs import STUDY_DATA, TASKS
from benchmarks.study.plan import ReproductionStudy, build_plan
from benchmarks.study.report import plot_denoise, print_summary
from benchmarks.study.scheduler import json_default, run_jobs, run_study
from slkd.cli.common import max_threads, number
from benchmarks.study.settings import DENOISE_METHODS, FAMILIES, FULL, QUICK, ROOT, STUDIES, StudyError
from benchmarks.study.summaries import (
    summarise_denoise,
    summarise_families,
    summarise_precision,
    summarise_realworld,
    summarise_task,
)


def data_root(arg: str | None, studies=()) -> Path:
    """The benchmark folder, checked for the folders the chosen studies read."""
    root = Path(arg or os.environ.get("SLKD_DATA") or ROOT.parent / "shared" / "data")
    if not root.is_dir():
        raise StudyError(f"data folder not found: {root} (pass --data DIR or set SLKD_DATA)")
    folders = dict.fromkeys(("BSDS500", "CBSD68", *(d for s in studies for d in STUDY_DATA.get(s, ()))))
    for folder in folders:
        if not (root / folder).is_dir():
            raise StudyError(f"{root} has no {folder}/ folder; point --data at the shared benchmark folder")
    return root.resolve()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study", description=study_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="+", choices=STUDIES + ("all", "report"),
                   help="which studies to run ('report' only summarises finished runs)")
    p.add_argument("--quick", action="store_true", help="1 seed, a few iterations, 2 test images: checks the "
                   "scripts end to end in minutes (BENCHMARKS.md §9 has the time), numbers mean nothing")
    p.add_argument("--data", help="benchmark folder (default $SLKD_DATA, else ../shared/data)")
    p.add_argument("--out", help="run folder (default runs/study, runs/bench-quick with --quick)")
    p.add_argument("--results", help="where JSON and plots go (default benchmarks/results for the default "
                   "study, else <out>/results)")
    p.add_argument("--seeds", type=number(int, minimum=0, maximum=2**63 - 1), nargs="+",
                   help="seeds of the denoise study (default 0 1 2)")
    p.add_argument("--ablation-seeds", type=number(int, minimum=0, maximum=2**63 - 1), nargs="+", help="seeds of the ablations and of the precision study (default 0 1)")
    p.add_argument("--student-iters", type=number(int, minimum=1), help="iterations of every student run (default 400; use "
                   "another --out for a longer study)")
    p.add_argument("--methods", nargs="+", choices=DENOISE_METHODS, metavar="METHOD",
                   help="student methods of the denoise study (default all: " + " ".join(DENOISE_METHODS) + ")")
    p.add_argument("--teachers-from", help="take the teachers (and the inputs' evaluations) from this "
                   "study folder instead of --out, e.g. to train students longer against the same teachers")
    p.add_argument("--jobs", type=number(int, minimum=1, maximum=max_threads()), default=1,
                   help="runs in parallel (default 1)")
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=None,
                   help="intra-op threads per run "
                   "(default: cores / jobs)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run_study(_main, args)


def _main(args) -> int:
    t0 = time.perf_counter()
    scale = QUICK if args.quick else FULL
    if args.student_iters is not None:
        if args.student_iters < 1:
            raise StudyError("--student-iters must be >= 1")
        scale = replace(scale, student=args.student_iters)
    studies = list(STUDIES) if "all" in args.studies else [s for s in args.studies if s != "report"]
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise StudyError("--jobs and --threads must be >= 1")
    out = Path(args.out or ("runs/bench-quick" if args.quick else "runs/study")).resolve()
    # the committed results are those of the default study; another folder keeps its own
    default_out = Path("runs/bench-quick" if args.quick else "runs/study").resolve()
    results = Path(args.results or (ROOT / "benchmarks" / "results" if out == default_out and not args.quick
                                    else out / "results"))
    data = data_root(args.data, studies)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    teachers_from = None
    if args.teachers_from:
        teachers_from = Path(args.teachers_from).resolve()
        if not teachers_from.is_dir():
            raise StudyError(f"--teachers-from: no such study folder: {teachers_from}")
    study = ReproductionStudy(out, data, scale, tuple(args.seeds) if args.seeds else scale.seeds,
                tuple(args.ablation_seeds) if args.ablation_seeds else None,
                tuple(dict.fromkeys(args.methods)) if args.methods else None, teachers_from)
    report_only = "report" in args.studies
    build_plan(studies or ["denoise", "ablations", "derain", "deblur", "realworld"], study)
    if not report_only:
        jobs = list(study.jobs.values())
        print(f"{len(jobs)} jobs, {args.jobs} at a time × {threads} thread(s); runs in {out}", flush=True)
        state = run_jobs(jobs, args.jobs, threads, {"SLKD_DATA": str(data)})
        failed = [n for n, s in state.items() if s != "done"]
    else:
        failed = []
    env = {"machine": machine(), "command": "python -m benchmarks.study " + " ".join(args.argv),
           "scale": scale.__dict__, "seeds": list(study.seeds),
           "data": str(data), "jobs": args.jobs, "threads": threads}
    written = []
    summaries = {}
    if "denoise" in studies or "ablations" in studies or report_only:
        summaries["denoise"] = summarise_denoise(study, "ablations" in studies or report_only)
        plot = plot_denoise(summaries["denoise"], results / ("reproduce_denoise.png"))
        if plot:
            written.append(plot)
    for name in ("derain", "deblur"):
        if name in studies or (report_only and (out / TASKS[name].key).is_dir()):
            summaries[name] = summarise_task(study, name)
    if "realworld" in studies or (report_only and (out / "derain").is_dir()):
        summaries["realworld"] = summarise_realworld(study)
    if "precision" in studies or (report_only and (out / TASKS["denoise"].key / "scratch_bf16_s0").is_dir()):
        summaries["precision"] = summarise_precision(study)
    if "families" in studies or (report_only and any((out / f"denoise25-{k}").is_dir() for k in FAMILIES)):
        summaries["families"] = summarise_families(study)
    if "compression" in studies:
        summaries["compression"] = compression(study)
    elif report_only and (results / "reproduce_compression.json").is_file():  # timed once, kept
        summaries["compression"] = json.loads((results / "reproduce_compression.json").read_text())["summary"]
    for name, summary in summaries.items():
        if name == "compression" and "compression" not in studies:
            continue  # read back for the tables, not re-measured: keep its own file
        path = results / f"reproduce_{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"study": name, **env, "summary": summary,
                                    "seconds": time.perf_counter() - t0}, indent=2, default=json_default) + "\n")
        written.append(path)
    tables = results / "reproduce_tables.md"
    print_summary(summaries, tables)
    print("wrote " + ", ".join(str(w) for w in written + [tables]))
    if failed:
        print(f"{len(failed)} job(s) did not finish: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


