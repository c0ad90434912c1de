"""The reproduction study's plan: which runs and evaluations each of its studies needs, with
their configs and dependencies, in the order the scheduler should start them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from benchmarks.study.configs import REPRODUCTION_KEYS, TASKS, Task, schedule, train_data
from benchmarks.study.scheduler import Job, Study, eval_file
from benchmarks.study.settings import (
    ABLATIONS,
    BALANCED_BASELINES,
    DENOISE_METHODS,
    FAMILIES,
    FEATURE_BASELINE_WEIGHT,
    METHODS,
    PRECISION,
    REVISIONS,
    SHARED_RUNS,
    SLKD_PAPER_WEIGHTS,
    STUDENT,
    TASK_METHODS,
    TEACHER,
    VARIANTS,
    Scale,
)
from slkd.engine.runconfigs import Net, distilled_run, scratch_run, teacher_a_run, teacher_b_run


def eval_path(study: "ReproductionStudy", task_key: str, run: str, data: str) -> Path:
    """Where the evaluation of ``run`` on the benchmark folder ``data`` is kept."""
    return eval_file(study.root(run) / task_key, run, data)


class ReproductionStudy(Study):
    """The jobs of the reproduction study's chosen studies at one scale, in one study folder
    (teachers possibly shared with another: ``teachers_from``)."""

    def __init__(self, out: Path, data: Path, scale: Scale, seeds: tuple[int, ...],
                 ablation_seeds: tuple[int, ...] | None = None, methods: tuple[str, ...] | None = None,
                 teachers_from: Path | None = None):
        super().__init__(out, data, scale)
        self.seeds = seeds
        self.ablation_seeds = ablation_seeds or scale.ablation_seeds
        #: the denoise study's student methods (default: all of them)
        self.methods = methods or DENOISE_METHODS
        #: where teachers, their evaluations and the inputs' evaluations live: another study's
        #: folder lets a longer student schedule reuse that study's teachers as they are
        self.teacher_root = teachers_from or out

    def root(self, run: str) -> Path:
        """Study folder holding ``run`` (teacher runs and input evaluations may be shared)."""
        return self.teacher_root if run in SHARED_RUNS else self.out

    def train(self, task: Task, config: dict, deps=()) -> Job:
        """The job of the run ``config`` (in the folder :meth:`where` gives)."""
        folder = Path(config["output_dir"])
        run = config["name"]
        command = "distill" if config["role"] == "distill" else "train"
        return self.add(Job(f"{task.key}/{run}", [command], list(deps), config,
                             folder / "configs" / f"{run}.yaml", folder / run))

    def where(self, task: Task, run: str) -> dict:
        """The output folder of ``task``'s run ``run`` and this study's key order, as arguments
        of :mod:`slkd.engine.runconfigs`' builders."""
        return {"output_dir": self.root(run) / task.key, "order": REPRODUCTION_KEYS}

    def teachers(self, task: Task, iters_a: int, arch: str = TEACHER) -> tuple[Job, Job]:
        s = self.scale
        teacher = Net(arch, self.teacher_root / task.key / "teacher_a")
        a = self.train(task, teacher_a_run("teacher_a", teacher, seed=0, data=train_data(task.train, s),
                                           train=schedule(iters_a, 2e-3), **self.where(task, "teacher_a")))
        b = self.train(task, teacher_b_run("teacher_b", teacher, seed=0, data=train_data(task.train, s, [task.val]),
                                           train=schedule(s.teacher_b, 5e-4), eval=task.eval,
                                           **self.where(task, "teacher_b")),
                       deps=[a.name])
        return a, b

    def student(self, task: Task, run: str, seed: int, method: str, overrides: dict | None = None,
                iters: int | None = None, arch: str = STUDENT, teacher: str = TEACHER,
                teachers_of: Task | None = None, bf16: bool = False) -> Job:
        """A student run in ``task``'s folder; its teachers are those of ``teachers_of``
        (default: the same task), of architecture ``teacher``; ``bf16`` trains under bf16
        autocast (``train.bf16``)."""
        s = self.scale
        train = schedule(iters or s.student, 2e-3)
        if bf16:
            train["bf16"] = True
        common = {"seed": seed, "data": train_data(task.train, s), "train": train, **self.where(task, run)}
        if method == "scratch":
            return self.train(task, scratch_run(run, arch, **common))
        source = teachers_of or task
        folder = self.teacher_root / source.key
        if method == "slkd":
            overrides = {**SLKD_PAPER_WEIGHTS, **(overrides or {})}
        elif method in ("fitnet", "at", "fakd"):
            overrides = {**FEATURE_BASELINE_WEIGHT, **(overrides or {})}
        a = Net(teacher, folder / "teacher_a")
        config = distilled_run(run, arch, method, teacher_a=a, teacher_b=a.teacher_b(folder / "teacher_b"),
                               overrides=overrides, **common)
        return self.train(task, config, deps=[f"{source.key}/teacher_a", f"{source.key}/teacher_b"])

    def evaluate(self, task_key: str, model: str, run: str, data: str, eval_task: str,
                 deps=(), weights: Path | None = None) -> Job:
        return self.eval_job(f"{task_key}/eval/{run}/{data}", model, data, eval_task,
                             eval_path(self, task_key, run, data), weights, deps)

    def evaluate_run(self, task: Task, job: Job, model: str, tests=None) -> None:
        for data, eval_task in tests or task.tests:
            self.evaluate(task.key, model, job.run_dir.name, data, eval_task, deps=[job.name],
                          weights=job.run_dir / "weights.pth")

    def evaluate_inputs(self, task: Task, tests=None) -> None:
        for data, eval_task in tests or task.tests:
            self.evaluate(task.key, "input", "input", data, eval_task)


def scratch_long_iters(study: ReproductionStudy) -> int:
    """Iterations of scratch-long: the student iterations × (SLKD step time / scratch step time),
    both timed side by side in this process (interleaved, medians). Measured once per study
    folder and kept in ``scratch_long.json`` so that reruns build the same job."""
    path = study.out / TASKS["denoise"].key / "scratch_long.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["student_iters"] == study.scale.student:
            return saved["iters"]
    from benchmarks.speed import step_times

    s = study.scale
    timing = step_times((TEACHER, STUDENT), s.batch, s.patch, s.step_timing_runs, methods=("scratch", "slkd"))
    ratio = timing["median_s"]["step_slkd"] / timing["median_s"]["step_scratch"]
    iters = max(s.student, round(s.student * ratio))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"student_iters": s.student, "ratio": ratio, "iters": iters,
                                "median_s": timing["median_s"], "batch": s.batch, "patch": s.patch}, indent=2))
    print(f"scratch-long: SLKD step / scratch step = {ratio:.2f} → {iters} iterations", flush=True)
    return iters


def add_ablations(study: ReproductionStudy, seeds) -> None:
    den = TASKS["denoise"]
    for seed in seeds:
        for name, overrides in ABLATIONS.items():
            job = study.student(den, f"{name}_s{seed}", seed, "slkd", overrides)
            study.evaluate_run(den, job, STUDENT, tests=den.tests[:1])


def task_student(study: ReproductionStudy, task: Task, name: str, seed: int, **kw) -> Job:
    """Run ``<name>_s<seed>``: a plain method, a revision of SLKD, a balanced baseline, or
    the bf16 twin of one of them (:data:`PRECISION`)."""
    variant = PRECISION.get(name, name)
    method, overrides = VARIANTS.get(variant, (variant, None))
    return study.student(task, f"{name}_s{seed}", seed, method, overrides, bf16=name in PRECISION, **kw)


def build_plan(studies: list[str], study: ReproductionStudy) -> None:
    """Jobs in priority order (the runner starts them in this order as dependencies allow):
    the denoising comparison seed by seed, the first ablation seed, the other tasks and
    real-world sets, the other architectures, then the remaining ablation seeds."""
    s = study.scale
    den = TASKS["denoise"]
    if {"denoise", "ablations", "realworld", "families", "precision", "compression"} & set(studies):
        a, _ = study.teachers(den, s.teacher_a)
        study.evaluate_run(den, a, TEACHER)
        study.evaluate_inputs(den)
    if "denoise" in studies:
        long_iters = scratch_long_iters(study) if "scratch_long" in study.methods else None
        for seed in study.seeds:
            for method in (m for m in METHODS if m in study.methods):
                if method == "scratch_long":
                    job = study.student(den, f"scratch_long_s{seed}", seed, "scratch", iters=long_iters)
                else:
                    job = study.student(den, f"{method}_s{seed}", seed, method)
                study.evaluate_run(den, job, STUDENT)
            for name in REVISIONS:
                if name in study.methods:
                    study.evaluate_run(den, task_student(study, den, name, seed), STUDENT)
    if "ablations" in studies:
        add_ablations(study, study.ablation_seeds[:1])
    if "denoise" in studies:
        for seed in study.seeds:
            for name in BALANCED_BASELINES:
                if name in study.methods:
                    study.evaluate_run(den, task_student(study, den, name, seed), STUDENT)
    for key in ("derain", "deblur"):
        if key in studies or (key == "derain" and "realworld" in studies):
            task = TASKS[key]
            a, _ = study.teachers(task, s.task_teacher_a)
            study.evaluate_run(task, a, TEACHER)
            study.evaluate_inputs(task)
            for seed in s.task_seeds:
                for method in TASK_METHODS:
                    study.evaluate_run(task, task_student(study, task, method, seed), STUDENT)
    if "realworld" in studies:
        real_rain = (("RealRain20", "real"),)
        der, seed = TASKS["derain"], s.task_seeds[0]
        study.evaluate_inputs(der, real_rain)
        study.evaluate_run(der, study.jobs[f"{der.key}/teacher_a"], TEACHER, real_rain)
        for method in TASK_METHODS:
            study.evaluate_run(der, study.jobs[f"{der.key}/{method}_s{seed}"], STUDENT, real_rain)
        real_noise = (("PolyU100", "denoise"), ("CC15", "denoise"))
        study.evaluate_inputs(den, real_noise)
        study.evaluate_run(den, study.jobs[f"{den.key}/teacher_a"], TEACHER, real_noise)
        for method in TASK_METHODS:
            job = study.jobs.get(f"{den.key}/{method}_s{seed}") or task_student(study, den, method, seed)
            study.evaluate_run(den, job, STUDENT, real_noise)
    if "families" in studies:
        for key, (teacher, student) in FAMILIES.items():
            task = replace(den, key=f"{den.key}-{key}")
            source = den  # cross-architecture: the Restormer teachers of `denoise`
            if teacher != TEACHER:
                source = task
                own_a, _ = study.teachers(task, s.task_teacher_a, arch=teacher)
                study.evaluate_run(task, own_a, teacher)
            for method in TASK_METHODS:
                job = task_student(study, task, method, 0, arch=student, teacher=teacher, teachers_of=source)
                study.evaluate_run(task, job, student)
    if "precision" in studies:
        for seed in study.ablation_seeds:
            for bf16, fp32 in PRECISION.items():
                for name in (fp32, bf16):  # a run the denoise study already planned is reused
                    study.evaluate_run(den, task_student(study, den, name, seed), STUDENT, tests=den.tests[:1])
    if "ablations" in studies:
        add_ablations(study, study.ablation_seeds[1:])
