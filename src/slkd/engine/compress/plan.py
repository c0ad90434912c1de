"""What a compression job is and how long each stage trains: :class:`Job`, :class:`Plan`,
the preset plans (:data:`PLANS`), and what :func:`~slkd.engine.compress.prepare.prepare` decides
(:class:`Prepared`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from slkd.data.folders import EvalSamples
from slkd.distill import DEFAULT_METHOD
from slkd.engine.runconfigs import Net
from slkd.engine.stages import Stage
from slkd.engine.trainer import RunWords

Log = Callable[[str], None]

#: the job record: the first file a job writes into its output folder, holding its settings
#: (compared on every rerun); a folder that holds anything but no record is not a job's
SETTINGS_FILE = "compress.json"
#: training seconds of each stage, summed over the processes that trained it, from the stage's
#: log (:func:`slkd.engine.report.logged_seconds`: a process killed by ``kill -9`` counts too)
TIMES_FILE = "stage_seconds.json"
#: how the stages' messages tell the user to continue (compress and demo have no --resume)
WORDS = RunWords(resume="rerun the same command to continue it", new_run="give a new --out")
#: what the pipeline writes into the output folder besides the stages' run folders
OUT_FILES = frozenset({SETTINGS_FILE, TIMES_FILE, "configs", "images", "report.md", "summary.json", "grid.png",
                       "curves.png", "student.safetensors", "student.onnx", "student.int8.onnx"})
#: the values of ``Job.deploy`` (``slkd compress --deploy``): also write and score the student in
#: that precision beside the float ONNX file
DEPLOYS = ("int8",)
#: rows of the comparison grid
GRID_ROWS = 4


#: the values of ``Job.init`` (``slkd compress --init``)
INITS = ("auto", "teacher", "random")


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
    #: timed rounds (every model once per round, interleaved) for the latency column and the
    #: speed-up, whose spread over the rounds the report states
    latency_runs: int = 15

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
                    latency_runs=15),
    "quick": Plan(student=StagePlan(100, 1e-3), teacher_b=StagePlan(40, 1e-4),
                  teacher_a=StagePlan(120, 2e-3), patch=32, batch=8, val_images=None,
                  latency_runs=7),
}


@dataclass
class Job:
    """One compression job (see the module docstring)."""

    #: Teacher A's preset
    teacher: str
    #: its weights (a file, official checkpoints included, or a run folder); None trains
    #: Teacher A here first (``plan.teacher_a``)
    weights: str | Path | None
    #: a benchmark task of the task table (:mod:`slkd.data.tasks`); sets the metric convention
    task: str
    #: a paired folder, or (denoising) a folder of clean images, searched recursively
    train: str | Path
    #: a set, a folder of sets, or a list of clean image files (denoising)
    val: str | Path | Sequence[str | Path]
    out: str | Path
    student: str | None = None
    method: str = DEFAULT_METHOD
    #: the student's (and its scratch twin's) initial weights: "teacher" (a cut of Teacher A's,
    #: ``model.init_from_teacher``), "random", or "auto" (teacher where the two networks allow the
    #: cut: Restormer and its Res-SL students; random otherwise); one of :data:`INITS`
    init: str = "auto"
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
    #: "int8": write ``student.int8.onnx`` too (calibrated on crops of the training data) and score
    #: and time it, with the float ONNX file, beside the other models; one of :data:`DEPLOYS` or None
    deploy: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One network of a job as :func:`~slkd.engine.compress.prepare.prepare` decided it, carried
    to the report: its preset, the options it is built with (an official checkpoint's variant,
    Teacher B without its global residual) and its weights — the given file, or the run folder
    of the stage that trains it."""

    preset: str
    options: dict
    weights: Path
    #: trained by a stage of the job (``weights`` is that stage's run folder), not given
    trained: bool = True

    def net(self) -> Net:
        """The network as run configs name it (:mod:`slkd.engine.runconfigs`), its weights
        absolute."""
        return Net(self.preset, self.weights.resolve(), self.options)


@dataclass
class Prepared:
    """What :func:`prepare` checked and decided; :func:`run_job` trains and reports it."""

    job: Job
    out: Path
    student: str
    #: every network of the job by stage name (``teacher_a`` included, trained here or given)
    models: dict[str, ModelSpec]
    stages: list[Stage]
    eval_sets: dict[str, EvalSamples]
    train_described: str
    settings: dict
    sigma: float | None
    #: the training data are clean images whose degraded inputs are synthesised (else pairs)
    train_synthetic: bool
    notes: list[str] = field(default_factory=list)
    #: validation sets with training images among them: ``{set: {"count", "of", "names"}}``
    #: (:func:`slkd.data.overlap.check_held_out`); their scores are reported as not held out
    val_overlap: dict = field(default_factory=dict)

    @property
    def student_stage(self) -> str:
        return f"student_{self.job.method}"

