"""Distillation that pays: does a distilled student beat the same student trained alone, at its
plateau, with strong teachers, choosing everything on a validation split?

Four stages, each an ordinary set of ``slkd train`` / ``slkd distill`` / ``slkd eval`` runs
(the study's job runner: finished runs are reused, interrupted ones resumed, other settings
refused):

* ``teachers`` Teacher A then Teacher B (initialised from A) of the task at their recipe
               (:data:`TEACHER_RECIPES`), then both published under ``benchmarks/weights/<task>/``.

* ``plateau``  the scratch student on a ladder of budgets (one cosine schedule each, validated
               every quarter): the budget is the first rung whose last quarter gains less than
               :data:`PLATEAU_GAIN` dB on the validation split *and* whose next rung ends less
               than that above it (rungs run in ascending waves of ``--jobs``; larger rungs are
               not run once a wave finds the budget).
* ``screen``   every variant (:data:`VARIANTS`, with ``+init`` = teacher-initialised student and
               ``@deep`` = the width-cut student) for one seed at the screening budget, on the
               validation split only: the table of every variant tried.
* ``final``    the finalists (one SLKD variant, its scratch twin with the same initialisation and
               student, the baselines named) for every seed at the budget and at twice it, plus
               scratch given SLKD's wall-clock; tested on the task's test sets (per image,
               paired by seed), the best baseline chosen on validation; writes the headline file
               and publishes the students under ``benchmarks/weights/<task>/students/``.

The teachers are the committed ones (``benchmarks/weights/<task>/teacher_{a,b}.safetensors``,
:mod:`benchmarks.publish`), or ``--teachers DIR`` holding ``teacher_a``/``teacher_b`` (files or
run folders). The task's training data, validation split and metric convention are read from the
teacher's config (``configs/<task>/teacher_a_tiny.yaml``), so students hold out exactly the
images the teachers held out.

    python -m benchmarks.study.pays teachers --task denoise --jobs 2
    python -m benchmarks.study.pays plateau --task denoise --ladder 1000 2000 4000 8000 --jobs 2
    python -m benchmarks.study.pays screen --task denoise --iters 2000 --jobs 2
    python -m benchmarks.study.pays final --task denoise --iters 8000 --slkd slkd_img+init \\
        --baselines output_kd+init fakd_img+init --seeds 0 1 2 --jobs 2

On a GPU add ``--device cuda --jobs 8``: the runs share the one device (tiny students are
host-bound there, so several at a time use it well). Compare runs of one device only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import benchmarks.families  # noqa: F401  (registers the study's res-sl-tiny-deep)
import benchmarks.variants  # noqa: F401  (registers the losing SLKD variants the screen still lists)
from benchmarks.study.configs import PAYS_KEYS, Task, schedule, train_data
from benchmarks.study.scheduler import (Job, Study, eval_file, json_default, read_eval, recorded_seconds, run_jobs,
                                        run_study)
from benchmarks.study.settings import FULL, ROOT, STUDENT, TEACHER, Scale, StudyError
from benchmarks.study.paired import paired, spread
from slkd.cli.common import device_option, max_threads, number, resolve_device
from slkd.engine.report import read_events
from slkd.engine.runconfigs import Net, distilled_run
from slkd.errors import SlkdError

#: a budget is at the plateau when its last quarter gains less than this on validation (dB), and
#: the next rung of the ladder (a longer schedule) ends less than this above it: the last quarter
#: of a short cosine schedule runs at a small learning rate, so it can gain nothing while a
#: longer schedule still gains much (the denoising ladder in BENCHMARKS.md §12.1 shows it)
PLATEAU_GAIN = 0.05
WEIGHTS = ROOT / "benchmarks" / "weights"
RESULTS = ROOT / "benchmarks" / "results"
LR = 2e-3


TASKS = {
    "denoise": Task("denoise25", (("CBSD68", "denoise"), ("Kodak24", "denoise")),
                    config="configs/denoise25/teacher_a_tiny.yaml"),
    "derain": Task("derain", (("Rain100L/test", "derain"),), config="configs/derain/teacher_a_tiny.yaml",
                   test_names=("Rain100L",), no_reference=(("RealRain20", "real"),)),
}
#: the final stage's headline file per task (by its key): file name and the extras of its
#: ``students`` entry (e.g. the noise level)
HEADLINES = {"denoise25": ("headline.json", {"sigma": 25}), "derain": ("headline_derain.json", {"task": "derain"})}


#: the committed teachers: config file and overrides per role (Teacher B also starts from
#: Teacher A's run); every run also gets TEACHER_COMMON. Long CPU runs resume bit-identically,
#: so the stage may span several sessions. Teacher A keeps an EMA of its weights (0.999: about
#: the last 1000 of its 12 000–20 000 steps); Teacher B does not: its 1000-step fine-tune starts
#: from A's function with the global residual removed, and an EMA of decay 0.999 would still hold
#: 0.999^1000 = 37 % of those starting weights at its end (what that EMA did to the held-out
#: reconstruction: BENCHMARKS.md §12).
TEACHER_COMMON = ["train.ckpt_every=250", "train.log_every=100"]
TEACHER_RECIPES = {
    "denoise": {"a": ("configs/denoise25/teacher_a_tiny.yaml",
                      ["train.iters=20000", "train.val_every=2000", "train.ema=0.999"]),
                "b": ("configs/denoise25/teacher_b_tiny.yaml", ["train.iters=1000", "train.val_every=250"])},
    "derain": {"a": ("configs/derain/teacher_a_tiny.yaml",
                     ["train.iters=12000", "train.val_every=1500", "train.ema=0.999"]),
               "b": ("configs/derain/teacher_b_tiny.yaml", ["train.iters=1000", "train.val_every=250"]),
               # Teacher B from random weights (the clean-image autoencoder of KDDN and Hong et al.),
               # for the split's question whether B's knowledge must come from A
               "b_scratch": ("configs/derain/teacher_b_tiny.yaml",
                             ["model.init_from=null", "train.iters=4000", "train.val_every=1000",
                              "train.optimizer.lr=1e-3", "train.scheduler.warmup_iters=50"])},
}

#: every level FAKD compares (the student's encoder then decoder taps, Restormer's names)
FAKD_LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent",
               "decoder_level3", "decoder_level2", "decoder_level1", "refinement")
#: base variants: name → (method, distill node overrides). Library defaults unless stated: the
#: feature baselines at their balanced weights, SLKD at λ_kl 0.5, λ_nc 0.01, λ_et 0.03.
VARIANTS: dict[str, tuple[str, dict]] = {
    "scratch": ("scratch", {}),
    "output_kd": ("output_kd", {"loss_weights": {"img": 0.5, "kl": 0.0}}),   # FAKD/DCKD's L1 to A(x)
    "output_kd_kl": ("output_kd", {"loss_weights": {"img": 0.0, "kl": 0.5}}),
    "fitnet": ("fitnet", {}),
    "at": ("at", {}),
    "fakd": ("fakd", {"loss_weights": {"img": 0.0}}),                       # the affinity term alone
    "fakd_img": ("fakd", {"loss_weights": {"img": 0.5}}),                   # FAKD as published (the default)
    "slkd": ("slkd", {}),
    "slkd_img": ("slkd", {"loss_weights": {"img": 0.5}}),
    "slkd_mscn": ("slkd", {"extractor_nc": "mscn"}),
    "slkd_edge": ("slkd", {"extractor_et": "edge"}),
    "slkd_mscn_edge_img": ("slkd", {"extractor_nc": "mscn", "extractor_et": "edge", "loss_weights": {"img": 0.5}}),
    "slkd_decay": ("slkd_decay", {"teacher_decay": "linear", "teacher_decay_start": 0.5}),
    "slkd_img_decay": ("slkd_decay", {"loss_weights": {"img": 0.5}, "teacher_decay": "linear",
                                      "teacher_decay_start": 0.5}),
    "slkd_deep_levels": ("slkd", {"encoder_taps": ["encoder_level3", "latent"],
                                  "decoder_taps": ["decoder_level3", "decoder_level2"]}),
    "slkd_paper": ("slkd", {"loss_weights": {"nc": 0.1, "et": 0.1}}),
    # the feature terms at a tenth of the defaults: at the defaults the weighted feature terms
    # outweighed the pixel loss in the screen and slkd_img(+init) lost to its scratch twin
    # (docs/method.md, BENCHMARKS.md §12.1)
    "slkd_img_light": ("slkd", {"loss_weights": {"img": 0.5, "nc": 0.001, "et": 0.003}}),
    # SLKD's structure, DRL (Teacher A on x → the encoder) + IRL (Teacher B on y → the decoder),
    # with distances known to work here instead of our BRISQUE/PIQE extractors: FAKD's affinity
    # (its per-level weight) or FitNet's normalised distance (L1 on the SCM's standardised
    # features, its balanced weight); with and without FAKD's output term, no KL
    "split_aff": ("slkd", {"extractor_nc": "affinity", "extractor_et": "affinity",
                           "loss_weights": {"kl": 0.0, "img": 0.0, "nc": 0.002, "et": 0.002}}),
    "split_aff_img": ("slkd", {"extractor_nc": "affinity", "extractor_et": "affinity",
                               "loss_weights": {"kl": 0.0, "img": 0.5, "nc": 0.002, "et": 0.002}}),
    "split_l1": ("slkd", {"extractor_nc": "identity", "extractor_et": "identity",
                          "loss_weights": {"kl": 0.0, "img": 0.0, "nc": 0.003, "et": 0.003}}),
    "split_l1_img": ("slkd", {"extractor_nc": "identity", "extractor_et": "identity",
                              "loss_weights": {"kl": 0.0, "img": 0.5, "nc": 0.003, "et": 0.003}}),
    # the split's IRL fed Teacher A on the clean image: does a separate clean → clean teacher matter?
    "split_aff_img_a": ("slkd", {"extractor_nc": "affinity", "extractor_et": "affinity", "teacher_b": "same_as_a",
                                 "loss_weights": {"kl": 0.0, "img": 0.5, "nc": 0.002, "et": 0.002}}),
    # today's default (FAKD + output term: Teacher A's affinity at every level) plus IRL, Teacher B
    # on the decoder, through SLKD's PIQE extractor or through the affinity distance
    "fakd_irl": ("slkd", {"extractor_nc": "affinity", "encoder_taps": list(FAKD_LEVELS),
                          "loss_weights": {"kl": 0.0, "img": 0.5, "nc": 0.002, "et": 0.003}}),
    "fakd_irl_aff": ("slkd", {"extractor_nc": "affinity", "extractor_et": "affinity",
                              "encoder_taps": list(FAKD_LEVELS),
                              "loss_weights": {"kl": 0.0, "img": 0.5, "nc": 0.002, "et": 0.002}}),
}
#: the paper's ablation (without DRL, IRL, L_NC, L_ET) of a full SLKD variant: suffix → switches.
#: Without L_NC / L_ET the part stays and its extractor is replaced by plain L1 on the SCM's
#: standardised features (docs/spec.md §2.7); without DRL / IRL the part is gone (the output terms
#: stay: they belong to neither part)
ABLATION = {"nodrl": {"drl": False}, "noirl": {"irl": False},
            "nonc": {"extractor_nc": "identity"}, "noet": {"extractor_et": "identity"}}
for _full in [name for name, (method, _) in VARIANTS.items() if method == "slkd"]:
    for _suffix, _switch in ABLATION.items():
        VARIANTS[f"{_full}_{_suffix}"] = ("slkd", {**VARIANTS[_full][1], **_switch})


def ablation_rows(full: str) -> dict[str, str]:
    """The paper's ablation of the SLKD-family variant ``full`` (modifiers kept): row label →
    variant name (``full``, then without DRL, IRL, L_NC, L_ET)."""
    cut = min((i for i in (full.find(INIT), full.find(DEEP), full.find(BSCRATCH)) if i >= 0), default=len(full))
    base, mods = full[:cut], full[cut:]  # the modifiers (+init, +bscratch, @deep) stay on every row
    if VARIANTS.get(base, ("",))[0] != "slkd":
        raise StudyError(f"{full}: the ablation is of an SLKD-family variant (method slkd), not {base!r}")
    return {"full": full, **{f"−{label}": f"{base}_{suffix}{mods}" for label, suffix in
                             (("DRL", "nodrl"), ("IRL", "noirl"), ("L_NC", "nonc"), ("L_ET", "noet"))}}
#: modifiers: ``+init`` starts the student from a slice of Teacher A; ``@deep`` uses the student
#: cut by width alone (the teacher's depth); ``+bscratch`` gives IRL the Teacher B trained from
#: random weights on clean images (``teacher_b_scratch``) instead of the one fine-tuned from A
INIT, DEEP, BSCRATCH = "+init", "@deep", "+bscratch"
DEEP_STUDENT = "res-sl-tiny-deep"
#: the screening list (every variant tried is reported), in the order the runs start: the terms
#: every working KD method shares (an output-level teacher term, a teacher-initialised student)
#: first, so that a stage stopped part-way has screened the likeliest winners
SCREEN = ("scratch", "scratch+init", "output_kd", "output_kd+init", "slkd_img", "slkd_img+init",
          "slkd_img_decay+init", "slkd_img_light+init", "fakd_img", "fakd_img+init", "slkd", "slkd+init", "slkd_mscn_edge_img", "slkd_img_decay", "fitnet", "at",
          "fakd", "output_kd_kl", "slkd_mscn", "slkd_edge", "slkd_decay", "slkd_deep_levels", "slkd_paper",
          "scratch@deep", "slkd_img@deep", "slkd_img_light")
#: the deraining screen (every run teacher-initialised, against scratch+init): the dual-teacher
#: split with working distances first, then FAKD + IRL, the paper's ablation at the lightest
#: weights and at the paper's, the Teacher B variants, and the baselines
SCREEN_DERAIN = ("scratch+init", "fakd_img+init", "split_aff_img+init", "fakd_irl_aff+init", "split_aff+init",
                 "split_l1_img+init", "split_l1+init", "fakd_irl+init", "slkd_img_light+init",
                 "slkd_img_light_nodrl+init", "slkd_img_light_noirl+init", "slkd_img_light_nonc+init",
                 "slkd_img_light_noet+init", "split_aff_img_a+init", "split_aff_img+init+bscratch",
                 "output_kd+init", "slkd_paper+init", "slkd_paper_nodrl+init", "slkd_paper_noirl+init",
                 "slkd_paper_nonc+init", "slkd_paper_noet+init")


@dataclass(frozen=True)
class Variant:
    name: str
    method: str
    distill: dict
    init: bool
    student: str
    #: Teacher B's file in the teachers' folder (``teacher_b`` or ``teacher_b_scratch``)
    teacher_b: str = "b"

    @property
    def scratch_twin(self) -> str:
        """The scratch run with the same initialisation and student."""
        return "scratch" + (INIT if self.init else "") + (DEEP if self.student == DEEP_STUDENT else "")


def variant(name: str) -> Variant:
    base, deep = (name[:-len(DEEP)], True) if name.endswith(DEEP) else (name, False)
    base, bscratch = (base[:-len(BSCRATCH)], True) if base.endswith(BSCRATCH) else (base, False)
    base, init = (base[:-len(INIT)], True) if base.endswith(INIT) else (base, False)
    if base not in VARIANTS:
        raise StudyError(f"unknown variant {name!r}: known {', '.join(VARIANTS)} (+init, +bscratch, @deep)")
    method, distill = VARIANTS[base]
    return Variant(name, method, distill, init, DEEP_STUDENT if deep else STUDENT,
                   "b_scratch" if bscratch else "b")


#: the stages' ``--quick``: smaller than the reproduction's (its stages run end to end in the
#: test suite); numbers mean nothing
QUICK = replace(FULL, patch=16, batch=2, eval_limit=2)


class PaysStudy(Study):
    """The runs of one task under ``out/<task key>``, against ``teachers`` (a folder with
    teacher_a/b); runs are named by variant, seed and budget (:meth:`run_name`)."""

    def __init__(self, task: Task, out: Path, data: Path, teachers: Path, scale: Scale):
        super().__init__(out / task.key, data, scale)
        self.task = task
        self.teacher_folder = teachers
        self.setting = task.setting()

    def teacher(self, role: str) -> Path:
        """Teacher ``role``'s weights, looked up when a run needs them (the plateau stage's
        scratch runs need none, so it can run while the teachers still train)."""
        return _teacher_path(self.teacher_folder, role)

    def run_name(self, v: Variant, seed: int, iters: int) -> str:
        return f"{v.name}_s{seed}_i{iters}"

    def student(self, v: Variant, seed: int, iters: int) -> Job:
        name = self.run_name(v, seed, iters)
        if name in self.jobs:
            return self.jobs[name]
        s = self.scale
        train = schedule(iters, LR)
        train["val_every"] = max(1, iters // s.val_points)
        val = {**self.setting["val"], **({"limit": s.eval_limit} if s.eval_limit else {})}
        # every run is a distillation run, scratch too (``distill.method: scratch``, no teachers)
        taught = v.method != "scratch"
        a = Net(TEACHER, self.teacher("a")) if v.init or taught else None
        config = distilled_run(name, v.student, v.method, teacher_a=a if taught else None,
                               teacher_b=a.teacher_b(self.teacher(v.teacher_b)) if taught else None,
                               overrides=v.distill, init_from_teacher=a if v.init else None,
                               output_dir=self.out, seed=seed, data=train_data(self.setting["train"], s, [val]),
                               train=train, eval=self.setting["eval"], order=PAYS_KEYS)
        return self.add(Job(name, ["distill", "--plugin", "benchmarks.variants"], [], config,
                            self.out / "configs" / f"{name}.yaml", self.out / name))

    def evaluate(self, label: str, model: str, weights: Path | None, deps=(), sets=None) -> list[Job]:
        return [self.eval_job(f"eval/{label}/{data}", model, data, eval_task, eval_file(self.out, label, data),
                              weights, deps)
                for data, eval_task in (self.task.tests if sets is None else sets)]

    def evaluate_run(self, job: Job, model: str, sets=None) -> list[Job]:
        return self.evaluate(job.name, model, job.run_dir / "weights.pth", deps=[job.name], sets=sets)

    def load_eval(self, label: str, data: str) -> dict | None:
        return read_eval(eval_file(self.out, label, data))


def _teacher_path(folder: Path, role: str) -> Path:
    for candidate in (folder / f"teacher_{role}.safetensors", folder / f"teacher_{role}"):
        if candidate.exists():
            return candidate.resolve()
    raise StudyError(f"Teacher {role.upper()} not found in {folder} (teacher_{role}.safetensors or a run "
                     f"folder teacher_{role}/): publish it first with python -m benchmarks.publish")


def validations(run_dir: Path) -> list[dict]:
    """The run's validation events (step, psnr, ssim) in order."""
    if not (run_dir / "metrics.jsonl").is_file():
        return []
    return [{"step": e["step"], "psnr": e["psnr"], "ssim": e["ssim"]}
            for e in read_events(run_dir) if e.get("event") == "val"]


def last_quarter_gain(vals: list[dict], iters: int) -> float | None:
    """Validation PSNR at the end minus at three quarters of the run (None if either is missing)."""
    at = {v["step"]: v["psnr"] for v in vals}
    q3 = (3 * iters) // 4
    if iters not in at or q3 not in at:
        return None
    return at[iters] - at[q3]


# --------------------------------------------------------------------------------- stages

def teacher_jobs(task_name: str, runs: Path, quick: bool, roles=("a", "b")) -> dict[str, Job]:
    """The teachers ``roles`` of ``task_name`` as run under ``runs`` (``<key>-teacher-<role>``)."""
    from slkd.engine.config import load_config, to_dict

    key = TASKS[task_name].key
    jobs: dict[str, Job] = {}
    recipes = TEACHER_RECIPES[task_name]
    unknown = [r for r in roles if r not in recipes]
    if unknown:
        raise StudyError(f"--roles: {task_name} has no teacher recipe {', '.join(unknown)} (it has "
                         f"{', '.join(recipes)})")
    for role in roles:
        config, overrides = recipes[role]
        name = f"{key}-teacher-{role.replace('_', '-')}"
        extra = [f"name={name}", f"output_dir={runs}", *TEACHER_COMMON, *overrides]
        if role == "b":
            extra.append(f"model.init_from={runs / f'{key}-teacher-a'}")
        if quick:
            extra += ["train.iters=4", "train.val_every=2", "train.ckpt_every=2", "data.train.patch_size=16",
                      "data.batch_size=2"]
        try:
            cfg = to_dict(load_config(ROOT / config, extra))
        except Exception as exc:  # a recipe that no longer validates: say which
            raise StudyError(f"teacher recipe {config} {' '.join(extra)}: {exc}") from None
        if quick:
            for val in cfg["data"]["val"]:
                val["limit"] = 2
        deps = [f"{key}-teacher-a"] if role == "b" and "a" in roles else []
        # the runner starts slkd in ROOT: a relative ``runs`` is relative to it
        jobs[role] = Job(name, ["train"], deps, cfg, ROOT / runs / "configs" / f"{name}.yaml", ROOT / runs / name)
    return jobs


def publish_teachers(jobs: dict[str, Job], dest: Path) -> dict:
    """Both teachers' best-on-validation weights as ``dest/teacher_{a,b}`` (kept if present)."""
    from benchmarks.publish import PublishError, publish

    out = {}
    for role, job in jobs.items():
        target = dest / f"teacher_{role}"
        meta = target.with_suffix(".json")
        if not meta.is_file() or json.loads(meta.read_text()).get("published_from") != str(job.run_dir):
            try:
                publish(job.run_dir, target, overwrite=True)
            except PublishError as exc:
                raise StudyError(str(exc)) from None
        out[role] = json.loads(meta.read_text())["validation"]
    return out


def plateau(study: PaysStudy, ladder: list[int]) -> tuple[list[Job], callable]:
    scratch = variant("scratch")
    jobs = [study.student(scratch, 0, iters) for iters in ladder]

    def summary() -> dict:
        rungs = []
        for iters, job in zip(ladder, jobs):
            vals = validations(job.run_dir)
            rungs.append({"iters": iters, "val_psnr": vals[-1]["psnr"] if vals and vals[-1]["step"] == iters else None,
                          "last_quarter_gain": last_quarter_gain(vals, iters), "seconds": recorded_seconds(job.run_dir),
                          "curve": vals})
        for r, longer in zip(rungs, rungs[1:] + [{}]):
            r["next_rung_gain"] = (None if r["val_psnr"] is None or longer.get("val_psnr") is None
                                   else longer["val_psnr"] - r["val_psnr"])
        budget = next((r["iters"] for r in rungs if r["last_quarter_gain"] is not None
                       and r["last_quarter_gain"] < PLATEAU_GAIN and r["next_rung_gain"] is not None
                       and r["next_rung_gain"] < PLATEAU_GAIN), None)
        teacher = _teacher_validation(study)
        best = max((r["val_psnr"] for r in rungs if r["val_psnr"] is not None), default=None)
        return {"rungs": rungs, "rule": f"first budget whose last quarter gains < {PLATEAU_GAIN} dB on "
                f"{study.setting['val'].get('name', 'validation')} and whose next rung ends < {PLATEAU_GAIN} dB "
                "above it", "budget": budget,
                "teacher_a_validation": teacher,
                "teacher_minus_best_scratch": None if teacher is None or best is None else teacher["psnr"] - best}
    return jobs, summary


def _teacher_validation(study: PaysStudy) -> dict | None:
    try:
        meta = study.teacher("a").with_suffix(".json")
    except StudyError:  # not published yet: the plateau stage runs while the teachers train
        return None
    if meta.is_file():
        return json.loads(meta.read_text()).get("validation")
    return None


def screen(study: PaysStudy, names: list[str], iters: int, seed: int = 0) -> tuple[list[Job], callable]:
    variants = [variant(n) for n in names]
    for v in list(variants):  # every variant is compared with its scratch twin
        if v.scratch_twin not in names:
            variants.append(variant(v.scratch_twin))
    jobs = {}
    for v in variants:
        try:
            jobs[v.name] = study.student(v, seed, iters)
        except StudyError as exc:  # an extra Teacher B (+bscratch) not published yet: screened
            if v.teacher_b == "b":  # once it is; the main teachers missing is an error
                raise
            print(f"  not run: {v.name}: {exc}", flush=True)
    variants = [v for v in variants if v.name in jobs]

    def summary() -> dict:
        rows = {}
        for v in variants:
            run = jobs[v.name].run_dir
            vals = validations(run)
            end = vals[-1]["psnr"] if vals and vals[-1]["step"] == iters else None
            rows[v.name] = {"method": v.method, "distill": v.distill, "init": v.init, "student": v.student,
                            "val_psnr": end, "best_val_psnr": max((x["psnr"] for x in vals), default=None),
                            "seconds": recorded_seconds(run), "scratch_twin": v.scratch_twin}
        for row in rows.values():
            twin = rows.get(row["scratch_twin"], {}).get("val_psnr")
            row["minus_scratch_twin"] = None if twin is None or row["val_psnr"] is None else row["val_psnr"] - twin
        return {"iters": iters, "seed": seed, "validation": study.setting["val"].get("name"), "variants": rows}
    return list(jobs.values()), summary


def final(study: PaysStudy, slkd_name: str, baselines: list[str], seeds: list[int], iters: int,
          publish: bool, double: bool = True, longer: list[int] | None = None) -> tuple[list[Job], callable, callable]:
    """The finalists' jobs, the summary and the parity budgets. Every finalist runs at ``iters``
    and at each of the ``longer`` budgets (default: twice ``iters``; ``double=False`` and no
    ``longer``: none — they test whether a gain *survives*, pointless where there is none). The
    third value, ``parity()``, gives each distilled finalist's compute-parity budget (key →
    scratch iterations of the same wall-clock; None until its runs and scratch's finished)."""
    slkd_v = variant(slkd_name)
    scratch_v = variant(slkd_v.scratch_twin)
    base_vs = [variant(b) for b in baselines]
    families = {"slkd": slkd_v, "scratch": scratch_v, **{b.name: b for b in base_vs}}
    longer = _longer(iters, double, longer)
    jobs: list[Job] = []
    everything = study.task.tests + study.task.no_reference
    teacher = study.evaluate("teacher_a", TEACHER, study.teacher("a"), sets=everything)
    inputs = study.evaluate("input", "input", None, sets=everything)
    jobs += teacher + inputs
    for budget in (iters, *longer):
        for seed in seeds:
            for v in families.values():
                run = study.student(v, seed, budget)
                jobs += [run, *study.evaluate_run(run, v.student, sets=study.task.tests if budget != iters
                                                  else everything)]

    def parity() -> dict[str, int | None]:
        return parity_budgets(study, families, seeds, iters)

    def summary() -> dict:
        return {**_final_summary(study, families, seeds, iters, parity(), publish, longer), "double": bool(longer),
                "longer": longer}
    return jobs, summary, parity


def _longer(iters: int, double: bool, longer: list[int] | None) -> list[int]:
    if longer:
        return sorted(set(b for b in longer if b != iters))
    return [2 * iters] if double else []


def budget_suffix(iters: int, budget: int) -> str:
    """Key suffix of a longer budget's rows in the summary: ``_2x`` for twice the budget (as
    earlier results files have it), ``_i<N>`` for any other."""
    return "_2x" if budget == 2 * iters else f"_i{budget}"


def parity_budgets(study: PaysStudy, families: dict[str, "Variant"], seeds, iters: int) -> dict[str, int | None]:
    """Compute parity, measured: for each distilled finalist, the scratch iterations that take its
    wall-clock — ``iters`` × (its mean seconds over the seeds) / (scratch's), from the runs' own
    logs (each run's seconds: :func:`~benchmarks.study.scheduler.recorded_seconds`). None while a run has not finished."""
    def seconds(v: Variant) -> list[float | None]:
        return [recorded_seconds(study.out / study.run_name(v, s, iters)) for s in seeds]

    scratch = seconds(families["scratch"])
    out: dict[str, int | None] = {}
    for key, v in families.items():
        if key == "scratch":
            continue
        mine = seconds(v)
        out[key] = (None if None in mine or None in scratch
                    else round(iters * statistics.fmean(mine) / statistics.fmean(scratch)))
    return out


def parity_jobs(study: PaysStudy, slkd_name: str, seeds, budgets) -> list[Job]:
    """Scratch given each distilled finalist's wall-clock: the SLKD variant's scratch twin trained
    each of ``budgets`` (an int, or the dict of :func:`parity_budgets`; None entries are skipped)
    per seed, with its evaluations on the test sets."""
    twin = variant(variant(slkd_name).scratch_twin)
    wanted = budgets.values() if isinstance(budgets, dict) else [budgets]
    jobs: list[Job] = []
    for iters in sorted({b for b in wanted if b is not None}):
        for seed in seeds:
            run = study.student(twin, seed, iters)
            jobs += [run, *study.evaluate_run(run, twin.student)]
    return jobs


def ablation(study: PaysStudy, full: str, seeds: list[int], iters: int) -> tuple[list[Job], callable]:
    """The paper's ablation table of ``full``: it and its four ablations for every seed, scored
    on the test sets; each row against the full variant, paired per seed and image."""
    rows = ablation_rows(full)
    jobs: list[Job] = []
    for name in rows.values():
        v = variant(name)
        for seed in seeds:
            run = study.student(v, seed, iters)
            jobs += [run, *study.evaluate_run(run, v.student, sets=study.task.tests)]

    def summary() -> dict:
        out: dict = {"full": full, "iters": iters, "seeds": list(seeds), "rows": rows, "sets": {}}
        for (data, _), set_name in zip(study.task.tests, study.task.sets):
            evals = {label: [study.load_eval(study.run_name(variant(name), s, iters), data) for s in seeds]
                     for label, name in rows.items()}
            table = {}
            for label, evs in evals.items():
                got = [e for e in evs if e]
                pairs = [(x, y) for x, y in zip(evs, evals["full"]) if x and y]
                table[label] = {"psnr": spread([e["mean"]["psnr"] for e in got]) if got else None,
                                "ssim": statistics.fmean(e["mean"]["ssim"] for e in got) if got else None,
                                "minus_full": None if label == "full" else paired(pairs)}
            out["sets"][set_name] = table
        return out
    return jobs, summary


def _family_runs(study: PaysStudy, v: Variant, seeds, iters) -> list[str]:
    return [study.run_name(v, s, iters) for s in seeds]


def _final_summary(study: PaysStudy, families: dict[str, Variant], seeds, iters, parity, publish,
                   longer: list[int] = ()) -> dict:
    out = {"iters": iters, "seeds": list(seeds), "parity_iters": parity, "families": {}, "sets": {}}
    for key, v in families.items():
        runs = _family_runs(study, v, seeds, iters)
        vals = [validations(study.out / r) for r in runs]
        out["families"][key] = {"variant": v.name, "val_psnr": [x[-1]["psnr"] if x else None for x in vals]}
    # the best baseline is chosen on validation (mean over seeds), never on a test set
    baseline_keys = [k for k in families if k not in ("slkd", "scratch")]
    scored = {k: statistics.fmean(p for p in out["families"][k]["val_psnr"] if p is not None)
              for k in baseline_keys if any(p is not None for p in out["families"][k]["val_psnr"])}
    best = max(scored, key=scored.get) if scored else None
    out["best_baseline"] = best
    for (data, _), set_name in zip(study.task.tests, study.task.sets):
        row: dict = {"seeds": len(seeds)}
        teacher = study.load_eval("teacher_a", data)
        inp = study.load_eval("input", data)
        row["teacher"] = teacher["mean"]["psnr"] if teacher else None
        row["input"] = inp["mean"]["psnr"] if inp else None
        for budget, suffix in ((iters, ""), *((b, budget_suffix(iters, b)) for b in (longer or [2 * iters]))):
            evs = {k: [study.load_eval(r, data) for r in _family_runs(study, v, seeds, budget)]
                   for k, v in families.items()}
            for k, e in evs.items():
                got = [x["mean"]["psnr"] for x in e if x]
                row[f"{k}{suffix}"] = spread(got) if got else None
            for k in families:
                if k == "scratch":
                    continue
                pairs = [(x, y) for x, y in zip(evs[k], evs["scratch"]) if x and y]
                row[f"{k}_minus_scratch{suffix}"] = paired(pairs)
            if best:
                pairs = [(x, y) for x, y in zip(evs["slkd"], evs[best]) if x and y]
                row[f"slkd_minus_best_baseline{suffix}"] = paired(pairs)
        out["sets"][set_name] = row
    for data, _ in study.task.no_reference:  # BRISQUE/PIQE means (lower is better), outputs vs inputs
        row = {}
        inp = study.load_eval("input", data)
        row["input"] = inp["mean"]["input"] if inp else None
        teacher = study.load_eval("teacher_a", data)
        row["teacher"] = teacher["mean"]["output"] if teacher else None
        for key, v in families.items():
            evs = [e for e in (study.load_eval(r, data) for r in _family_runs(study, v, seeds, iters)) if e]
            row[key] = ({m: statistics.fmean(e["mean"]["output"][m] for e in evs) for m in ("brisque", "piqe")}
                        if evs else None)
        out.setdefault("no_reference", {})[data] = row
    if publish:
        out["published"] = _publish_students(study, families, seeds, iters)
    return out


def _publish_students(study: PaysStudy, families: dict[str, Variant], seeds, iters) -> dict:
    from benchmarks.publish import PublishError, publish

    published: dict[str, list[str]] = {}
    for key, v in families.items():
        paths = []
        for seed in seeds:
            run = study.out / study.run_name(v, seed, iters)
            dest = WEIGHTS / study.task.key / "students" / f"{v.name.replace('+', '-').replace('@', '-')}_s{seed}"
            try:
                publish(run, dest, which="final", overwrite=True)
            except PublishError as exc:
                print(f"  not published: {exc}", file=sys.stderr)
                continue
            paths.append(str(dest.with_suffix(".safetensors").relative_to(ROOT)))
        published[key] = paths
    return published


def headline(summary: dict, task: Task, student: str) -> dict:
    """The headline file: PSNR means over seeds per test set and the published students."""
    best = summary["best_baseline"]
    sets = {}
    for name, row in summary["sets"].items():
        mean = lambda key: row[key]["mean"] if row.get(key) else None  # noqa: E731
        sets[name] = {"teacher": row["teacher"], "scratch": mean("scratch"), "slkd": mean("slkd"),
                      "best_baseline": {"name": summary["families"][best]["variant"] if best else None,
                                        "psnr": mean(best) if best else None},
                      "seeds": row["seeds"]}
        # each distilled finalist against scratch trained for its wall-clock, and the longer budgets
        label = lambda key: key if key == "slkd" else summary["families"][key]["variant"]  # noqa: E731
        parity = (summary.get("parity") or {}).get(name) or {}
        if parity:
            sets[name]["compute_parity"] = {label(k): {"psnr": r["psnr"], "scratch_same_wallclock":
                                                       r["scratch_same_wallclock"]} for k, r in parity.items()}
        for budget in summary.get("longer", []):
            suffix = budget_suffix(summary["iters"], budget)
            sets[name][f"iters_{budget}"] = {label(k): mean(k + suffix) for k in ("scratch", "slkd", *([best] if best else []))}
    pub = summary.get("published", {})
    students = {"model": student, **HEADLINES[task.key][1], "scratch": pub.get("scratch", []), "slkd": pub.get("slkd", [])}
    if best:
        students[summary["families"][best]["variant"]] = pub.get(best, [])
    return {"sets": sets, "students": students}


# ------------------------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study.pays", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("teachers", "plateau", "screen", "final", "ablation"))
    p.add_argument("--task", choices=tuple(TASKS), default="denoise")
    p.add_argument("--roles", nargs="+", default=["a", "b"], help="teachers: which teachers to train and "
                   "publish (a, b; derain also b_scratch, Teacher B from random weights)")
    p.add_argument("--ladder", type=number(int, minimum=1), nargs="+", default=[1000, 2000, 4000, 8000, 16000, 32000],
                   help="plateau: scratch budgets tried (iterations)")
    p.add_argument("--full-ladder", action="store_true", help="plateau: run every rung (default: stop "
                   "after the wave that finds the budget)")
    p.add_argument("--iters", type=number(int, minimum=1), help="screen/final: student iterations (final also runs twice this)")
    p.add_argument("--variants", nargs="+", help="screen: variants (default: the task's screening list, "
                   "SCREEN or SCREEN_DERAIN)")
    p.add_argument("--slkd", default="slkd", help="final: the SLKD variant; ablation: the full variant ablated")
    p.add_argument("--baselines", nargs="+", default=["output_kd", "fitnet", "at", "fakd"],
                   help="final: the baselines (their best on validation is the headline's)")
    p.add_argument("--seeds", type=number(int, minimum=0, maximum=2**63 - 1), nargs="+", default=[0, 1, 2],
                   help="final: seeds")
    p.add_argument("--teachers", type=Path, help="folder with teacher_a/teacher_b (.safetensors or run folders); "
                   "default benchmarks/weights/<task>")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "pays")
    p.add_argument("--teacher-runs", type=Path, default=ROOT / "runs" / "study",
                   help="teachers: where the teacher runs live (default runs/study)")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("SLKD_DATA", ROOT.parent / "shared" / "data")))
    p.add_argument("--results", type=Path, help="where the JSON goes (default benchmarks/results, "
                   "<out>/results with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny crops and 2 test images: checks the stages end "
                   "to end; numbers mean nothing")
    p.add_argument("--no-publish", action="store_true", help="final: do not copy students to benchmarks/weights")
    p.add_argument("--no-2x", dest="double", action="store_false", help="final: leave out the runs at twice the "
                   "budget (they test whether a gain survives; without a gain at the budget they are not needed)")
    p.add_argument("--longer", type=int, nargs="+", metavar="N", help="final: the longer budgets every finalist "
                   "also runs (default: twice --iters; see --no-2x)")
    p.add_argument("--no-parity", dest="parity", action="store_false", help="final: leave out scratch given "
                   "each distilled finalist's wall-clock (compute parity: one scratch run per finalist and seed, "
                   "several times the budget)")
    p.add_argument("--summary-only", action="store_true", help="plateau/screen/final: start nothing, write the "
                   "results file from the runs finished so far (while the stage runs in another process, or after "
                   "it was stopped)")
    p.add_argument("--jobs", type=number(int, minimum=1), default=1)
    p.add_argument("--threads", type=number(int, minimum=1, maximum=max_threads()), default=1)
    p.add_argument("--device", default="cpu", type=device_option(), help="where every run trains and evaluates: cpu (default), "
                   "cuda or cuda:N (the --jobs runs share it); compare runs of one device only")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run_study(_main, args)


def _main(args) -> int:
    task = TASKS[args.task]
    if not args.data.is_dir():
        raise StudyError(f"data folder not found: {args.data} (pass --data DIR or set SLKD_DATA)")
    try:
        resolve_device(args.device)  # a GPU this machine lacks: one line before any run
    except SlkdError as exc:
        raise StudyError(str(exc)) from None
    if args.stage == "teachers":
        return _teachers(args, task)
    if args.stage != "plateau" and (args.iters is None or args.iters < 4):
        raise StudyError(f"{args.stage} needs --iters N (N >= 4; the plateau stage says which)")
    if any(n < 4 for n in args.ladder):
        raise StudyError("--ladder budgets must be >= 4 iterations")
    study = PaysStudy(task, args.out.resolve(), args.data.resolve(), (args.teachers or WEIGHTS / task.key).resolve(),
                      QUICK if args.quick else FULL)
    parity = None
    if args.stage == "plateau":
        jobs, summary = plateau(study, sorted(set(args.ladder)))
    elif args.stage == "screen":
        names = args.variants or list(SCREEN_DERAIN if args.task == "derain" else SCREEN)
        jobs, summary = screen(study, list(dict.fromkeys(names)), args.iters)
    elif args.stage == "ablation":
        jobs, summary = ablation(study, args.slkd, args.seeds, args.iters)
    else:
        jobs, summary, parity = final(study, args.slkd, list(dict.fromkeys(args.baselines)), args.seeds,
                                      args.iters, publish=not (args.no_publish or args.quick), double=args.double,
                                      longer=args.longer)
    env = {"SLKD_DATA": str(study.data)}
    print(f"{len(jobs)} jobs, {args.jobs} at a time × {args.threads} thread(s); runs in {study.out}", flush=True)
    if args.summary_only:
        state = {}
    elif args.stage == "plateau" and not args.full_ladder:
        state = _climb(jobs, summary, args, env)
    else:
        state = run_jobs(list({j.name: j for j in jobs}.values()), args.jobs, args.threads, env, args.device)
    if parity is not None and args.parity and not args.summary_only:
        extra = parity_jobs(study, args.slkd, args.seeds, parity())
        if extra:
            state.update(run_jobs(extra, args.jobs, args.threads, env, args.device))
    result = summary()
    if parity is not None and any(result.get("parity_iters", {}).values()):
        families = {k: variant(f["variant"]) for k, f in result["families"].items()}
        result["parity"] = _parity_rows(study, families, args.seeds, args.iters, result["parity_iters"])
    partial = None
    if args.stage == "final" and args.summary_only:  # part-way only if a finalist is missing
        partial = not (all(v is not None for f in result["families"].values() for v in f["val_psnr"])
                       and all(row.get(k) for row in result["sets"].values() for k in result["families"]))
    path = _write_result(args, study, result, partial)
    written = [path]
    if args.stage == "final":
        student = variant(args.slkd).student
        head = path.parent / HEADLINES[task.key][0]
        head.write_text(json.dumps(headline(result, task, student), indent=2, default=json_default) + "\n")
        written.append(head)
    print("wrote " + ", ".join(map(str, written)))
    failed = [n for n, s in state.items() if s != "done"]
    if failed:
        print(f"{len(failed)} job(s) did not finish: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _climb(jobs: list[Job], summary, args, env: dict) -> dict[str, str]:
    """The ladder in ascending waves of ``--jobs`` rungs, stopping at the first wave that
    finds the budget: the larger rungs would not change it."""
    state: dict[str, str] = {}
    for start in range(0, len(jobs), args.jobs):
        state.update(run_jobs(jobs[start:start + args.jobs], args.jobs, args.threads, env, args.device))
        budget = summary()["budget"]
        rest = jobs[start + args.jobs:]
        if budget is not None and rest:
            print(f"plateau at {budget} iterations; not run (--full-ladder runs them): "
                  + ", ".join(j.name for j in rest), flush=True)
            break
    return state


def _teachers(args, task: Task) -> int:
    runs = args.teacher_runs.resolve()
    if runs.is_relative_to(ROOT):  # as the running teachers were started (the runner's cwd is ROOT)
        runs = runs.relative_to(ROOT)
    jobs = teacher_jobs(args.task, runs, args.quick, tuple(args.roles))
    print(f"Teachers {', '.join(r.upper() for r in args.roles)} of {task.key} in {runs}", flush=True)
    state = run_jobs(list(jobs.values()), 1, args.threads, {"SLKD_DATA": str(args.data.resolve())}, args.device)
    if any(s != "done" for s in state.values()):
        print("the teachers did not finish; the same command resumes them", file=sys.stderr)
        return 1
    dest = (args.teachers or (args.out.resolve() / "weights" / task.key if args.quick else WEIGHTS / task.key))
    validation = publish_teachers(jobs, dest.resolve())
    for role, v in validation.items():
        print(f"Teacher {role.upper()}: {v['dataset']} PSNR {v['psnr']:.2f} dB at step {v['step']}")
    if "a" not in args.roles:
        return 0
    # Teacher A and the degraded input on the test sets: the teacher's stated quality (nothing is
    # chosen on them); the final stage reuses these evaluations
    study = PaysStudy(task, args.out.resolve(), args.data.resolve(), dest.resolve(), QUICK if args.quick else FULL)
    evals = study.evaluate("teacher_a", TEACHER, study.teacher("a")) + study.evaluate("input", "input", None)
    state = run_jobs(evals, args.jobs, args.threads, {"SLKD_DATA": str(study.data)}, args.device)
    tests = {}
    for (data, _), set_name in zip(task.tests, task.sets):
        teacher, inp = study.load_eval("teacher_a", data), study.load_eval("input", data)
        tests[set_name] = {"teacher_a": teacher and teacher["mean"], "input": inp and inp["mean"],
                           "images": teacher and teacher["count"]}
        if teacher and inp:
            print(f"Teacher A on {set_name}: PSNR {teacher['mean']['psnr']:.2f} dB (input "
                  f"{inp['mean']['psnr']:.2f} dB)")
    _write_result(args, study, {"validation": validation, "tests": tests})
    return 0 if all(s == "done" for s in state.values()) else 1


def _write_result(args, study: PaysStudy, summary: dict, partial: bool | None = None) -> Path:
    """``pays_<task>_<stage>.json`` (stage, task, the command, the summary) in the results folder."""
    results = args.results or (study.out / "results" if args.quick else RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.study.pays " + " ".join(a for a in args.argv if a != "--summary-only")
    path = results / f"pays_{study.task.key}_{args.stage}.json"
    path.write_text(json.dumps({"stage": args.stage, "task": args.task, "command": command.strip(),
                                "partial": bool(getattr(args, "summary_only", False)) if partial is None
                                else partial, "summary": summary},
                               indent=2, default=json_default) + "\n")
    return path


def _parity_rows(study: PaysStudy, families: dict[str, Variant], seeds, iters: int, budgets: dict) -> dict:
    """Per test set and distilled finalist: its PSNR against scratch trained for its wall-clock
    (paired per image and seed)."""
    twin = families["scratch"]
    rows: dict = {}
    for (data, _), set_name in zip(study.task.tests, study.task.sets):
        rows[set_name] = {}
        for key, n in budgets.items():
            if n is None:
                continue
            par = [study.load_eval(study.run_name(twin, s, n), data) for s in seeds]
            mine = [study.load_eval(study.run_name(families[key], s, iters), data) for s in seeds]
            pairs = [(x, y) for x, y in zip(mine, par) if x and y]
            rows[set_name][key] = {
                "variant": families[key].name, "iters": n, "minus_scratch_parity": paired(pairs),
                "psnr": statistics.fmean(x["mean"]["psnr"] for x, _ in pairs) if pairs else None,
                "scratch_same_wallclock": statistics.fmean(y["mean"]["psnr"] for _, y in pairs) if pairs else None}
    return rows


if __name__ == "__main__":
    sys.exit(main())
