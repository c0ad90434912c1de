"""The summary of each study: its tables of families, single runs and paired comparisons, as
plain data (written to ``reproduce_<study>.json`` and turned into Markdown by :mod:`.report`)."""

from __future__ import annotations

import statistics

from benchmarks.study.configs import TASKS
from benchmarks.study.plan import ReproductionStudy
from benchmarks.study.settings import (
    ABLATIONS,
    BALANCED_BASELINES,
    FAMILIES,
    PRECISION,
    REVISIONS,
    TASK_METHODS,
    TEACHER,
)
from benchmarks.study.paired import compare, family, load_eval, single, teacher_b_check, train_seconds


def summarise_denoise(study: ReproductionStudy, ablations: bool) -> dict:
    key, seeds = TASKS["denoise"].key, study.seeds
    names = list(study.methods) + (list(ABLATIONS) if ablations else [])
    table = {}
    for data, _ in TASKS["denoise"].tests:
        rows = {"input": single(study, key, "input", data), "teacher_a": single(study, key, "teacher_a", data)}
        for m in names:
            rows[m] = family(study, key, [f"{m}_s{s}" for s in (study.ablation_seeds if m in ABLATIONS else seeds)], data)
        table[data] = rows
    paired = {}
    for data, _ in TASKS["denoise"].tests:
        paired[data] = {}
        for m in names:
            if m != "slkd":  # ablations are paired with SLKD on their own seeds
                ss = study.ablation_seeds if m in ABLATIONS else seeds
                paired[data][m] = compare(study, key, [f"slkd_s{s}" for s in ss], [f"{m}_s{s}" for s in ss], data)
    # each revision against the runs it has to beat, paired by seed
    revised = {data: {rev: {m: compare(study, key, [f"{rev}_s{s}" for s in seeds], [f"{m}_s{s}" for s in seeds], data)
                            for m in ("slkd", "scratch", "scratch_long", "output_kd") if m in study.methods}
                      for rev in REVISIONS if rev in study.methods}
               for data, _ in TASKS["denoise"].tests}
    # the balanced baselines against scratch (does any distillation beat plain training?)
    for data, _ in TASKS["denoise"].tests:
        for name in BALANCED_BASELINES:
            if name in study.methods and "scratch" in study.methods:
                revised[data][name] = {"scratch": compare(study, key, [f"{name}_s{s}" for s in seeds],
                                                          [f"scratch_s{s}" for s in seeds], data)}
    seconds = {m: [t for t in (train_seconds(study, key, f"{m}_s{s}") for s in seeds) if t] for m in names}
    seconds = {m: v for m, v in seconds.items() if v}
    return {"table": table, "slkd_minus": paired, "revision_minus": revised, "teacher_b": teacher_b_check(study, key),
            "train_seconds_mean": {m: statistics.fmean(v) for m, v in seconds.items()},
            "teacher_a_seconds": train_seconds(study, key, "teacher_a")}


def summarise_task(study: ReproductionStudy, task_name: str) -> dict:
    task = TASKS[task_name]
    seeds = study.scale.task_seeds
    out = {}
    for data, _ in task.tests:
        rows = {"input": single(study, task.key, "input", data),
                "teacher_a": single(study, task.key, "teacher_a", data)}
        for m in TASK_METHODS:
            rows[m] = family(study, task.key, [f"{m}_s{s}" for s in seeds], data)
        for m in TASK_METHODS[1:]:
            rows[f"{m}_minus_scratch"] = compare(study, task.key, [f"{m}_s{s}" for s in seeds],
                                                 [f"scratch_s{s}" for s in seeds], data)
        out[data] = rows
    return {"table": out, "teacher_b": teacher_b_check(study, task.key)}


def summarise_precision(study: ReproductionStudy) -> dict:
    """Each bf16 run family against its float32 twin on CBSD68, paired by seed and image."""
    key, seeds, data = TASKS["denoise"].key, study.ablation_seeds, TASKS["denoise"].tests[0][0]
    out = {}
    for bf16, fp32 in PRECISION.items():
        runs = {name: [f"{name}_s{s}" for s in seeds] for name in (bf16, fp32)}
        out[bf16] = {"data": data, "float32": family(study, key, runs[fp32], data),
                     "bf16": family(study, key, runs[bf16], data),
                     "bf16_minus_float32": compare(study, key, runs[bf16], runs[fp32], data)}
    return out


def summarise_realworld(study: ReproductionStudy) -> dict:
    seed = study.scale.task_seeds[0]
    rain = {}
    runs = ("input", "teacher_a", *(f"{m}_s{seed}" for m in TASK_METHODS))
    for run in runs:
        r = load_eval(study, TASKS["derain"].key, run, "RealRain20")
        if r:
            rain[run] = r["mean"]["output" if run != "input" else "input"] | {"count": r["count"]}
    noise = {}
    for data in ("PolyU100", "CC15"):
        noise[data] = {run: single(study, TASKS["denoise"].key, run, data) for run in runs}
    return {"RealRain20_no_reference": rain, "real_noise": noise}


def summarise_families(study: ReproductionStudy) -> dict:
    """Teacher, scratch and SLKD student of each other architecture, one seed, with sizes."""
    from slkd.models import build_model
    from slkd.models.complexity import count_macs, count_parameters

    import torch

    den = TASKS["denoise"]
    out = {}
    for key, (teacher, student) in FAMILIES.items():
        folder = f"{den.key}-{key}"
        teacher_folder = den.key if teacher == TEACHER else folder
        sizes = {}
        for arch in (teacher, student):
            with torch.device("meta"):
                m = build_model(arch)
            sizes[arch] = {"params": count_parameters(m),
                           "macs_256": count_macs(m, (1, 3, 256, 256), device="meta").total}
        rows = {"teacher": teacher, "student": student, "sizes": sizes}
        for data, _ in den.tests:
            rows[data] = {"teacher_a": single(study, teacher_folder, "teacher_a", data),
                          **{m: single(study, folder, f"{m}_s0", data) for m in TASK_METHODS}}
        rows["teacher_b"] = teacher_b_check(study, teacher_folder)
        out[key] = rows
    return out

