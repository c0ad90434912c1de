"""The GPU paths on a real CUDA device (skipped without one; ``pytest -m cuda`` selects them and
``benchmarks/gpu_check.py`` runs them first).

What is compared with the CPU is compared with stated tolerances: cuDNN convolutions may use
TF32 and other summation orders, so a GPU forward is not bit-identical to the CPU's. On
outputs in [0, 1] we accept a max abs difference of 5e-3 for random-weight tiny models (their
activations are larger than trained ones'), and 0.05 dB of PSNR for a whole evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from slkd.data.image_io import read_image, write_image
from slkd.engine.trainer import CHECKPOINT, Trainer
from slkd.models import build_model, load_weights, save_weights

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

#: max abs difference of model outputs, GPU vs CPU: strict float32, and with cuDNN's TF32
#: convolutions (PyTorch's default on Ampere and later, 10-bit mantissas)
STRICT_ATOL = 1e-4
OUTPUT_ATOL = 2e-2
#: PSNR difference of a whole evaluation, GPU vs CPU, in dB
PSNR_ATOL = 0.05


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda")
    rng = np.random.default_rng(0)
    for split, count, size in (("train", 4, 48), ("val", 2, 40)):
        for i in range(count):
            smooth = np.kron(rng.random((3, size // 8, size // 8)), np.ones((1, 8, 8)))
            img = 0.7 * smooth + 0.3 * rng.random((3, size, size))
            write_image(root / "data" / split / f"im{i}.png", torch.from_numpy(img).float())
    torch.manual_seed(0)
    save_weights(build_model("restormer-tiny"), root / "teacher_a.pth")
    save_weights(build_model("restormer-tiny", global_residual=False), root / "teacher_b.pth")
    return root


def write_config(root: Path, name: str, role: str = "scratch", **changes) -> Path:
    noise = {"name": "gaussian_noise", "params": {"sigma": 25}}
    data = {
        "name": name, "role": role, "seed": 1, "output_dir": str(root / "runs"),
        "model": {"name": "res-sl-tiny"},
        "data": {"root": str(root / "data"), "batch_size": 4,
                 "train": {"type": "degraded", "roots": ["train"], "patch_size": 32, "augment": True,
                           "degradation": noise},
                 "val": [{"name": "val", "type": "degraded", "roots": ["val"], "degradation": noise}]},
        "train": {"iters": 6, "log_every": 1, "val_every": 3, "ckpt_every": 3},
    }
    if role == "distill":
        data["teachers"] = {"a": {"name": "restormer-tiny", "weights": str(root / "teacher_a.pth")},
                            "b": {"name": "restormer-tiny", "weights": str(root / "teacher_b.pth"),
                                  "options": {"global_residual": False}}}
        data["distill"] = {"method": "slkd"}
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def trained_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "weights.pth", map_location="cpu", weights_only=True)["params"]


def test_training_step_on_cuda_uses_fused_adamw(cli, setup, monkeypatch):
    seen = {}
    original = Trainer._train_step

    def spy(self, batch):
        seen["device"] = next(self.trainable.parameters()).device.type
        seen["fused"] = self.optimizer.defaults.get("fused")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", spy)
    r = cli("train", "--config", write_config(setup, "train-cuda"), "--device", "cuda")
    assert r.code == 0, r.err
    assert seen == {"device": "cuda", "fused": True}
    run = setup / "runs" / "train-cuda"
    train = events(run, "train")
    assert len(train) == 6 and all(np.isfinite(e["loss"]) for e in train)
    assert events(run, "val")[-1]["psnr"] > 10
    assert all(torch.isfinite(v).all() for v in trained_weights(run).values())


@pytest.mark.parametrize("method", ["slkd", "fitnet"])
def test_distillation_step_on_cuda(cli, setup, method):
    cfg = write_config(setup, f"distill-{method}", role="distill", **{"distill.method": method})
    r = cli("distill", "--config", cfg, "--device", "cuda")
    assert r.code == 0, r.err
    run = setup / "runs" / f"distill-{method}"
    train = events(run, "train")
    assert train and all(np.isfinite(e["loss"]) for e in train)
    terms = {"slkd": {"loss_pix", "loss_kl", "loss_nc", "loss_et"}, "fitnet": {"loss_pix", "loss_feature"}}
    assert terms[method] <= set(train[-1])
    weights = trained_weights(run)
    assert set(weights) == set(build_model("res-sl-tiny").state_dict())  # the student only


def test_resume_on_cuda_continues_the_run(cli, setup, monkeypatch):
    """A stop at step 4 and ``--resume`` reach the same weights as one uninterrupted run, to
    float tolerance (cuDNN backward kernels may sum in another order from run to run; whether
    they were bit-identical is printed for the GPU check's log)."""
    assert cli("train", "--config", write_config(setup, "whole"), "--device", "cuda").code == 0
    original = Trainer._train_step

    def stop_at_4(self, batch):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", stop_at_4)
    cfg = write_config(setup, "stopped")
    r = cli("train", "--config", cfg, "--device", "cuda")
    assert r.code == 2 and "at step 4" in r.err
    monkeypatch.setattr(Trainer, "_train_step", original)
    assert torch.load(setup / "runs" / "stopped" / CHECKPOINT, weights_only=True)["step"] == 4
    assert cli("train", "--config", cfg, "--device", "cuda", "--resume").code == 0
    a, b = trained_weights(setup / "runs" / "whole"), trained_weights(setup / "runs" / "stopped")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"resume on cuda: max weight difference {worst:.3g} (bit-identical: {worst == 0})")
    assert worst < 1e-3


def test_bf16_autocast_step_on_cuda(cli, setup):
    cfg = write_config(setup, "bf16", role="distill", **{"train.bf16": True})
    assert cli("distill", "--config", cfg, "--device", "cuda").code == 0
    train = events(setup / "runs" / "bf16", "train")
    assert all(np.isfinite(e["loss"]) for e in train)
    assert events(setup / "runs" / "bf16", "start")[0]["bf16"] is True


@pytest.mark.parametrize("name", ["res-sl-tiny", "restormer-tiny"])
def test_outputs_match_the_cpu(name):
    torch.manual_seed(3)
    model = build_model(name).eval()
    x = torch.rand(2, 3, 64, 64)
    diffs = {}
    try:
        with torch.inference_mode():
            cpu = model(x)
            model.to("cuda")
            for tf32 in (False, True):
                torch.backends.cudnn.allow_tf32 = tf32
                diffs[tf32] = float((model(x.to("cuda")).cpu() - cpu).abs().max())
    finally:
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    print(f"{name}: GPU vs CPU max abs output difference {diffs[False]:.3g} (float32), "
          f"{diffs[True]:.3g} (TF32 convolutions, the default)")
    assert diffs[False] < STRICT_ATOL
    assert diffs[True] < OUTPUT_ATOL


def test_restore_tiled_and_channels_last_on_cuda(cli, setup, tiny_weights, tmp_path):
    src = setup / "data" / "val" / "im0.png"
    outs = {}
    for tag, extra in (("cpu", ["--device", "cpu"]), ("cuda", ["--device", "cuda"]),
                       ("cuda-cl", ["--device", "cuda", "--inference", "channels_last"])):
        dest = tmp_path / tag / "im0.png"
        r = cli("restore", "--model", "res-sl-tiny", "--weights", tiny_weights, *extra,
                "--tile", "16", "--overlap", "8", src, dest)
        assert r.code == 0, r.err
        outs[tag] = read_image(dest).tensor
    assert outs["cuda"].shape == outs["cpu"].shape == (3, 40, 40)
    for a, b in (("cuda", "cpu"), ("cuda-cl", "cuda")):
        levels = (outs[a] - outs[b]).abs() * 255
        print(f"restore {a} vs {b}: max {float(levels.max()):.0f} uint8 levels, "
              f"{100 * float((levels > 0.5).float().mean()):.2f} % of values differ")
        assert float(levels.max()) <= 2.01 and float((levels > 0.5).float().mean()) < 0.01


def test_eval_on_cuda_matches_the_cpu(cli, setup, tiny_weights):
    scores = {}
    for dev in ("cpu", "cuda"):
        r = cli("eval", "--model", "res-sl-tiny", "--weights", tiny_weights, "--data", setup / "data" / "val",
                "--task", "denoise", "--sigma", "25", "--device", dev, "--json")
        assert r.code == 0, r.err
        scores[dev] = json.loads(r.out)
    psnr = {dev: s["mean"]["psnr"] for dev, s in scores.items()}
    assert abs(psnr["cuda"] - psnr["cpu"]) < PSNR_ATOL, psnr


def test_onnx_export_of_a_gpu_trained_student(cli, setup, tmp_path):
    pytest.importorskip("onnxruntime")
    cfg = write_config(setup, "for-onnx", **{"train.iters": 3})
    assert cli("train", "--config", cfg, "--device", "cuda").code == 0
    weights = setup / "runs" / "for-onnx" / "weights.pth"
    out = tmp_path / "student.onnx"
    r = cli("export", "--model", "res-sl-tiny", "--weights", weights, "--onnx", out, "--check")
    assert r.code == 0, r.err
    assert out.is_file() and "checked" in r.out
    model = build_model("res-sl-tiny")
    load_weights(model, weights)  # the GPU-trained file loads on the CPU


@pytest.mark.parametrize("method", ["scratch", "fakd", "slkd"])
def test_no_wait_for_the_host_between_logging_validation_and_checkpoint_steps(setup, tmp_path, method):
    """CUDA's own sync detector (``torch.cuda.set_sync_debug_mode("error")``) armed for every
    step that neither logs, validates nor saves: any wait raises. The device data path, the
    fused skip and the device-side accounting run as they do in training."""
    from slkd.distill import build_distiller, distill_config
    from slkd.engine.builders import build_model_for_run, build_train_set, build_val_sets
    from slkd.engine.config import load_config
    from slkd.engine.distributed import DistInfo
    from slkd.engine.runstate import seed_everything
    from slkd.engine.tasks import SupervisedTask

    cfg = load_config(write_config(setup, f"sync-{method}", **{
        "train.iters": 8, "train.log_every": 4, "train.val_every": 8, "train.ckpt_every": 8, "train.ema": 0.9,
        "output_dir": str(tmp_path)}))
    seed_everything(cfg.seed)
    model = build_model_for_run(cfg)
    if method == "scratch":
        task = SupervisedTask(model, "l1")
    else:
        dcfg = distill_config(method)
        teachers = {"a": build_model("restormer-tiny"), "b": build_model("restormer-tiny", global_residual=False)}
        task = build_distiller(dcfg, model, {r: teachers[r] for r in dcfg.teacher_roles()})
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))
    trainer = Trainer(cfg, task, build_train_set(cfg), build_val_sets(cfg), run_dir=tmp_path / "run", dist=dist)
    batches = trainer._batches

    def armed():  # armed from the making of a quiet step's batch to the making of the next one
        it, step = batches(), trainer.step + 1
        while True:
            torch.cuda.set_sync_debug_mode("error" if step % 4 else "default")
            yield next(it)
            step += 1

    trainer._batches = armed
    try:
        trainer.run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert events(tmp_path / "run", "train")[-1]["loss"] > 0
