"""After training: evaluation of the input and every model on the validation sets, the
side-by-side profile, the student's export, ``summary.json`` and ``report.md``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from slkd.data.image_io import write_image
from slkd.engine.compress.plan import GRID_ROWS, INPUT_LABELS, Log, Prepared
from slkd.engine.compress.stages import duration
from slkd.engine.evaluation import Convention, evaluate
from slkd.engine.report import image_grid, markdown_table, plot_curves
from slkd.engine.runner import log_stderr
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes
from slkd.models import build_model, compare_latency, count_macs, count_parameters, load_pretrained, save_weights


def _eval_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _model_specs(prep: Prepared) -> dict[str, tuple[str, dict, Path]]:
    """(preset, options, weights) of every trained or given model, by stage name."""
    out = prep.out
    specs: dict[str, tuple[str, dict, Path]] = {}
    t = prep.job.teacher
    specs["teacher_a"] = (t, prep.teacher_options, prep.teacher_weights or out / "teacher_a")
    names = [s.name for s in prep.stages]
    if "teacher_b" in names:
        specs["teacher_b"] = (t, {**prep.teacher_options, "global_residual": False}, out / "teacher_b")
    specs[prep.student_stage] = (prep.student, {}, out / prep.student_stage)
    if "student_scratch" in names:
        specs["student_scratch"] = (prep.student, {}, out / "student_scratch")
    return specs


def _evaluate_all(prep: Prepared, models: dict[str, torch.nn.Module], device: torch.device,
                  log: Log) -> tuple[dict, dict]:
    """Scores per set, model and image; the outputs of the grid's images, kept in memory."""
    out, job = prep.out, prep.job
    several = len(prep.eval_sets) > 1
    first = next(iter(prep.eval_sets))
    sets: dict[str, dict] = {}
    shown: dict[str, dict[str, torch.Tensor]] = {}
    for set_name, samples in prep.eval_sets.items():
        per_image: dict[str, dict[str, dict]] = {}
        means: dict[str, dict] = {}
        for name, model in {"input": None, **models}.items():
            started = time.perf_counter()

            every = max(1, math.ceil(len(samples) / 5)) if len(samples) >= 10 else 0

            def keep(i, sample, output, row, name=name, set_name=set_name, started=started, every=every):
                if every and (i + 1) % every == 0 and i + 1 < len(samples):  # progress with an ETA
                    spent = time.perf_counter() - started
                    log(f"      {set_name}: {name} {i + 1}/{len(samples)} images, ETA "
                        f"{duration(spent / (i + 1) * (len(samples) - i - 1))}")
                if job.save_images is None or i < job.save_images:
                    folder = out / "images" / name / (set_name if several else "")
                    write_image(folder / f"{sample['name']}.png", output)
                if set_name == first and i < GRID_ROWS:
                    shown.setdefault(sample["name"], {})[name] = output
                    if name == "input":
                        shown[sample["name"]]["ground_truth"] = sample["gt"]

            # Teacher B's task is reconstruction: it is scored on the clean image it learned
            result = evaluate(model, samples, task=job.task, device=device, tile="auto",
                              clean_input=name == "teacher_b", on_image=keep)
            for row in result.rows:
                per_image.setdefault(row["name"], {})[name] = {"psnr": row["psnr"], "ssim": row["ssim"]}
            means[name] = result.mean
            if name != "input":
                log(f"      {set_name}: {name} PSNR {result.mean['psnr']:.2f} dB, SSIM "
                    f"{result.mean['ssim']:.4f} ({time.perf_counter() - started:.0f} s)")
        sets[set_name] = {"count": len(samples), "means": means, "per_image": per_image}
    return sets, shown


def _profile(specs: dict[str, tuple[str, dict, Path]], models: dict[str, torch.nn.Module],
             runs: int) -> dict[str, dict]:
    """Parameters, MACs and CPU latency at 256×256, timed interleaved in one process."""
    rows = {}
    for name, model in models.items():
        arch, options, _ = specs[name]
        with torch.device("meta"):
            shape_only = build_model(arch, **options)
        rows[name] = {"architecture": arch, "params": count_parameters(model),
                      "macs_256": count_macs(shape_only, (1, 3, 256, 256), device="meta").total}
    cpu = {name: model.to("cpu") for name, model in models.items()}
    timings = compare_latency(cpu, (1, 3, 256, 256), runs=runs, warmup=1)
    for name, t in timings.items():
        rows[name].update(latency_ms_256=t.median_ms, latency_threads=t.threads)
    return rows


def _export(prep: Prepared, student: torch.nn.Module, log: Log) -> dict:
    """``student.safetensors`` always; ``student.onnx`` when the export extra is installed."""
    out = prep.out
    weights = save_weights(student, out / "student.safetensors")
    files = {"student_weights": str(weights), "onnx": None, "onnx_note": None}
    try:
        import onnx  # noqa: F401
    except ImportError:
        files["onnx_note"] = "not written: the export extra is not installed (pip install 'slkd[export]')"
        log(f"note: student.onnx {files['onnx_note'][4:]}")
        return files
    from slkd.models.export import export_onnx

    try:
        result = export_onnx(student.cpu(), out / "student.onnx", model_name=prep.student, weights=weights,
                             metadata={"slkd.task": prep.job.task, "slkd.teacher": prep.job.teacher,
                                       "slkd.method": prep.job.method})
        files["onnx"] = str(result.path)
    except SlkdError as exc:  # the weights are safe; say why the ONNX file is missing
        files["onnx_note"] = f"not written: {exc}"
        log(f"note: student.onnx {files['onnx_note']}")
    return files


#: how the report names the students' initialisation (``settings["init"]``)
_INIT_WORDS = {"teacher": "initialised (like its scratch twin) with a cut of Teacher A's weights",
               "random": "initialised at random"}


def _fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def labels(prep: Prepared) -> dict[str, str]:
    """Report names of every model of the job."""
    method = prep.job.method
    return {"input": prep.job.input_label or INPUT_LABELS[prep.job.task], "teacher_a": "Teacher A",
            "teacher_b": "Teacher B", prep.student_stage: f"student ({'SLKD' if method == 'slkd' else method})",
            "student_scratch": "student (scratch)", "ground_truth": "ground truth"}


def _sentence(prep: Prepared, means: dict, n_images: int) -> str:
    s, a, x = means[prep.student_stage]["psnr"], means["teacher_a"]["psnr"], means["input"]["psnr"]
    text = (f"The student ({prep.job.method}) scores {s:.2f} dB on {n_images} validation image(s), "
            f"{s - a:+.2f} dB against Teacher A ({a:.2f} dB) and {s - x:+.2f} dB against the "
            f"degraded input ({x:.2f} dB).")
    if "student_scratch" in means:
        d = s - means["student_scratch"]["psnr"]
        verdict = ("level with" if abs(d) < 0.05 else "above" if d > 0 else "below")
        text += (f" It is {verdict} the same student trained from scratch "
                 f"({means['student_scratch']['psnr']:.2f} dB, {d:+.2f} dB) at equal iterations and "
                 "data; one seed: a few tenths of a dB are within run-to-run noise.")
    return text


def _report(prep: Prepared, summary: dict, shown: dict, curves: Path | None) -> Path:
    out = prep.out
    names = labels(prep)
    order = list(summary["models"])
    tables = []
    for set_name, result in summary["evaluation"]["sets"].items():
        rows = []
        for name in order:
            m, score = summary["models"][name], result["means"][name]
            rows.append([names[name] + (" ¹" if name == "teacher_b" else ""), m.get("architecture", "–"),
                         _fmt(m["params"] / 1e6 if m["params"] else None, ".3f"),
                         _fmt(m["macs_256"] / 1e9 if m["macs_256"] else None, ".2f"),
                         _fmt(m.get("latency_ms_256"), ".1f"), _fmt(score["psnr"], ".2f"),
                         _fmt(score["ssim"], ".4f"), _fmt(m.get("train_iters"), "d"),
                         _fmt(m.get("train_seconds"), ".0f")])
        table = markdown_table(["model", "architecture", "params (M)", "MACs @256² (G)",
                                "CPU latency @256² (ms)", "PSNR (dB)", "SSIM", "iterations",
                                "train time (s)"], rows, "llrrrrrrr")
        per = result["per_image"]
        per_table = ""
        if len(per) <= 20:
            per_rows = [[n] + [_fmt(per[n][m]["psnr"], ".2f") for m in order] for n in per]
            per_table = "\n\nPSNR per image (dB):\n\n" + markdown_table(["image"] + [names[m] for m in order], per_rows)
        tables.append(f"### {set_name} ({result['count']} image(s))\n\n{table}{per_table}")
    grid_cols = [c for c in ("input", "teacher_a", prep.student_stage, "student_scratch", "ground_truth")
                 if c == "ground_truth" or c in summary["models"]]
    first = summary["evaluation"]["sets"][next(iter(summary["evaluation"]["sets"]))]["per_image"]
    grid_names = list(shown)
    grid = image_grid([[shown[n][c] for c in grid_cols] for n in grid_names], [names[c] for c in grid_cols],
                      out / "grid.png", row_labels=grid_names,
                      captions=[[f"{first[n][c]['psnr']:.2f} dB" if c in first[n] else "" for c in grid_cols]
                                for n in grid_names])
    s, c, f = summary["settings"], summary["comparison"], summary["files"]
    teacher_from = (f"from `{s['teacher_weights']}`" if s["teacher_weights"] else
                    f"trained here ({summary['models']['teacher_a'].get('train_iters')} iterations)")
    teacher_b_note = ("\n¹ Teacher B is a clean → clean network: its scores are the reconstruction of the "
                      "*clean* image (its training task), not restoration.\n" if "teacher_b" in summary["models"] else "")
    onnx_line = f"`{f['onnx']}`" if f["onnx"] else f["onnx_note"]
    text = f"""# slkd compress — {s['teacher']} → {s['student']}, {s['task']}

Command: `{s['command']}` ({summary['seconds'] / 60:.1f} min on {s['machine']}).
Teacher A: `{s['teacher']}` {teacher_from}. Student: `{s['student']}`, distilled with
`{s['method']}`, {_INIT_WORDS[s.get('init', 'random')]}. Training data: {s['train_data']}; patch {s['patch']}, batch {s['batch']}, seed
{s['seed']}. Scores: {s['convention']}, on the validation data (outputs restored whole, in
tiles above 1024² pixels).

{chr(10).join(tables)}
{teacher_b_note}
MACs count convolutions and attention matmuls at 1×3×256×256; latency is the median of
{s['latency_runs']} CPU runs of all models interleaved ({summary['models']['teacher_a'].get('latency_threads')} threads).

**Result.** {c['sentence']}

The student has {100 * c['params_reduction']:.1f}% fewer parameters and {100 * c['macs_reduction']:.1f}% fewer
MACs than Teacher A and runs {c['speedup']:.2f}× faster here.

## Images

![comparison grid (central crops)]({grid.name})
"""
    if curves is not None:
        text += f"\n## Training curves\n\n![training curves]({curves.name})\n"
    text += f"""
## Files

- student weights: `{f['student_weights']}` (`slkd restore --model {s['student']} --weights {f['student_weights']} IN OUT`)
- ONNX: {onnx_line}
- run folders (config, checkpoint, metrics.jsonl, weights.pth) of every stage and their configs in
  `{out}/configs/` (rerun a stage with `slkd train --config …` or `slkd distill --config …`)

One run is one seed: use `benchmarks/` for claims.
"""
    path = out / "report.md"
    atomic_write_bytes(path, text.encode())
    return path


def finish(prep: Prepared, timing: dict[str, float], *, device: str = "auto", log: Log = log_stderr,
           started: float | None = None, step: int | None = None) -> dict:
    """Evaluate, profile, export and report (rank 0); returns the summary."""
    t0 = started if started is not None else time.perf_counter()
    out, job = prep.out, prep.job
    k = step or len(prep.stages) + 1
    total = len(prep.stages) + 2
    dev = _eval_device(device)
    n_images = sum(len(s) for s in prep.eval_sets.values())
    log(f"[{k}/{total}] evaluating on {n_images} validation image(s) "
        f"({Convention.for_task(job.task).describe()}) and profiling at 256×256")
    specs = _model_specs(prep)
    models = {}
    for name, (arch, options, weights) in specs.items():
        models[name] = load_pretrained(arch, weights, options=options).to(dev).eval()
    sets, shown = _evaluate_all(prep, models, dev, log)
    profile = _profile(specs, models, job.plan.latency_runs)

    log(f"[{k + 1}/{total}] writing student.safetensors, student.onnx, summary.json, report.md, "
        "grid.png and curves.png")
    files = _export(prep, models[prep.student_stage], log)
    if len(sets) == 1:
        only = next(iter(sets.values()))
        evaluation = {"means": only["means"], "per_image": only["per_image"], "sets": sets}
    else:  # all images of all sets, summed in order as one evaluation sums them
        pooled: dict[str, dict] = {}
        for name in ("input", *models):
            totals = {"psnr": 0.0, "ssim": 0.0}
            count = 0
            for result in sets.values():
                for row in result["per_image"].values():
                    for key in totals:
                        totals[key] += row[name][key]
                    count += 1
            pooled[name] = {key: value / max(1, count) for key, value in totals.items()}
        evaluation = {"means": pooled, "per_image": {f"{s}/{n}": r for s, res in sets.items()
                                                     for n, r in res["per_image"].items()}, "sets": sets}
    means = evaluation["means"]
    plans = {s.name: s.cfg.train.iters for s in prep.stages}
    summary_models = {"input": {"architecture": "–", "params": 0, "macs_256": 0, "latency_ms_256": None,
                                **means["input"]}}
    for name in models:
        summary_models[name] = {**profile[name], **means[name],
                                "evaluated_on": "clean images (reconstruction)" if name == "teacher_b"
                                else "degraded images",
                                "train_iters": plans.get(name), "train_seconds": timing.get(name),
                                "run_dir": str(out / name) if name in plans else None,
                                "weights": str(specs[name][2])}
    t, st = profile["teacher_a"], profile[prep.student_stage]
    comparison = {
        "student_minus_input_psnr": means[prep.student_stage]["psnr"] - means["input"]["psnr"],
        "teacher_a_minus_student_psnr": means["teacher_a"]["psnr"] - means[prep.student_stage]["psnr"],
        "params_reduction": 1 - st["params"] / t["params"],
        "macs_reduction": 1 - st["macs_256"] / t["macs_256"],
        "speedup": t["latency_ms_256"] / st["latency_ms_256"],
        "sentence": _sentence(prep, means, n_images),
    }
    if "student_scratch" in models:
        comparison["student_minus_scratch_psnr"] = means[prep.student_stage]["psnr"] - means["student_scratch"]["psnr"]
        comparison["student_minus_scratch_psnr_per_image"] = {
            n: r[prep.student_stage]["psnr"] - r["student_scratch"]["psnr"]
            for n, r in evaluation["per_image"].items()}
    settings = dict(prep.settings)
    settings.update(command=job.command, train_data=prep.train_described, patch=job.plan.patch,
                    batch=job.plan.batch, latency_runs=job.plan.latency_runs, device=str(dev),
                    convention=Convention.for_task(job.task).describe(),
                    val_sets={n: len(s) for n, s in prep.eval_sets.items()},
                    machine=f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    summary = {"settings": settings, "models": summary_models, "comparison": comparison,
               "evaluation": evaluation, "files": files, "seconds": time.perf_counter() - t0}
    bad = [m for m in summary_models if not math.isfinite(summary_models[m]["psnr"])]
    if bad:
        raise SlkdError(f"non-finite PSNR for {', '.join(bad)}; the weights in their run folders "
                        "are kept (a diverged training? try a smaller learning rate)")
    trained = {labels(prep)[s.name]: out / s.name for s in prep.stages if s.name != "teacher_b"}
    curves = None
    if trained:
        curves = plot_curves(trained, out / "curves.png",
                             terms_of=labels(prep)[prep.student_stage] if prep.job.method != "scratch" else None)
    _report(prep, summary, shown, curves)
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary
