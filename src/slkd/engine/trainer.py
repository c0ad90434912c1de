"""The iteration-based training loop shared by teachers, scratch students and distillation.

One file holds the whole training state (model, EMA, optimiser, scheduler, step, best metrics,
RNG states), written atomically; the data stream is a pure function of (seed, step), so
``--resume`` continues exactly where the run stopped. The same loop runs in one CPU process or
under ``torchrun`` with DistributedDataParallel, sharded validation and rank-0 writing.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from slkd.data.device import device_batches, host_side
from slkd.data.sampler import TrainSampler
from slkd.engine.config import ConfigError, EvalConfig, TrainConfig, TrainRunConfig, from_dict, parse_yaml, to_dict
from slkd.engine.compiled import compile_step, wants_compile
from slkd.engine.distributed import DistInfo, all_reduce_sum, barrier
from slkd.engine.ema import ModelEMA
from slkd.engine.runlock import lock_on_rank0
from slkd.engine.runlog import RunLogger, write_run_files
from slkd.engine.runstate import (
    CHECKPOINT,
    CHECKPOINT_KEYS,
    CONFIG,
    RESUME_MAY_CHANGE,
    WEIGHTS,
    config_changes,
    earlier_run_files,
    lr_lambda,
    rng_state,
    set_rng_state,
)
from slkd.engine.tasks import TrainingTask
from slkd.errors import SlkdError
from slkd.fileio import atomic_write, remove_stale_temps
from slkd.metrics.fullref import SSIM_WINDOW
from slkd.models import save_weights
from slkd.models.checkpoint import read_checkpoint_file


class TrainingStopped(SlkdError):
    """Training stopped early (interrupt or repeated non-finite steps); a checkpoint is kept."""


@dataclass(frozen=True)
class RunWords:
    """How the trainer's messages tell the user to continue a stopped run, and to start another
    one instead: the caller's words, since only it knows its options (``slkd train``/``distill``:
    ``--resume`` and another name/output_dir; ``slkd compress``: rerunning the same command)."""

    #: continues a run that stopped ("pass --resume to continue it")
    resume: str = "resume it (resume=True) to continue it"
    #: starts a run elsewhere instead ("choose another name/output_dir")
    new_run: str = "give the run another folder"


def check_val_sets(val_sets: dict[str, Any], ev: EvalConfig) -> None:
    """Refuse, before step 1, validation images that cannot be scored: SSIM needs an 11×11
    window inside what ``eval.crop_border`` leaves (a validation set's ``patch_size`` is the
    centred crop that is scored). Found only at the first validation, this used to stop a
    run after its training and before any checkpoint."""
    border = ev.crop_border
    need = SSIM_WINDOW + 2 * border
    for i, (name, dataset) in enumerate(val_sets.items()):
        if hasattr(dataset, "image_sizes"):
            files, sizes = zip(*dataset.image_sizes()) if len(dataset) else ((), ())
        else:  # another dataset type: read its items
            items = [dataset[j] for j in range(len(dataset))]
            sizes = [tuple(item["gt"].shape[-2:]) for item in items]
            files = [str(item.get("name", j)) for j, item in enumerate(items)]
        patch = getattr(dataset, "patch_size", None)
        small = []
        for (h, w), file in zip(sizes, files):
            if patch:
                h, w = min(h, patch), min(w, patch)
            if min(h, w) < need:
                small.append(f"{Path(file).name} ({w}×{h})")
        if small:
            shown = ", ".join(small[:5]) + (f" … ({len(small)} in all)" if len(small) > 5 else "")
            raise ConfigError(
                f"data.val[{i}] ({name}): {len(small)} image(s) cannot be scored: SSIM needs "
                f"{SSIM_WINDOW}×{SSIM_WINDOW} pixels after eval.crop_border={border} removes "
                f"{border} px per side, so at least {need}×{need}: {shown}"
            )


@dataclass(frozen=True)
class TrainerConfig:
    """What the trainer reads of a run's configuration (:meth:`from_run` takes it from a run
    config; a script may fill it directly)."""

    train: TrainConfig
    eval: EvalConfig = field(default_factory=EvalConfig)
    batch_size: int = 8
    num_workers: int = 0
    #: where training batches are made: "auto" (on the training device when the data allows it
    #: and fits, slkd.data.device), "on" (there, or an error saying why not), "off" (DataLoader)
    device_data: str = "auto"
    seed: int = 0
    #: what is trained, for the first console line (e.g. the model's preset name)
    label: str = ""
    #: the run's settings as plain data: written to config.yaml and compared, on ``--resume``,
    #: with the stored one (only :data:`RESUME_MAY_CHANGE` may differ)
    record: dict = field(default_factory=dict)
    #: reads a stored config.yaml back as ``record`` would be today (defaults filled in)
    read_record: Callable[[Any], dict] | None = None

    @classmethod
    def from_run(cls, cfg: TrainRunConfig) -> "TrainerConfig":
        return cls(train=cfg.train, eval=cfg.eval, batch_size=cfg.data.batch_size,
                   num_workers=cfg.data.num_workers, device_data=cfg.data.device_data, seed=cfg.seed, label=cfg.model.name,
                   record=to_dict(cfg), read_record=lambda data: to_dict(from_dict(TrainRunConfig, data)))


class Trainer:
    """Runs ``task`` for ``cfg.train.iters`` steps.

    The task is a :class:`slkd.engine.tasks.TrainingTask`: ``model`` (the network that is
    evaluated and exported), ``trainable_module()`` — the module whose parameters are optimised,
    checkpointed and wrapped in DistributedDataParallel (a distiller returns itself: student +
    adapters; teachers are not part of it) — and ``loss(network, batch)``, which receives that
    module, wrapped when distributed.
    ``task.set_progress(step, iters)``, if the task has it, is called before every step (the
    steps done so far, so schedules read the same value after ``--resume``); ``feature_check``
    (:class:`slkd.engine.tasks.FeatureCheck`), if it has it, after every validation.
    ``train_set`` yields dicts with ``lq``/``gt`` for ``(index, seed)`` keys; each entry of
    ``val_sets`` maps a name to a dataset whose integer items are full evaluation images.
    ``cfg`` is a :class:`TrainerConfig` (a run config is converted by
    :meth:`TrainerConfig.from_run`).
    """

    def __init__(self, cfg: TrainerConfig | TrainRunConfig, task: TrainingTask, train_set, val_sets: dict[str, Any], *,
                 run_dir: Path, dist: DistInfo, resume: bool = False, argv: list[str] | None = None,
                 words: RunWords | None = None) -> None:
        if isinstance(cfg, TrainRunConfig):
            cfg = TrainerConfig.from_run(cfg)
        self.cfg, self.task, self.dist, self.run_dir = cfg, task, dist, run_dir
        self.train_set, self.val_sets = train_set, val_sets
        check_val_sets(val_sets, cfg.eval)  # before anything is written or trained
        t = cfg.train
        trainable = task.trainable_module()
        self.trainable: nn.Module = trainable.to(dist.device)
        self.model = task.model.to(dist.device)
        self.network: nn.Module = self.trainable
        if dist.enabled:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.trainable, device_ids=ids)
        self.compiled = wants_compile(t.compile, dist.device, t.iters)
        if self.compiled:
            self.network = compile_step(self.network, dist.device)
        self.params = [p for p in self.trainable.parameters() if p.requires_grad]
        params = self.params
        opt_cls = torch.optim.AdamW if t.optimizer.type == "adamw" else torch.optim.Adam
        # the skip of a non-finite step is decided on the device, never by a host read: CUDA's fused
        # kernels take it as ``found_inf``; on the CPU the default kernels (whose numbers every
        # earlier CPU run has) update and a masked restore undoes a skipped update (_skippable_step)
        self.fused = dist.device.type == "cuda"
        self.optimizer = opt_cls(params, lr=t.optimizer.lr, betas=tuple(t.optimizer.betas),
                                 weight_decay=t.optimizer.weight_decay, **({"fused": True} if self.fused else {}))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_lambda(t.iters, t.scheduler.warmup_iters, t.scheduler.min_lr / t.optimizer.lr, t.scheduler.type),
        )
        self.ema = ModelEMA(self.model, t.ema) if t.ema else None
        self.step = 0
        self.best: dict[str, dict[str, float]] = {}
        self.bad_steps = 0
        self._resumed_from: int | None = None  # step of the checkpoint --resume started from
        self._saved_step: int | None = None  # step of the last checkpoint written by this run
        self._updating = False  # inside an update whose step is not counted yet
        self.resume_changes: dict[str, tuple[Any, Any]] = {}  # allowed changes on --resume
        self.words = words or RunWords()
        w = self.words
        # one writer per run folder, from before its contents are looked at to the end of run()
        # (rank 0 writes, so rank 0 locks); --resume of a folder that does not exist fails below
        self._lock = None if resume and not run_dir.is_dir() else lock_on_rank0(run_dir, dist)
        try:
            if resume:
                self._load_checkpoint()
            else:
                found = earlier_run_files(run_dir)
                if CHECKPOINT in found:
                    raise SlkdError(f"{run_dir} already holds a training run: {w.resume}, or "
                                    f"{w.new_run} (it has {', '.join(found)}; nothing was overwritten)")
                if found:
                    raise SlkdError(f"{run_dir} already holds files of a training run but no checkpoint "
                                    f"to resume from: {w.new_run}, or remove the folder if you do not "
                                    f"need it (it has {', '.join(found)}; nothing was overwritten)")
                # every rank looks before rank 0 writes config.yaml: a slower rank used to find
                # rank 0's fresh files and refuse the run as an earlier one
                barrier()
            try:
                if dist.is_main:
                    # temporary files of atomic writes cut short by a kill (nobody else writes here)
                    remove_stale_temps(run_dir, [CHECKPOINT, WEIGHTS, "metrics.jsonl"]
                                       + [f"best_{name}.pth" for name in val_sets])
                    write_run_files(run_dir, cfg.record, dist.world_size, argv)
                barrier()
                self.log = RunLogger(run_dir, enabled=dist.is_main, total_iters=t.iters, resume_step=self.step,
                                     kept=self._kept)
            except OSError as exc:  # a read-only file system, no permission, a full disk
                raise SlkdError(f"cannot write the run folder {run_dir}: {exc.strerror or exc}"
                                + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(run_dir)
                                   else "")) from None
        except BaseException:
            self.release(abandon=True)  # a refused folder keeps no lock file
            raise

    def release(self, *, abandon: bool = False) -> None:
        """Give up the run folder's lock (:meth:`run` does at its end; so does the end of the
        process); ``abandon``: after a refusal (:meth:`~slkd.engine.runlock.FolderLock.abandon`)."""
        if self._lock is not None:
            self._lock.release(abandon=abandon)
            self._lock = None

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.trainable.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": self.best,
            "rng": rng_state(),
            "world_size": self.dist.world_size,
        }

    def _weights_finite(self) -> bool:
        tensors = [p for p in self.trainable.parameters()]
        if self.ema is not None:
            tensors += list(self.ema.module.parameters())
        return bool(torch.stack([torch.isfinite(p).all() for p in tensors]).all().item()) if tensors else True

    def save_checkpoint(self) -> None:
        """Full state + deployable weights (EMA if enabled), atomically, on rank 0. Weights that
        are not finite are never written: the run stops and the last checkpoint stays."""
        # checked on every rank (their weights are the same), so that all of them stop together
        if not self._weights_finite():
            raise TrainingStopped(f"the weights at step {self.step} are not finite (NaN or infinity; "
                                  f"is train.optimizer.lr too high?); they were not saved and {self._kept()}")
        if not self.dist.is_main:
            return
        state = self._state()
        path = self.run_dir / CHECKPOINT
        try:
            atomic_write(path, lambda tmp: torch.save(state, tmp))
            path = self.run_dir / WEIGHTS
            save_weights(self.ema.module if self.ema else self.model, path)
        except (OSError, RuntimeError, SlkdError) as exc:  # disk full, quota, folder removed …
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip()
            raise TrainingStopped(f"cannot write the checkpoint of step {self.step} ({path}): "
                                  f"{reason}; {self._kept()}") from None
        self._saved_step = self.step
        self.log.event("checkpoint", self.step, path=CHECKPOINT)

    def _kept(self) -> str:
        """What a stop leaves: the checkpoint on disk, or none (it claimed one "kept intact"
        when the first checkpoint was the one that failed)."""
        step = self._last_saved_step()
        if step is None:
            return "no checkpoint was written (the run restarts from step 0)"
        return f"the checkpoint of step {step} in {self.run_dir} is kept intact"

    def _last_saved_step(self) -> int | None:
        """Step of the checkpoint on disk (this run's last one, or the one it resumed from)."""
        if self._saved_step is not None:
            return self._saved_step
        return self._resumed_from

    def _load_checkpoint(self) -> None:
        """Restore the full training state. The file is read with ``weights_only=True`` (a
        checkpoint carrying code is refused, nothing in it runs) and checked before anything
        is changed; a file that does not fit the config is refused with the reason."""
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            raise SlkdError(f"--resume: no checkpoint in {self.run_dir}")
        self.resume_changes = self._check_resume_config()
        try:
            # to the CPU: RNG states must stay there; load_state_dict moves the rest
            state = read_checkpoint_file(path)
        except SlkdError as exc:
            raise SlkdError(f"cannot resume: {exc}") from None
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise SlkdError(f"cannot resume from {path}: not a training checkpoint of slkd "
                            f"(missing {', '.join(missing)})")
        if self.ema is not None and state["ema"] is None:
            raise SlkdError(f"{path} was trained without EMA but the config enables it")
        try:
            self.trainable.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:  # a checkpoint's groups carry its kernel choice
                group["fused"] = True if self.fused else None
            self.scheduler.load_state_dict(state["scheduler"])
            step = int(state["step"])
            set_rng_state(state["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SlkdError(f"cannot resume from {path}: it does not fit this config "
                            f"(another model, method or optimiser?): {first}") from None
        self.step = step
        self._resumed_from = step
        self.best = state["best"]

    def _check_resume_config(self) -> dict[str, tuple[Any, Any]]:
        """Compare the run's stored config.yaml with this config: refuse every change outside
        :data:`RESUME_MAY_CHANGE` (the restored optimiser, schedule and data stream would keep
        the old settings while config.yaml claimed the new ones); return the allowed ones."""
        path = self.run_dir / CONFIG
        if not path.is_file():
            return {}
        try:
            stored = parse_yaml(path.read_text(encoding="utf-8"))
            read = self.cfg.read_record
            before = read(stored) if read else stored  # today's defaults filled in
        except (OSError, UnicodeDecodeError, ValueError, SlkdError) as exc:
            raise SlkdError(f"cannot resume: {path} cannot be read to compare the settings "
                            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
                            ) from None
        changes = config_changes(before, self.cfg.record)
        refused = {k: v for k, v in changes.items() if k not in RESUME_MAY_CHANGE}
        if refused:
            listed = "; ".join(f"{k} ({a!r} → {b!r})" for k, (a, b) in refused.items())
            raise SlkdError(f"cannot resume {self.run_dir} with other settings: {listed}. The run "
                            f"continues with the settings it started with (only "
                            f"{', '.join(k for k in RESUME_MAY_CHANGE if '.' in k)} may change); "
                            f"{self.words.new_run} for new settings (nothing was changed)")
        return changes

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, dict[str, float]]:
        """Mean PSNR/SSIM per validation set (:func:`slkd.engine.evaluation.evaluate`, the loop of
        ``slkd eval`` and the demo); images are sharded over ranks and the sums reduced."""
        from slkd.engine.evaluation import Convention, evaluate

        ev = self.cfg.eval
        convention = Convention.for_task(ev.task, y_channel=ev.y_channel, crop_border=ev.crop_border)
        model = self.ema.module if self.ema else self.model
        results = {}
        for name, dataset in self.val_sets.items():
            r = evaluate(model, dataset, convention=convention, device=self.dist.device, tile=ev.tile,
                         overlap=ev.overlap, clean_input=getattr(self.task, "clean_input", False),
                         shard=(self.dist.rank, self.dist.world_size))
            results[name] = {"psnr": r.mean["psnr"], "ssim": r.mean["ssim"], "count": r.count}
        return results

    def _feature_check(self) -> None:
        """The task's own check of the model after a validation (e.g. a Teacher B's decoder
        features), on the first validation image: an event and, if it says so, a warning."""
        check = getattr(self.task, "feature_check", None)
        if check is None or not self.val_sets:
            return
        dataset = next(iter(self.val_sets.values()))
        result = check(self.ema.module if self.ema else self.model, dataset[0], self.dist.device)
        if result is None:
            return
        if result.warning:
            self.log.console(f"  warning: {result.warning}")
        self.log.event(result.event, self.step, **result.values)

    def _record_validation(self) -> None:
        results = self.validate()
        self._feature_check()
        for name, r in results.items():
            best = self.best.get(name)
            finite = math.isfinite(r["psnr"]) or r["psnr"] == math.inf  # identical images: +inf
            improved = finite and (best is None or r["psnr"] > best["psnr"])
            if improved:
                self.best[name] = {"psnr": r["psnr"], "ssim": r["ssim"], "step": self.step}
                if self.dist.is_main and self._weights_finite():
                    path = self.run_dir / f"best_{name}.pth"
                    try:
                        save_weights(self.ema.module if self.ema else self.model, path)
                    except SlkdError as exc:
                        raise TrainingStopped(f"{exc}; {self._kept()}") from None
            best = self.best.get(name)
            self.log.event("val", self.step, dataset=name, **r, best_psnr=best["psnr"] if best else None)
            if best is None:
                self.log.console(f"  val {name}: PSNR {r['psnr']:.2f} dB (the model's outputs are not "
                                 "finite; not counted as a best)")
                continue
            self.log.console(f"  val {name}: PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}  "
                             f"(best {best['psnr']:.2f} dB at step {best['step']})"
                             + ("" if finite else " — this validation is not finite, not counted"))

    # ---------------------------------------------------------------- loop
    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The training batches from the current step: made on the training device
        (:mod:`slkd.data.device`) where the data allows it and fits, else by a DataLoader; one
        line says which and why."""
        c, dist = self.cfg, self.dist
        batches, line = device_batches(self.train_set, c.batch_size, c.seed, dist.device, mode=c.device_data,
                                       rank=dist.rank, world_size=dist.world_size, start_step=self.step)
        self.log.console(line)
        if batches is not None:
            return iter(batches)
        sampler = TrainSampler(len(self.train_set), c.batch_size, c.seed, rank=dist.rank,
                               world_size=dist.world_size, start_step=self.step)
        return iter(DataLoader(self.train_set, batch_size=c.batch_size, sampler=sampler,
                               num_workers=c.num_workers, persistent_workers=c.num_workers > 0,
                               pin_memory=dist.device.type == "cuda"))

    def _train_step(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One update. Returns the logged terms and whether the step was skipped (a non-finite
        loss or gradient), both on the device: nothing here waits for the device (the fused
        optimiser and the EMA skip the update from the flag itself)."""
        t = self.cfg.train
        dev = self.dist.device
        batch = {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=t.bf16):
            loss, terms = self.task.loss(self.network, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = t.grad_clip if t.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        bad = ~torch.isfinite(loss.detach() + grad_norm)
        # from here until run() counts the step, the state saved by a checkpoint would mix
        # step k's counter with step k+1's weights, optimiser and schedule
        self._updating = True
        if self.fused:
            self.optimizer.found_inf = bad.float()  # the fused kernels leave everything as it was
            self.optimizer.step()
        else:
            self._skippable_step(bad)
        if self.ema is not None:
            self.ema.update(self.model, skip=bad)
        self.scheduler.step()  # the schedule follows iterations, skipped or not
        terms = {**terms, "loss": loss.detach(), "grad_norm": grad_norm.detach()}
        return terms, bad

    @torch.no_grad()
    def _skippable_step(self, bad: torch.Tensor) -> None:
        """``optimizer.step()`` undone where ``bad``: the weights and the optimiser's state (moments,
        step count) are kept before the update and put back with a device-side select, so a
        skipped step leaves them bit for bit as they were, and a good one is the default
        kernels' update. State the first update creates counts as zeros before it (what the
        optimiser starts from)."""
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        before = [(p, p.clone(), {k: v.clone() for k, v in self.optimizer.state[p].items() if torch.is_tensor(v)})
                  for p in params]
        with host_side():  # the default kernels read their step counters, host scalars on the CPU
            self.optimizer.step()
        for p, old, state in before:
            p.copy_(torch.where(bad, old, p))
            for key, value in self.optimizer.state[p].items():
                if torch.is_tensor(value):
                    value.copy_(torch.where(bad, state.get(key, torch.zeros_like(value)), value))

    def _stop_everywhere(self, stop: "_StopRequest", check_peers: bool) -> bool:
        """Whether any rank was asked to stop (all ranks must leave at the same step, or the
        others would wait for them in the next gradient all-reduce). Under ``torchrun`` the ranks
        agree only when ``check_peers`` (at logging steps: the vote is a host read)."""
        if not self.dist.enabled:
            return stop.requested is not None
        if not check_peers:
            return False
        flag = torch.tensor([0.0 if stop.requested is None else 1.0], device=self.dist.device)
        return all_reduce_sum(flag).item() > 0

    def _read(self, account: "_StepAccount", *, sums: bool, stop_on_bad: bool = True) -> dict[str, float]:
        """Read the device-side record of the steps since the last read (one host sync): log each
        skipped step, stop after ``train.max_bad_steps`` consecutive ones (the same rule as a
        check at every step, decided here), and return the logged terms' means when ``sums``."""
        t = self.cfg.train
        flags, means = account.read(sums)
        for step, skipped in flags:
            if not skipped:
                self.bad_steps = 0
                continue
            self.bad_steps += 1
            self.log.event("skip", step, reason="non-finite loss or gradient", consecutive=self.bad_steps)
            self.log.console(f"  step {step}: non-finite loss or gradient, update skipped "
                             f"({self.bad_steps}/{t.max_bad_steps})")
            if stop_on_bad and self.bad_steps >= t.max_bad_steps:
                raise TrainingStopped(f"stopped after {self.bad_steps} consecutive non-finite steps at step "
                                      f"{step}; {self._kept()}")
        return means

    def run(self) -> dict[str, Any]:
        t = self.cfg.train
        if self.step >= t.iters:
            self.log.console(f"already trained for {self.step} of {t.iters} iterations")
            self.release()
            return {"step": self.step, "best": self.best}
        clip = f"gradient clipping at norm {t.grad_clip}" if t.grad_clip else "no gradient clipping"
        self.log.console(f"training {self.run_dir.name}: {self.cfg.label}, {t.iters} iterations, "
                         f"batch {self.cfg.batch_size}×{self.dist.world_size}, {clip}, "
                         f"EMA {t.ema or 'off'}, bf16 {'on' if t.bf16 else 'off'}, "
                         f"compiled {'yes' if self.compiled else 'no'}"
                         + (f", resuming at step {self.step}" if self.step else ""))
        if self.resume_changes:
            changed = ", ".join(f"{k} {a} → {b}" for k, (a, b) in self.resume_changes.items())
            self.log.console(f"resuming with {changed}" + (
                f" (the learning-rate schedule now ends at step {t.iters})"
                if "train.iters" in self.resume_changes else ""))
        self.log.event("start", self.step, iters=t.iters, grad_clip=t.grad_clip, ema=t.ema, bf16=t.bf16,
                       compiled=self.compiled,
                       world_size=self.dist.world_size, resumed=self.step > 0,
                       dropped_events=self.log.dropped_events,
                       **({"changed": {k: list(v) for k, v in self.resume_changes.items()}}
                          if self.resume_changes else {}))
        account = _StepAccount(self.dist.device, t.log_every)
        window_start = time.perf_counter()
        compile_seconds = None
        # Ctrl-C and `kill` (SIGTERM) ask the loop to stop after the step in progress, with a
        # checkpoint; a second one stops at once (the step in progress is then lost)
        stop = _StopRequest()
        previous = stop.install()
        loader = self._batches()
        self._updating = False
        set_progress = getattr(self.task, "set_progress", None)
        try:
            self.network.train()
            while self.step < t.iters:
                if self._stop_everywhere(stop, check_peers=self.step % t.log_every == 0):
                    raise KeyboardInterrupt
                try:
                    batch = next(loader)
                except Exception:
                    if stop.requested:  # a DataLoader worker that got the terminal's Ctrl-C too
                        raise KeyboardInterrupt from None
                    raise
                if set_progress is not None:  # a function of the step: right after --resume too
                    set_progress(self.step, t.iters)
                first = time.perf_counter() if self.compiled and compile_seconds is None else None
                terms, bad = self._train_step(batch)
                if first is not None:  # the first compiled step compiles (or loads from the cache)
                    compile_seconds = time.perf_counter() - first
                    self.log.event("compile", self.step + 1, seconds=compile_seconds)
                    self.log.console(f"  compiled the training step in {compile_seconds:.0f} s")
                    window_start = time.perf_counter()
                self.step += 1  # an iteration is consumed even when its update is skipped
                self._updating = False
                account.add(self.step, terms, bad)
                log_now = self.step % t.log_every == 0 or self.step == t.iters
                validate = bool(self.val_sets) and (self.step % t.val_every == 0 or self.step == t.iters)
                checkpoint = self.step % t.ckpt_every == 0 or self.step == t.iters
                if not (log_now or validate or checkpoint):  # no host read between these steps
                    self.log.progress(self.step)
                    continue
                means = self._read(account, sums=log_now)
                if log_now and account.good:
                    rate = account.good / (time.perf_counter() - window_start)
                    lr = self.scheduler.get_last_lr()[0]
                    self.log.event("train", self.step, lr=lr, it_per_s=rate, **means)
                    self.log.train_line(self.step, means, lr, rate)
                if log_now:
                    account.start_window()
                    window_start = time.perf_counter()
                if validate:
                    self._record_validation()
                    self.network.train()
                if checkpoint:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            what = stop.requested or "interrupted"
            if self._updating:  # forced in the middle of an update: its state is not saved
                raise TrainingStopped(
                    f"{what} in the middle of step {self.step + 1}; its update is lost and "
                    f"{self._kept()}" + ("" if self._last_saved_step() is None
                                         else f" ({self.words.resume})")) from None
            self._read(account, sums=False, stop_on_bad=False)  # the skipped steps, into the log
            if self._saved_step != self.step:
                self.save_checkpoint()
            raise TrainingStopped(f"{what} at step {self.step}; checkpoint saved in {self.run_dir} "
                                  f"({self.words.resume})") from None
        finally:
            stop.uninstall(previous)
            self.log.close()
            self.release()
        return {"step": self.step, "best": self.best}


class _StepAccount:
    """What the steps since the last host read did, kept on the device: whether each was
    skipped, and the sums of the logged terms over the steps that were not. ``read`` returns it
    in one host sync, at logging, validation and checkpoint steps only."""

    def __init__(self, device: torch.device, window: int) -> None:
        self.skipped = torch.zeros(window, dtype=torch.bool, device=device)
        self.first: int | None = None  # the step number of the first unread step
        self.unread = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.good = 0  # steps not skipped in the logging window (known after a read)

    def add(self, step: int, terms: dict[str, torch.Tensor], bad: torch.Tensor) -> None:
        if self.unread == 0:
            self.first = step
        self.skipped[self.unread] = bad
        self.unread += 1
        for k, v in terms.items():  # a skipped step's NaN must not reach the sums
            v = torch.where(bad, 0.0, v.detach().float())
            self.sums[k] = v if k not in self.sums else self.sums[k] + v

    def read(self, sums: bool) -> tuple[list[tuple[int, bool]], dict[str, float]]:
        """``[(step, skipped), …]`` of the unread steps and, when ``sums``, the means of the
        logged terms over the logging window's good steps."""
        parts = [self.skipped[:self.unread].float()]
        names = list(self.sums) if sums else []
        parts += [self.sums[k].view(1) for k in names]
        values = torch.cat(parts).tolist() if self.unread or names else []
        flags = [(self.first + i, bool(values[i])) for i in range(self.unread)]
        self.good += sum(1 for _, skipped in flags if not skipped)
        self.unread = 0
        totals = values[len(flags):]
        means = {k: v / self.good for k, v in zip(names, totals)} if self.good else {}
        return flags, means

    def start_window(self) -> None:
        self.sums, self.good = {}, 0


class _StopRequest:
    """SIGINT/SIGTERM handler for the training loop: the first signal only sets
    :attr:`requested` (the loop stops at the next step boundary, where the state is consistent);
    a second one raises KeyboardInterrupt at once. Nothing is printed from the handler."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested: str | None = None

    def __call__(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:
            raise KeyboardInterrupt
        self.requested = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name

    def install(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals can only be handled in the main thread
        previous = {}
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self)
        return previous

    @staticmethod
    def uninstall(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def resolve_run_dir(cfg: TrainRunConfig) -> Path:
    return Path(os.path.expanduser(cfg.output_dir)) / cfg.name
