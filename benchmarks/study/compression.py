"""The ``compression`` study: the paper's compression table (widths, blocks, parameters, MACs,
CPU latency of each teacher–student pair, timed interleaved in one run; PSNR from ``denoise``)."""

from __future__ import annotations

from benchmarks.study.configs import TASKS
from benchmarks.study.plan import ReproductionStudy
from benchmarks.study.settings import STUDENT, TEACHER
from benchmarks.study.paired import family, single


def compression(study: ReproductionStudy) -> dict:
    """Paper-style compression table; latencies of each pair interleaved in one run."""
    import torch

    from slkd.models import build_model, get_preset
    from slkd.models.complexity import compare_latency, count_macs, count_parameters

    rows = {}
    for teacher, student in (("restormer", "res-sl"), (TEACHER, STUDENT)):
        models = {n: build_model(n).eval() for n in (teacher, student)}
        lat = compare_latency(models, (1, 3, 256, 256), runs=study.scale.latency_runs, warmup=1)
        for n, m in models.items():
            kw = get_preset(n).kwargs
            with torch.device("meta"):
                shape_only = build_model(n)
            rows[n] = {"dim_per_level": [kw["dim"] * 2 ** i for i in range(4)],
                       "blocks_per_level": list(kw["num_blocks"]), "refinement_blocks": kw["num_refinement_blocks"],
                       "params": count_parameters(m),
                       "macs_256": count_macs(shape_only, (1, 3, 256, 256), device="meta").total,
                       "latency_ms_256": lat[n].median_ms, "latency_threads": lat[n].threads}
        t, s = rows[teacher], rows[student]
        s["vs_teacher"] = {"params_reduction": 1 - s["params"] / t["params"],
                           "macs_reduction": 1 - s["macs_256"] / t["macs_256"],
                           "speedup": t["latency_ms_256"] / s["latency_ms_256"],
                           "macs_ratio": t["macs_256"] / s["macs_256"]}
    key = TASKS["denoise"].key
    rows[TEACHER]["psnr_CBSD68"] = (single(study, key, "teacher_a", "CBSD68") or {}).get("psnr")
    slkd = family(study, key, [f"slkd_s{s}" for s in study.seeds], "CBSD68")
    rows[STUDENT]["psnr_CBSD68"] = slkd["psnr"]["mean"] if slkd else None
    return rows

