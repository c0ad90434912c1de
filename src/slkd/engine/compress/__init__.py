"""The compression pipeline: a trained restoration network and a folder of data in, a distilled
student, its evaluation and a report out. ``slkd compress`` (and ``slkd demo``) call it.

For a :class:`Job` — Teacher A (a preset and its weights, official checkpoints included, or a
preset trained here first), a task, training data and validation data — :func:`run_job`

1. checks everything a user can get wrong before any training (:func:`prepare`): unknown
   models or methods, weights that do not fit, missing folders, unpaired or ambiguous names,
   pairs of two sizes or colour types, unreadable images, validation pairs whose input equals
   their target, validation sets made of training images, a batch that cannot fit in memory,
   an output folder that is not a job's (anything in it and no job record), holds other
   settings or is being written by another process — each one
   :class:`~slkd.errors.SlkdError` line; then it claims the folder (:func:`claim_out`: a lock
   held to the end of the job, and the job record written first);
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

import os
import time

from slkd.engine.compress.plan import (DEPLOYS, INITS, PLANS, SETTINGS_FILE, TIMES_FILE, WORDS, Job, Log, ModelSpec,
                                       Plan, Prepared, StagePlan)
from slkd.engine.compress.prepare import check_out, claim_out, job_reads, prepare
from slkd.engine.compress.report import finish
from slkd.engine.runner import log_silent, log_stderr
from slkd.engine.stages import train_stages
from slkd.models.checkpoint import read_once

__all__ = ["DEPLOYS", "INITS", "Job", "ModelSpec", "PLANS", "Plan", "Prepared", "SETTINGS_FILE", "StagePlan", "check_out",
           "claim_out", "prepare", "run_job"]


def run_job(job: Job, *, device: str = "auto", log: Log = log_stderr) -> dict | None:
    """:func:`prepare`, train every stage, then evaluate, profile, export and report. Returns
    the summary on rank 0 (None on the other ranks of ``torchrun``). Each weights file is read
    once in the process (:func:`slkd.models.checkpoint.read_once`): Teacher A's file serves the
    checks, every stage that builds it and the report."""
    with read_once():
        return _run_job(job, device=device, log=log)


def _run_job(job: Job, *, device: str, log: Log) -> dict | None:
    t0 = time.perf_counter()
    prep = prepare(job, log, device=device)
    if int(os.environ.get("RANK", "0")) != 0:
        log = log_silent  # ranks of torchrun other than 0 train quietly
    for note in prep.notes:
        log(note)
    log(f"{job.teacher} → {prep.student} ({job.method}), {job.task}; training data: {prep.train_described}; "
        "validation: " + ", ".join(f"{n} ({len(s)} image(s)" + (f", {prep.val_overlap[n]['count']} of them "
                                   "also training images" if n in prep.val_overlap else "") + ")"
                                   for n, s in prep.eval_sets.items()))
    # one process writes a job folder: locked from here to the report, the job record first
    lock = claim_out(prep.out, job_reads(job), job.extra_entries, device=device, settings=prep.settings,
                     stages=prep.stages)
    try:
        # every stage skipped when finished, resumed when interrupted; the progress lines count
        # the evaluation and the report too
        timing = train_stages(prep.stages, prep.out, total=len(prep.stages) + 2, words=WORDS,
                              times_file=TIMES_FILE, device=device, log=log)
        if int(os.environ.get("RANK", "0")) != 0:
            return None
        return finish(prep, timing, device=device, log=log, started=t0)
    finally:
        if lock is not None:
            lock.release()
