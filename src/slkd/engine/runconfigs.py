"""Run configs built in code: the config (the plain dict ``slkd train`` / ``slkd distill`` read)
of each kind of run a pipeline trains — Teacher A, Teacher B (from A), a student from scratch,
a distilled student — from the nodes its caller decides (data, schedule, evaluation).

``slkd compress`` (:mod:`slkd.engine.compress.prepare`) and the studies under
``benchmarks/study`` build every run through these functions, so that the shape of a run config
(which keys, which node holds what, how Teacher B derives from Teacher A) has one home. The
result is plain data: callers store it as YAML and validate it with
``from_dict(TrainRunConfig, config)``.

A config's keys come in :data:`RUN_KEYS` order; a caller whose stored configs are compared on a
rerun keeps the order it wrote them in with ``order=`` (YAML files keep key order, so a new
order would rewrite every stored config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["RUN_KEYS", "TEACHER_B_OPTIONS", "Net", "cosine_train_node", "data_node", "distill_node",
           "distilled_run", "scratch_run", "teacher_a_run", "teacher_b_run"]

#: Teacher B's options over Teacher A's: SLKD's clean → clean teacher has no global residual (it
#: would learn the identity through the skip)
TEACHER_B_OPTIONS = {"global_residual": False}

#: the library's order of a run config's keys (absent ones are left out)
RUN_KEYS = ("name", "role", "seed", "output_dir", "model", "teachers", "distill", "data", "train", "eval")


@dataclass(frozen=True)
class Net:
    """A network as a run config names it: a preset, its options and, for a teacher or a
    network a student is cut from, its weights (a file or a run folder, written as given)."""

    name: str
    weights: str | Path | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def node(self, *, weights: bool = True) -> dict:
        """``{name, weights, options}`` (``teachers.a``, ``model.init_from_teacher`` …); the
        weights when there are any and ``weights``, the options when there are any."""
        return {"name": self.name,
                **({"weights": str(self.weights)} if weights and self.weights is not None else {}),
                **({"options": dict(self.options)} if self.options else {})}

    def teacher_b(self, weights: str | Path) -> "Net":
        """Teacher B of this Teacher A: the same preset and options without its global
        residual (:data:`TEACHER_B_OPTIONS`), with ``weights``."""
        return Net(self.name, weights, {**self.options, **TEACHER_B_OPTIONS})


def data_node(train: Mapping, val: Sequence[Mapping], batch_size: int) -> dict:
    """The ``data`` node: the training set ``train``, the validation sets ``val``, the batch."""
    return {"train": dict(train), "val": [dict(v) for v in val], "batch_size": batch_size}


def cosine_train_node(iters: int, lr: float, *, optimizer: str, weight_decay: float, warmup_iters: int,
                      log_every: int, val_every: int, ckpt_every: int) -> dict:
    """The ``train`` node of a cosine schedule to a hundredth of ``lr`` with an L1 loss."""
    return {"iters": iters, "optimizer": {"type": optimizer, "lr": lr, "weight_decay": weight_decay},
            "scheduler": {"type": "cosine", "warmup_iters": warmup_iters, "min_lr": lr / 100},
            "loss": "l1", "log_every": log_every, "val_every": val_every, "ckpt_every": ckpt_every}


def distill_node(method: str, overrides: Mapping[str, Any] | None = None) -> dict:
    """The ``distill`` node: ``method`` and the ``overrides`` of its config, nested nodes given
    as dicts or by dotted keys (``"loss_weights.kl": 0.5``), in the order given."""
    node: dict = {"method": method}
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        at = node
        for parent in parents:
            at = at.setdefault(parent, {})
        at[leaf] = json.loads(json.dumps(value))  # a copy, as plain YAML data (lists, not tuples)
    return node


def _run(name: str, role: str, *, output_dir: str | Path, seed: int, model: dict, data: Mapping,
         train: Mapping, eval: Mapping | None, teachers: dict | None = None, distill: dict | None = None,
         order: Sequence[str] = RUN_KEYS) -> dict:
    nodes = {"name": name, "role": role, "seed": seed, "output_dir": str(output_dir), "model": model,
             "teachers": teachers, "distill": distill, "data": dict(data), "train": dict(train),
             "eval": None if eval is None else dict(eval)}
    missing = [k for k, v in nodes.items() if v is not None and k not in order]
    if missing:
        raise ValueError(f"order leaves out {', '.join(missing)}")
    return {k: nodes[k] for k in order if nodes.get(k) is not None}


def teacher_a_run(name: str, teacher: Net, *, output_dir: str | Path, seed: int, data: Mapping,
                  train: Mapping, eval: Mapping | None = None, order: Sequence[str] = RUN_KEYS) -> dict:
    """Teacher A: ``teacher`` (preset and options) trained degraded → clean."""
    return _run(name, "teacher_a", output_dir=output_dir, seed=seed, model=teacher.node(weights=False),
                data=data, train=train, eval=eval, order=order)


def teacher_b_run(name: str, teacher_a: Net, *, output_dir: str | Path, seed: int, data: Mapping,
                  train: Mapping, eval: Mapping | None = None, order: Sequence[str] = RUN_KEYS) -> dict:
    """Teacher B: Teacher A's preset and options without its global residual, started from
    Teacher A's weights (``teacher_a.weights``), trained clean → clean."""
    b = teacher_a.teacher_b(teacher_a.weights)
    model = {"name": b.name, "options": dict(b.options), "init_from": str(teacher_a.weights)}
    return _run(name, "teacher_b", output_dir=output_dir, seed=seed, model=model, data=data, train=train,
                eval=eval, order=order)


def student_model(student: str, init_from_teacher: Net | None = None) -> dict:
    """A student's ``model`` node: its preset, started from a cut of ``init_from_teacher``'s
    weights when given (``model.init_from_teacher``), else at random."""
    return {"name": student, **({"init_from_teacher": init_from_teacher.node()} if init_from_teacher else {})}


def scratch_run(name: str, student: str, *, output_dir: str | Path, seed: int, data: Mapping, train: Mapping,
                eval: Mapping | None = None, init_from_teacher: Net | None = None,
                order: Sequence[str] = RUN_KEYS) -> dict:
    """The student trained alone (the pixel loss), at random or from a cut of a teacher."""
    return _run(name, "scratch", output_dir=output_dir, seed=seed, model=student_model(student, init_from_teacher),
                data=data, train=train, eval=eval, order=order)


def distilled_run(name: str, student: str, method: str, *, teacher_a: Net | None, teacher_b: Net | None = None,
                  overrides: Mapping[str, Any] | None = None, output_dir: str | Path, seed: int, data: Mapping,
                  train: Mapping, eval: Mapping | None = None, init_from_teacher: Net | None = None,
                  order: Sequence[str] = RUN_KEYS) -> dict:
    """The student distilled with ``method`` (and the ``overrides`` of its config:
    :func:`distill_node`) from ``teacher_a`` and ``teacher_b`` (None: a method that runs no
    such teacher; ``scratch`` runs none), at random or from a cut of ``init_from_teacher``."""
    teachers = None
    if teacher_a is not None:
        teachers = {"a": teacher_a.node(), **({"b": teacher_b.node()} if teacher_b is not None else {})}
    return _run(name, "distill", output_dir=output_dir, seed=seed, model=student_model(student, init_from_teacher),
                teachers=teachers, distill=distill_node(method, overrides), data=data, train=train, eval=eval,
                order=order)
