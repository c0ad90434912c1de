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
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from slkd.data.sampler import TrainSampler
from slkd.engine.config import ConfigError, EvalConfig, TrainConfig, TrainRunConfig, from_dict, parse_yaml, to_dict
from slkd.engine.distributed import DistInfo, all_reduce_sum, barrier
from slkd.engine.ema import ModelEMA
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
from slkd.errors import SlkdError
from slkd.fileio import atomic_write, remove_stale_temps
from slkd.metrics.fullref import SSIM_WINDOW
from slkd.models import save_weights
from slkd.models.checkpoint import read_checkpoint_file


class TrainingStopped(SlkdError):
    """Training stopped early (interrupt or repeated non-finite steps); a checkpoint is kept."""


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
                   num_workers=cfg.data.num_workers, seed=cfg.seed, label=cfg.model.name,
                   record=to_dict(cfg), read_record=lambda data: to_dict(from_dict(TrainRunConfig, data)))


class Trainer:
    """Runs ``task`` for ``cfg.train.iters`` steps.

    The task exposes ``model`` (the network that is evaluated and exported) and, optionally,
    ``trainable_module()`` — the module whose parameters are optimised, checkpointed and wrapped
    in DistributedDataParallel (a distiller returns itself: student + adapters; teachers are not
    part of it). ``task.loss(network, batch)`` receives that module, wrapped when distributed;
    ``task.set_progress(step, iters)``, if the task has it, is called before every step (the
    steps done so far, so schedules read the same value after ``--resume``); ``feature_check``
    (:class:`slkd.engine.tasks.FeatureCheck`), if it has it, after every validation.
    ``train_set`` yields dicts with ``lq``/``gt`` for ``(index, seed)`` keys; each entry of
    ``val_sets`` maps a name to a dataset whose integer items are full evaluation images.
    ``cfg`` is a :class:`TrainerConfig` (a run config is converted by
    :meth:`TrainerConfig.from_run`).
    """

    def __init__(self, cfg: TrainerConfig | TrainRunConfig, task, train_set, val_sets: dict[str, Any], *,
                 run_dir: Path, dist: DistInfo, resume: bool = False, argv: list[str] | None = None) -> None:
        if isinstance(cfg, TrainRunConfig):
            cfg = TrainerConfig.from_run(cfg)
        self.cfg, self.task, self.dist, self.run_dir = cfg, task, dist, run_dir
        self.train_set, self.val_sets = train_set, val_sets
        check_val_sets(val_sets, cfg.eval)  # before anything is written or trained
        t = cfg.train
        trainable = task.trainable_module() if hasattr(task, "trainable_module") else task.model
        self.trainable: nn.Module = trainable.to(dist.device)
        self.model = task.model.to(dist.device)
        self.network: nn.Module = self.trainable
        if dist.enabled:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.trainable, device_ids=ids)
        self.params = [p for p in self.trainable.parameters() if p.requires_grad]
        params = self.params
        opt_cls = torch.optim.AdamW if t.optimizer.type == "adamw" else torch.optim.Adam
        fused = {"fused": True} if dist.device.type == "cuda" else {}
        self.optimizer = opt_cls(params, lr=t.optimizer.lr, betas=tuple(t.optimizer.betas),
                                 weight_decay=t.optimizer.weight_decay, **fused)
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
        if resume:
            self._load_checkpoint()
        else:
            found = earlier_run_files(run_dir)
            if CHECKPOINT in found:
                raise SlkdError(f"{run_dir} already holds a training run: pass --resume to continue "
                                f"it, or choose another name/output_dir (it has {', '.join(found)}; "
                                "nothing was overwritten)")
            if found:
                raise SlkdError(f"{run_dir} already holds files of a training run but no checkpoint "
                                "to resume from: choose another name/output_dir, or remove the folder "
                                f"if you do not need it (it has {', '.join(found)}; nothing was "
                                "overwritten)")
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
            self.log = RunLogger(run_dir, enabled=dist.is_main, total_iters=t.iters, resume_step=self.step)
        except OSError as exc:  # a read-only file system, no permission, a full disk
            raise SlkdError(f"cannot write the run folder {run_dir}: {exc.strerror or exc}"
                            + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(run_dir)
                               else "")) from None

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
            kept = (f"the checkpoint of step {self._last_saved_step()} in {self.run_dir} is kept"
                    if self._last_saved_step() is not None else "no checkpoint was written")
            raise TrainingStopped(f"the weights at step {self.step} are not finite (NaN or infinity; "
                                  f"is train.optimizer.lr too high?); they were not saved and {kept}")
        if not self.dist.is_main:
            return
        state = self._state()
        try:
            atomic_write(self.run_dir / CHECKPOINT, lambda tmp: torch.save(state, tmp))
            save_weights(self.ema.module if self.ema else self.model, self.run_dir / WEIGHTS)
        except (OSError, RuntimeError, SlkdError) as exc:  # disk full, quota, folder removed …
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip()
            raise TrainingStopped(f"cannot write the checkpoint of step {self.step} in {self.run_dir}: "
                                  f"{reason}; the previous checkpoint is kept intact") from None
        self._saved_step = self.step
        self.log.event("checkpoint", self.step, path=CHECKPOINT)

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
                            f"{', '.join(k for k in RESUME_MAY_CHANGE if '.' in k)} may change); start a new run "
                            "(another name) for new settings (nothing was changed)")
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
                        kept = self._last_saved_step()
                        raise TrainingStopped(
                            f"{exc}; " + (f"the checkpoint of step {kept} is kept" if kept is not None
                                          else "no checkpoint was written yet")) from None
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
    def _loader(self) -> DataLoader:
        c = self.cfg
        sampler = TrainSampler(len(self.train_set), c.batch_size, c.seed, rank=self.dist.rank,
                               world_size=self.dist.world_size, start_step=self.step)
        return DataLoader(self.train_set, batch_size=c.batch_size, sampler=sampler,
                          num_workers=c.num_workers, persistent_workers=c.num_workers > 0,
                          pin_memory=self.dist.device.type == "cuda")

    def _train_step(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
        t = self.cfg.train
        dev = self.dist.device
        batch = {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=t.bf16):
            loss, terms = self.task.loss(self.network, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = t.grad_clip if t.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        # one host sync per step: a non-finite step must be skipped before the optimiser sees it
        finite = bool(torch.isfinite(loss.detach() + grad_norm).item())
        # from here until run() counts the step, the state saved by a checkpoint would mix
        # step k's counter with step k+1's weights, optimiser and schedule
        self._updating = True
        if finite:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        self.scheduler.step()  # the schedule follows iterations, skipped or not
        terms = {**terms, "loss": loss.detach(), "grad_norm": grad_norm.detach()}
        return terms, finite

    def _stop_everywhere(self, stop: "_StopRequest") -> bool:
        """Whether any rank was asked to stop (all ranks must leave at the same step, or the
        others would wait for them in the next gradient all-reduce)."""
        if not self.dist.enabled:
            return stop.requested is not None
        flag = torch.tensor([0.0 if stop.requested is None else 1.0], device=self.dist.device)
        return all_reduce_sum(flag).item() > 0

    def run(self) -> dict[str, Any]:
        t = self.cfg.train
        if self.step >= t.iters:
            self.log.console(f"already trained for {self.step} of {t.iters} iterations")
            return {"step": self.step, "best": self.best}
        clip = f"gradient clipping at norm {t.grad_clip}" if t.grad_clip else "no gradient clipping"
        self.log.console(f"training {self.run_dir.name}: {self.cfg.label}, {t.iters} iterations, "
                         f"batch {self.cfg.batch_size}×{self.dist.world_size}, {clip}, "
                         f"EMA {t.ema or 'off'}, bf16 {'on' if t.bf16 else 'off'}"
                         + (f", resuming at step {self.step}" if self.step else ""))
        if self.resume_changes:
            changed = ", ".join(f"{k} {a} → {b}" for k, (a, b) in self.resume_changes.items())
            self.log.console(f"resuming with {changed}" + (
                f" (the learning-rate schedule now ends at step {t.iters})"
                if "train.iters" in self.resume_changes else ""))
        self.log.event("start", self.step, iters=t.iters, grad_clip=t.grad_clip, ema=t.ema, bf16=t.bf16,
                       world_size=self.dist.world_size, resumed=self.step > 0,
                       dropped_events=self.log.dropped_events,
                       **({"changed": {k: list(v) for k, v in self.resume_changes.items()}}
                          if self.resume_changes else {}))
        sums: dict[str, torch.Tensor] = {}
        window_start, window_steps = time.perf_counter(), 0
        # Ctrl-C and `kill` (SIGTERM) ask the loop to stop after the step in progress, with a
        # checkpoint; a second one stops at once (the step in progress is then lost)
        stop = _StopRequest()
        previous = stop.install()
        loader = iter(self._loader())
        self._updating = False
        set_progress = getattr(self.task, "set_progress", None)
        try:
            self.network.train()
            while self.step < t.iters:
                if self._stop_everywhere(stop):
                    raise KeyboardInterrupt
                try:
                    batch = next(loader)
                except Exception:
                    if stop.requested:  # a DataLoader worker that got the terminal's Ctrl-C too
                        raise KeyboardInterrupt from None
                    raise
                if set_progress is not None:  # a function of the step: right after --resume too
                    set_progress(self.step, t.iters)
                terms, finite = self._train_step(batch)
                self.step += 1  # an iteration is consumed even when its update is skipped
                self._updating = False
                if not finite:
                    self.bad_steps += 1
                    self.log.event("skip", self.step, reason="non-finite loss or gradient",
                                   consecutive=self.bad_steps)
                    self.log.console(f"  step {self.step}: non-finite loss or gradient, update skipped "
                                     f"({self.bad_steps}/{t.max_bad_steps})")
                    if self.bad_steps >= t.max_bad_steps:
                        raise TrainingStopped(
                            f"stopped after {self.bad_steps} consecutive non-finite steps at step "
                            f"{self.step}; the last good checkpoint is kept in {self.run_dir}")
                else:
                    self.bad_steps = 0
                    window_steps += 1
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0) + v.float()
                if window_steps and (self.step % t.log_every == 0 or self.step == t.iters):
                    rate = window_steps / (time.perf_counter() - window_start)
                    means = {k: (v / window_steps).item() for k, v in sums.items()}
                    lr = self.scheduler.get_last_lr()[0]
                    self.log.event("train", self.step, lr=lr, it_per_s=rate, **means)
                    self.log.train_line(self.step, means, lr, rate)
                    sums, window_start, window_steps = {}, time.perf_counter(), 0
                else:
                    self.log.progress(self.step)
                if self.val_sets and (self.step % t.val_every == 0 or self.step == t.iters):
                    self._record_validation()
                    self.network.train()
                if self.step % t.ckpt_every == 0 or self.step == t.iters:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            what = stop.requested or "interrupted"
            if self._updating:  # forced in the middle of an update: its state is not saved
                raise TrainingStopped(
                    f"{what} in the middle of step {self.step + 1}; its update is lost and the "
                    f"last checkpoint in {self.run_dir} is kept (continue with --resume)") from None
            if self._saved_step != self.step:
                self.save_checkpoint()
            raise TrainingStopped(f"{what} at step {self.step}; checkpoint saved in {self.run_dir} "
                                  "(continue with --resume)") from None
        finally:
            stop.uninstall(previous)
            self.log.close()
        return {"step": self.step, "best": self.best}


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
