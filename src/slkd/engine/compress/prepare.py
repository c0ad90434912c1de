"""Every check a user can fail, before anything is trained, and the stages a job trains:
:func:`prepare` turns a :class:`~slkd.engine.compress.plan.Job` into a
:class:`~slkd.engine.compress.plan.Prepared` (nothing is written)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from slkd.data.folders import PAIRED_LAYOUTS, EvalFolder, EvalItem, EvalSamples, scan_eval_sets
from slkd.data.overlap import check_held_out, held_out_warning
from slkd.data.selection import collect_images, names_list
from slkd.data.tasks import benchmark_tasks, task_spec
from slkd.distill import distill_config, registered_methods
from slkd.engine.builders import build_dataset
from slkd.engine.compress.plan import (DEPLOYS, INITS, OUT_FILES, SETTINGS_FILE, Job, Log, ModelSpec, Prepared,
                                       StagePlan)
from slkd.engine.config import DatasetConfig, TrainRunConfig, from_dict, parse_yaml, to_dict
from slkd.engine.distributed import init_distributed, shutdown
from slkd.engine.evaluation import Convention
from slkd.engine.memory import check_batch_fits
from slkd.engine.runlock import LOCK_FILE, FolderLock, lock_on_rank0
from slkd.engine.runstate import CONFIG, config_changes
from slkd.engine.tasks import distiller_task, supervised_task
from slkd.engine.runner import log_stderr
from slkd.engine.runconfigs import (Net, cosine_train_node, data_node, distilled_run, scratch_run, teacher_a_run,
                                    teacher_b_run)
from slkd.engine.stages import Stage, build_stage
from slkd.engine.text import resolve_device
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes, file_in_the_way
from slkd.metrics import create_metric, task_uses_y_channel
from slkd.metrics.fullref import SSIM_WINDOW
from slkd.models import (
    build_model,
    count_macs,
    count_parameters,
    default_student,
    get_preset,
    input_channels,
    load_pretrained,
    read_state_dict,
    weights_path,
)
from slkd.models.checkpoint import read_once
from slkd.models.export import sha256_file
from slkd.models.registry import variant_overrides
from slkd.models.slicing import slice_plan


def _load_teacher(job: Job) -> tuple[torch.nn.Module, dict, Path | None]:
    """Teacher A as given (its weights must fit the named preset), the preset options an
    official checkpoint of another variant needs, and the weights file (absolute)."""
    if job.weights is None:
        return build_model(job.teacher), {}, None
    where = f"teacher {job.teacher}:{job.weights}"
    try:
        with read_once():  # the variant is read from the file the model then loads: one read
            path = weights_path(job.weights)
            state, _ = read_state_dict(path)
            options = variant_overrides(job.teacher, state)
            del state
            model = load_pretrained(job.teacher, path, options=options)
    except SlkdError as exc:
        raise SlkdError(f"{where}: {exc}") from None
    return model, options, path.resolve()


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
                        + f" or, for {_synthesised()}, a folder of clean images")
    spec = task_spec(job.task)
    if spec.synthetic is None:
        layouts = ", ".join(f"{a}/+{b}/" for a, b in spec.layouts or PAIRED_LAYOUTS[:1])
        raise SlkdError(f"training data {train} holds clean images only, no degraded/clean pairs "
                        f"({layouts} …); --task {job.task} needs pairs (noise can be synthesised for "
                        f"{_synthesised()})")
    data = {"type": "degraded", "roots": [str(train.resolve())], "recursive": True,
            "degradation": _synthetic_node(spec.synthetic, sigma),
            "patch_size": job.plan.patch, "augment": True}
    if job.train_exclude:
        data["exclude"] = list(job.train_exclude)
    return data, f"{train} (clean images, Gaussian noise σ={sigma:g})", True


def _synthesised() -> str:
    """The tasks whose degraded images are made from clean ones, as options: "--task denoise"."""
    return " or ".join(f"--task {name}" for name in benchmark_tasks() if task_spec(name).synthetic)


def _synthetic_node(degradation: str, sigma: float | None) -> dict:
    """The config node of the degradation that makes a task's inputs from clean images."""
    return {"name": degradation, "params": {"sigma": sigma}}


def job_reads(job: Job) -> list[Path]:
    """The folders a job reads images from (its output folder may not be inside any)."""
    return [Path(os.path.expanduser(str(job.train))), *_val_reads(job)]


def _val_reads(job: Job) -> list[Path]:
    """The folders the validation data are read from."""
    if isinstance(job.val, (str, os.PathLike)):
        return [Path(os.path.expanduser(str(job.val)))]
    return sorted({Path(os.path.expanduser(str(p))).parent for p in job.val})


def _eval_sets(job: Job, sigma: float, notes: list[str]) -> tuple[dict[str, EvalSamples], bool, dict[str, EvalFolder]]:
    """The validation sets as evaluation samples, every image read now (unreadable files,
    pairs of two sizes or of a grey and an RGB image, pairs whose input equals its target and
    images too small for SSIM are refused before training), whether any set is made of clean
    images (noise synthesised), and the folder sets found (none for a list of files; the
    validation while training reads them too). What the folders held that is not scored goes to
    ``notes``."""
    if isinstance(job.val, (str, os.PathLike)):
        root = Path(os.path.expanduser(str(job.val)))
        if not root.is_dir():
            raise SlkdError(f"validation data {root}: folder not found")
        try:
            folders = scan_eval_sets(root)
        except SlkdError as exc:
            raise SlkdError(f"validation data {root}: {exc}") from None
        sets = {name: (f.items, f.layout, f.root) for name, f in folders.items()}
        notes.extend(f"warning: validation set {name}: {w}" for name, f in folders.items() for w in f.warnings)
    else:
        files = [Path(os.path.expanduser(str(p))) for p in job.val]
        if not files:
            raise SlkdError("validation data: no images")
        missing = [str(p) for p in files if not (p.is_file() or p.is_symlink())]
        if missing:
            raise SlkdError(f"validation data: file(s) not found: {', '.join(missing[:5])}")
        sets = {"held_out": (tuple(EvalItem(p.stem, None, p) for p in files), "clean-only", None)}
        folders = {}
    samples: dict[str, EvalSamples] = {}
    synthetic = False
    psnr = create_metric("psnr")
    convention = Convention.for_task(job.task).as_dict()  # as the report scores
    for name, (items, layout, where) in sets.items():
        label = f"validation set {name}" + (f" ({where})" if where is not None else "")
        if layout == "degraded-only":
            raise SlkdError(f"{label} holds degraded images only, no clean targets to score against")
        if layout == "clean-only":
            if task_spec(job.task).synthetic is None:
                raise SlkdError(f"{label} holds clean images only; --task {job.task} needs "
                                f"degraded/clean pairs (noise can be synthesised for {_synthesised()})")
            synthetic = True
        items = tuple(items)[: job.eval_images] if job.eval_images else tuple(items)
        seen: dict[str, Any] = {}
        for item in items:
            if item.name in seen:
                raise SlkdError(f"{label}: {seen[item.name]} and {item.degraded or item.clean} have "
                                f"the same name {item.name!r}; their outputs would overwrite each other")
            seen[item.name] = item.degraded or item.clean
        set_samples = EvalSamples(items, job.task, sigma=sigma, seed=0)
        identical = []
        for i in range(len(set_samples)):
            try:
                sample = set_samples[i]  # decodes both files, compares their sizes and channels
            except SlkdError as exc:
                raise SlkdError(f"{label}: {exc}") from None
            h, w = sample["gt"].shape[-2:]
            if min(h, w) < SSIM_WINDOW:
                raise SlkdError(f"{label}: {items[i].name} is {w}×{h}; SSIM needs at least "
                                f"{SSIM_WINDOW}×{SSIM_WINDOW} pixels")
            if math.isinf(float(psnr(sample["lq"].clamp(0, 1), sample["gt"], **convention))):
                identical.append(items[i].name)
        if identical:
            why = (f"--sigma {sigma:g} adds no noise" if layout == "clean-only"
                   else "the degraded image equals its target")
            raise SlkdError(f"{label}: {len(identical)} image(s) have an input identical to their "
                            f"target as scored ({why}): {names_list(identical)}; their PSNR is "
                            "infinite and there is nothing to restore; remove them from the "
                            "validation data")
        samples[name] = set_samples
    return samples, synthetic, folders


def check_out(out: Path, reads: Sequence[Path], extra_entries: frozenset | set = frozenset()) -> None:
    """Where a job of the pipeline (``slkd compress``, ``slkd demo``) may write: only inside
    ``out``, which must be new, empty, or a folder of this pipeline's jobs — one that holds its
    job record (:data:`SETTINGS_FILE`, the first file a job writes) and nothing else than what a
    job writes there (``extra_entries``: what the caller writes besides) — and never inside the
    folders it reads. A folder holding anything without a job record is not ours, whatever the
    names of its files (a user's ``report.md``, a home folder), and is refused."""
    if out.exists() and not out.is_dir():
        raise SlkdError(f"--out {out} is a file; give a folder")
    blocking = file_in_the_way(out)
    if blocking is not None:
        raise SlkdError(f"--out {out} is under {blocking}, which is a file; give a folder")
    stages = {f"student_{m}" for m in registered_methods()} | {"teacher_a", "teacher_b", "student_scratch"}
    allowed = OUT_FILES | stages | set(extra_entries)
    if out.is_dir():
        held = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
        record = (out / SETTINGS_FILE).is_file()
        foreign = held if not record else [n for n in held if n not in allowed and not n.startswith(".")]
        if foreign:
            shown = ", ".join(foreign[:5]) + (" …" if len(foreign) > 5 else "")
            why = "" if record else f" and no record of an slkd job ({SETTINGS_FILE})"
            raise SlkdError(f"--out {out} holds files slkd did not write there ({shown}){why}; give a "
                            "new or empty folder, or an earlier run's (nothing was written)")
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
        # a record without settings: a job claimed the folder (claim_out) and stopped before it
        # knew them, so before any stage trained
        changes = {} if before is None else config_changes(before, settings)
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


def claim_out(out: Path, reads: Sequence[Path], extra_entries: frozenset | set = frozenset(), *,
              device: str = "auto", settings: dict | None = None, stages: Sequence[Stage] = ()) -> FolderLock | None:
    """Make ``out`` the folder of this job, after :func:`check_out` passed (nothing is written into
    a folder it refuses): lock it — one process writes a job folder, a second is refused in one
    line naming the PID that holds it, a lock left by a killed process does not count
    (:mod:`slkd.engine.runlock`) — check it again now that no one else can change it (with
    ``settings``: also the earlier job's settings and stage configs), and write the job record
    first: ``settings``, or, when there is no record yet, one without settings (``slkd demo``
    claims its folder so before copying its images into it). Under ``torchrun`` the process group
    is joined here; rank 0 does this and every rank learns the outcome. Returns rank 0's lock,
    to be released when the job ends."""
    dist = init_distributed(device)

    def check_and_record() -> None:
        check_out(out, reads, extra_entries)
        if settings is not None:
            _check_earlier(out, settings, list(stages))
        record = out / SETTINGS_FILE
        if settings is not None or not record.is_file():
            try:
                atomic_write_bytes(record, json.dumps({"settings": settings}, indent=2).encode())
            except OSError as exc:
                raise SlkdError(f"cannot write {record}: {exc.strerror or exc}") from None

    try:
        return lock_on_rank0(out, dist, then=check_and_record)
    except BaseException:
        shutdown()
        raise


def _train_node(plan: StagePlan, job: Job, val: bool) -> dict:
    n = plan.iters
    return cosine_train_node(n, plan.lr, optimizer=job.plan.optimizer, weight_decay=job.plan.weight_decay,
                             warmup_iters=max(1, n // 20), log_every=min(max(1, n // 10), 100),
                             val_every=max(1, n // 4) if val else n, ckpt_every=min(max(1, n // 4), 1000))


def _val_nodes(job: Job, sigma: float | None, folders: dict[str, EvalFolder]) -> list[dict]:
    """Validation while training: every folder set (``folders``, as :func:`_eval_sets` found
    them), ``plan.val_images`` images each."""
    if job.plan.val_images is None or not isinstance(job.val, (str, os.PathLike)):
        return []
    nodes = []
    for name, folder in folders.items():
        root = str(folder.root.resolve())
        if folder.paired:
            node = {"name": name, "type": "paired", "roots": [root]}
        else:
            node = {"name": name, "type": "degraded", "roots": [root],
                    "degradation": _synthetic_node(task_spec(job.task).synthetic, sigma)}
        limit = min(job.plan.val_images, job.eval_images or job.plan.val_images)
        node["limit"] = limit
        nodes.append(node)
    return nodes


def _model_specs(job: Job, student: str, options: dict, weights: Path | None, out: Path) -> dict[str, ModelSpec]:
    """Every network of the job by stage name: Teacher A (given, or trained in ``teacher_a``),
    Teacher B when the method runs one (Teacher A's preset and options without its global
    residual), the distilled student and, with ``compare_scratch``, its scratch twin."""
    specs = {"teacher_a": ModelSpec(job.teacher, options, out / "teacher_a") if weights is None
             else ModelSpec(job.teacher, options, weights, trained=False)}
    if "b" in distill_config(job.method).teacher_roles():
        b = Net(job.teacher, options=options).teacher_b(out / "teacher_b")
        specs["teacher_b"] = ModelSpec(b.name, dict(b.options), out / "teacher_b")
    specs[f"student_{job.method}"] = ModelSpec(student, {}, out / f"student_{job.method}")
    if job.compare_scratch:
        specs["student_scratch"] = ModelSpec(student, {}, out / "student_scratch")
    return specs


def _stages(job: Job, specs: dict[str, ModelSpec], data: dict, val: list[dict], out: Path,
            init: str = "random") -> list[Stage]:
    """The stages that train the networks of ``specs`` (:func:`_model_specs`), as run configs
    (:mod:`slkd.engine.runconfigs`); weights are absolute paths: the same teacher named by a
    relative and an absolute path is one job, and the stored stage configs work from any folder."""
    plan = job.plan
    teacher_a, student = specs["teacher_a"].net(), specs[f"student_{job.method}"].preset

    def common(stage: StagePlan) -> dict:
        return {"output_dir": out.resolve(), "seed": job.seed, "data": data_node(data, val, plan.batch),
                "train": _train_node(stage, job, bool(val))}

    evaluated = {"task": job.task} if job.task != "denoise" else None
    stages = []
    if specs["teacher_a"].trained:
        if plan.teacher_a is None:
            raise SlkdError("Teacher A has no weights and the plan does not train one")
        stages.append(build_stage("teacher_a", f"Teacher A: {job.teacher}, degraded → clean",
                                  teacher_a_run("teacher_a", teacher_a, eval=evaluated, **common(plan.teacher_a)),
                                  supervised_task))
    teacher_b = specs["teacher_b"].net() if "teacher_b" in specs else None
    if teacher_b is not None:
        reconstruct = {"task": "reconstruct"}
        if task_uses_y_channel(job.task):  # Teacher B is scored as the task is (derain: Y)
            reconstruct["y_channel"] = True
        stages.append(build_stage("teacher_b", f"Teacher B: {job.teacher} without its global residual, clean → "
                                  "clean, from Teacher A",
                                  teacher_b_run("teacher_b", teacher_a, eval=reconstruct, **common(plan.teacher_b)),
                                  supervised_task))
    # the distilled student and its scratch twin start alike: both cut from Teacher A or both random
    cut = teacher_a if init == "teacher" else None
    name = f"student_{job.method}"
    stages.append(build_stage(name, f"student {student} distilled with {job.method}",
                              distilled_run(name, student, job.method, teacher_a=teacher_a, teacher_b=teacher_b,
                                            init_from_teacher=cut, eval=evaluated, **common(plan.student)),
                              distiller_task))
    if "student_scratch" in specs:
        stages.append(build_stage("student_scratch", f"student {student} from scratch (L1)",
                                  scratch_run("student_scratch", student, init_from_teacher=cut, eval=evaluated,
                                              **common(plan.student)),
                                  supervised_task))
    return stages


def _check_smaller(teacher_name: str, options: dict, teacher: torch.nn.Module, student: str,
                   student_shape: torch.nn.Module) -> None:
    """A student must have fewer parameters and fewer MACs (at 256²) than its teacher: a larger
    one compresses nothing (``--student restormer`` for ``restormer-tiny`` got only a note)."""
    with torch.device("meta"):
        teacher_shape = build_model(teacher_name, **options)
    size = (1, 3, 256, 256)
    t_params, s_params = count_parameters(teacher), count_parameters(student_shape)
    t_macs = count_macs(teacher_shape, size, device="meta").total
    s_macs = count_macs(student_shape, size, device="meta").total
    if s_params >= t_params or s_macs >= t_macs:
        raise SlkdError(f"--student {student} is not smaller than the teacher {teacher_name}: "
                        f"{s_params / 1e6:.3f} M parameters and {s_macs / 1e9:.2f} G MACs at 256² "
                        f"against {t_params / 1e6:.3f} M and {t_macs / 1e9:.2f} G; a student needs fewer "
                        "of both (see slkd models for the student presets)")


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


def _check_batch_memory(job: Job, models: dict[str, torch.nn.Module], device: str) -> None:
    """Refuse a ``--batch``/``--patch`` whose training step cannot fit: one forward pass of the
    student, or of Teacher A (run beside it when distilling), on a batch of patches is a lower
    bound of what a step needs (:func:`~slkd.engine.memory.forward_memory`, traced on the meta
    device: nothing is allocated)."""
    check_batch_fits(models, job.plan.patch, job.plan.batch, resolve_device(device))


def _check_held_out(job: Job, train_set: Any, eval_sets: dict[str, EvalSamples], notes: list[str]) -> dict:
    """The held-out rule (:func:`slkd.data.overlap.check_held_out`) between the training data
    and every validation set (and the part of it validated while training)."""
    train_files = [f for files in train_set.item_files() for f in files]
    sets = {name: [(item.name, tuple(f for f in (item.degraded, item.clean) if f is not None))
                   for item in samples.items] for name, samples in eval_sets.items()}
    limits = {}
    if job.plan.val_images is not None and isinstance(job.val, (str, os.PathLike)):
        limits = {name: min(job.plan.val_images, job.eval_images or job.plan.val_images) for name in sets}
    overlap = check_held_out(train_files, sets, train=f"--train {job.train}", limits=limits)
    notes.extend(f"warning: {held_out_warning(name, found)}" for name, found in overlap.items())
    return overlap


def prepare(job: Job, log: Log | None = log_stderr, device: str = "auto") -> Prepared:
    """Check the job and decide its stages; nothing is written. Every problem a user can
    cause is one :class:`~slkd.errors.SlkdError` line. ``device`` (auto, cpu, cuda …) is where
    the stages will train (a batch that cannot fit there is refused)."""
    if job.task not in benchmark_tasks():
        raise SlkdError(f"unknown task {job.task!r}; known: {', '.join(benchmark_tasks())}")
    if job.method not in registered_methods():
        raise SlkdError(f"unknown method {job.method!r}; known: {', '.join(registered_methods())}")
    if job.init not in INITS:
        raise SlkdError(f"unknown init {job.init!r}; known: {', '.join(INITS)}")
    if job.deploy is not None:
        if job.deploy not in DEPLOYS:
            raise SlkdError(f"unknown deployment {job.deploy!r}; known: {', '.join(DEPLOYS)}")
        from slkd.models.export import require_packages

        try:
            require_packages(check=True)
        except SlkdError as exc:  # before hours of training, not after
            raise SlkdError(f"--deploy {job.deploy}: {exc}") from None
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
        _check_smaller(job.teacher, options, teacher, student, student_shape)
        reduction = 1 - count_parameters(student_shape) / count_parameters(teacher)
        if reduction < 0.8:
            notes.append(f"note: student {student} has {100 * reduction:.0f} % fewer parameters than "
                         f"{job.teacher}, less than the 80 % slkd's presets are sized for")
    init = _initialisation(job, teacher, student_shape, student, notes)
    _check_batch_memory(job, {f"student {student}": student_shape, f"Teacher A {job.teacher}": teacher}, device)
    del teacher, student_shape

    # the layouts first (cheap), then every image is read: noise is synthesised for clean
    # images (training or validation); pairs are degraded already
    given_sigma = 25.0 if job.sigma is None else job.sigma
    data, described, clean_train = _train_data(job, train_path, given_sigma)
    if clean_train and given_sigma == 0:
        raise SlkdError("--sigma 0 adds no noise: every noisy training input would equal its clean "
                        "image (nothing to learn, and an infinite PSNR); give --sigma above 0")
    check_out(out, job_reads(job), job.extra_entries)
    eval_sets, clean_val, val_folders = _eval_sets(job, given_sigma, notes)
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
    notes.extend(f"warning: training data: {w}" for w in train_set.warnings)
    val_overlap = _check_held_out(job, train_set, eval_sets, notes)
    del train_set

    val_nodes = _val_nodes(job, sigma, val_folders)
    models = _model_specs(job, student, options, weights, out)
    stages = _stages(job, models, data, val_nodes, out, init)
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
    return Prepared(job=job, out=out, student=student, models=models, stages=stages, eval_sets=eval_sets,
                    train_described=described, settings=settings, sigma=sigma, train_synthetic=clean_train,
                    notes=notes, val_overlap=val_overlap)

