"""After training: evaluation of the input and every model on the validation sets, the
side-by-side profile, the student's export, ``summary.json`` and ``report.md``."""

from __future__ import annotations

import json
import math
import os
import shlex
import time
from pathlib import Path

import torch

from slkd.data.image_io import write_image
from slkd.data.tasks import task_spec
from slkd.engine.compress.plan import GRID_ROWS, Log, ModelSpec, Prepared
from slkd.engine.evaluation import Convention, evaluate
from slkd.engine.report import image_grid, markdown_table, plot_curves
from slkd.engine.runner import log_stderr
from slkd.engine.text import cell, duration, resolve_device
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes
from slkd.models import build_model, compare_latency, count_macs, count_parameters, load_pretrained, save_weights
from slkd.engine.inference import first_parameter, inference_model
from slkd.models.complexity import LatencyReport, latency_ratio

#: the timing of the report is called unreliable (and no speed-up is claimed) when two models of
#: one architecture timed side by side — the distilled student and its scratch twin, or the
#: student timed twice — come out more than this factor apart (they run the same operations) …
TWIN_TOLERANCE = 1.15
#: … or when the speed-up's interquartile range over the rounds is wider than this fraction of
#: its median, or when there are fewer rounds than this to judge it by
SPREAD_LIMIT = 0.3
MIN_ROUNDS = 5
#: the name under which the student is timed a second time when it has no scratch twin
TWIN = "student (timed twice)"


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


def latency_comparison(timings: dict[str, LatencyReport], teacher: str, student: str, twin: str) -> dict:
    """The speed-up of ``student`` over ``teacher`` from interleaved timings (the median of the
    per-round ratios, with its interquartile range) and whether to trust it: ``twin`` (a network
    of the student's architecture timed in the same rounds) must come out level with the student
    (:data:`TWIN_TOLERANCE`), and the per-round speed-ups must agree (:data:`SPREAD_LIMIT`)."""
    speed = latency_ratio(timings[teacher], timings[student])
    twins = latency_ratio(timings[twin], timings[student])
    problems = []
    if speed.rounds < MIN_ROUNDS:
        problems.append(f"{speed.rounds} timed round(s) are too few to judge the noise")
    if not 1 / TWIN_TOLERANCE <= twins.median <= TWIN_TOLERANCE:
        problems.append(f"two networks of the student's architecture timed side by side came out "
                        f"{max(twins.median, 1 / twins.median):.2f}× apart")
    if speed.spread > SPREAD_LIMIT:
        problems.append(f"the speed-up varied from {speed.q1:.2f}× to {speed.q3:.2f}× between rounds "
                        "(interquartile range)")
    return {"speedup": speed.median, "speedup_iqr": [speed.q1, speed.q3], "rounds": speed.rounds,
            "twin": twin, "twin_ratio": twins.median, "reliable": not problems,
            "problem": "; ".join(problems) or None}


def latency_sentence(latency: dict, teacher: str, student: str) -> str:
    """What the report and the command line say about the speed-up: the number and its spread,
    or plainly that the timing cannot be trusted."""
    s, (q1, q3) = latency["speedup"], latency["speedup_iqr"]
    how = (f"{s:.2f}× faster" if s >= 1 else f"{1 / s:.2f}× slower")
    spread = f"median of {latency['rounds']} interleaved rounds, interquartile range {q1:.2f}–{q3:.2f}×"
    if latency["reliable"]:
        twin = ("its scratch twin, the same architecture" if latency["twin"] == "student_scratch"
                else "the student timed twice")
        return (f"On this machine's CPU the student runs {how} than Teacher A ({spread}; {twin}, "
                f"in the same rounds: {latency['twin_ratio']:.2f}×).")
    return (f"The CPU timing is unreliable here, so no speed-up is claimed: {latency['problem']} "
            f"(the machine was busy?). Measured: {how} ({spread}). Time the two on a quiet machine "
            f"with `slkd profile --compare {teacher} {student} --runs 30`.")


def _profile(specs: dict[str, ModelSpec], models: dict[str, torch.nn.Module],
             runs: int, student: str) -> tuple[dict[str, dict], dict]:
    """Parameters, MACs and CPU latency at 256×256 (each network the fastest way measured on the
    CPU: :func:`slkd.engine.inference.inference_model`), timed interleaved in one process, and the
    speed-up of ``student`` over Teacher A (:func:`latency_comparison`); the student's scratch
    twin is the noise check, or, without one, the student timed a second time in every round."""
    rows = {}
    for name, model in models.items():
        arch = specs[name].preset
        with torch.device("meta"):
            shape_only = build_model(arch, **specs[name].options)
        # a deployed (ONNX) student is the student's network: its parameters are the student's
        rows[name] = {"architecture": arch + DEPLOYED.get(name, ("", ""))[1],
                      "params": count_parameters(shape_only),
                      "macs_256": count_macs(shape_only, (1, 3, 256, 256), device="meta").total}
    # each network the fastest way measured on this device (an exported file runs as it runs)
    cpu = {name: inference_model(model.to("cpu"), "cpu") if first_parameter(model) is not None else model
           for name, model in models.items()}
    twin = "student_scratch" if "student_scratch" in cpu else TWIN
    # the student first and its twin last: neither follows the other (a warm cache would favour it)
    order = [student, *(n for n in cpu if n not in (student, twin)), twin]
    timed = {name: cpu.get(name, cpu[student]) for name in order}
    timings = compare_latency(timed, (1, 3, 256, 256), runs=runs, warmup=1)
    for name in models:
        rows[name].update(latency_ms_256=timings[name].median_ms, latency_threads=timings[name].threads)
    return rows, latency_comparison(timings, "teacher_a", student, twin)


#: the deployed student's rows (``Job.deploy``): stage-like name → (report label, architecture suffix)
DEPLOYED = {"student_onnx": ("student, ONNX float", " (ONNX float)"),
            "student_int8": ("student, ONNX INT8", " (ONNX INT8)")}


def _deploy_int8(prep: Prepared, student: torch.nn.Module, files: dict, log: Log) -> dict[str, torch.nn.Module]:
    """``student.int8.onnx`` beside ``student.onnx`` (:func:`slkd.models.quantize.export_int8`,
    calibrated on crops of the job's training data) and the two ONNX files as models to score and
    time; a refused INT8 graph is named in ``files["int8_note"]`` and only the float file is run."""
    from slkd.models.onnx_model import OnnxModel
    from slkd.models.quantize import CALIB_CROPS, HOLDOUT_CROPS, calibration_set, export_int8

    files.update(int8=None, int8_note=None, int8_holdout=None)
    if files["onnx"] is None:
        files["int8_note"] = "not written: there is no float ONNX file to quantise"
        return {}
    job = prep.job
    train = Path(os.path.expanduser(str(job.train)))
    sigma = (prep.sigma or 25.0) if prep.train_synthetic else None
    try:  # crops of the training patch size, as the student saw its data
        calib = calibration_set(train, sigma=sigma, crops=CALIB_CROPS, patch=job.plan.patch,
                                holdout=HOLDOUT_CROPS, exclude=job.train_exclude or (), seed=job.seed)
        log(f"      INT8: calibrating on {calib.described}")
        result = export_int8(student.cpu(), prep.out / "student.int8.onnx", calib, model_name=prep.student,
                             weights=files["student_weights"],
                             metadata={"slkd.task": job.task, "slkd.teacher": job.teacher,
                                       "slkd.method": job.method})
        files["int8"] = str(result.path)
        h = result.holdout
        files["int8_holdout"] = {"crops": h.crops, "reference": h.reference, "float_psnr": h.float_psnr,
                                 "int8_psnr": h.int8_psnr, "drop": h.drop}
    except SlkdError as exc:  # the float files are safe; say why the INT8 one is missing
        files["int8_note"] = f"not written: {exc}"
        log(f"note: student.int8.onnx {files['int8_note']}")
    models = {"student_onnx": OnnxModel(files["onnx"])}
    if files["int8"]:
        models["student_int8"] = OnnxModel(files["int8"])
    return models


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


def console_table(models: dict[str, dict], scores: dict[str, dict], labels: dict[str, str],
                  width: int = 22) -> list[str]:
    """The result table as ``slkd compress`` and ``slkd demo`` print it, one line per model:
    ``models`` the summary's entries (parameters, MACs, latency), ``scores`` each model's PSNR and
    SSIM (of one validation set, or the entries themselves for the pooled means), ``labels`` the
    models' names in a column ``width`` characters wide."""
    lines = [f"{'model':<{width}}{'params':>10}{'GMACs@256':>11}{'ms@256':>9}{'PSNR':>8}{'SSIM':>8}"]
    for name, m in models.items():
        score = scores[name]
        lines.append(f"{labels[name]:<{width}}{m['params'] / 1e6:>9.3f}M{m['macs_256'] / 1e9:>11.2f}"
                     f"{cell(m['latency_ms_256'], '.1f'):>9}{score['psnr']:>8.2f}{score['ssim']:>8.4f}")
    return lines


#: how the report names the students' initialisation (``settings["init"]``)
_INIT_WORDS = {"teacher": "initialised (like its scratch twin) with a cut of Teacher A's weights",
               "random": "initialised at random"}


def _held_out_words(prep: Prepared) -> str:
    """The report's caveat on scores of training images (empty when the sets are held out)."""
    shared = _not_held_out(prep)
    return (f" (**not all held out**: {shared}; their scores measure how the networks fit their "
            "training data)") if shared else ""


def _not_held_out(prep: Prepared) -> str:
    """How many validation images are also training images, in words ("" when none)."""
    shared = sum(o["count"] for o in prep.val_overlap.values())
    return f"{shared} of them also training images, so not held out" if shared else ""


def labels(prep: Prepared) -> dict[str, str]:
    """Report names of every model of the job."""
    method = prep.job.method
    return {"input": prep.job.input_label or task_spec(prep.job.task).input_label, "teacher_a": "Teacher A",
            "teacher_b": "Teacher B", prep.student_stage: f"student ({'SLKD' if method == 'slkd' else method})",
            "student_scratch": "student (scratch)", "ground_truth": "ground truth",
            **{name: label for name, (label, _) in DEPLOYED.items()}}


def _sentence(prep: Prepared, means: dict, n_images: int) -> str:
    s, a, x = means[prep.student_stage]["psnr"], means["teacher_a"]["psnr"], means["input"]["psnr"]
    shared = _not_held_out(prep)
    text = (f"The student ({prep.job.method}) scores {s:.2f} dB on {n_images} validation image(s)"
            + (f" ({shared})" if shared else "") + ", "
            f"{s - a:+.2f} dB against Teacher A ({a:.2f} dB) and {s - x:+.2f} dB against the "
            f"degraded input ({x:.2f} dB).")
    if "student_scratch" in means:
        d = s - means["student_scratch"]["psnr"]
        verdict = ("level with" if abs(d) < 0.05 else "above" if d > 0 else "below")
        text += (f" It is {verdict} the same student trained from scratch "
                 f"({means['student_scratch']['psnr']:.2f} dB, {d:+.2f} dB) at equal iterations and "
                 "data; one seed: a few tenths of a dB are within run-to-run noise.")
    return text


def deploy_sentence(models: dict, files: dict) -> str:
    """What the report says about the INT8 file: its PSNR against the float ONNX file's, its
    latency against it, and the hold-out check it passed (or why it was not written)."""
    if not files.get("int8"):
        return f"student.int8.onnx {files.get('int8_note') or 'was not written'}."
    f, q = models["student_onnx"], models["student_int8"]
    h = files["int8_holdout"]
    check = (f"{h['drop']:.2f} dB below float on {h['crops']} held-out training crops" if h["drop"] is not None
             else f"{h['int8_psnr']:.2f} dB PSNR from the float output on {h['crops']} held-out crops")
    return (f"The INT8 file scores {q['psnr']:.2f} dB ({q['psnr'] - f['psnr']:+.2f} dB against the float "
            f"ONNX file) and takes {q['latency_ms_256']:.1f} ms at 256² against {f['latency_ms_256']:.1f} ms "
            f"({f['latency_ms_256'] / q['latency_ms_256']:.2f}×, same rounds as the table); export check: "
            f"{check}.")


def restore_command(student: str, weights: str) -> str:
    """The ``slkd restore`` line the report suggests, pasteable into a shell (a path with a space
    is quoted)."""
    return shlex.join(["slkd", "restore", "--model", student, "--weights", str(weights)]) + " IN OUT"


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
                         cell(m["params"] / 1e6 if m["params"] else None, ".3f"),
                         cell(m["macs_256"] / 1e9 if m["macs_256"] else None, ".2f"),
                         cell(m.get("latency_ms_256"), ".1f"), cell(score["psnr"], ".2f"),
                         cell(score["ssim"], ".4f"), cell(m.get("train_iters"), "d"),
                         cell(m.get("train_seconds"), ".0f")])
        table = markdown_table(["model", "architecture", "params (M)", "MACs @256² (G)",
                                "CPU latency @256² (ms)", "PSNR (dB)", "SSIM", "iterations",
                                "train time (s)"], rows, "llrrrrrrr")
        per = result["per_image"]
        per_table = ""
        if len(per) <= 20:
            per_rows = [[n] + [cell(per[n][m]["psnr"], ".2f") for m in order] for n in per]
            per_table = "\n\nPSNR per image (dB):\n\n" + markdown_table(["image"] + [names[m] for m in order], per_rows)
        overlap = prep.val_overlap.get(set_name)
        heading = f"{result['count']} image(s)" + (
            f"; {overlap['count']} of them also training images: {', '.join(overlap['names'][:10])}"
            + (" …" if len(overlap["names"]) > 10 else "") + " — these scores are not of held-out images"
            if overlap else "")
        tables.append(f"### {set_name} ({heading})\n\n{table}{per_table}")
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
    if "int8" in f:
        onnx_line += "\n- INT8 ONNX: " + (f"`{f['int8']}`" if f["int8"] else f["int8_note"])
    deployed = f"\n\n**Deployed.** {c['deploy_sentence']}" if c.get("deploy_sentence") else ""
    text = f"""# slkd compress — {s['teacher']} → {s['student']}, {s['task']}

Command: `{s['command']}` ({summary['seconds'] / 60:.1f} min on {s['machine']}).
Teacher A: `{s['teacher']}` {teacher_from}. Student: `{s['student']}`, distilled with
`{s['method']}`, {_INIT_WORDS[s.get('init', 'random')]}. Training data: {s['train_data']}; patch {s['patch']}, batch {s['batch']}, seed
{s['seed']}. Scores: {s['convention']}, on the validation data{_held_out_words(prep)} (outputs restored whole, in
tiles above 1024² pixels).

{chr(10).join(tables)}
{teacher_b_note}
MACs count convolutions and attention matmuls at 1×3×256×256; latency is the median of
{s['latency_runs']} CPU rounds timing all models interleaved ({summary['models']['teacher_a'].get('latency_threads')} threads); the speed-up is the
median of the per-round ratios.

**Result.** {c['sentence']}

The student has {100 * c['params_reduction']:.1f}% fewer parameters and {100 * c['macs_reduction']:.1f}% fewer
MACs than Teacher A. {c['latency_sentence']}{deployed}

## Images

![comparison grid (central crops)]({grid.name})
"""
    if curves is not None:
        text += f"\n## Training curves\n\n![training curves]({curves.name})\n"
    text += f"""
## Files

- student weights: `{f['student_weights']}` (`{restore_command(s['student'], f['student_weights'])}`)
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
    dev = resolve_device(device)
    n_images = sum(len(s) for s in prep.eval_sets.values())
    shared = _not_held_out(prep)
    log(f"[{k}/{total}] evaluating on {n_images} validation image(s)" + (f" ({shared})" if shared else "")
        + f" ({Convention.for_task(job.task).describe()}) and profiling at 256×256")
    specs = dict(prep.models)
    models = {name: load_pretrained(spec.preset, spec.weights, options=spec.options).to(dev).eval()
              for name, spec in specs.items()}
    files = _export(prep, models[prep.student_stage], log)
    if job.deploy == "int8":  # the deployed files are scored and timed beside the PyTorch models
        for name, model in _deploy_int8(prep, models[prep.student_stage], files, log).items():
            models[name] = model
            specs[name] = ModelSpec(prep.student, {}, Path(model.path), trained=False)
    models[prep.student_stage].to(dev)  # the export ran it on the CPU
    sets, shown = _evaluate_all(prep, models, dev, log)
    profile, latency = _profile(specs, models, job.plan.latency_runs, prep.student_stage)

    log(f"[{k + 1}/{total}] writing student.safetensors, student.onnx"
        + (", student.int8.onnx" if files.get("int8") else "") + ", summary.json, report.md, "
        "grid.png and curves.png")
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
                                "weights": str(specs[name].weights)}
    t, st = profile["teacher_a"], profile[prep.student_stage]
    comparison = {
        "student_minus_input_psnr": means[prep.student_stage]["psnr"] - means["input"]["psnr"],
        "teacher_a_minus_student_psnr": means["teacher_a"]["psnr"] - means[prep.student_stage]["psnr"],
        "params_reduction": 1 - st["params"] / t["params"],
        "macs_reduction": 1 - st["macs_256"] / t["macs_256"],
        "speedup": latency["speedup"],
        "latency": latency,
        "latency_sentence": latency_sentence(latency, job.teacher, prep.student),
        "sentence": _sentence(prep, means, n_images),
    }
    if job.deploy:
        comparison["deploy_sentence"] = deploy_sentence(summary_models, files)
    if "student_scratch" in models:
        comparison["student_minus_scratch_psnr"] = means[prep.student_stage]["psnr"] - means["student_scratch"]["psnr"]
        comparison["student_minus_scratch_psnr_per_image"] = {
            n: r[prep.student_stage]["psnr"] - r["student_scratch"]["psnr"]
            for n, r in evaluation["per_image"].items()}
    settings = dict(prep.settings)
    settings.update(command=job.command, deploy=job.deploy, train_data=prep.train_described, patch=job.plan.patch,
                    batch=job.plan.batch, latency_runs=job.plan.latency_runs, device=str(dev),
                    convention=Convention.for_task(job.task).describe(),
                    val_sets={n: len(s) for n, s in prep.eval_sets.items()},
                    val_not_held_out=prep.val_overlap,
                    machine=f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    summary = {"settings": settings, "models": summary_models, "comparison": comparison,
               "evaluation": evaluation, "files": files, "seconds": time.perf_counter() - t0}
    # +inf is an output identical to its target on every image (pairs whose input equals the
    # target are refused before training): a score, reported as ∞; NaN is a broken model
    bad = [m for m in summary_models if math.isnan(summary_models[m]["psnr"])]
    if bad:
        raise SlkdError(f"PSNR is NaN for {', '.join(bad)}: its outputs are not numbers; the weights "
                        "in their run folders are kept (a diverged training? try a smaller learning rate)")
    trained = {labels(prep)[s.name]: out / s.name for s in prep.stages if s.name != "teacher_b"}
    curves = None
    if trained:
        curves = plot_curves(trained, out / "curves.png",
                             terms_of=labels(prep)[prep.student_stage] if prep.job.method != "scratch" else None)
    _report(prep, summary, shown, curves)
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary
