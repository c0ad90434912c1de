"""Publish a finished run's weights under ``benchmarks/weights/``: a safetensors file and its
provenance JSON, so that studies reuse strong teachers instead of retraining them and anyone can
re-evaluate the study's students (``slkd eval --model PRESET --weights FILE.safetensors``).

    python -m benchmarks.publish runs/study/denoise25-teacher-a benchmarks/weights/denoise25/teacher_a

writes ``teacher_a.safetensors`` (the run's best-on-validation weights, EMA when the run kept an
EMA; ``--which final`` takes the last step's ``weights.pth`` instead) and ``teacher_a.json``:
the preset and its options, the run's config as it ran, the command, the commits (the run's and
the one publishing it), every validation of the run, the chosen step and its validation PSNR,
the file's SHA-256, parameter count and size. The folder is kept under
:data:`FOLDER_LIMIT_BYTES` (refused otherwise), and nothing is replaced unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from slkd.engine.runlog import read_events, run_state
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes
from slkd.models import load_pretrained
from slkd.models.checkpoint import save_weights
from slkd.models.export import sha256_file

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "benchmarks" / "weights"
#: the committed weights stay small (the repository is cloned by every CI run)
FOLDER_LIMIT_BYTES = 60 * 1024 * 1024


class PublishError(Exception):
    """A user-level problem (unfinished run, no validation, folder too large): one line."""


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()[:12] + ("-dirty" if dirty else "")


def provenance(run: Path, which: str = "best") -> tuple[dict, Path]:
    """The provenance record of ``run`` and the weights file it describes."""
    config_file = run / "config.yaml"
    if not config_file.is_file() or not (run / "metrics.jsonl").is_file():
        raise PublishError(f"{run} is not a run folder of slkd train/distill (no config.yaml/metrics.jsonl)")
    config = yaml.safe_load(config_file.read_text())
    iters = config["train"]["iters"]
    state = run_state(run, iters)
    if not state.finished:
        raise PublishError(f"{run} has not finished: last checkpoint at step {max(state.last_checkpoint, 0)} "
                           f"of {iters} (resume it first)")
    vals = [e for e in read_events(run) if e.get("event") == "val"]
    if not vals:
        raise PublishError(f"{run} has no validation: provenance needs a validation PSNR")
    if which == "best":
        dataset = vals[-1]["dataset"]
        best = state.best[dataset]
        source = run / f"best_{dataset}.pth"
        chosen = {"step": best["step"], "dataset": dataset, "psnr": best["psnr"], "ssim": best["ssim"]}
    else:
        source = run / "weights.pth"
        last = vals[-1]
        chosen = {"step": iters, "dataset": last["dataset"],
                  **({"psnr": last["psnr"], "ssim": last["ssim"]} if last["step"] == iters else
                     {"psnr": None, "ssim": None, "note": "no validation at the last step"})}
    if not source.is_file():
        raise PublishError(f"{source} is missing")
    env = json.loads((run / "environment.json").read_text()) if (run / "environment.json").is_file() else {}
    command = (run / "command.txt").read_text().strip() if (run / "command.txt").is_file() else None
    model = config["model"]
    seconds = None if state.seconds is None else round(state.seconds, 1)
    record = {
        "model": model["name"], "options": model.get("options") or {},
        "role": config.get("role"), "weights": which, "validation": chosen,
        "validations": [{k: e[k] for k in ("step", "dataset", "psnr", "ssim")} for e in vals],
        "iters": iters, "train_seconds": seconds, "command": command, "config": config,
        "run_commit": env.get("git_commit"), "environment": {k: env.get(k) for k in ("torch", "python", "cpu_threads", "gpu")},
    }
    return record, source


def destinations(dest: Path) -> tuple[Path, Path]:
    """``dest.safetensors`` and ``dest.json``: the suffixes are added to the whole name
    (``teacher.v2`` → ``teacher.v2.safetensors``; ``with_suffix`` replaced ``.v2``), and a
    ``dest`` given with one of them already is taken without it."""
    if dest.suffix in (".safetensors", ".json"):
        dest = dest.with_suffix("")
    return dest.with_name(dest.name + ".safetensors"), dest.with_name(dest.name + ".json")


def publish(run: Path, dest: Path, which: str = "best", overwrite: bool = False,
            weights_root: Path = WEIGHTS, limit: int = FOLDER_LIMIT_BYTES) -> Path:
    """Write ``dest.safetensors`` and ``dest.json`` from ``run``; returns the JSON's path. A
    destination inside ``weights_root`` may not take that folder over ``limit`` bytes."""
    record, source = provenance(run, which)
    tensors, meta = destinations(dest)
    for path in (tensors, meta):
        if path.exists() and not overwrite:
            raise PublishError(f"{path} exists (pass --overwrite to replace it)")
    model = load_pretrained(record["model"], source, options=record["options"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = tensors.with_name(tensors.stem + ".staged.safetensors")  # checked before it replaces anything
    save_weights(model, staged)
    size = staged.stat().st_size
    if tensors.is_relative_to(weights_root):
        total = size + sum(p.stat().st_size for p in weights_root.rglob("*")
                           if p.is_file() and p not in (tensors, staged))
        if total > limit:
            staged.unlink()
            raise PublishError(f"{weights_root} would hold {total / 2**20:.1f} MiB, over its "
                               f"{limit / 2**20:.0f} MiB limit; {tensors} not written")
    staged.replace(tensors)
    record.update({
        "file": str(tensors.relative_to(ROOT)) if tensors.is_relative_to(ROOT) else str(tensors),
        "sha256": sha256_file(tensors), "bytes": size,
        "params": sum(p.numel() for p in model.parameters()),
        "published_commit": _git_commit(), "published_from": str(run),
    })
    atomic_write_bytes(meta, (json.dumps(record, indent=2) + "\n").encode())
    print(f"wrote {tensors} ({size / 2**20:.1f} MiB) and {meta}: {record['model']}, "
          f"{record['validation']['dataset']} PSNR {record['validation']['psnr']} at step {record['validation']['step']}")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="run folder of slkd train/distill")
    p.add_argument("dest", type=Path, help="destination without suffix, e.g. benchmarks/weights/denoise25/teacher_a")
    p.add_argument("--which", choices=("best", "final"), default="best",
                   help="best-on-validation weights (default) or the last step's")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        publish(args.run.resolve(), args.dest.resolve(), args.which, args.overwrite)
    except (PublishError, SlkdError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
