"""``slkd demo``: the whole SLKD pipeline on one machine, offline, in about ten minutes.

Colour Gaussian denoising (σ = 25) on small images that ship with the package (public domain
/ CC0, see ``slkd/assets/LICENSE.md``), or on your own folder of clean images (``--data``):

1. train Teacher A (restormer-tiny, noisy → clean);
2. train Teacher B (restormer-tiny without the global residual, clean → clean, from A);
3. distil the student (res-sl-tiny) with SLKD from both teachers;
4. train the same student from scratch (same data, iterations, seed; L1 only);
5. evaluate all of them on held-out images (seeded test noise, RGB PSNR/SSIM on uint8) and
   profile them (parameters, MACs and CPU latency at 256×256, timed side by side);
6. write ``summary.json``, ``report.md``, an image grid and the training curves.

Every stage is an ordinary run of the training engine, from a config written to
``<out>/configs/`` (rerun one with ``slkd train/distill --config``). Rerunning the demo with
the same settings reuses finished stages and resumes an interrupted one; nothing is thrown away.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import yaml

from slkd.cli.common import device_option, note, number, resolve_device, train_run
from slkd.data.folders import add_test_noise
from slkd.data.image_io import IMAGE_EXTENSIONS, read_image, write_image
from slkd.engine.builders import weights_path
from slkd.engine.evaluation import evaluate
from slkd.engine.report import image_grid, markdown_table, plot_curves
from slkd.engine.tasks import distiller_task, supervised_task
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes
from slkd.models import build_model, load_weights
from slkd.models.complexity import compare_latency, count_macs, count_parameters

TRAIN_IMAGES = ("astronaut", "coffee", "rocket")
HELD_OUT_IMAGES = ("chelsea", "ihc")
SIGMA = 25.0
TEACHER, STUDENT = "restormer-tiny", "res-sl-tiny"
MODELS = ("input", "teacher_a", "teacher_b", "student_slkd", "student_scratch")
LABELS = {"input": "noisy input", "teacher_a": "Teacher A", "teacher_b": "Teacher B",
          "student_slkd": "student (SLKD)", "student_scratch": "student (scratch)",
          "ground_truth": "ground truth"}


@dataclass(frozen=True)
class Plan:
    """Iterations and sizes of one demo flavour (chosen so the default takes ~10 min and
    ``--quick`` ~2 min on a 2-core CPU; BENCHMARKS.md §9 has the measured times)."""

    teacher_a: int
    teacher_b: int
    student: int
    patch: int
    batch: int
    latency_runs: int


PLANS = {
    "default": Plan(teacher_a=600, teacher_b=200, student=400, patch=48, batch=8, latency_runs=7),
    "quick": Plan(teacher_a=120, teacher_b=40, student=100, patch=32, batch=8, latency_runs=3),
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train teachers, distil a student with SLKD, compare with scratch",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder: new, empty or an earlier "
                   "demo's, outside --data (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a ~2 minute version with fewer iterations")
    p.add_argument("--data", metavar="DIR", help="a folder of clean images to use instead of the "
                   "bundled ones; with train/ and test/ (or val/) sub-folders those are used, "
                   "otherwise every 10th image is held out")
    p.add_argument("--held-out", metavar="DIR", help="clean held-out images (default: see --data)")
    p.add_argument("--eval-images", type=number(int, minimum=1), default=None, metavar="N",
                   help="evaluate on at most N held-out images (default: all bundled, 10 with --data)")
    p.add_argument("--iters-scale", type=number(float, above=0, maximum=1000), default=1.0, metavar="F",
                   help="multiply every stage's iterations by F (e.g. 4 for a longer, better run)")
    p.add_argument("--seed", type=number(int, minimum=0, maximum=2**63 - 1), default=0)
    p.add_argument("--device", type=device_option(indexed=False), default="auto",
                   help="auto (default), cpu or cuda")
    p.set_defaults(func=run)


#: what the demo writes into --out; a folder holding anything else is not the demo's
OUT_ENTRIES = frozenset({"data", "configs", *MODELS[1:], "images", "report.md", "summary.json",
                         "grid.png", "curves.png"})


# ------------------------------------------------------------------------------ data
def _image_files(folder: Path, recursive: bool) -> list[Path]:
    # a dangling link is listed, so that it is named instead of silently missing
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if (p.is_file() or (p.is_symlink() and not p.exists()))
                  and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _check_out(out: Path, reads: list[Path]) -> None:
    """The demo writes only inside --out, which must be new, empty or an earlier demo's folder
    (whose report, summary and images it replaces), and never inside the folders it reads."""
    if out.exists() and not out.is_dir():
        raise SlkdError(f"--out {out} is a file; give a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUT_ENTRIES and not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:5]) + (" …" if len(foreign) > 5 else "")
            raise SlkdError(f"--out {out} holds files the demo did not write ({shown}); the demo "
                            "replaces its report, summary and images there, so give a new or empty "
                            "folder (nothing was written)")
    target = out.resolve()
    for folder in reads:
        source = folder.resolve()
        if target == source or source in target.parents:
            raise SlkdError(f"--out {out} is inside {folder}, whose images the demo reads: its "
                            "outputs would become training or held-out images of the next run; "
                            "give a folder outside it")


def _check_held_out(held_out: list[Path]) -> None:
    """Read every held-out image now, before hours of training, and refuse two of one name
    (their restored images are written as ``images/<model>/<name>.png``)."""
    seen: dict[str, Path] = {}
    for path in held_out:
        if path.stem in seen:
            raise SlkdError(f"held-out images {seen[path.stem]} and {path} have the same name "
                            f"{path.stem!r}; their outputs would overwrite each other")
        seen[path.stem] = path
        read_image(path, warn_alpha=False)  # an unreadable one is named (ImageReadError)


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


# ------------------------------------------------------------------------------ configs
def _configs(out: Path, train_root: Path, exclude: list[str] | None, plan: Plan, scale: float,
             seed: int) -> dict[str, dict]:
    def iters(n: int) -> int:
        return max(1, round(n * scale))

    def data() -> dict:
        train = {"type": "degraded", "roots": [str(train_root.resolve())], "recursive": True,
                 "degradation": {"name": "gaussian_noise", "params": {"sigma": SIGMA}},
                 "patch_size": plan.patch, "augment": True}
        if exclude:
            train["exclude"] = list(exclude)
        return {"train": train, "val": [], "batch_size": plan.batch}

    def train(n: int, lr: float) -> dict:
        n = iters(n)
        return {"iters": n, "optimizer": {"type": "adamw", "lr": lr, "weight_decay": 1e-4},
                "scheduler": {"type": "cosine", "warmup_iters": max(1, n // 20), "min_lr": lr / 100},
                "loss": "l1", "log_every": max(1, n // 10), "val_every": n, "ckpt_every": max(1, n // 4)}

    runs = str(out.resolve())
    common = {"seed": seed, "output_dir": runs}
    teacher_b_options = {"global_residual": False}
    return {
        "teacher_a": {"name": "teacher_a", "role": "teacher_a", **common, "model": {"name": TEACHER},
                      "data": data(), "train": train(plan.teacher_a, 2e-3)},
        "teacher_b": {"name": "teacher_b", "role": "teacher_b", **common,
                      "model": {"name": TEACHER, "options": teacher_b_options,
                                "init_from": f"{runs}/teacher_a"},
                      "data": data(), "train": train(plan.teacher_b, 5e-4),
                      "eval": {"task": "reconstruct"}},
        "student_slkd": {"name": "student_slkd", "role": "distill", **common, "model": {"name": STUDENT},
                         "teachers": {"a": {"name": TEACHER, "weights": f"{runs}/teacher_a"},
                                      "b": {"name": TEACHER, "weights": f"{runs}/teacher_b",
                                            "options": teacher_b_options}},
                         "distill": {"method": "slkd"},
                         "data": data(), "train": train(plan.student, 2e-3)},
        "student_scratch": {"name": "student_scratch", "role": "scratch", **common,
                            "model": {"name": STUDENT}, "data": data(),
                            "train": train(plan.student, 2e-3)},
    }


def _write_config(out: Path, stage: str, config: dict) -> Path:
    """Write the stage's config; refuse when an earlier demo in ``out`` used other settings."""
    path = out / "configs" / f"{stage}.yaml"
    text = yaml.safe_dump(config, sort_keys=False)
    if path.is_file() and path.read_text(encoding="utf-8") != text and (out / stage).exists():
        raise SlkdError(f"{out} holds a demo run with other settings ({path} differs); use "
                        f"--out DIR for a new one, or delete {out} to start over")
    atomic_write_bytes(path, text.encode())
    return path


# ------------------------------------------------------------------------------ evaluation
def _load(stage: str, out: Path, options: dict, device: torch.device) -> torch.nn.Module:
    model = build_model(TEACHER if stage.startswith("teacher") else STUDENT, **options)
    load_weights(model, weights_path(str(out / stage)))
    return model.to(device).eval()


class _HeldOut:
    """The held-out images as evaluation samples: RGB (grey replicated, alpha dropped) with the
    seeded σ = 25 test noise of ``slkd eval``."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        clean = read_image(self.paths[i]).tensor
        if clean.shape[0] != 3:
            clean = clean[:1].expand(3, -1, -1).contiguous() if clean.shape[0] == 1 else clean[:3]
        return {"lq": add_test_noise(clean, SIGMA, seed=0), "gt": clean, "name": self.paths[i].stem}


def _evaluate(models: dict[str, torch.nn.Module], held_out: list[Path], device: torch.device,
              out: Path) -> tuple[dict, dict]:
    """PSNR/SSIM per model and image (:func:`slkd.engine.evaluation.evaluate`, RGB); restored
    images written to ``out/images/<model>/``. Images over 1024² pixels are restored in tiles."""
    samples = _HeldOut(held_out)
    per_image: dict[str, dict[str, dict]] = {p.stem: {} for p in held_out}
    shown: dict[str, dict[str, torch.Tensor]] = {p.stem: {} for p in held_out}
    means: dict[str, dict] = {}
    for name, model in {"input": None, **models}.items():
        def keep(i, sample, output, row, name=name):
            write_image(out / "images" / name / f"{sample['name']}.png", output)
            shown[sample["name"]][name] = output
            if name == "input":
                shown[sample["name"]]["ground_truth"] = sample["gt"]

        # Teacher B's task is reconstruction: it is scored on the clean image it was trained on
        result = evaluate(model, samples, task="denoise", device=device, tile="auto",
                          clean_input=name == "teacher_b", on_image=keep)
        for row in result.rows:
            per_image[row["name"]][name] = {"psnr": row["psnr"], "ssim": row["ssim"]}
        means[name] = result.mean
    return {"means": means, "per_image": per_image}, shown


def _profile(models: dict[str, torch.nn.Module], runs: int) -> dict[str, dict]:
    """Parameters, MACs and CPU latency at 256×256, timed interleaved in one process."""
    rows = {}
    for name, model in models.items():
        arch = TEACHER if name.startswith("teacher") else STUDENT
        options = {"global_residual": False} if name == "teacher_b" else {}
        with torch.device("meta"):
            shape_only = build_model(arch, **options)
        rows[name] = {"architecture": arch, "params": count_parameters(model),
                      "macs_256": count_macs(shape_only, (1, 3, 256, 256), device="meta").total}
    cpu = {name: model.to("cpu") for name, model in models.items()}
    timings = compare_latency(cpu, (1, 3, 256, 256), runs=runs, warmup=1)
    for name, t in timings.items():
        rows[name].update(latency_ms_256=t.median_ms, latency_threads=t.threads)
    return rows


# ------------------------------------------------------------------------------ report
def _fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _report(out: Path, summary: dict, shown: dict, curves: Path) -> Path:
    models = summary["models"]
    rows = []
    for name in MODELS:
        m = models[name]
        rows.append([LABELS[name] + (" ¹" if name == "teacher_b" else ""),
                     m.get("architecture", "–"),
                     _fmt(m["params"] / 1e6 if m["params"] else None, ".3f"),
                     _fmt(m["macs_256"] / 1e9 if m["macs_256"] else None, ".2f"),
                     _fmt(m.get("latency_ms_256"), ".1f"),
                     _fmt(m["psnr"], ".2f"), _fmt(m["ssim"], ".4f"),
                     _fmt(m.get("train_iters"), "d"), _fmt(m.get("train_seconds"), ".0f")])
    table = markdown_table(["model", "architecture", "params (M)", "MACs @256² (G)", "CPU latency @256² (ms)",
                            "PSNR (dB)", "SSIM", "iterations", "train time (s)"], rows, "llrrrrrrr")
    names = list(shown)
    grid_cols = ["input", "teacher_a", "student_slkd", "student_scratch", "ground_truth"]
    per = summary["evaluation"]["per_image"]
    grid = image_grid([[shown[n][c] for c in grid_cols] for n in names],
                      [LABELS[c] for c in grid_cols], out / "grid.png", row_labels=names,
                      captions=[[f"{per[n][c]['psnr']:.2f} dB" if c in per[n] else "" for c in grid_cols]
                                for n in names])
    per_rows = [[n] + [f"{per[n][m]['psnr']:.2f}" for m in MODELS] for n in names]
    per_table = markdown_table(["image"] + [LABELS[m] for m in MODELS], per_rows)
    c = summary["comparison"]
    s = summary["settings"]
    text = f"""# slkd demo — SLKD vs scratch, σ = {s['sigma']:g} colour denoising

Command: `{s['command']}` ({summary['seconds'] / 60:.1f} min on {s['machine']}).
Training images: {s['train_data']}; held-out: {', '.join(names)} (test noise seeded as in
`slkd eval`, RGB PSNR/SSIM on uint8-quantised outputs). Patch {s['patch']}, batch {s['batch']},
seed {s['seed']}.

{table}
¹ Teacher B is a clean → clean network: its PSNR is the reconstruction of the *clean* held-out
image (its training task), not denoising. MACs count convolutions and attention matmuls at
1×3×256×256; latency is the median of {s['latency_runs']} CPU runs of all models interleaved
({models['teacher_a']['latency_threads']} threads).

**Result.** {c['sentence']}

The student has {100 * c['params_reduction']:.1f}% fewer parameters and {100 * c['macs_reduction']:.1f}% fewer
MACs than the teachers and runs {c['speedup']:.2f}× faster here.

## Held-out images (PSNR, dB)

{per_table}
![comparison grid (central crops)]({grid.name})

## Training curves

![training curves]({curves.name})

Run folders (configs, checkpoints, metrics.jsonl, weights.pth) are in `{out}`; rerun a stage with
`slkd train --config {out}/configs/teacher_a.yaml` (or `slkd distill` for `student_slkd`).
One demo run is one seed on a handful of images: use `benchmarks/` for claims.
"""
    path = out / "report.md"
    atomic_write_bytes(path, text.encode())
    return path


def _sentence(means: dict, n_images: int) -> str:
    d = means["student_slkd"]["psnr"] - means["student_scratch"]["psnr"]
    if abs(d) < 0.05:
        verdict = "SLKD and scratch are level"
    elif d > 0:
        verdict = "SLKD beat the scratch student"
    else:
        verdict = "SLKD did not beat the scratch student"
    gap = means["teacher_a"]["psnr"] - means["student_slkd"]["psnr"]
    return (f"{verdict} on these {n_images} held-out image(s): {means['student_slkd']['psnr']:.2f} vs "
            f"{means['student_scratch']['psnr']:.2f} dB ({d:+.2f} dB) at equal iterations and data; "
            f"the SLKD student is {gap:.2f} dB below Teacher A. One seed and a few images: a "
            f"difference of a few tenths of a dB is within run-to-run noise.")


# ------------------------------------------------------------------------------ main
def run(args) -> int:
    t0 = time.perf_counter()
    out = Path(args.out)
    plan = PLANS["quick" if args.quick else "default"]
    if args.iters_scale <= 0:
        raise SlkdError(f"--iters-scale must be > 0, got {args.iters_scale}")
    if args.eval_images is not None and args.eval_images < 1:
        raise SlkdError(f"--eval-images must be >= 1, got {args.eval_images}")
    if args.held_out and not args.data:
        raise SlkdError("--held-out needs --data")
    device = resolve_device(args.device)
    _check_out(out, [Path(p) for p in (args.data, args.held_out) if p])
    if args.data:
        train_root, exclude, held_out = _user_data(Path(args.data), Path(args.held_out) if args.held_out else None)
        held_out = held_out[: args.eval_images or 10]
        described = f"{train_root}" + (f" minus {len(exclude)} held-out" if exclude else "")
    else:
        train_root, exclude, held_out = _bundled(out)
        held_out = held_out[: args.eval_images or len(held_out)]
        described = f"{', '.join(TRAIN_IMAGES)} (bundled)"
    if not held_out:
        raise SlkdError("no held-out images found")
    _check_held_out(held_out)
    configs = _configs(out, train_root, exclude, plan, args.iters_scale, args.seed)
    stages = [("teacher_a", "Teacher A: restormer-tiny, noisy → clean", supervised_task, ("teacher_a",)),
              ("teacher_b", "Teacher B: restormer-tiny without residual, clean → clean", supervised_task,
               ("teacher_b",)),
              ("student_slkd", "student res-sl-tiny distilled with SLKD", distiller_task, ("distill",)),
              ("student_scratch", "student res-sl-tiny from scratch (L1)", supervised_task, ("scratch",))]
    timing: dict[str, float] = {}
    for k, (stage, what, make_task, roles) in enumerate(stages, 1):
        path = _write_config(out, stage, configs[stage])
        run_dir = out / stage
        resume = (run_dir / "checkpoint.pt").is_file()
        iters = configs[stage]["train"]["iters"]
        note(f"[{k}/6] {what}, {iters} iterations" + (" (resuming / reusing)" if resume else ""))
        start = time.perf_counter()
        train_run(argparse.Namespace(config=str(path), resume=resume, device=args.device, overrides=[]),
                  roles=roles, command="demo", make_task=make_task)
        timing[stage] = time.perf_counter() - start

    note(f"[5/6] evaluating on {len(held_out)} held-out image(s) with σ={SIGMA:g} noise and profiling at 256×256")
    models = {stage: _load(stage, out, {"global_residual": False} if stage == "teacher_b" else {}, device)
              for stage, *_ in stages}
    evaluation, shown = _evaluate(models, held_out, device, out)
    profile = _profile(models, plan.latency_runs)

    note("[6/6] writing summary.json, report.md, grid.png and curves.png")
    means = evaluation["means"]
    summary_models = {"input": {"architecture": "–", "params": 0, "macs_256": 0, "latency_ms_256": None,
                                **means["input"]}}
    for stage, *_ in stages:
        summary_models[stage] = {**profile[stage], **means[stage],
                                 "evaluated_on": "clean held-out images (reconstruction)" if stage == "teacher_b"
                                 else f"noisy held-out images (σ={SIGMA:g})",
                                 "train_iters": configs[stage]["train"]["iters"],
                                 "train_seconds": timing[stage], "run_dir": str(out / stage)}
    t, st = profile["teacher_a"], profile["student_slkd"]
    comparison = {
        "slkd_minus_scratch_psnr": means["student_slkd"]["psnr"] - means["student_scratch"]["psnr"],
        "slkd_minus_scratch_psnr_per_image": {n: r["student_slkd"]["psnr"] - r["student_scratch"]["psnr"]
                                              for n, r in evaluation["per_image"].items()},
        "teacher_a_minus_slkd_psnr": means["teacher_a"]["psnr"] - means["student_slkd"]["psnr"],
        "params_reduction": 1 - st["params"] / t["params"],
        "macs_reduction": 1 - st["macs_256"] / t["macs_256"],
        "speedup": t["latency_ms_256"] / st["latency_ms_256"],
        "sentence": _sentence(means, len(held_out)),
    }
    argv = ["slkd", "demo"] + (["--quick"] if args.quick else []) + (
        [f"--data {args.data}"] if args.data else []) + (
        [f"--iters-scale {args.iters_scale:g}"] if args.iters_scale != 1 else [])
    summary = {
        "settings": {"command": " ".join(argv), "sigma": SIGMA, "seed": args.seed, "patch": plan.patch,
                     "batch": plan.batch, "latency_runs": plan.latency_runs, "train_data": described,
                     "held_out": [p.name for p in held_out], "device": str(device),
                     "machine": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"},
        "models": summary_models,
        "comparison": comparison,
        "evaluation": evaluation,
        "seconds": time.perf_counter() - t0,
    }
    if not all(math.isfinite(summary_models[m]["psnr"]) for m in MODELS):
        raise SlkdError("demo produced a non-finite PSNR; this is a bug, please report it")
    curves = plot_curves({LABELS[s]: out / s for s in ("teacher_a", "student_slkd", "student_scratch")},
                         out / "curves.png", terms_of=LABELS["student_slkd"])
    report = _report(out, summary, shown, curves)
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    print(f"{'model':<20}{'params':>10}{'GMACs@256':>11}{'ms@256':>9}{'PSNR':>8}{'SSIM':>8}")
    for name in MODELS:
        m = summary_models[name]
        print(f"{LABELS[name]:<20}{m['params'] / 1e6:>9.3f}M{m['macs_256'] / 1e9:>11.2f}"
              f"{_fmt(m['latency_ms_256'], '.1f'):>9}{m['psnr']:>8.2f}{m['ssim']:>8.4f}")
    print(comparison["sentence"])
    print(f"report: {report}  summary: {out / 'summary.json'}  ({summary['seconds'] / 60:.1f} min)")
    return 0
