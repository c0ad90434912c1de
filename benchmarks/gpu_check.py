"""GPU check: what the CUDA paths need proven, in one command and one JSON.

    python -m benchmarks.gpu_check --data .gpudata        # on a GPU machine (≤ 8 min)
    python -m benchmarks.gpu_check --dry-run              # the same plan at toy size on the CPU
    python -m benchmarks.gpu_check --pack-data .gpudata   # the teachers' training images, packed
    python -m benchmarks.gpu_check --markdown FILE.json --update BENCHMARKS.md

The report goes to ``--out`` (default ``$OUT`` when set — the GPU machine hands back what is
written there — else ``runs/gpu_check``): ``gpu_check.json`` and the teachers' weights as
safetensors. Run folders go to ``--work`` (default ``runs/gpu_check_work``).

Stages, in order of value, each in a child process with its own time limit, so that a failure
or a hang costs only its own stage:

1. ``tests``     ``pytest -m cuda`` (tests/test_cuda.py).
2. ``nccl``      ``slkd distill`` under ``torchrun`` (1 process: a process group over NCCL and
                 DistributedDataParallel, as on many GPUs), stopped at step 2 and resumed, against
                 an uninterrupted run.
3. ``timings``   side by side in one process: Restormer and Res-SL training steps (batch 8,
                 patch 128, float32 and bf16), the SLKD step against its floor, inference at 256²
                 and 1024² against the MACs ratio; then the same with ``torch.compile``.
4. ``teachers``  the study's tiny teachers (denoising σ = 25 and Rain100L deraining, A then B)
                 trained at batch 64 × 128² from the repository's configs and ``TEACHER_RECIPE``,
                 for the minutes the budget leaves; the weights selected on each config's
                 validation split are written to the output folder.

The teachers train while the tests and the NCCL run go on (those check correctness, not speed);
the timings run last, alone on the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REPORT = "gpu_check.json"
TASKS = {"denoise25": "configs/denoise25", "derain": "configs/derain"}
#: overrides of the configs' CPU recipe for the GPU (teacher → overrides); iterations, validation
#: and checkpoint intervals are set from the measured speed and the time left
TEACHER_RECIPE = {
    "a": {"data.batch_size": 64, "data.train.patch_size": 128, "data.num_workers": 6,
          "train.optimizer.lr": 2e-3, "train.grad_clip": 1.0, "train.ema": 0.999, "train.bf16": True,
          "train.log_every": 50},
    # no EMA: B's short fine-tune starts from A minus its global residual, a different function
    # that an EMA of decay 0.999 would keep for most of the run (the 100-step B of BENCHMARKS §10
    # validated at 9.87 dB)
    "b": {"data.batch_size": 64, "data.train.patch_size": 128, "data.num_workers": 6,
          "train.optimizer.lr": 5e-4, "train.grad_clip": 1.0, "train.bf16": True,
          "train.log_every": 50},
}
DRY_RECIPE = {"data.batch_size": 2, "data.train.patch_size": 32, "data.num_workers": 0, "train.log_every": 1}
#: share of the teachers' time that Teacher A gets (B fine-tunes from it)
SHARE_A = 0.78


def _now() -> float:
    return time.monotonic()


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def _child(argv: list[str], log: Path, timeout: float, env: dict | None = None) -> dict:
    """Run ``argv`` with its output in ``log``; stop it at ``timeout`` (SIGTERM, then SIGKILL)."""
    start = _now()
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
            timed_out = False
        except subprocess.TimeoutExpired:
            _stop(proc)
            rc, timed_out = proc.returncode, True
    return {"rc": rc, "timed_out": timed_out, "seconds": round(_now() - start, 1), "log_tail": _tail(log)}


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
    """Copy the teachers' training images into ``dest`` for carrying to a GPU machine: CBSD432
    (BSDS500 without the CBSD68 names, JPEG as they are) and Rain100L/train as lossless WebP
    (the PNGs are 1.5× larger); every WebP is checked pixel-identical to its PNG."""
    import cv2
    import numpy as np

    cbsd68 = {p.stem for p in (src / "CBSD68").iterdir()}
    sizes = {"BSDS500": 0, "Rain100L": 0}
    for path in sorted((src / "BSDS500").rglob("*.jpg")):
        if path.stem in cbsd68:
            continue
        out = dest / "BSDS500" / path.relative_to(src / "BSDS500")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
        sizes["BSDS500"] += out.stat().st_size
    for path in sorted((src / "Rain100L" / "train").rglob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
        if not ok or not np.array_equal(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), image):
            raise SystemExit(f"lossless WebP failed for {path}")
        out = (dest / "Rain100L" / path.relative_to(src / "Rain100L")).with_suffix(".webp")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data.tobytes())
        sizes["Rain100L"] += out.stat().st_size
    return {k: round(v / 2**20, 1) for k, v in sizes.items()}


def _toy_data(root: Path) -> Path:
    """Tiny stand-ins of the packed layout (dry run): 40 clean images and 14 rain pairs."""
    import numpy as np

    from slkd.data.image_io import write_image

    rng = np.random.default_rng(0)
    for i in range(40):
        write_image(root / "BSDS500" / "train" / f"{i}.png", torch.from_numpy(rng.random((3, 48, 48))).float())
    for i in range(14):
        clean = torch.from_numpy(rng.random((3, 48, 48))).float()
        write_image(root / "Rain100L" / "train" / "target" / f"norain-{i}.png", clean)
        write_image(root / "Rain100L" / "train" / "input" / f"norain-{i}.png", (clean + 0.2).clamp(0, 1))
    return root


# ------------------------------------------------------------------------------------ teachers


def _overrides(values: dict) -> list[str]:
    return [f"{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in values.items()]


def _launch_teacher(task: str, which: str, extra: dict, work: Path, data: Path, dry: bool, log: Path):
    config = f"{TASKS[task]}/teacher_{which}_tiny.yaml"
    recipe = dict(TEACHER_RECIPE[which])
    if os.environ.get("SLKD_GPU_TEACHER_BATCH"):
        recipe["data.batch_size"] = int(os.environ["SLKD_GPU_TEACHER_BATCH"])
    values = {**(DRY_RECIPE if dry else recipe), "output_dir": str(work / "runs"), **extra}
    if task == "denoise25" and not (data / "CBSD68").is_dir():
        # the packed folder holds CBSD432 only: nothing to exclude, and the same 432 names
        values.update({"data.train.exclude": "null", "data.val.0.exclude": "null"})
    argv = [sys.executable, "-m", "slkd.cli.main", "train", "--config", config,
            "--device", "cpu" if dry else "cuda", *_overrides(values)]
    f = open(log, "w")
    proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                            env={**os.environ, "SLKD_DATA": str(data)})
    return proc, argv, config


def _events(run_dir: Path, kind: str) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e.get("event") == kind]


def _run_teachers(which: str, runs: dict, work: Path, data: Path, dry: bool, until: float,
                  iters: dict, log_every: int | None = None) -> dict:
    """Train ``which`` (a or b) for every task at once; stop any still running at ``until``."""
    procs = {}
    for task in TASKS:
        name = f"gpu-{task}-teacher-{which}"
        n = iters[task]
        every = n if dry else max(1, n // 4)  # four validations (and checkpoints) per run
        extra = {"name": name, "train.iters": n, "train.val_every": every, "train.ckpt_every": every,
                 "train.scheduler.warmup_iters": min(200, n // 10)}
        if log_every and not dry:
            extra["train.log_every"] = log_every
        if which == "b":
            extra["model.init_from"] = str(work / "runs" / f"gpu-{task}-teacher-a")
        start = _now()
        proc, argv, config = _launch_teacher(task, which, extra, work, data, dry, work / f"{name}.log")
        procs[task] = (proc, argv, config, name, start)
    for task, (proc, argv, config, name, start) in procs.items():
        try:
            proc.wait(timeout=max(1.0, until - _now()))
        except subprocess.TimeoutExpired:
            _stop(proc)
        run_dir = work / "runs" / name
        vals = _events(run_dir, "val")
        trains = _events(run_dir, "train")
        runs[name] = {"task": task, "teacher": which, "config": config, "command": " ".join(argv[2:]),
                      "rc": proc.returncode, "iters": iters[task], "steps_done": trains[-1]["step"] if trains else 0,
                      "seconds": round(_now() - start, 1),
                      "it_per_s": trains[-1]["it_per_s"] if trains else None,
                      "val": [{k: e[k] for k in ("step", "dataset", "psnr", "ssim")} for e in vals],
                      "log_tail": _tail(work / f"{name}.log", 1500)}
    return runs


def stage_teachers(work: Path, data: Path, dry: bool, until: float, roles: str = "ab") -> dict:
    """Probe the speed of both Teacher A runs together, size the runs to the time left, train
    A, then B from A (``roles="a"``: A only, with all the time)."""
    runs: dict = {}
    probe_iters = 1 if dry else 20
    probe = _run_teachers("a", {}, work, data, dry, until, {t: probe_iters for t in TASKS}, log_every=10)
    rates = {}
    for name, r in probe.items():
        rates[r["task"]] = r["it_per_s"] or 0.0
        shutil.rmtree(work / "runs" / name, ignore_errors=True)
    if not all(rates.values()):
        return {"error": "the speed probe failed", "probe": probe}
    left = until - _now()
    budget_a = (SHARE_A if "b" in roles else 1.0) * left
    iters_a = {t: 2 if dry else max(200, int(0.85 * rates[t] * budget_a)) for t in TASKS}
    _run_teachers("a", runs, work, data, dry, _now() + budget_a, iters_a)
    if "b" not in roles:
        return {"probe_it_per_s": rates, "runs": runs}
    left = until - _now()
    iters_b = {t: 1 if dry else max(100, int(0.8 * rates[t] * left)) for t in TASKS}
    _run_teachers("b", runs, work, data, dry, until, iters_b)
    return {"probe_it_per_s": rates, "runs": runs}


def export_teachers(result: dict, work: Path, out: Path) -> dict:
    """The weights each run selected on its validation split (``best_<val>.pth``, EMA) as
    safetensors in ``out``; returns file name → validation PSNR."""
    from slkd.models import build_model, load_weights, save_weights

    files = {}
    for name, r in result.get("runs", {}).items():
        run_dir = work / "runs" / name
        best = sorted(run_dir.glob("best_*.pth"))
        if not best or not r["val"]:
            continue
        model = build_model("restormer-tiny", **({"global_residual": False} if r["teacher"] == "b" else {}))
        load_weights(model, best[0])
        path = out / f"{r['task']}_teacher_{r['teacher']}.safetensors"
        save_weights(model, path)
        top = max(r["val"], key=lambda e: e["psnr"])
        r["exported"] = {"file": path.name, "val_psnr": top["psnr"], "val_ssim": top["ssim"], "step": top["step"]}
        files[path.name] = top["psnr"]
    return files


# ------------------------------------------------------------------------------------ nccl


def stage_nccl(work: Path, dry: bool) -> dict:
    """``slkd distill`` under torchrun, 1 process: uninterrupted vs stopped at step 2 + resumed."""
    import yaml

    from slkd.models import build_model, save_weights

    root = work / "nccl"
    data = _toy_data(root / "data")
    torch.manual_seed(0)
    save_weights(build_model("restormer-tiny"), root / "a.pth")
    save_weights(build_model("restormer-tiny", global_residual=False), root / "b.pth")
    device = "cpu" if dry else "cuda"
    noise = {"name": "gaussian_noise", "params": {"sigma": 25}}
    configs = {}
    for name in ("whole", "resumed"):
        cfg = {"name": name, "role": "distill", "seed": 1, "output_dir": str(root / "runs"),
               "model": {"name": "res-sl-tiny"},
               "teachers": {"a": {"name": "restormer-tiny", "weights": str(root / "a.pth")},
                            "b": {"name": "restormer-tiny", "weights": str(root / "b.pth"),
                                  "options": {"global_residual": False}}},
               "distill": {"method": "slkd"},
               "data": {"root": str(data), "batch_size": 4,
                        "train": {"type": "degraded", "roots": ["BSDS500"], "recursive": True,
                                  "patch_size": 32, "degradation": noise, "holdout": {"count": 2, "take": "rest"}},
                        "val": [{"name": "val", "type": "degraded", "roots": ["BSDS500"], "recursive": True,
                                 "holdout": {"count": 2, "take": "held"}, "degradation": noise}]},
               "train": {"iters": 4, "log_every": 1, "val_every": 4, "ckpt_every": 2}}
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
    a = torch.load(root / "runs" / "whole" / "weights.pth", map_location="cpu", weights_only=True)["params"]
    b = torch.load(root / "runs" / "resumed" / "weights.pth", map_location="cpu", weights_only=True)["params"]
    result["max_weight_diff"] = max(float((a[k] - b[k]).abs().max()) for k in a)
    backend = [line for line in _tail(root / "stopped.log", 20000).splitlines() if line.startswith("backend:")]
    result["backend"] = backend[0].split(":", 1)[1].strip() if backend else None
    result["ok"] = (all(result[s]["rc"] == 0 for s in ("whole", "resume")) and result["stopped"]["rc"] != 0
                    and result["max_weight_diff"] < 1e-3)
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


# ------------------------------------------------------------------------------------ timings


def stage_timings(path: Path, dry: bool) -> None:
    """Eager timings first (written at once), then compiled ones: a slow compilation that the
    stage's time limit cuts off loses only those."""
    from benchmarks import speed
    from slkd.models import build_model

    device = torch.device("cpu" if dry else "cuda")
    pair, batch, patch, runs, sizes = (("restormer-tiny", "res-sl-tiny"), 2, 32, 2, (64,)) if dry else \
        (("restormer", "res-sl"), 8, 128, 10, (256, 1024))
    result: dict = {"pair": list(pair), "batch": batch, "patch": patch, "runs": runs}
    # GPU vs CPU outputs, random weights, with cuDNN's default TF32 convolutions and without
    parity = {}
    for name in pair:
        torch.manual_seed(3)
        model = build_model(name).eval()
        x = torch.rand(1, 3, 64, 64)
        with torch.inference_mode():
            ref = model(x)
            model.to(device)
            for tf32 in (True, False):
                torch.backends.cudnn.allow_tf32 = tf32
                parity[f"{name} tf32={tf32}"] = float((model(x.to(device)).cpu() - ref).abs().max())
        torch.backends.cudnn.allow_tf32 = True
    result["parity_max_abs_diff"] = parity
    result["train_step"] = train_step_times(pair, batch, patch, runs, device)
    _write_json(path, result)
    result["distill_step"] = speed.step_times(pair, batch, patch, runs, ("scratch", "fitnet", "slkd"),
                                              bf16=True, device=device)
    _write_json(path, result)
    result["inference"] = speed.inference(pair, sizes, max(3, runs), channels_last=True, device=device)
    _write_json(path, result)
    if dry:
        return
    result["inference_compiled"] = speed.inference(pair, sizes[:1], runs, device=device, compiled=True)
    _write_json(path, result)
    result["distill_step_compiled_losses"] = speed.step_times(pair, batch, patch, runs, ("slkd",),
                                                              compile_losses=True, device=device)
    _write_json(path, result)


def train_step_times(pair, batch: int, patch: int, runs: int, device: torch.device) -> dict:
    """Teacher and student training steps (L1, fused AdamW on CUDA), float32 and bf16 autocast,
    interleaved; median ms and peak GPU memory."""
    from benchmarks.speed import _batch, _timed
    from slkd.models import build_model

    data = _batch(batch, patch, device)
    fused = {"fused": True} if device.type == "cuda" else {}
    fns = {}
    for name in pair:
        torch.manual_seed(0)
        model = build_model(name).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused)
        for bf16 in (False, True):
            def step(model=model, opt=opt, bf16=bf16):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = (model(data["lq"]) - data["gt"]).abs().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            fns[f"{name} {'bf16' if bf16 else 'fp32'}"] = step
    peak = {}
    for key, fn in fns.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fn()
        if device.type == "cuda":
            peak[key] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            times[k].append(_timed(fn, device))
    med = {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"median_ms": med, "peak_mib": peak,
            "student_speedup": {p: med[f"{pair[0]} {p}"] / med[f"{pair[1]} {p}"] for p in ("fp32", "bf16")},
            "bf16_speedup": {n: med[f"{n} fp32"] / med[f"{n} bf16"] for n in pair}}


# ------------------------------------------------------------------------------------ plan


#: marks a --work folder as this script's: only such a folder is emptied on the next check
WORK_MARK = ".gpu_check_work"


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


def run_all(args) -> dict:
    start = _now()
    dry = args.dry_run
    out, work = Path(args.out), Path(args.work)
    fresh_work(work)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget or (150 if dry else 480)
    if dry:  # stages run side by side on few cores: one thread each
        os.environ["OMP_NUM_THREADS"] = "1"
    deadline = start + budget
    data = Path(args.data) if args.data else None
    if dry and data is None:
        data = _toy_data(work / "toy-data")
    report = {"command": " ".join(["python -m benchmarks.gpu_check", *sys.argv[1:]]), "commit": args.commit,
              "dry_run": dry, "budget_s": budget, "machine": machine_info(), "stages": {}}
    path = out / REPORT
    me = [sys.executable, "-m", "benchmarks.gpu_check", "--work", str(work)] + (["--dry-run"] if dry else [])
    _write_json(path, report)
    teachers = None
    if "teachers" in args.stages and data is not None:
        until = start + (0.6 if dry else 0.7 if set(args.stages) - {"teachers"} else 0.95) * budget
        teachers = subprocess.Popen(me + ["--stage", "teachers", "--data", str(data), "--roles", args.roles,
                                          "--until", str(time.time() + until - _now())],
                                    stdout=open(work / "teachers.log", "w"), stderr=subprocess.STDOUT, cwd=ROOT,
                                    start_new_session=True)
    elif "teachers" in args.stages:
        report["stages"]["teachers"] = {"skipped": "no --data folder (see --pack-data)"}
    if "tests" in args.stages:
        junit = work / "junit.xml"
        r = _child([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rA", "-s", "-p", "no:cacheprovider",
                    f"--junitxml={junit}", "tests/test_cuda.py"], work / "tests.log", min(180, deadline - _now()))
        r.update(_junit_counts(junit))
        report["stages"]["tests"] = r
        _write_json(path, report)
    if "nccl" in args.stages:
        r = _child(me + ["--stage", "nccl"], work / "nccl.log", min(150, deadline - _now()))
        r.update(_read(work / "nccl.json"))
        report["stages"]["nccl"] = r
        _write_json(path, report)
    if teachers is not None:
        try:
            teachers.wait(timeout=max(1.0, until + 45 - _now()))
        except subprocess.TimeoutExpired:
            _stop(teachers)
        r = _read(work / "teachers.json")
        r["files"] = export_teachers(r, work, out) if "runs" in r else {}
        r["log_tail"] = _tail(work / "teachers.log", 1500)
        report["stages"]["teachers"] = r
        _write_json(path, report)
    if "timings" in args.stages:
        r = _child(me + ["--stage", "timings"], work / "timings.log", max(10.0, deadline - _now()))
        r.update(_read(work / "timings.json"))
        report["stages"]["timings"] = r
    report["seconds"] = round(_now() - start, 1)
    _write_json(path, report)
    print(f"wrote {path} ({report['seconds']:.0f} s)")
    return report


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"error": f"no result ({path.name} missing)"}


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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check")
    p.add_argument("--work", default="runs/gpu_check_work")
    p.add_argument("--data", help="folder with BSDS500/ (CBSD432) and Rain100L/train (see --pack-data)")
    p.add_argument("--dry-run", action="store_true", help="the same plan at toy size on the CPU")
    p.add_argument("--budget", type=float, help="seconds for the whole check (default 480; dry run 150)")
    p.add_argument("--stages", nargs="+", default=["tests", "nccl", "timings", "teachers"],
                   choices=["tests", "nccl", "timings", "teachers"])
    p.add_argument("--commit", default=_git_commit())
    p.add_argument("--roles", default="ab", choices=["ab", "a"], help="teachers to train (default A and B)")
    p.add_argument("--pack-data", metavar="DIR", help="write the teachers' training images to DIR and exit")
    p.add_argument("--markdown", metavar="JSON", help="print the BENCHMARKS.md section of a report and exit")
    p.add_argument("--update", metavar="MD", help="with --markdown: replace the section in this file")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--until", type=float, help=argparse.SUPPRESS)
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
    if args.stage == "teachers":
        until = _now() + (args.until - time.time())
        _write_json(work / "teachers.json", stage_teachers(work, Path(args.data), args.dry_run, until, args.roles))
        return 0
    if args.stage == "nccl":
        _write_json(work / "nccl.json", stage_nccl(work, args.dry_run))
        return 0
    if args.stage == "timings":
        stage_timings(work / "timings.json", args.dry_run)
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
