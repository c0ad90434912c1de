"""A training step does not wait for the host: between logging, validation and checkpoint steps
no tensor is read back (``.item()``, ``bool()``, ``.tolist()``, ``.cpu()`` …), for scratch,
FAKD and SLKD; the device-side skip of a non-finite step and the EMA it leaves alone give the
numbers of the host-side rule they replace.

On the CPU a read costs nothing, so the count is made by instrumentation: a TorchFunctionMode
sees every such call. (On CUDA ``torch.cuda.set_sync_debug_mode`` sees the real waits:
tests/test_cuda.py.) Integer draws on host generators inside :func:`slkd.data.device.host_side`
never touch the training device and are not counted."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.overrides import TorchFunctionMode

from slkd.data.device import host_side
from slkd.distill import build_distiller, distill_config
from slkd.engine.builders import build_model_for_run, build_train_set, build_val_sets
from slkd.engine.config import TrainRunConfig, from_dict
from slkd.engine.ema import ModelEMA
from slkd.engine.runstate import seed_everything
from slkd.engine.tasks import SupervisedTask
from slkd.engine.trainer import Trainer
from slkd.models import build_model
from test_trainer import SINGLE, config_dict, data_root  # noqa: F401  (fixture)

#: tensor methods and functions whose result is read on the host (a wait on a GPU)
HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "__array__",
              "equal", "allclose", "is_nonzero", "nonzero", "masked_select", "unique"}


class HostReads(TorchFunctionMode):
    """Counts host reads of tensors, per training step (set from outside as ``step``)."""

    def __init__(self) -> None:
        super().__init__()
        self.step = 0
        self.counts: Counter = Counter()
        self.where: dict[int, list[str]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS and not host_side.active:
            self.counts[self.step] += 1
            self.where.setdefault(self.step, []).append(name)
        return func(*args, **(kwargs or {}))


def _trainer(data_root, tmp_path, method: str) -> Trainer:
    cfg = from_dict(TrainRunConfig, config_dict(data_root, tmp_path, **{
        "train.iters": 8, "train.log_every": 4, "train.val_every": 8, "train.ckpt_every": 8, "train.ema": 0.9}))
    seed_everything(cfg.seed)
    model = build_model_for_run(cfg)
    if method == "scratch":
        task = SupervisedTask(model, "l1")
    else:
        teachers = {"a": build_model("restormer-tiny"), "b": build_model("restormer-tiny", global_residual=False)}
        dcfg = distill_config(method)
        task = build_distiller(dcfg, model, {r: teachers[r] for r in dcfg.teacher_roles()})
    return Trainer(cfg, task, build_train_set(cfg), build_val_sets(cfg), run_dir=tmp_path / "run", dist=SINGLE)


@pytest.mark.parametrize("method", ["scratch", "fakd", "slkd"])
def test_no_host_read_between_logging_validation_and_checkpoint_steps(data_root, tmp_path, method):  # noqa: F811
    trainer = _trainer(data_root, tmp_path, method)
    counter = HostReads()
    batches = trainer._batches

    def counted():  # each batch drawn starts the next step's count
        for step, batch in enumerate(batches(), start=trainer.step + 1):
            counter.step = step
            yield batch

    trainer._batches = counted
    with counter:
        trainer.run()
    quiet = [s for s in range(1, 9) if s not in (4, 8)]
    assert {s: counter.where[s] for s in quiet if counter.counts[s]} == {}
    assert counter.counts[4] >= 1 and counter.counts[8] >= 1  # the reads are there, at logging steps


def test_the_fused_skip_leaves_weights_moments_and_step_count_as_they_were():
    """``found_inf`` set: the update, AdamW's moments and its step count stay as they were; unset,
    the fused kernel gives the default kernel's numbers exactly."""
    torch.manual_seed(0)
    w = [torch.randn(50, requires_grad=True) for _ in range(2)]
    ref = [x.detach().clone().requires_grad_(True) for x in w]
    opt, opt_ref = torch.optim.AdamW(w, lr=1e-2, fused=True), torch.optim.AdamW(ref, lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for i in range(6):
        grads = [torch.randn(50, generator=g) for _ in w]
        for x, y, gr in zip(w, ref, grads):
            x.grad, y.grad = gr.clone(), gr.clone()
        skip = i == 3
        before = [x.detach().clone() for x in w], [opt.state[x]["exp_avg"].clone() for x in w] if i else None
        opt.found_inf = torch.tensor(float(skip))
        opt.step()
        if skip:
            assert all(torch.equal(a, x) for a, x in zip(before[0], w))
            assert all(torch.equal(m, opt.state[x]["exp_avg"]) for m, x in zip(before[1], w))
            assert int(opt.state[w[0]]["step"]) == 3
        else:
            opt_ref.step()
    assert all(torch.equal(x, y) for x, y in zip(w, ref))  # five updates, the same numbers


def test_the_ema_skipped_on_the_device_is_the_ema_not_updated():
    model = build_model("res-sl-tiny")
    a, b = ModelEMA(model, 0.99), ModelEMA(model, 0.99)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    a.update(model)
    b.update(model, skip=torch.tensor(False))
    assert all(torch.equal(x, y) for x, y in zip(a.module.parameters(), b.module.parameters()))
    frozen = [x.clone() for x in b.module.parameters()]
    b.update(model, skip=torch.tensor(True))
    assert all(torch.equal(x, y) for x, y in zip(frozen, b.module.parameters()))


def test_the_cpu_skip_restores_weights_and_state_bit_for_bit_and_a_good_step_is_the_plain_update(data_root, tmp_path):  # noqa: F811
    trainer = _trainer(data_root, tmp_path, "scratch")
    params = trainer.params
    twin = [p.detach().clone().requires_grad_(True) for p in params]
    group = trainer.optimizer.param_groups[0]
    plain = torch.optim.AdamW(twin, lr=group["lr"], betas=group["betas"], weight_decay=group["weight_decay"])
    g = torch.Generator().manual_seed(0)
    for step, bad in enumerate([True, False, False, True, False]):  # the very first update skipped too
        grads = [torch.randn(p.shape, generator=g) for p in params]
        before = [p.detach().clone() for p in params]
        state = {id(p): {k: v.clone() for k, v in trainer.optimizer.state[p].items()} for p in params}
        for p, t, gr in zip(params, twin, grads):
            p.grad, t.grad = gr.clone(), gr.clone()
        trainer._skippable_step(torch.tensor(bad))
        if bad:
            assert all(torch.equal(a, p) for a, p in zip(before, params))
            for p in params:  # the moments and the step count as they were (zeros before any update)
                for k, v in trainer.optimizer.state[p].items():
                    assert torch.equal(v, state[id(p)].get(k, torch.zeros_like(v)))
        else:
            plain.step()
    assert all(torch.equal(p, t) for p, t in zip(params, twin))  # three good updates: AdamW's own numbers
