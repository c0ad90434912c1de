"""GPU check: what the CUDA paths need proven and how fast they run, in one command and one JSON.

    python -m benchmarks.gpu_check --pack-data .gpudata   # here: the training images, packed
    python -m benchmarks.gpu_check --data .gpudata        # on a GPU machine (about 8 minutes)
    python -m benchmarks.gpu_check --dry-run              # the same plan at toy size on the CPU
    python -m benchmarks.gpu_check --markdown FILE.json --update BENCHMARKS.md

The report goes to ``--out`` (default ``$OUT`` when set — the GPU machine hands back what is
written there — else ``runs/gpu_check``): ``gpu_check.json``, whose ``scale`` object holds the
headline numbers and the verdict against the targets (:data:`TARGETS`). Run folders go to
``--work`` (default ``runs/gpu_check_work``).

Every stage runs in a child process with its own time limit (a share of ``--budget``, see
:data:`SHARES`; time a stage leaves unused goes to the later ones), so that a failure or a hang
costs only its own stage, and every child writes what it has measured as it goes.

Phase 1, side by side (correctness and compilation; nothing here is timed):

1. ``tests``   ``pytest -m cuda`` (tests/test_cuda.py).
2. ``nccl``    ``slkd distill`` under ``torchrun`` (1 process: a process group over NCCL and
               DistributedDataParallel, as on many GPUs), stopped at step 2 and resumed, against
               an uninterrupted run.
3. ``warm``    one child per compiled configuration that the later stages time: it compiles the
               training step (``train.compile``: the whole step forward, CUDA graphs) or the
               inference graphs into the check's compilation cache, so that the timing stages
               load them instead of compiling them one after another. Their first-step seconds
               are the cold compilation (with every other compilation running beside it).

Phase 2, one stage at a time, alone on the GPU:

4. ``steps_paper``  the training step of the paper's pair (Restormer → Res-SL, batch 8, patch 128)
               for scratch, FAKD and SLKD: eager and compiled, float32 and bf16 autocast
               (:data:`VARIANTS`, FAKD first). Each configuration is one :class:`Trainer` of the
               library, built from a run config as ``slkd distill`` builds it, whose own loop
               (``Trainer.run``) takes its batches in blocks from three sources in turn: the
               packed denoising images (σ = 25) and deraining pairs through the trainer's own data
               path (on the device when they fit: crops, flips and noise made there), and one
               fixed batch already on the device (no data path at all). The same step code for
               all three; the data share is real / synthetic − 1. A compiled configuration's
               ``compile`` event gives its compilation seconds from the warm cache.
5. ``inference``    student vs teacher latency at 1024² and 256² against the MACs ratio: eager,
               channels-last and compiled (CUDA graphs), interleaved (``benchmarks.speed``).
6. ``steps_tiny``   stage 4 for the tiny pair (restormer-tiny → res-sl-tiny).

Phase 3, alone:

7. ``compress``  ``slkd compress`` of a random-weight full-size Restormer on the packed Rain100L
               pairs with the shipped defaults, stopped after two minutes; its it/s from its
               metrics.jsonl (throughput only).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REPORT = "gpu_check.json"
#: the two teacher → student pairs whose training step is timed (the dry run times the tiny pair
#: in both places, at toy size)
PAIRS = {"paper": ("restormer", "res-sl"), "tiny": ("restormer-tiny", "res-sl-tiny")}
STAGES = ("tests", "nccl", "warm", "steps_paper", "inference", "steps_tiny", "compress")
#: the budget's shares: phase 1 (tests, nccl, warm side by side) and each later stage; a stage
#: gets its share of the time left among the stages still to run
SHARES = {"phase1": 34, "steps_paper": 25, "inference": 10, "steps_tiny": 9, "compress": 22}
#: the training step's configurations, in the order they are measured: FAKD (the default method,
#: whose numbers the verdict reads) first, eager before compiled, then the other methods
VARIANTS = ("fakd_eager_fp32", "fakd_eager_bf16", "fakd_compiled_fp32", "fakd_compiled_bf16",
            "scratch_eager_fp32", "slkd_eager_fp32", "scratch_eager_bf16", "slkd_eager_bf16",
            "scratch_compiled_fp32", "slkd_compiled_fp32")
DRY_VARIANTS = {"paper": ("fakd_eager_fp32", "fakd_eager_bf16", "fakd_compiled_fp32", "scratch_eager_fp32",
                          "slkd_eager_fp32"),
                "tiny": ("fakd_eager_fp32", "fakd_compiled_fp32")}
#: where a step's batches come from: the packed images through the trainer's data path, and one
#: fixed batch on the device
SOURCES = ("denoise", "derain", "synthetic")
NOISE = {"name": "gaussian_noise", "params": {"sigma": 25}}
DENOISE_SET = {"type": "degraded", "roots": ["BSDS500"], "recursive": True, "augment": True, "degradation": NOISE}
DERAIN_SET = {"type": "paired", "roots": ["Rain100L/train"], "augment": True}
#: the step's size and how it is timed: blocks of ``block`` steps from one source, ``rounds``
#: rounds over the sources (the order reversed every other round), after one warm-up block
PLAN = {"gpu": {"batch": 8, "patch": 128, "block": {"paper": 5, "tiny": 10}, "rounds": 2,
                "inference_sizes": (1024, 256), "inference_runs": {1024: 5, 256: 10},
                "compress_teacher": "restormer", "compress_s": 120.0, "budget": 480.0},
        "dry": {"batch": 2, "patch": 32, "block": {"paper": 2, "tiny": 2}, "rounds": 1,
                "inference_sizes": (64,), "inference_runs": {64: 3},
                "compress_teacher": "restormer-tiny", "compress_s": 20.0, "budget": 300.0}}
#: what the verdict reads of phase 1's compilations: these get the CPU first and phase 1 waits for
#: them up to :data:`PRIORITY_EXTRA` of the budget past its share; the others run at low priority
PRIORITY = ("paper_fakd_compiled_fp32", "paper_fakd_compiled_bf16", "inference_1024")
PRIORITY_EXTRA = 0.1
#: the GPU targets the verdict checks
TARGETS = {"data_share": 0.05, "fakd_speedup": 2.5, "inference_share": 0.70, "bf16_speedup": 1.0}
#: what --pack-data copies: enough images for the device data path (its cost per batch does not
#: depend on how many there are) and for the compress run, small enough to travel with the tree
PACK = {"BSDS500": 64, "Rain100L/train": 24, "Rain100L/test": 4}
#: marks a --work folder as this script's: only such a folder is emptied on the next check
WORK_MARK = ".gpu_check_work"


def _now() -> float:
    return time.monotonic()


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"error": f"no result ({path.name} missing)"}


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _spawn(argv: list[str], log: Path, env: dict | None = None, nice: int = 0) -> tuple[subprocess.Popen, float, Path]:
    """Start ``argv`` (at a lower CPU priority when ``nice``) with its output in ``log``."""
    f = open(log, "w")
    if nice and shutil.which("nice"):
        argv = ["nice", "-n", str(nice), *argv]  # nice execs the command: the same process
    proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    f.close()
    return proc, _now(), log


def _collect(child: tuple[subprocess.Popen, float, Path], until: float, grace: float = 30.0) -> dict:
    """Wait for a child until ``until`` (monotonic), then stop it (SIGTERM, then SIGKILL)."""
    proc, start, log = child
    try:
        rc = proc.wait(timeout=max(1.0, until - _now()))
        timed_out = False
    except subprocess.TimeoutExpired:
        _stop(proc, grace)
        rc, timed_out = proc.returncode, True
    return {"rc": rc, "timed_out": timed_out, "seconds": round(_now() - start, 1), "log_tail": _tail(log)}


def _child(argv: list[str], log: Path, timeout: float, env: dict | None = None, grace: float = 30.0) -> dict:
    """Run ``argv`` with its output in ``log``; stop it at ``timeout`` seconds."""
    return _collect(_spawn(argv, log, env), _now() + timeout, grace)


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to the process itself (a training run then stops at the step boundary with a
    checkpoint; sent to its whole group, it would also kill its DataLoader workers, and the run
    would die of their death instead), then SIGKILL to the whole group."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of it: workers, children
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        pass


def machine_info() -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["driver"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    return info


# ------------------------------------------------------------------------------------ data


def pack_data(src: Path, dest: Path) -> dict:
    """Copy the training images the check needs into ``dest`` for carrying to a GPU machine
    (:data:`PACK` of each): CBSD432 images (BSDS500 without the CBSD68 names, JPEG as they are)
    and Rain100L pairs as lossless WebP (the PNGs are larger), every WebP checked
    pixel-identical to its PNG. Returns MiB per folder."""
    import cv2
    import numpy as np

    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"error: --pack-data {dest} is not empty; give a new or empty folder")
    for need in ("CBSD68", "BSDS500", "Rain100L/train", "Rain100L/test"):
        if not (src / need).is_dir():
            raise SystemExit(f"error: {src / need} not found (set SLKD_DATA to the data folder)")
    cbsd68 = {p.stem for p in (src / "CBSD68").iterdir()}
    sizes = {k: 0 for k in PACK}
    jpegs = [p for p in sorted((src / "BSDS500").rglob("*.jpg")) if p.stem not in cbsd68]
    for path in jpegs[:PACK["BSDS500"]]:
        out = dest / "BSDS500" / path.relative_to(src / "BSDS500")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
        sizes["BSDS500"] += out.stat().st_size
    for split in ("Rain100L/train", "Rain100L/test"):
        names = sorted(p.name for p in (src / split / "target").glob("*.png"))[:PACK[split]]
        for name in names:
            for side in ("input", "target"):
                path = src / split / side / name
                image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
                if not ok or not np.array_equal(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), image):
                    raise SystemExit(f"error: lossless WebP failed for {path}")
                out = (dest / split / side / name).with_suffix(".webp")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data.tobytes())
                sizes[split] += out.stat().st_size
    return {k: round(v / 2**20, 1) for k, v in sizes.items()}


def _toy_data(root: Path) -> Path:
    """Tiny stand-ins of the packed layout (dry run): clean images and rain pairs."""
    import numpy as np

    from slkd.data.image_io import write_image

    rng = np.random.default_rng(0)
    for i in range(40):
        write_image(root / "BSDS500" / "train" / f"{i}.png", torch.from_numpy(rng.random((3, 48, 48))).float())
    for split, count in (("train", 14), ("test", 4)):
        for i in range(count):
            clean = torch.from_numpy(rng.random((3, 48, 48))).float()
            write_image(root / "Rain100L" / split / "target" / f"norain-{i}.png", clean)
            write_image(root / "Rain100L" / split / "input" / f"norain-{i}.png", (clean + 0.2).clamp(0, 1))
    return root


def teacher_files(work: Path, dry: bool) -> dict[str, dict[str, str]]:
    """Random-weight Teacher A and B of every pair (and of the compress run), as weights files
    (throughput needs no trained weights)."""
    from slkd.models import build_model, save_weights

    files: dict[str, dict[str, str]] = {}
    for key, (teacher, _) in _pairs(dry).items():
        files[key] = {}
        for role in ("a", "b"):
            path = work / "weights" / f"{key}_{role}.safetensors"
            torch.manual_seed(0)
            save_weights(build_model(teacher, **({"global_residual": False} if role == "b" else {})), path)
            files[key][role] = str(path)
    return files


def _pairs(dry: bool) -> dict[str, tuple[str, str]]:
    return {k: PAIRS["tiny"] for k in PAIRS} if dry else dict(PAIRS)


# ------------------------------------------------------------------------------------ nccl


def stage_nccl(work: Path, dry: bool) -> dict:
    """``slkd distill`` under torchrun, 1 process: uninterrupted vs stopped at step 2 + resumed."""
    import yaml

    from slkd.engine.runconfigs import Net, distilled_run
    from slkd.models import build_model, save_weights

    root = work / "nccl"
    data = _toy_data(root / "data")
    torch.manual_seed(0)
    save_weights(build_model("restormer-tiny"), root / "a.pth")
    save_weights(build_model("restormer-tiny", global_residual=False), root / "b.pth")
    device = "cpu" if dry else "cuda"
    configs = {}
    for name in ("whole", "resumed"):
        teacher_a = Net("restormer-tiny", root / "a.pth")
        cfg = distilled_run(
            name, "res-sl-tiny", "slkd", teacher_a=teacher_a, teacher_b=teacher_a.teacher_b(root / "b.pth"),
            output_dir=root / "runs", seed=1,
            data={"root": str(data), "batch_size": 4,
                  "train": {"type": "degraded", "roots": ["BSDS500"], "recursive": True,
                            "patch_size": 32, "degradation": NOISE, "holdout": {"count": 2, "take": "rest"}},
                  "val": [{"name": "val", "type": "degraded", "roots": ["BSDS500"], "recursive": True,
                           "holdout": {"count": 2, "take": "held"}, "degradation": NOISE}]},
            train={"iters": 4, "log_every": 1, "val_every": 4, "ckpt_every": 2})
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(cfg))
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    steps = {
        "whole": run + ["-m", "slkd.cli.main", "distill", "--config", str(configs["whole"]), "--device", device],
        "stopped": run + ["-m", "benchmarks.gpu_check", "--stop-at", "2", "distill", "--config",
                          str(configs["resumed"]), "--device", device],
        "resume": run + ["-m", "slkd.cli.main", "distill", "--config", str(configs["resumed"]),
                         "--device", device, "--resume"],
    }
    result = {}
    for step, argv in steps.items():
        result[step] = _child(argv, root / f"{step}.log", 120)
    try:
        a = torch.load(root / "runs" / "whole" / "weights.pth", map_location="cpu", weights_only=True)["params"]
        b = torch.load(root / "runs" / "resumed" / "weights.pth", map_location="cpu", weights_only=True)["params"]
        result["max_weight_diff"] = max(float((a[k] - b[k]).abs().max()) for k in a)
    except (OSError, RuntimeError, KeyError) as exc:
        result["max_weight_diff"] = None
        result["error"] = _one_line(exc)
    backend = [line for line in _tail(root / "stopped.log", 20000).splitlines() if line.startswith("backend:")]
    result["backend"] = backend[0].split(":", 1)[1].strip() if backend else None
    result["ok"] = (all(result[s]["rc"] == 0 for s in ("whole", "resume")) and result["stopped"]["rc"] != 0
                    and result["max_weight_diff"] is not None and result["max_weight_diff"] < 1e-3)
    return result


def stop_at_driver(step: int, argv: list[str]) -> int:
    """``slkd`` with the trainer interrupted before step ``step + 1`` (as Ctrl-C would); prints
    the process group's backend."""
    import torch.distributed as dist

    from slkd.cli.main import main
    from slkd.engine.trainer import Trainer

    original = Trainer._train_step

    def stop(self, batch):
        if self.step == step:
            print(f"backend: {dist.get_backend() if dist.is_initialized() else 'none'}", flush=True)
            raise KeyboardInterrupt
        return original(self, batch)

    Trainer._train_step = stop
    return main(argv)


# ------------------------------------------------------------------------------------ compiling


def _use_stand_in_compiler() -> None:
    """Dry run: Dynamo with the eager backend in place of Inductor (a cold Inductor compilation
    of even the toy step takes minutes on a busy CPU). The step is still traced whole."""
    import slkd.engine.trainer as trainer_module

    trainer_module.compile_step = lambda module, device: torch.compile(module, dynamic=False, backend="eager")


def _inference_compiler(dry: bool) -> tuple[object, str]:
    """How inference is compiled, and its name: the library's own inference compilation where it
    has one (``slkd.engine.compiled.compile_inference``), else Inductor with CUDA graphs for the
    fixed size; the stand-in of :func:`_use_stand_in_compiler` in the dry run."""
    if dry:
        return (lambda m: torch.compile(m, dynamic=False, backend="eager")), "dynamo, eager backend (dry-run stand-in)"
    from slkd.engine import compiled

    library = getattr(compiled, "compile_inference", None)
    if library is not None:
        cuda = torch.device("cuda")
        return (lambda m: library(m, cuda)), "slkd.engine.compiled.compile_inference"
    return (lambda m: torch.compile(m, dynamic=False, mode="reduce-overhead")), \
        "inductor, CUDA graphs (mode reduce-overhead), static shapes"


def _compile_counters() -> dict:
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "cudagraph_skips": int(counters["inductor"].get("cudagraph_skips", 0))}


# ------------------------------------------------------------------------------------ steps


def _run_config(pair_key: str, variant: str, *, pair, plan: dict, data: Path, weights: dict, out: Path,
                iters: int) -> dict:
    """The run config of one configuration, as ``slkd distill`` / ``slkd train`` read it."""
    from slkd.engine.runconfigs import Net, cosine_train_node, distilled_run, scratch_run

    method, mode, precision = variant.split("_")
    teacher, student = pair
    data_node = {"root": str(data), "batch_size": plan["batch"], "device_data": "auto",
                 "train": {**DENOISE_SET, "patch_size": plan["patch"]}}
    # the compress recipe (Adam with weight decay, cosine); one read of the device-side record at
    # the end, as a long run reads it rarely
    train = {**cosine_train_node(iters, 2e-4, optimizer="adam", weight_decay=1e-4, warmup_iters=1,
                                 log_every=iters, val_every=iters, ckpt_every=iters),
             "compile": mode == "compiled", "bf16": precision == "bf16"}
    common = {"output_dir": out, "seed": 0, "data": data_node, "train": train}
    if method == "scratch":
        return scratch_run(f"{pair_key}-{variant}", student, **common)
    teacher_a = Net(teacher, weights["a"])
    return distilled_run(f"{pair_key}-{variant}", student, method, teacher_a=teacher_a,
                         teacher_b=teacher_a.teacher_b(weights["b"]), **common)


def measure_variant(pair_key: str, variant: str, *, pair, plan: dict, data: Path, weights: dict, work: Path,
                    device: torch.device, rounds: int) -> dict:
    """One configuration's training step: a library Trainer whose own loop runs a warm-up block
    (compilation included), then ``rounds`` rounds of one block per source (:data:`SOURCES`),
    each block timed from the host with the device drained at both ends. ``rounds=0`` only
    compiles (phase 1's warm-up)."""
    from torch._dynamo.utils import counters

    from slkd.engine.builders import build_dataset, build_model_for_run, build_train_set
    from slkd.engine.config import DatasetConfig, TrainRunConfig, from_dict
    from slkd.engine.distributed import DistInfo
    from slkd.engine.runstate import seed_everything
    from slkd.engine.tasks import task_for_run
    from slkd.engine.trainer import Trainer, TrainerConfig

    block = plan["block"][pair_key]
    iters = block * (1 + rounds * len(SOURCES)) + 1  # + 1: the last step, with its checkpoint, is not timed
    out = work / "steps"
    cfg = from_dict(TrainRunConfig, _run_config(pair_key, variant, pair=pair, plan=plan, data=data,
                                                weights=weights, out=out, iters=iters))
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seed_everything(cfg.seed)
    model = build_model_for_run(cfg)
    task, _ = task_for_run(cfg, model)
    denoise = build_train_set(cfg)
    derain = build_dataset(from_dict(DatasetConfig, {**DERAIN_SET, "patch_size": plan["patch"]}), data,
                           train=True, where="derain")
    trainer = Trainer(TrainerConfig.from_run(cfg), task, denoise, {}, run_dir=out / cfg.name,
                      dist=DistInfo(rank=0, world_size=1, local_rank=0, device=device))
    library_batches = trainer._batches
    times: dict[str, list[float]] = {s: [] for s in SOURCES}
    paths: dict[str, str] = {}

    def batches():
        sources = {}
        for source, dataset in (("denoise", denoise), ("derain", derain)):
            trainer.train_set = dataset  # the trainer's own data path, for each data set
            console = trainer.log.console
            trainer.log.console = lambda line, s=source: (paths.__setitem__(s, line), console(line))
            try:
                sources[source] = library_batches()
            finally:
                del trainer.log.console
                trainer.train_set = denoise
        first = next(sources["denoise"])
        sources["synthetic"] = itertools.repeat({k: v.to(device).clone() for k, v in first.items()})
        yield first
        for _ in range(block - 1):
            yield next(sources["denoise"])
        for r in range(rounds):
            for source in (SOURCES if r % 2 == 0 else SOURCES[::-1]):
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(block):
                    yield next(sources[source])
                # resumed when the trainer asks for the next batch: this block's steps are queued
                _sync(device)
                times[source].append((time.perf_counter() - t0) / block)
        yield next(sources["denoise"])

    trainer._batches = batches
    counters.clear()
    try:
        trainer.run()
        compiled = [e for e in _events(out / cfg.name, "compile")]
        result = {"method": variant.split("_")[0], "mode": variant.split("_")[1], "precision": variant.split("_")[2],
                  "compile_s": round(compiled[0]["seconds"], 2) if compiled else None, "data_path": paths}
        if cfg.train.compile:
            result.update(_compile_counters())
        if device.type == "cuda":
            result["peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        if rounds:
            ms = {s: 1000 * statistics.median(v) for s, v in times.items()}
            real = max(ms["denoise"], ms["derain"])
            result.update(ms=ms, real_ms=real, synthetic_ms=ms["synthetic"], data_share=real / ms["synthetic"] - 1,
                          patches_per_s=1000 * plan["batch"] / real,
                          block_ms={s: [round(1000 * x, 3) for x in v] for s, v in times.items()})
        result["seconds"] = round(time.perf_counter() - start, 1)
        return result
    finally:
        trainer.release()
        del trainer, task, model
        gc.collect()
        if cfg.train.compile:
            from torch import _dynamo  # (an ``import torch._dynamo`` here would make ``torch`` local)

            _dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _events(run_dir: Path, kind: str) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e.get("event") == kind]


def stage_steps(work: Path, data: Path, pair_key: str, dry: bool, until: float, warmed: list[str]) -> None:
    """Every configuration of :data:`VARIANTS` for one pair, written as measured; a compiled one
    that phase 1 did not compile goes last (it compiles cold here), and none starts after
    ``until`` (wall clock)."""
    plan = PLAN["dry" if dry else "gpu"]
    pair = _pairs(dry)[pair_key]
    device = torch.device("cpu" if dry else "cuda")
    if dry:
        _use_stand_in_compiler()
    weights = json.loads((work / "weights.json").read_text())[pair_key]
    variants = DRY_VARIANTS[pair_key] if dry else VARIANTS
    cold = [v for v in variants if "compiled" in v and f"{pair_key}_{v}" not in warmed]
    order = [v for v in variants if v not in cold] + cold
    path = work / f"steps_{pair_key}.json"
    result = {"pair": list(pair), "batch": plan["batch"], "patch": plan["patch"], "block": plan["block"][pair_key],
              "rounds": plan["rounds"], "sources": list(SOURCES), "compiled_cold": cold, "variants": {},
              "errors": {}, "skipped": []}
    _write_json(path, result)
    for variant in order:
        if time.time() > until - (3 if dry else 10):
            result["skipped"].append(variant)
            continue
        print(f"{pair_key}: {variant}", file=sys.stderr, flush=True)
        try:
            result["variants"][variant] = measure_variant(pair_key, variant, pair=pair, plan=plan, data=data,
                                                          weights=weights, work=work, device=device,
                                                          rounds=plan["rounds"])
        except Exception as exc:  # noqa: BLE001  (one configuration's failure is its result)
            result["errors"][variant] = _one_line(exc)
        _write_json(path, result)


def stage_warm(work: Path, data: Path, name: str, dry: bool) -> dict:
    """Phase 1: compile one configuration (``paper_fakd_compiled_bf16``) or the inference graphs
    at one size (``inference_1024``) into the check's cache."""
    device = torch.device("cpu" if dry else "cuda")
    if dry:
        _use_stand_in_compiler()
    plan = PLAN["dry" if dry else "gpu"]
    start = time.perf_counter()
    if name.startswith("inference_"):
        from benchmarks import speed

        size = int(name.split("_")[1])
        speed.inference(PAIRS["tiny"] if dry else PAIRS["paper"], (size,), 1, device=device,
                        compiled=_inference_compiler(dry)[0])
        seconds = round(time.perf_counter() - start, 1)  # the compilations, and one round of each model
        return {"seconds": seconds, "compile_s": seconds, **_compile_counters()}
    pair_key, variant = name.split("_", 1)
    weights = json.loads((work / "weights.json").read_text())[pair_key]
    r = measure_variant(pair_key, variant, pair=_pairs(dry)[pair_key], plan=plan, data=data, weights=weights,
                        work=work / "warm", device=device, rounds=0)
    return {"seconds": r["seconds"], "compile_s": r["compile_s"],
            **{k: r[k] for k in ("graphs", "graph_breaks", "cudagraph_skips") if k in r}}


# ------------------------------------------------------------------------------------ inference


def stage_inference(path: Path, dry: bool, until: float) -> None:
    """Student vs teacher latency per size (largest first), eager, channels-last and compiled
    side by side, against the MACs ratio; each path's speed-up and the best of each model."""
    from torch import _dynamo
    from torch._dynamo.utils import counters

    from benchmarks import speed

    plan = PLAN["dry" if dry else "gpu"]
    pair = PAIRS["tiny"] if dry else PAIRS["paper"]
    device = torch.device("cpu" if dry else "cuda")
    compile_fn, compiler = _inference_compiler(dry)
    result: dict = {"pair": list(pair), "compiler": compiler, "sizes": {}, "errors": {}}
    for size in plan["inference_sizes"]:
        if time.time() > until - 5:
            result["errors"][str(size)] = "not measured: out of time"
            continue
        runs = plan["inference_runs"][size]
        counters.clear()
        try:
            row = speed.inference(pair, (size,), runs, channels_last=True, device=device,
                                  compiled=compile_fn)[str(size)]
            row.update(_compile_counters())
        except Exception as exc:  # noqa: BLE001  (compiled inference failed: the rest still counts)
            result["errors"][f"{size} compiled"] = _one_line(exc)
            row = speed.inference(pair, (size,), runs, channels_last=True, device=device)[str(size)]
        result["sizes"][str(size)] = _inference_paths(row, pair)
        _write_json(path, result)
        _dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    _write_json(path, result)


def _inference_paths(row: dict, pair) -> dict:
    teacher, student = pair
    paths = {"eager": (row["teacher_ms"], row["student_ms"])}
    for tag in ("channels_last", "compiled"):
        if f"{tag}_ms" in row:
            paths[tag] = (row[f"{tag}_ms"][teacher], row[f"{tag}_ms"][student])
    row["paths"] = {k: {"teacher_ms": t, "student_ms": s, "speedup": t / s} for k, (t, s) in paths.items()}
    t_path = min(paths, key=lambda k: paths[k][0])
    s_path = min(paths, key=lambda k: paths[k][1])
    speedup = paths[t_path][0] / paths[s_path][1]
    row["best"] = {"teacher_path": t_path, "student_path": s_path, "teacher_ms": paths[t_path][0],
                   "student_ms": paths[s_path][1], "speedup": speedup, "share": speedup / row["macs_ratio"]}
    return row


# ------------------------------------------------------------------------------------ compress


def stage_compress(work: Path, data: Path, dry: bool, seconds: float, weights: str) -> dict:
    """``slkd compress`` (the shipped defaults: FAKD, eager unless the library compiles on the
    device by itself) of a random-weight Teacher A on the packed Rain100L pairs, stopped after
    ``seconds``; its throughput from the student stage's metrics.jsonl."""
    plan = PLAN["dry" if dry else "gpu"]
    out = work / "compress"
    argv = [sys.executable, "-m", "slkd.cli.main", "compress", "--teacher", f"{plan['compress_teacher']}:{weights}",
            "--task", "derain", "--train", str(data / "Rain100L" / "train"), "--val", str(data / "Rain100L" / "test"),
            "--out", str(out), "--device", "cpu" if dry else "cuda"]
    if dry:  # below the length at which a CPU run compiles its step (a cold compilation takes minutes)
        from slkd.engine.compiled import COMPILE_MIN_ITERS

        argv += ["--iters", str(COMPILE_MIN_ITERS - 1), "--patch", str(plan["patch"]), "--batch", str(plan["batch"])]
    launched = time.time()
    r = _child(argv, work / "compress.log", seconds, grace=20.0)
    r["command"] = " ".join(["slkd", *argv[3:]])
    r["batch"], r["patch"] = plan["batch"], plan["patch"]
    runs = sorted(out.glob("student_*"))
    events = [e for e in map(json.loads, (runs[0] / "metrics.jsonl").read_text().splitlines())] \
        if runs and (runs[0] / "metrics.jsonl").is_file() else []
    starts = [e for e in events if e.get("event") == "start"]
    trains = [e for e in events if e.get("event") == "train"]
    last = max((e for e in events if "step" in e), key=lambda e: (e["step"], e["time"]), default=None)
    r["steps_done"] = last["step"] if last else 0
    r["windows_it_per_s"] = [e["it_per_s"] for e in trains]
    rate = None
    if len(trains) >= 2:  # the first window holds the first steps' warm-up
        rate = statistics.median(r["windows_it_per_s"][1:])
    elif trains:
        rate = trains[0]["it_per_s"]
    elif starts and last and last["step"] > 0 and last["time"] > starts[0]["time"]:
        rate = last["step"] / (last["time"] - starts[0]["time"])
    r["it_per_s"] = rate
    r["step_ms"] = 1000 / rate if rate else None
    r["patches_per_s"] = rate * plan["batch"] if rate else None
    r["startup_s"] = round(starts[0]["time"] - launched, 1) if starts else None
    return r


# ------------------------------------------------------------------------------------ scale


def scale(report: dict) -> dict:
    """The headline numbers and the verdict against :data:`TARGETS`; None where not measured."""
    st = report["stages"]
    paper = st.get("steps_paper", {}).get("variants", {})
    fakd = {k: v for k, v in paper.items() if v.get("method") == "fakd" and v.get("real_ms")}
    best = min(fakd, key=lambda k: fakd[k]["real_ms"]) if fakd else None
    eager = fakd.get("fakd_eager_fp32", {}).get("real_ms")
    out: dict = {"commit": report.get("commit") or "unknown",
                 "device": report["machine"].get("gpu", "cpu (dry run)" if report["dry_run"] else "cpu"),
                 "data_share": fakd[best]["data_share"] if best else None,
                 "data_share_config": best,
                 "paper_step_ms": {"fakd_eager_fp32": eager, "fakd_best": fakd[best]["real_ms"] if best else None,
                                   **{k: v["real_ms"] for k, v in fakd.items()}},
                 "fakd_best_config": best}
    out["fakd_speedup"] = eager / out["paper_step_ms"]["fakd_best"] if eager and best else None
    bf16 = {mode: fakd[f"fakd_{mode}_fp32"]["real_ms"] / fakd[f"fakd_{mode}_bf16"]["real_ms"]
            for mode in ("eager", "compiled") if f"fakd_{mode}_fp32" in fakd and f"fakd_{mode}_bf16" in fakd}
    out["bf16_speedup"] = bf16
    sizes = st.get("inference", {}).get("sizes", {})
    largest = max(sizes, key=int) if sizes else None
    if largest:
        b = sizes[largest]["best"]
        out["inference_1024"] = {"size": int(largest), "speedup": b["speedup"],
                                 "macs_ratio": sizes[largest]["macs_ratio"], "share": b["share"],
                                 "teacher_path": b["teacher_path"], "student_path": b["student_path"]}
    else:
        out["inference_1024"] = {"size": None, "speedup": None, "macs_ratio": None, "share": None}
    c = st.get("compress", {})
    timed = paper.get("fakd_eager_fp32", {}).get("ms", {}).get("derain")
    out["compress"] = {"it_per_s": c.get("it_per_s"), "step_ms": c.get("step_ms"),
                       "over_timed_step": c["step_ms"] / timed if c.get("step_ms") and timed else None}

    def check(value, rule: str, passed) -> dict:
        return {"value": value, "rule": rule, "ok": None if value is None else bool(passed(value))}

    t = TARGETS
    verdict = {
        "data_share": check(out["data_share"], f"data_share <= {t['data_share']}", lambda v: v <= t["data_share"]),
        "fakd_speedup": check(out["fakd_speedup"], f"fakd_eager_fp32 / fakd_best >= {t['fakd_speedup']}",
                              lambda v: v >= t["fakd_speedup"]),
        "inference_share": check(out["inference_1024"]["share"], "student speed-up at 1024² >= "
                                 f"{t['inference_share']:.0%} of the MACs ratio", lambda v: v >= t["inference_share"]),
        "bf16_speedup": check(min(bf16.values()) if bf16 else None, "bf16 step faster than float32 (FAKD, paper pair, "
                              "every mode measured)", lambda v: v > t["bf16_speedup"]),
    }
    oks = [v["ok"] for v in verdict.values()]
    out["verdict"] = verdict
    out["targets_met"] = None if None in oks else all(oks)  # None: not everything was measured
    return out


# ------------------------------------------------------------------------------------ plan


def fresh_work(work: Path) -> None:
    """Empty ``--work`` for a new check, or make it. It is deleted with everything in it, so only
    a folder this script made (:data:`WORK_MARK`) or an empty one is: ``--work ~`` deleted the home
    folder. Anything else is refused in one line before anything is touched."""
    if work.exists() and not work.is_dir():
        raise SystemExit(f"error: --work {work} is a file; give a folder")
    if work.is_dir() and any(work.iterdir()):
        if not (work / WORK_MARK).is_file():
            raise SystemExit(f"error: --work {work} holds files gpu_check did not write (it would "
                             "delete them); give a new or empty folder (nothing was deleted)")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARK).write_text("made by python -m benchmarks.gpu_check; emptied by its next run\n")


def warm_list(stages, dry: bool) -> list[str]:
    """What phase 1 compiles: the compiled configurations of the step stages selected, and the
    inference graphs of every size."""
    names = []
    for pair_key in ("paper", "tiny"):
        if f"steps_{pair_key}" in stages:
            variants = DRY_VARIANTS[pair_key] if dry else VARIANTS
            names += [f"{pair_key}_{v}" for v in variants if "compiled" in v]
    if "inference" in stages:
        names += [f"inference_{s}" for s in PLAN["dry" if dry else "gpu"]["inference_sizes"]]
    return names


class Budget:
    """Each stage's time limit: its share (:data:`SHARES`) of the time left among the stages
    still to run."""

    def __init__(self, seconds: float, stages) -> None:
        self.deadline = _now() + seconds
        phase1 = bool({"tests", "nccl", "warm"} & set(stages))
        self.left = [k for k in SHARES if k in stages or (k == "phase1" and phase1)]

    def take(self, key: str) -> float:
        total = sum(SHARES[k] for k in self.left)
        share = max(5.0, (self.deadline - _now()) * SHARES[key] / total) if key in self.left else 5.0
        if key in self.left:
            self.left.remove(key)
        return share


def run_all(args) -> dict:
    start = _now()
    dry = args.dry_run
    plan = PLAN["dry" if dry else "gpu"]
    out, work = Path(args.out), Path(args.work)
    fresh_work(work)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget or plan["budget"]
    env = {"TORCHINDUCTOR_CACHE_DIR": str((work / "inductor").resolve())}  # cold at the start of every check
    if dry:  # stages run side by side on few cores: one thread each
        env["OMP_NUM_THREADS"] = "1"
    os.environ.update(env)
    data = Path(args.data).resolve() if args.data else (_toy_data(work / "toy-data").resolve() if dry else None)
    stages = list(args.stages)
    report = {"command": " ".join(["python -m benchmarks.gpu_check", *sys.argv[1:]]), "commit": args.commit,
              "dry_run": dry, "budget_s": budget, "machine": machine_info(), "stages": {}}
    path = out / REPORT
    _write_json(path, report)
    if data is None:
        for stage in ("steps_paper", "steps_tiny", "compress"):  # inference needs no images
            if stage in stages:
                report["stages"][stage] = {"skipped": "no --data folder (see --pack-data)"}
                stages.remove(stage)
    weights = teacher_files(work, dry) if set(stages) & {"warm", "steps_paper", "steps_tiny", "compress"} else {}
    _write_json(work / "weights.json", weights)
    me = [sys.executable, "-m", "benchmarks.gpu_check", "--work", str(work)] + (["--dry-run"] if dry else [])
    if data is not None:
        me += ["--data", str(data)]
    limits = Budget(budget, stages)

    # phase 1: side by side
    phase1_end = _now() + limits.take("phase1") if "phase1" in limits.left else _now()
    warm = warm_list(stages, dry) if "warm" in stages else []
    cpus = os.cpu_count() or 2
    threads = {"priority": max(2, cpus // 4), "other": 2}  # compile workers of a child
    children = {}
    for name in warm:  # the low-priority ones first: they are collected (or stopped) at the share's end
        first = name in PRIORITY
        workers = threads["priority" if first else "other"]
        children[f"warm:{name}"] = _spawn(me + ["--stage", "warm", "--name", name], work / f"warm_{name}.log",
                                          {"TORCHINDUCTOR_COMPILE_THREADS": str(workers)}, nice=0 if first else 10)
    children = dict(sorted(children.items(), key=lambda kv: kv[0].split(":", 1)[1] in PRIORITY))
    if "tests" in stages:
        children["tests"] = _spawn([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rA", "-s", "-p",
                                    "no:cacheprovider", f"--junitxml={work / 'junit.xml'}", "tests/test_cuda.py"],
                                   work / "tests.log")
    if "nccl" in stages:
        children["nccl"] = _spawn(me + ["--stage", "nccl"], work / "nccl.log")
    extended = phase1_end + PRIORITY_EXTRA * budget
    warmed = []
    for key, child in children.items():
        low = key.startswith("warm:") and key.split(":", 1)[1] not in PRIORITY
        r = _collect(child, phase1_end if low else extended, grace=10.0)
        if key == "tests":
            r.update(_junit_counts(work / "junit.xml"))
            report["stages"]["tests"] = r
        elif key == "nccl":
            r.update(_read(work / "nccl.json"))
            report["stages"]["nccl"] = r
        else:
            name = key.split(":", 1)[1]
            r.update(_read(work / "warm" / f"{name}.json"))
            if r["rc"] != 0:
                r["log_tail"] = _tail(child[2], 1500)
            else:
                r.pop("log_tail")
                warmed.append(name)
            r["priority"] = name in PRIORITY
            report["stages"].setdefault("warm", {"compile_threads": threads, "children": {}})["children"][name] = r
        _write_json(path, report)

    # phase 2: alone on the device, one stage at a time
    for stage in ("steps_paper", "inference", "steps_tiny"):
        if stage not in stages:
            continue
        limit = limits.take(stage)
        until = time.time() + limit
        argv = me + ["--stage", stage, "--until", str(until), "--warmed", ",".join(warmed)]
        r = _child(argv, work / f"{stage}.log", limit + 5, grace=10.0)
        r.update(_read(work / f"{stage}.json"))
        if r["rc"] == 0:
            r["log_tail"] = r["log_tail"][-800:]
        report["stages"][stage] = r
        _write_json(path, report)

    # phase 3
    if "compress" in stages:
        seconds = min(plan["compress_s"], limits.take("compress"))
        report["stages"]["compress"] = stage_compress(work, data, dry, seconds, weights["paper"]["a"])
    report["scale"] = scale(report)
    report["seconds"] = round(_now() - start, 1)
    _write_json(path, report)
    print(f"wrote {path} ({report['seconds']:.0f} s)")
    for v in report["scale"]["verdict"].values():
        met = "not measured" if v["ok"] is None else "yes" if v["ok"] else "NO"
        print(f"  {v['rule']}: {_fmt(v['value'])} → {met}")
    return report


def _fmt(value) -> str:
    return "not measured" if value is None else f"{value:.3g}"


def _junit_counts(path: Path) -> dict:
    import xml.etree.ElementTree as ET

    try:
        suite = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {"junit": None}
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = {"passed": [], "failed": [], "skipped": []}
    for case in suite.iter("testcase"):
        kind = "failed" if case.find("failure") is not None or case.find("error") is not None else \
            "skipped" if case.find("skipped") is not None else "passed"
        cases[kind].append(case.get("name"))
    return {k: v if k == "failed" else len(v) for k, v in cases.items()}


def main(argv: list[str] | None = None) -> int:
    from slkd.cli.common import number

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check")
    p.add_argument("--work", default="runs/gpu_check_work")
    p.add_argument("--data", help="folder with BSDS500/ and Rain100L/{train,test} (see --pack-data)")
    p.add_argument("--dry-run", action="store_true", help="the same plan at toy size on the CPU")
    p.add_argument("--budget", type=number(float, above=0), help="seconds for the whole check (default "
                   f"{PLAN['gpu']['budget']:.0f}; dry run {PLAN['dry']['budget']:.0f})")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--commit", default=_git_commit())
    p.add_argument("--pack-data", metavar="DIR", help="write the images the check trains on to DIR and exit")
    p.add_argument("--markdown", metavar="JSON", help="print the BENCHMARKS.md section of a report and exit")
    p.add_argument("--update", metavar="MD", help="with --markdown: replace the section in this file")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--until", type=float, help=argparse.SUPPRESS)
    p.add_argument("--warmed", default="", help=argparse.SUPPRESS)
    p.add_argument("--stop-at", type=int, help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    if args.stop_at is not None:
        return stop_at_driver(args.stop_at, rest)
    if rest:
        p.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.pack_data:
        src = Path(os.environ.get("SLKD_DATA") or ROOT.parent / "shared" / "data")
        print(json.dumps({"packed_mib": pack_data(src, Path(args.pack_data))}))
        return 0
    if args.markdown:
        from benchmarks.gpu_report import markdown, update_section

        text = markdown(json.loads(Path(args.markdown).read_text()))
        if args.update:
            update_section(Path(args.update), text)
        else:
            print(text)
        return 0
    work = Path(args.work)
    data = Path(args.data) if args.data else None
    if args.stage == "nccl":
        _write_json(work / "nccl.json", stage_nccl(work, args.dry_run))
        return 0
    if args.stage == "warm":
        _write_json(work / "warm" / f"{args.name}.json", stage_warm(work, data, args.name, args.dry_run))
        return 0
    if args.stage in ("steps_paper", "steps_tiny"):
        stage_steps(work, data, args.stage.split("_")[1], args.dry_run, args.until,
                    [w for w in args.warmed.split(",") if w])
        return 0
    if args.stage == "inference":
        stage_inference(work / "inference.json", args.dry_run, args.until)
        return 0
    run_all(args)
    return 0


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    from slkd.engine.allocator import tune_allocator

    tune_allocator()
    raise SystemExit(main())
