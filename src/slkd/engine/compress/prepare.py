"""Every check a user can fail, before anything is trained, and the stages a job trains:
:func:`prepare` turns a :class:`~slkd.engine.compress.plan.Job` into a
:class:`~slkd.engine.compress.plan.Prepared` (nothing is written)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from slkd.data.folders import PAIRED_LAYOUTS, EvalItem, EvalSamples, scan_eval_sets
from slkd.data.selection import collect_images
from slkd.distill import distill_config, registered_methods
from slkd.engine.builders import build_dataset
from slkd.engine.compress.plan import INITS, OUT_FILES, SETTINGS_FILE, Job, Log, Prepared, Stage, StagePlan
from slkd.engine.config import DatasetConfig, TrainRunConfig, from_dict, parse_yaml, to_dict
from slkd.engine.runstate import CONFIG, config_changes
from slkd.engine.tasks import distiller_task, supervised_task
from slkd.engine.runner import log_stderr
from slkd.errors import SlkdError
from slkd.metrics import BENCHMARK_TASKS, task_uses_y_channel
from slkd.metrics.fullref import SSIM_WINDOW
from slkd.models import (
    build_model,
    count_parameters,
    default_student,
    get_preset,
    input_channels,
    load_pretrained,
    read_state_dict,
    weights_path,
)
from slkd.models.export import sha256_file
from slkd.models.registry import variant_overrides
from slkd.models.slicing import slice_plan


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
        if isinstance(before, dict):
            before.setdefault("init", "random")  # written before --init existed: students started at random
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
            val: list[dict], out: Path, init: str = "random") -> list[Stage]:
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
    # the distilled student and its scratch twin start alike: both cut from Teacher A or both random
    student_model = {"name": student, **({"init_from_teacher": dict(teachers["a"])} if init == "teacher" else {})}
    name = f"student_{job.method}"
    stages.append((name, f"student {student} distilled with {job.method}",
                   {"name": name, "role": "distill", **common, "model": dict(student_model),
                    "teachers": teachers, "distill": {"method": job.method},
                    "data": data_node(), "train": _train_node(plan.student, job, bool(val)), **evaluated},
                   distiller_task))
    if job.compare_scratch:
        stages.append(("student_scratch", f"student {student} from scratch (L1)",
                       {"name": "student_scratch", "role": "scratch", **common, "model": dict(student_model),
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


def _initialisation(job: Job, teacher: torch.nn.Module, student_shape: torch.nn.Module, student: str,
                    notes: list[str]) -> str:
    """``"teacher"`` or ``"random"``: what ``job.init`` means for these two networks (checked on
    their shapes now, not when the student's stage starts)."""
    if job.init == "random":
        return "random"
    try:
        slice_plan(student_shape, teacher)
    except SlkdError as exc:
        if job.init == "teacher":
            raise SlkdError(f"--init teacher: {student} cannot be cut from {job.teacher}: {exc}") from None
        notes.append(f"note: {student} cannot be cut from {job.teacher} ({exc}); students start at random")
        return "random"
    return "teacher"


def prepare(job: Job, log: Log | None = log_stderr) -> Prepared:
    """Check the job and decide its stages; nothing is written. Every problem a user can
    cause is one :class:`~slkd.errors.SlkdError` line."""
    if job.task not in BENCHMARK_TASKS:
        raise SlkdError(f"unknown task {job.task!r}; known: {', '.join(BENCHMARK_TASKS)}")
    if job.method not in registered_methods():
        raise SlkdError(f"unknown method {job.method!r}; known: {', '.join(registered_methods())}")
    if job.init not in INITS:
        raise SlkdError(f"unknown init {job.init!r}; known: {', '.join(INITS)}")
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
    init = _initialisation(job, teacher, student_shape, student, notes)
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
    stages = _stages(job, student, options, weights, data, val_nodes, out, init)
    settings = {
        "teacher": job.teacher,
        "teacher_weights": None if weights is None else str(weights.resolve()),
        "teacher_weights_sha256": None if weights is None else sha256_file(weights),
        "teacher_options": options, "task": job.task, "train": str(train_path.resolve()),
        "train_exclude": list(job.train_exclude or []),
        "val": (str(Path(os.path.expanduser(str(job.val))).resolve()) if isinstance(job.val, (str, os.PathLike))
                else [str(Path(p).resolve()) for p in job.val]),
        "student": student, "method": job.method, "init": init, "compare_scratch": job.compare_scratch,
        "sigma": sigma, "seed": job.seed, "eval_images": job.eval_images,
        # Teacher A's plan matters only when it is trained here
        "plan": json.loads(json.dumps(asdict(job.plan if weights is None else replace(job.plan, teacher_a=None)))),
    }
    _check_earlier(out, settings, stages)
    return Prepared(job=job, out=out, student=student, teacher_options=options, teacher_weights=weights,
                    stages=stages, eval_sets=eval_sets, train_described=described, settings=settings,
                    sigma=sigma, notes=notes)

