"""Running the study's jobs: ordinary ``slkd`` commands as subprocesses, in dependency order, a
few at a time; each training run is decided by the library's stage rule, as ``slkd compress``
decides its stages (:mod:`slkd.engine.stages`: finished runs are reused, interrupted ones
resumed, a folder stopped before its first checkpoint started again), and a run folder holding
other settings is refused (nothing is deleted)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmarks.study.settings import ROOT, Scale, StudyError
from slkd.engine.stages import DONE as DONE_STAGE
from slkd.engine.stages import begin_stage, stage_state
from slkd.errors import SlkdError


@dataclass
class Job:
    """One subprocess: a training run (``config`` set) or an evaluation (``eval_out`` set)."""

    name: str
    argv: list[str]
    deps: list[str] = field(default_factory=list)
    config: dict | None = None
    config_path: Path | None = None
    run_dir: Path | None = None
    eval_out: Path | None = None

    @property
    def log(self) -> Path:
        base = self.run_dir.parent if self.run_dir else self.eval_out.parent.parent
        return base / "logs" / (self.name.replace("/", "__") + ".log")


class Study:
    """The jobs of one study folder, one vocabulary for both studies: training runs and
    evaluations on the benchmark folder ``data`` at ``scale``, each built once and kept by name
    (asking again for a job gives the one already built), started by :func:`run_jobs`. The
    reproduction study (:class:`benchmarks.study.plan.ReproductionStudy`) and the pays study
    (:class:`benchmarks.study.pays.PaysStudy`) add how they name and configure their runs."""

    def __init__(self, out: Path, data: Path, scale: Scale):
        self.out, self.data, self.scale = out, data, scale
        self.jobs: dict[str, Job] = {}

    def add(self, job: Job) -> Job:
        return self.jobs.setdefault(job.name, job)

    def eval_job(self, name: str, model: str, data: str, eval_task: str, out: Path,
                 weights: Path | None = None, deps=()) -> Job:
        """``slkd eval`` of ``model`` (with ``weights``) on the benchmark folder ``data``, its
        JSON kept at ``out`` (:func:`eval_file`)."""
        argv = eval_argv(model, self.data / data, eval_task, weights, self.scale.eval_limit)
        return self.add(Job(name, argv, list(deps), eval_out=out))


def eval_file(folder: Path, label: str, data: str) -> Path:
    """Where the evaluation ``label`` on the benchmark folder ``data`` is kept under ``folder``
    (a folder path such as ``Rain100L/test`` becomes ``Rain100L-test``)."""
    return folder / "eval" / f"{label}__{data.replace('/', '-')}.json"


def read_eval(path: Path) -> dict | None:
    """An evaluation's JSON, None while it has not been written."""
    return json.loads(path.read_text()) if path.is_file() else None


#: what the runner writes into a training run's folder when the run has finished: its seconds
#: (:func:`train_finished`) and how it ran (threads, parallel runs, device)
DONE = "study.json"


def train_finished(run_dir: Path, iters: int) -> float | None:
    """Seconds the run took if ``run_dir`` holds a run that reached ``iters``, else None: what
    the runner recorded (:func:`recorded_seconds`), else the library's reading of the run's log
    (:func:`slkd.engine.stages.stage_state`, as ``slkd compress`` decides its stages: finished,
    and its training seconds summed over the processes that ran it). The one rule for a study
    run's seconds."""
    seconds = recorded_seconds(run_dir)
    if seconds is not None:
        return seconds
    state = stage_state(run_dir, iters)
    return state.seconds if state.how == DONE_STAGE else None


def recorded_seconds(run_dir: Path) -> float | None:
    """The seconds the runner recorded for the finished run in ``run_dir`` (None while it has
    not finished)."""
    done = run_dir / DONE
    return json.loads(done.read_text())["seconds"] if done.is_file() else None


def lock_path(job: Job) -> Path:
    """Where the study process running ``job`` writes its PID while the job runs."""
    return job.run_dir / ".study.lock" if job.run_dir is not None else job.eval_out.with_suffix(".lock")


def holder(job: Job) -> int | None:
    """PID of another live study process running ``job`` now, else None. A lock left by a
    process that has died (killed with -9, the machine restarted) is ignored."""
    try:
        pid = int(lock_path(job).read_text())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return pid


def same_config(path: Path, config: dict) -> bool:
    return not path.is_file() or yaml.safe_load(path.read_text()) == config


def prepare(job: Job) -> str:
    """'done', 'resume' or 'new'; writes the config. Refuses a folder with other settings. A
    training run is decided as ``slkd compress`` decides its stages
    (:func:`slkd.engine.stages.begin_stage`: a folder with run files but no checkpoint is
    cleared, to start again)."""
    if job.config is not None:
        if job.run_dir.exists() and not same_config(job.config_path, job.config):
            raise StudyError(f"{job.run_dir} holds a run with other settings than {job.config_path.name} "
                             "now asks for; use --out DIR for a new study or delete that run folder")
        job.config_path.parent.mkdir(parents=True, exist_ok=True)
        job.config_path.write_text(yaml.safe_dump(job.config, sort_keys=False))
        if recorded_seconds(job.run_dir) is not None:
            return "done"
        try:
            state = begin_stage(job.run_dir, job.config["train"]["iters"])
        except SlkdError as exc:  # another process writes the folder
            raise StudyError(str(exc)) from None
        if state.how == DONE_STAGE and state.seconds is not None:
            (job.run_dir / DONE).write_text(json.dumps({"seconds": state.seconds, "source": "metrics.jsonl"}))
        return state.how
    weights = [Path(a) for a in job.argv if a.endswith(".pth")]
    if job.eval_out.is_file() and all(job.eval_out.stat().st_mtime >= w.stat().st_mtime
                                      for w in weights if w.is_file()):
        return "done"
    return "new"


def run_jobs(jobs: list[Job], parallel: int, threads: int, env: dict, device: str = "cpu") -> dict[str, str]:
    """Run ``jobs`` in list order as their dependencies allow, ``parallel`` at a time with
    ``threads`` intra-op threads each, every command on ``device`` (``--device``: cpu, cuda,
    cuda:N; several runs may share one GPU). Returns name → 'done' | 'failed' | 'skipped'.

    Two study commands may share runs (the screen reuses the plateau's run of the same budget):
    a job another live study process is running (:func:`holder`) waits for it, then is reused
    or resumed, instead of two processes training one run folder."""
    state: dict[str, str] = {}
    pending = list(jobs)
    running: dict[str, tuple[subprocess.Popen, Job, float, object]] = {}
    child_env = {**os.environ, **env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    total = len(jobs)
    try:
        _loop(pending, running, state, parallel, threads, child_env, total, device)
    finally:  # Ctrl-C or a kill of the runner: stop the runs (training checkpoints on SIGTERM)
        for proc, *_ in running.values():
            proc.terminate()
        for proc, job, *_ in running.values():
            proc.wait()
            lock_path(job).unlink(missing_ok=True)
    return state


def _loop(pending, running, state, parallel, threads, child_env, total, device) -> None:
    waiting: set[str] = set()
    while pending or running:
        for job in list(pending):
            if len(running) >= parallel:
                break
            if any(state.get(d) in ("failed", "skipped") for d in job.deps):
                state[job.name] = "skipped"
                pending.remove(job)
                print(f"  skip {job.name}: a dependency failed", flush=True)
                continue
            if not all(state.get(d) == "done" for d in job.deps):
                continue
            other = holder(job)
            if other is not None:
                if job.name not in waiting:
                    waiting.add(job.name)
                    print(f"  wait {job.name}: another study process (pid {other}) is running it", flush=True)
                continue
            pending.remove(job)
            how = prepare(job)
            if how == "done":
                state[job.name] = "done"
                continue
            argv = [sys.executable, "-m", "slkd.cli.main", *job.argv, "--device", device]
            if job.config is not None:
                argv += ["--config", str(job.config_path)]
                if how == "resume":
                    argv.append("--resume")
            job.log.parent.mkdir(parents=True, exist_ok=True)
            if job.eval_out is not None:
                job.eval_out.parent.mkdir(parents=True, exist_ok=True)
            lock_path(job).parent.mkdir(parents=True, exist_ok=True)
            lock_path(job).write_text(str(os.getpid()))
            log = open(job.log, "a")
            stdout = open(job.eval_out.with_suffix(".tmp"), "w") if job.eval_out is not None else log
            proc = subprocess.Popen(argv, stdout=stdout, stderr=log, env=child_env, cwd=ROOT)
            running[job.name] = (proc, job, time.perf_counter(), {stdout, log})
            done_count = sum(1 for s in state.values() if s == "done")
            print(f"[{done_count}/{total}] start {job.name}" + (" (resume)" if how == "resume" else ""),
                  flush=True)
        time.sleep(0.5)
        for name, (proc, job, start, files) in list(running.items()):
            if proc.poll() is None:
                continue
            for f in files:
                f.close()
            del running[name]
            lock_path(job).unlink(missing_ok=True)
            seconds = time.perf_counter() - start
            if proc.returncode == 0:
                if job.eval_out is not None:
                    job.eval_out.with_suffix(".tmp").replace(job.eval_out)
                else:  # a resumed run's wall-clock spans its earlier processes too: read from its log
                    seconds = stage_state(job.run_dir, job.config["train"]["iters"]).seconds or seconds
                    (job.run_dir / DONE).write_text(json.dumps({"seconds": seconds, "threads": threads,
                                                                       "parallel": parallel, "device": device}))
                state[name] = "done"
                print(f"  done {name} in {seconds:.0f} s", flush=True)
            else:
                state[name] = "failed"
                tail = job.log.read_text(errors="replace").strip().splitlines()[-3:] if job.log.is_file() else []
                print(f"  FAILED {name} (exit {proc.returncode}); log {job.log}:\n    " + "\n    ".join(tail),
                      flush=True)
        if pending and not running and not any(
                all(state.get(d) == "done" for d in j.deps) or any(state.get(d) in ("failed", "skipped") for d in j.deps)
                for j in pending):
            raise StudyError("dependency cycle or unknown dependency: " + ", ".join(j.name for j in pending))



def run_study(main, args) -> int:
    """``main(args)`` of a study's command line: a user-level problem is one line (exit 2), and
    Ctrl-C or a ``kill`` stops the runs cleanly (trainings checkpoint; the same command resumes)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return main(args)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped; finished runs are kept and the same command resumes the rest", file=sys.stderr)
        return 130


def eval_argv(model: str, data: Path, eval_task: str, weights: Path | None = None,
              limit: int | None = None) -> list[str]:
    """``slkd eval --json`` of ``model`` (with ``weights``) on the benchmark folder ``data``
    (:func:`run_jobs` adds the device)."""
    argv = ["eval", "--model", model, "--data", str(data), "--task", eval_task, "--json",
            "--plugin", "benchmarks.variants"]  # the studies' own presets and variants (res-sl-tiny-deep)
    if weights is not None:
        argv += ["--weights", str(weights)]
    if limit:
        argv += ["--limit", str(limit)]
    return argv


def json_default(obj):
    """Study JSON: non-finite floats as null, paths as strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj))
