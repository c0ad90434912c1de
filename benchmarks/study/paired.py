"""Paired comparisons of the studies: evaluations read back, seed families (mean, spread), and
comparisons paired by seed and by image with the verdict "beyond seed noise" or not."""

from __future__ import annotations

import statistics

from benchmarks.study.plan import ReproductionStudy, eval_path
from benchmarks.study.scheduler import read_eval, recorded_seconds
from slkd.engine.runlog import read_events


def load_eval(study: ReproductionStudy, task_key: str, run: str, data: str) -> dict | None:
    return read_eval(eval_path(study, task_key, run, data))


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def image_scores(result: dict, metric: str) -> dict[str, float]:
    return {row["name"]: row[metric] for row in result["images"]}


def compare(study: ReproductionStudy, task_key: str, runs_a: list[str], runs_b: list[str], data: str) -> dict | None:
    """SLKD-style run family A against family B, paired by seed (same index) and by image."""
    pairs = [(load_eval(study, task_key, a, data), load_eval(study, task_key, b, data))
             for a, b in zip(runs_a, runs_b)]
    return paired([(x, y) for x, y in pairs if x and y])


def paired(pairs: list[tuple[dict, dict]], metric: str = "psnr") -> dict | None:
    """Evaluations of family A against family B (``slkd eval --json`` results), paired by seed
    (same index) and by image: per-seed differences, their mean, the larger of the two
    families' seed spreads, per-image mean differences and the verdict (beyond seed noise
    only when every seed agrees and the mean difference exceeds the spread)."""
    if not pairs:
        return None
    per_seed = [x["mean"][metric] - y["mean"][metric] for x, y in pairs]
    images: dict[str, list[float]] = {}
    for x, y in pairs:
        px, py = image_scores(x, metric), image_scores(y, metric)
        for name in px:
            images.setdefault(name, []).append(px[name] - py[name])
    per_image = {n: statistics.fmean(v) for n, v in images.items()}
    a_means = [x["mean"][metric] for x, _ in pairs]
    b_means = [y["mean"][metric] for _, y in pairs]
    noise = max(spread(a_means)["std"], spread(b_means)["std"])
    mean = statistics.fmean(per_seed)
    if len(pairs) < 2:
        verdict = "one seed: no claim possible"
    elif all(d > 0 for d in per_seed) and mean > noise:
        verdict = "better, beyond seed noise"
    elif all(d < 0 for d in per_seed) and -mean > noise:
        verdict = "worse, beyond seed noise"
    else:
        verdict = "within seed noise"
    return {f"{metric}_diff_per_seed": per_seed, f"{metric}_diff_mean": mean, "seed_std": noise,
            "per_image_mean_diff": statistics.fmean(per_image.values()),
            "images_better": sum(1 for d in per_image.values() if d > 0), "images": len(per_image),
            "verdict": verdict}


def family(study: ReproductionStudy, task_key: str, runs: list[str], data: str) -> dict | None:
    results = [r for r in (load_eval(study, task_key, run, data) for run in runs) if r]
    if not results:
        return None
    return {"psnr": spread([r["mean"]["psnr"] for r in results]),
            "ssim": spread([r["mean"]["ssim"] for r in results]), "runs": len(results)}


def train_seconds(study: ReproductionStudy, task_key: str, run: str) -> float | None:
    return recorded_seconds(study.root(run) / task_key / run)


def single(study: ReproductionStudy, task_key: str, run: str, data: str) -> dict | None:
    r = load_eval(study, task_key, run, data)
    return None if r is None else {"psnr": r["mean"]["psnr"], "ssim": r["mean"]["ssim"], "count": r["count"]}


def teacher_b_check(study: ReproductionStudy, task_key: str) -> dict | None:
    run = study.teacher_root / task_key / "teacher_b"
    if not (run / "metrics.jsonl").is_file():
        return None
    vals = [e for e in read_events(run) if e.get("event") == "val"]
    return {"reconstruction_psnr": vals[-1]["psnr"], "dataset": vals[-1]["dataset"],
            "count": vals[-1]["count"]} if vals else None

