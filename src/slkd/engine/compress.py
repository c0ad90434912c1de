"""The compression pipeline: a trained restoration network and a folder of data in, a distilled
student, its evaluation and a report out. ``slkd compress`` (and ``slkd demo``) call it.

For a :class:`Job` — Teacher A (a preset and its weights, official checkpoints included, or a
preset trained here first), a task, training data and validation data — :func:`run_job`

1. checks everything a user can get wrong before any training (:func:`prepare`): unknown
   models or methods, weights that do not fit, missing folders, unpaired names, pairs of two
   sizes, unreadable images, an output folder holding other files or other settings — each one
   :class:`~slkd.errors.SlkdError` line;
2. trains the stages, each an ordinary run folder of the training engine
   (:func:`slkd.engine.runner.run_config`): Teacher A if no weights were given, Teacher B
   (clean → clean, from Teacher A, when the method runs one: its config's ``teacher_roles()``),
   the student distilled with the method, and optionally the same student from scratch. A
   finished stage is skipped and an interrupted one resumed, so rerunning the same job
   continues it; every stage prints its progress with an ETA;
3. evaluates the degraded input and every model on each validation set with the task's metric
   convention (:class:`slkd.engine.evaluation.Convention`), profiles them (parameters, MACs and
   CPU latency at 256², side by side) and writes ``student.safetensors``, ``student.onnx`` (when
   the ``export`` extra is installed), ``summary.json``, ``report.md``, ``grid.png`` and
   ``curves.png``.

Data: training data is a paired folder in any layout ``slkd eval`` reads
(:data:`slkd.data.folders.PAIRED_LAYOUTS`), or, for denoising, a folder of clean images to which
Gaussian noise of ``sigma`` is added on the fly. Validation data is one such set, a folder of
sets (Restormer's ``Datasets/test/``), or a list of clean image files (denoising).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml

from slkd.data.folders import PAIRED_LAYOUTS, EvalItem, EvalSamples, scan_eval_sets
from slkd.data.image_io import write_image
from slkd.data.selection import collect_images
from slkd.distill import DEFAULT_METHOD, distill_config, registered_methods
from slkd.engine.builders import build_dataset
from slkd.engine.distributed import barrier, init_distributed, shutdown
from slkd.engine.config import DatasetConfig, TrainRunConfig, from_dict, parse_yaml, to_dict
from slkd.engine.evaluation import Convention, evaluate
from slkd.engine.report import image_grid, markdown_table, plot_curves
from slkd.engine.runner import run_config
from slkd.engine.runstate import CHECKPOINT, CONFIG, WEIGHTS, config_changes, earlier_run_files
from slkd.engine.tasks import distiller_task, supervised_task
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes, remove_stale_temps
from slkd.metrics import BENCHMARK_TASKS, task_uses_y_channel
from slkd.metrics.fullref import SSIM_WINDOW
from slkd.models.export import sha256_file
from slkd.models import (
    build_model,
    compare_latency,
    count_macs,
    count_parameters,
    default_student,
    get_preset,
    input_channels,
    load_pretrained,
    read_state_dict,
    save_weights,
    weights_path,
)
from slkd.models.registry import variant_overrides

__all__ = ["Job", "PLANS", "Plan", "Prepared", "StagePlan", "check_out", "prepare", "run_job"]

Log = Callable[[str], None]

#: the file in the output folder that records a job's settings (compared on every rerun)
SETTINGS_FILE = "compress.json"
#: training seconds of each stage, added up over reruns (a resumed stage's time is the sum)
TIMES_FILE = "stage_seconds.json"
#: what the pipeline writes into the output folder besides the stages' run folders
OUT_FILES = frozenset({SETTINGS_FILE, TIMES_FILE, "configs", "images", "report.md", "summary.json", "grid.png",
                       "curves.png", "student.safetensors", "student.onnx"})
#: how the degraded input is called in reports, per task
INPUT_LABELS = {"denoise": "noisy input", "derain": "rainy input", "deblur": "blurred input",
                "dehaze": "hazy input", "real": "noisy input"}
#: rows of the comparison grid
GRID_ROWS = 4


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _silent(message: str) -> None:
    pass


# --------------------------------------------------------------------------------------------
# What to train
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagePlan:
    """Iterations and peak learning rate of one stage (cosine schedule, 5 % warm-up)."""

    iters: int
    lr: float


@dataclass(frozen=True)
class Plan:
    """How long and how every stage trains. ``teacher_a`` is used only when Teacher A is
    trained here (a job without weights)."""

    student: StagePlan
    teacher_b: StagePlan
    teacher_a: StagePlan | None = None
    patch: int = 128
    batch: int = 8
    #: the papers' recipe: Adam (β 0.9, 0.999) with weight decay, cosine annealing
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    #: validation images per set while training (None: no validation while training)
    val_images: int | None = None
    #: timed runs per model for the latency column
    latency_runs: int = 5

    def with_student_iters(self, iters: int) -> "Plan":
        """This plan with ``iters`` student iterations and the teachers' scaled alike."""
        scale = iters / self.student.iters

        def scaled(stage: StagePlan | None) -> StagePlan | None:
            return None if stage is None else replace(stage, iters=max(1, round(stage.iters * scale)))

        return replace(self, student=replace(self.student, iters=iters),
                       teacher_b=scaled(self.teacher_b), teacher_a=scaled(self.teacher_a))


#: ``default``: the papers' recipe at a length that suits a GPU (batch 8, patch 128; hours on
#: a CPU for full-size networks); ``quick``: a few minutes, to see the whole pipeline work
PLANS = {
    "default": Plan(student=StagePlan(20000, 2e-4), teacher_b=StagePlan(5000, 1e-4),
                    teacher_a=StagePlan(20000, 3e-4), patch=128, batch=8, val_images=16,
                    latency_runs=5),
    "quick": Plan(student=StagePlan(100, 1e-3), teacher_b=StagePlan(40, 1e-4),
                  teacher_a=StagePlan(120, 2e-3), patch=32, batch=8, val_images=None,
                  latency_runs=3),
}


@dataclass
class Job:
    """One compression job (see the module docstring)."""

    #: Teacher A's preset
    teacher: str
    #: its weights (a file, official checkpoints included, or a run folder); None trains
    #: Teacher A here first (``plan.teacher_a``)
    weights: str | Path | None
    #: one of :data:`slkd.metrics.BENCHMARK_TASKS`; sets the metric convention
    task: str
    #: a paired folder, or (denoising) a folder of clean images, searched recursively
    train: str | Path
    #: a set, a folder of sets, or a list of clean image files (denoising)
    val: str | Path | Sequence[str | Path]
    out: str | Path
    student: str | None = None
    method: str = DEFAULT_METHOD
    plan: Plan = PLANS["default"]
    compare_scratch: bool = False
    #: Gaussian noise of clean images (training and validation), on the 0-255 scale; None = 25
    #: where it is needed and an error where the data are pairs
    sigma: float | None = None
    seed: int = 0
    #: at most this many images per validation set
    eval_images: int | None = None
    #: file stems left out of a clean training folder (e.g. the held-out images)
    train_exclude: Sequence[str] | None = None
    #: restored images written per validation set and model (None: all)
    save_images: int | None = GRID_ROWS
    #: how the command is shown in the report
    command: str = ""
    #: other entries of ``out`` the caller writes (they do not make the folder foreign)
    extra_entries: frozenset = frozenset()
    #: names for the report (None: the task's)
    input_label: str | None = None


@dataclass
class Stage:
    name: str
    what: str
    config: dict
    cfg: TrainRunConfig
    make_task: Callable


@dataclass
class Prepared:
    """What :func:`prepare` checked and decided; :func:`run_job` trains and reports it."""

    job: Job
    out: Path
    student: str
    teacher_options: dict
    teacher_weights: Path | None
    stages: list[Stage]
    eval_sets: dict[str, EvalSamples]
    train_described: str
    settings: dict
    sigma: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def student_stage(self) -> str:
        return f"student_{self.job.method}"


# --------------------------------------------------------------------------------------------
# Checks before anything is trained
# --------------------------------------------------------------------------------------------


def _load_teacher(job: Job) -> tuple[torch.nn.Module, dict, Path | None]:
    """Teacher A as given (its weights must fit the named preset), the preset options an
    official checkpoint of another variant needs, and the weights file."""
    if job.weights is None:
        return build_model(job.teacher), {}, None
    where = f"teacher {job.teacher}:{job.weights}"
    try:
        path = weights_path(job.weights)
        state, _ = read_state_dict(path)
        options = variant_overrides(job.teacher, state)
        del state
        model = load_pretrained(job.teacher, path, options=options)
    except SlkdError as exc:
        raise SlkdError(f"{where}: {exc}") from None
    return model, options, path


def _paired_layout(train: Path) -> tuple[str, str] | None:
    """The paired layout of a training folder (the first of PAIRED_LAYOUTS it has), or None."""
    return next(((d, c) for d, c in PAIRED_LAYOUTS if (train / d).is_dir() and (train / c).is_dir()), None)


def _train_data(job: Job, train: Path, sigma: float) -> tuple[dict, str, bool]:
    """The training data set of every stage (a config node), how it is described, and whether
    it is synthesised from clean images."""
    layout = _paired_layout(train)
    if layout is not None:
        if job.train_exclude:
            raise SlkdError("train_exclude applies to folders of clean images only")
        data = {"type": "paired", "roots": [str(train.resolve())],
                "patch_size": job.plan.patch, "augment": True}
        return data, f"{train} ({layout[0]}/ → {layout[1]}/ pairs)", False
    if not collect_images(train, recursive=True):
        raise SlkdError(f"training data {train}: no images and no paired layout; expected pairs in "
                        + ", ".join(f"{a}/+{b}/" for a, b in PAIRED_LAYOUTS)
                        + " or, for --task denoise, a folder of clean images")
    if job.task != "denoise":
        raise SlkdError(f"training data {train} holds clean images only, no degraded/clean pairs "
                        f"(input/+target/, hazy/+clear/ …); --task {job.task} needs pairs (noise "
                        "can be synthesised for --task denoise)")
    data = {"type": "degraded", "roots": [str(train.resolve())], "recursive": True,
            "degradation": {"name": "gaussian_noise", "params": {"sigma": sigma}},
            "patch_size": job.plan.patch, "augment": True}
    if job.train_exclude:
        data["exclude"] = list(job.train_exclude)
    return data, f"{train} (clean images, Gaussian noise σ={sigma:g})", True


def _val_reads(job: Job) -> list[Path]:
    """The folders the validation data are read from."""
    if isinstance(job.val, (str, os.PathLike)):
        return [Path(os.path.expanduser(str(job.val)))]
    return sorted({Path(os.path.expanduser(str(p))).parent for p in job.val})


def _eval_sets(job: Job, sigma: float) -> tuple[dict[str, EvalSamples], bool]:
    """The validation sets as evaluation samples, every image read now (unreadable files,
    pairs of two sizes and images too small for SSIM are refused before training), and
    whether any set is made of clean images (noise synthesised)."""
    if isinstance(job.val, (str, os.PathLike)):
        root = Path(os.path.expanduser(str(job.val)))
        if not root.is_dir():
            raise SlkdError(f"validation data {root}: folder not found")
        try:
            folders = scan_eval_sets(root)
        except SlkdError as exc:
            raise SlkdError(f"validation data {root}: {exc}") from None
        sets = {name: (f.items, f.layout, f.root) for name, f in folders.items()}
    else:
        files = [Path(os.path.expanduser(str(p))) for p in job.val]
        if not files:
            raise SlkdError("validation data: no images")
        missing = [str(p) for p in files if not (p.is_file() or p.is_symlink())]
        if missing:
            raise SlkdError(f"validation data: file(s) not found: {', '.join(missing[:5])}")
        sets = {"held_out": (tuple(EvalItem(p.stem, None, p) for p in files), "clean-only", None)}
    samples: dict[str, EvalSamples] = {}
    synthetic = False
    for name, (items, layout, where) in sets.items():
        label = f"validation set {name}" + (f" ({where})" if where is not None else "")
        if layout == "degraded-only":
            raise SlkdError(f"{label} holds degraded images only, no clean targets to score against")
        if layout == "clean-only":
            if job.task != "denoise":
                raise SlkdError(f"{label} holds clean images only; --task {job.task} needs "
                                "degraded/clean pairs (noise can be synthesised for --task denoise)")
            synthetic = True
        items = tuple(items)[: job.eval_images] if job.eval_images else tuple(items)
        seen: dict[str, Any] = {}
        for item in items:
            if item.name in seen:
                raise SlkdError(f"{label}: {seen[item.name]} and {item.degraded or item.clean} have "
                                f"the same name {item.name!r}; their outputs would overwrite each other")
            seen[item.name] = item.degraded or item.clean
        set_samples = EvalSamples(items, job.task, sigma=sigma, seed=0)
        for i in range(len(set_samples)):
            try:
                sample = set_samples[i]  # decodes both files and compares their sizes
            except SlkdError as exc:
                raise SlkdError(f"{label}: {exc}") from None
            h, w = sample["gt"].shape[-2:]
            if min(h, w) < SSIM_WINDOW:
                raise SlkdError(f"{label}: {items[i].name} is {w}×{h}; SSIM needs at least "
                                f"{SSIM_WINDOW}×{SSIM_WINDOW} pixels")
        samples[name] = set_samples
    return samples, synthetic


def check_out(out: Path, reads: Sequence[Path], extra_entries: frozenset | set = frozenset()) -> None:
    """The pipeline writes only inside ``out``, which must be new, empty or an earlier job's
    folder (``extra_entries``: what the caller writes there besides), and never inside the
    folders it reads."""
    if out.exists() and not out.is_dir():
        raise SlkdError(f"--out {out} is a file; give a folder")
    stages = {f"student_{m}" for m in registered_methods()} | {"teacher_a", "teacher_b", "student_scratch"}
    allowed = OUT_FILES | stages | set(extra_entries)
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in allowed and not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:5]) + (" …" if len(foreign) > 5 else "")
            raise SlkdError(f"--out {out} holds files slkd did not write there ({shown}); give a new "
                            "or empty folder, or an earlier run's (nothing was written)")
    target = out.resolve()
    for folder in reads:
        source = folder.resolve()
        if target == source or source in target.parents:
            raise SlkdError(f"--out {out} is inside {folder}, whose images are read: its outputs "
                            "would become data of the next run; give a folder outside it")


def _differences(changes: dict[str, tuple[Any, Any]], limit: int = 4) -> str:
    shown = "; ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in list(changes.items())[:limit])
    return shown + (f"; … ({len(changes)} in all)" if len(changes) > limit else "")


def _check_earlier(out: Path, settings: dict, stages: list[Stage]) -> None:
    """Refuse to continue in ``out`` with other settings than the job that wrote it (its
    settings file, and each stage's stored config), naming what differs."""
    recorded = out / SETTINGS_FILE
    if recorded.is_file():
        try:
            before = json.loads(recorded.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SlkdError(f"{recorded} cannot be read ({exc}); give a new --out") from None
        changes = config_changes(before, settings)
        if changes:
            raise SlkdError(f"--out {out} holds a run with other settings ({_differences(changes)}); "
                            "rerun the same command to continue it, or give a new --out (nothing "
                            "was changed)")
    for stage in stages:
        stored = out / stage.name / CONFIG
        if not stored.is_file():
            continue
        try:
            before = to_dict(from_dict(TrainRunConfig, parse_yaml(stored.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, ValueError, SlkdError) as exc:
            raise SlkdError(f"{stored} cannot be read to compare its settings ({exc}); give a new "
                            "--out") from None
        changes = {k: v for k, v in config_changes(before, to_dict(stage.cfg)).items()
                   if k not in ("name", "output_dir")}
        if changes:
            raise SlkdError(f"--out {out} holds a {stage.name} run with other settings "
                            f"({_differences(changes)}); rerun the same command to continue it, or "
                            "give a new --out (nothing was changed)")


def _train_node(plan: StagePlan, job: Job, val: bool) -> dict:
    n, lr = plan.iters, plan.lr
    optimizer = {"type": job.plan.optimizer, "lr": lr, "weight_decay": job.plan.weight_decay}
    return {"iters": n, "optimizer": optimizer,
            "scheduler": {"type": "cosine", "warmup_iters": max(1, n // 20), "min_lr": lr / 100},
            "loss": "l1", "log_every": min(max(1, n // 10), 100),
            "val_every": max(1, n // 4) if val else n, "ckpt_every": min(max(1, n // 4), 1000)}


def _val_nodes(job: Job, sigma: float | None) -> list[dict]:
    """Validation while training: every folder set, ``plan.val_images`` images each."""
    if job.plan.val_images is None or not isinstance(job.val, (str, os.PathLike)):
        return []
    nodes = []
    for name, folder in scan_eval_sets(Path(os.path.expanduser(str(job.val)))).items():
        root = str(folder.root.resolve())
        if folder.paired:
            node = {"name": name, "type": "paired", "roots": [root]}
        else:
            node = {"name": name, "type": "degraded", "roots": [root],
                    "degradation": {"name": "gaussian_noise", "params": {"sigma": sigma}}}
        limit = min(job.plan.val_images, job.eval_images or job.plan.val_images)
        node["limit"] = limit
        nodes.append(node)
    return nodes


def _stages(job: Job, student: str, options: dict, weights: Path | None, data: dict,
            val: list[dict], out: Path) -> list[Stage]:
    runs = str(out.resolve())
    common = {"seed": job.seed, "output_dir": runs}
    method = distill_config(job.method)
    roles = method.teacher_roles()
    plan = job.plan
    teacher_a_weights = str(weights) if weights is not None else f"{runs}/teacher_a"
    teacher_b_options = {**options, "global_residual": False}

    def data_node() -> dict:
        return {"train": dict(data), "val": [dict(v) for v in val], "batch_size": plan.batch}

    evaluated = {"eval": {"task": job.task}} if job.task != "denoise" else {}
    stages: list[tuple[str, str, dict, Callable]] = []
    if weights is None:
        if plan.teacher_a is None:
            raise SlkdError("Teacher A has no weights and the plan does not train one")
        model = {"name": job.teacher, **({"options": dict(options)} if options else {})}
        stages.append(("teacher_a", f"Teacher A: {job.teacher}, degraded → clean",
                       {"name": "teacher_a", "role": "teacher_a", **common, "model": model,
                        "data": data_node(), "train": _train_node(plan.teacher_a, job, bool(val)),
                        **evaluated}, supervised_task))
    teachers = {"a": {"name": job.teacher, "weights": teacher_a_weights,
                      **({"options": dict(options)} if options else {})}}
    if "b" in roles:
        reconstruct = {"task": "reconstruct"}
        if task_uses_y_channel(job.task):  # Teacher B is scored as the task is (derain: Y)
            reconstruct["y_channel"] = True
        stages.append(("teacher_b", f"Teacher B: {job.teacher} without its global residual, clean → "
                       "clean, from Teacher A",
                       {"name": "teacher_b", "role": "teacher_b", **common,
                        "model": {"name": job.teacher, "options": teacher_b_options,
                                  "init_from": teacher_a_weights},
                        "data": data_node(), "train": _train_node(plan.teacher_b, job, bool(val)),
                        "eval": reconstruct}, supervised_task))
        teachers["b"] = {"name": job.teacher, "weights": f"{runs}/teacher_b", "options": teacher_b_options}
    name = f"student_{job.method}"
    stages.append((name, f"student {student} distilled with {job.method}",
                   {"name": name, "role": "distill", **common, "model": {"name": student},
                    "teachers": teachers, "distill": {"method": job.method},
                    "data": data_node(), "train": _train_node(plan.student, job, bool(val)), **evaluated},
                   distiller_task))
    if job.compare_scratch:
        stages.append(("student_scratch", f"student {student} from scratch (L1)",
                       {"name": "student_scratch", "role": "scratch", **common, "model": {"name": student},
                        "data": data_node(), "train": _train_node(plan.student, job, bool(val)), **evaluated},
                       supervised_task))
    built = []
    for stage_name, what, config, make_task in stages:
        try:
            cfg = from_dict(TrainRunConfig, config)
        except SlkdError as exc:
            raise SlkdError(f"stage {stage_name}: {exc}") from None
        built.append(Stage(stage_name, what, config, cfg, make_task))
    return built


def prepare(job: Job, log: Log | None = _stderr) -> Prepared:
    """Check the job and decide its stages; nothing is written. Every problem a user can
    cause is one :class:`~slkd.errors.SlkdError` line."""
    if job.task not in BENCHMARK_TASKS:
        raise SlkdError(f"unknown task {job.task!r}; known: {', '.join(BENCHMARK_TASKS)}")
    if job.method not in registered_methods():
        raise SlkdError(f"unknown method {job.method!r}; known: {', '.join(registered_methods())}")
    if job.method == "scratch" and job.compare_scratch:
        raise SlkdError("--compare-scratch with --method scratch would train the same student twice")
    get_preset(job.teacher)
    student = job.student or default_student(job.teacher)
    get_preset(student)
    out = Path(os.path.expanduser(str(job.out)))
    if out.exists() and not out.is_dir():
        raise SlkdError(f"--out {out} is a file; give a folder")
    train_path = Path(os.path.expanduser(str(job.train)))
    if not train_path.is_dir():
        raise SlkdError(f"training data {train_path}: folder not found")
    if isinstance(job.val, (str, os.PathLike)) and not Path(os.path.expanduser(str(job.val))).is_dir():
        raise SlkdError(f"validation data {job.val}: folder not found")

    notes: list[str] = []
    teacher, options, weights = _load_teacher(job)
    with torch.device("meta"):
        student_shape = build_model(student)
    if input_channels(teacher) != 3 or input_channels(student_shape) != 3:
        raise SlkdError(f"compress works on RGB images: teacher {job.teacher} takes "
                        f"{input_channels(teacher)} channel(s), student {student} "
                        f"{input_channels(student_shape)}")
    if job.student is not None:
        reduction = 1 - count_parameters(student_shape) / count_parameters(teacher)
        if reduction < 0.8:
            notes.append(f"note: student {student} has {100 * reduction:.0f} % fewer parameters than "
                         f"{job.teacher}, less than the 80 % slkd's presets are sized for")
    del teacher, student_shape

    # the layouts first (cheap), then every image is read: noise is synthesised for clean
    # images (training or validation); pairs are degraded already
    given_sigma = 25.0 if job.sigma is None else job.sigma
    data, described, clean_train = _train_data(job, train_path, given_sigma)
    check_out(out, [train_path, *_val_reads(job)], job.extra_entries)
    eval_sets, clean_val = _eval_sets(job, given_sigma)
    if not (clean_train or clean_val) and job.sigma is not None:
        raise SlkdError("--sigma is for clean images (noise added here), but the training and "
                        "validation data are degraded/clean pairs already")
    sigma = given_sigma if clean_train or clean_val else None

    # the training images: unreadable files, unpaired names, pairs of two sizes and images
    # smaller than the patch are refused now, not when the first stage starts
    try:
        train_set = build_dataset(from_dict(DatasetConfig, data, "data.train"), Path("."),
                                  train=True, where="training data")
    except SlkdError as exc:
        message = str(exc)
        if "smaller than the" in message:
            message += f" (use a smaller --patch than {job.plan.patch})"
        raise SlkdError(message) from None
    described += f", {len(train_set)} training {'images' if clean_train else 'pairs'}"
    del train_set

    val_nodes = _val_nodes(job, sigma)
    stages = _stages(job, student, options, weights, data, val_nodes, out)
    settings = {
        "teacher": job.teacher,
        "teacher_weights": None if weights is None else str(weights.resolve()),
        "teacher_weights_sha256": None if weights is None else sha256_file(weights),
        "teacher_options": options, "task": job.task, "train": str(train_path.resolve()),
        "train_exclude": list(job.train_exclude or []),
        "val": (str(Path(os.path.expanduser(str(job.val))).resolve()) if isinstance(job.val, (str, os.PathLike))
                else [str(Path(p).resolve()) for p in job.val]),
        "student": student, "method": job.method, "compare_scratch": job.compare_scratch,
        "sigma": sigma, "seed": job.seed, "eval_images": job.eval_images,
        # Teacher A's plan matters only when it is trained here
        "plan": json.loads(json.dumps(asdict(job.plan if weights is None else replace(job.plan, teacher_a=None)))),
    }
    _check_earlier(out, settings, stages)
    return Prepared(job=job, out=out, student=student, teacher_options=options, teacher_weights=weights,
                    stages=stages, eval_sets=eval_sets, train_described=described, settings=settings,
                    sigma=sigma, notes=notes)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _finished(run_dir: Path, iters: int) -> bool:
    """The stage's run reached ``iters`` and saved it (its last checkpoint event)."""
    if not (run_dir / CHECKPOINT).is_file() or not (run_dir / WEIGHTS).is_file():
        return False
    last = -1
    try:
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "checkpoint":
                last = max(last, int(event.get("step", -1)))
    except OSError:
        return False
    return last >= iters


def _clear_unstarted(run_dir: Path) -> None:
    """A stage folder with run files but no checkpoint holds no trained weights (a stop before
    the first checkpoint): remove those files so the stage starts again."""
    for name in earlier_run_files(run_dir):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    remove_stale_temps(run_dir, [CHECKPOINT, WEIGHTS, "metrics.jsonl"])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _stage_seconds(out: Path) -> dict[str, float]:
    try:
        data = json.loads((out / TIMES_FILE).read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def train_stages(prep: Prepared, *, device: str = "auto", log: Log = _stderr) -> dict[str, float]:
    """Train every stage, resume an interrupted one, skip a finished one; returns each stage's
    training seconds (over every run of the job)."""
    out = prep.out
    total = len(prep.stages) + 2
    seconds = _stage_seconds(out)
    dist = init_distributed(device)  # under torchrun: one process group for every stage
    rank0 = dist.is_main
    try:
        if rank0:
            atomic_write_bytes(out / SETTINGS_FILE, json.dumps({"settings": prep.settings}, indent=2).encode())
        for k, stage in enumerate(prep.stages, 1):
            run_dir = out / stage.name
            iters = stage.cfg.train.iters
            resume = (run_dir / CHECKPOINT).is_file()
            if rank0:
                log(f"[{k}/{total}] {stage.what}, {iters} iterations" + (" (resuming / reusing)" if resume else ""))
                atomic_write_bytes(out / "configs" / f"{stage.name}.yaml",
                                   yaml.safe_dump(stage.config, sort_keys=False).encode())
            if resume and _finished(run_dir, iters):
                if rank0:
                    log(f"      finished earlier ({iters} iterations in {run_dir}); skipped")
                continue
            if not resume and rank0 and earlier_run_files(run_dir):
                _clear_unstarted(run_dir)
            barrier()  # every rank sees the cleared folder before the trainer checks it
            start = time.perf_counter()
            try:
                run_config(stage.cfg, make_task=stage.make_task, resume=resume, device=device,
                           log=log if rank0 else _silent)
            finally:  # also when stopped: the time spent counts when the stage resumes
                elapsed = time.perf_counter() - start
                seconds[stage.name] = seconds.get(stage.name, 0.0) + elapsed
                if rank0:
                    atomic_write_bytes(out / TIMES_FILE, json.dumps(seconds, indent=2).encode())
            if rank0:
                log(f"      {stage.name} done in {_duration(elapsed)}")
        barrier()
    finally:
        shutdown()
    return seconds


# --------------------------------------------------------------------------------------------
# Evaluation, profile, export, report
# --------------------------------------------------------------------------------------------


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
                        f"{_duration(spent / (i + 1) * (len(samples) - i - 1))}")
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
    out, job = prep.out, prep.job
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
`{s['method']}`. Training data: {s['train_data']}; patch {s['patch']}, batch {s['batch']}, seed
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


def finish(prep: Prepared, timing: dict[str, float], *, device: str = "auto", log: Log = _stderr,
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


def run_job(job: Job, *, device: str = "auto", log: Log = _stderr) -> dict | None:
    """:func:`prepare`, train every stage, then evaluate, profile, export and report. Returns
    the summary on rank 0 (None on the other ranks of ``torchrun``)."""
    t0 = time.perf_counter()
    prep = prepare(job, log)
    if int(os.environ.get("RANK", "0")) != 0:
        log = _silent  # ranks of torchrun other than 0 train quietly
    for note in prep.notes:
        log(note)
    log(f"{job.teacher} → {prep.student} ({job.method}), {job.task}; training data: {prep.train_described}; "
        "validation: " + ", ".join(f"{n} ({len(s)} image(s))" for n, s in prep.eval_sets.items()))
    timing = train_stages(prep, device=device, log=log)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    return finish(prep, timing, device=device, log=log, started=t0)
