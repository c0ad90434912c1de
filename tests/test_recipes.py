"""The full-size recipes of configs/recipes/ cannot rot: each one is read, its data sets are built
against tiny fake folders in the layout the recipe documents (Restormer's Datasets/, RESIDE),
its networks and distiller are built at full size on the meta device (no training, no
weights), the Teacher B / distillation files of a pair agree with each other, and the GPU-hours
each states follow from its iterations and the measured step times."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from slkd.data.image_io import write_image
from slkd.distill import build_distiller
from slkd.engine.builders import build_train_set, build_val_sets
from slkd.engine.config import load_config
from slkd.metrics import task_uses_y_channel
from slkd.models import build_model

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs" / "recipes").glob("*/*.yaml"))
TASKS = ("derain", "deblur", "dehaze", "real")
GPU = json.loads((REPO / "benchmarks" / "results" / "gpu_check.json").read_text())["stages"]["timings"]
#: measured on the H200 at batch 8, patch 128 (ms): a full-size Restormer training step, and an
#: SLKD step Restormer → Res-SL
MEASURED_MS = {"train": GPU["train_step"]["median_ms"]["restormer fp32"],
               "distill": GPU["distill_step"]["median_s"]["step_slkd"] * 1000}

#: the folders each task's recipes read, as the public releases lay them out: (degraded, clean)
#: sub-folders and (degraded, clean) file names of the pairs written there
PAIRS = [("a", "a"), ("b", "b")]
LAYOUTS = {
    "derain": {**{"Datasets/train/Rain13K": ("input", "target", PAIRS)},
               **{f"Datasets/test/{s}": ("input", "target", PAIRS)
                  for s in ("Test100", "Rain100H", "Rain100L", "Test1200", "Test2800")}},
    "deblur": {f"Datasets/{s}": ("input", "target", PAIRS)
               for s in ("train/GoPro", "test/GoPro", "test/HIDE")},
    # RESIDE: ITS hazy 1_1_0.90179 ↔ clear 1; SOTS indoor hazy/ + gt/
    "dehaze": {"ITS": ("hazy", "clear", [("1_1_0.90179", "1"), ("1_2_0.80000", "1"), ("2_1_0.7", "2")]),
               "SOTS/indoor": ("hazy", "gt", [("1400_1", "1400"), ("1400_2", "1400")])},
    # Restormer's SIDD crops
    "real": {f"Datasets/{s}/SIDD": ("input_crops", "target_crops", PAIRS) for s in ("train", "val")},
}


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    roots = {}
    for task, folders in LAYOUTS.items():
        root = tmp_path_factory.mktemp(task)
        for folder, (degraded, clean, pairs) in folders.items():
            for d, c in pairs:
                image = torch.from_numpy(rng.random((3, 136, 136), dtype=np.float32))
                if not (root / folder / clean / f"{c}.png").exists():
                    write_image(root / folder / clean / f"{c}.png", image)
                write_image(root / folder / degraded / f"{d}.png", (image * 0.8).clamp(0, 1))
        roots[task] = root
    return roots


def _recipe(path: Path, root: Path):
    return load_config(path, [f"data.root={root}"])


def test_every_task_has_a_teacher_b_and_a_distillation_recipe():
    names = {(p.parent.name, p.name) for p in RECIPES}
    for task in TASKS:
        assert {(task, "teacher_b.yaml"), (task, "distill.yaml")} <= names, task
    # dehazing has no official Restormer checkpoint: its Teacher A is trained from the recipe
    assert ("dehaze", "teacher_a.yaml") in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_builds_against_its_layout(path, fake_roots):
    task = path.parent.name
    cfg = _recipe(path, fake_roots[task])
    # the paper's recipe: Adam (0.9, 0.999) with weight decay, cosine, batch 8, patch 128
    opt = cfg.train.optimizer
    assert (opt.type, opt.betas, cfg.train.scheduler.type) == ("adam", [0.9, 0.999], "cosine")
    assert opt.weight_decay > 0 and cfg.data.batch_size == 8 and cfg.data.train.patch_size == 128
    # the data sets, built for real from the fake folders of the documented layout
    assert len(build_train_set(cfg)) >= 2
    val = build_val_sets(cfg)
    assert val and all(len(v) >= 1 for v in val.values())
    # the metric convention of the task (Teacher B: its reconstruction, scored as the task is)
    if cfg.role == "teacher_b":
        assert cfg.eval.task == "reconstruct"
        assert bool(cfg.eval.y_channel) == task_uses_y_channel(task)
    else:
        assert cfg.eval.task == task
    # the networks at full size, and the distiller over them, on the meta device
    with torch.device("meta"):
        model = build_model(cfg.model.name, **cfg.model.options)
        if cfg.role == "distill":
            teachers = {role: build_model(spec.name, **spec.options).requires_grad_(False)
                        for role in cfg.distill.teacher_roles()
                        for spec in [getattr(cfg.teachers, role)]}
            build_distiller(cfg.distill, model, teachers, pixel_loss=cfg.train.loss)


@pytest.mark.parametrize("path", [p for p in RECIPES if p.name.startswith("distill")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_pairs_recipes_agree(path, fake_roots):
    """Teacher B starts from the Teacher A the distillation uses, and the distillation reads
    the Teacher B run the other recipe writes, with the same network."""
    suffix = path.stem.removeprefix("distill")
    root = fake_roots[path.parent.name]
    distill = _recipe(path, root)
    teacher_b = _recipe(path.with_name(f"teacher_b{suffix}.yaml"), root)
    assert teacher_b.model.name == distill.teachers.a.name == distill.teachers.b.name
    assert teacher_b.model.init_from == distill.teachers.a.weights
    assert distill.teachers.b.weights == f"{teacher_b.output_dir}/{teacher_b.name}"
    assert distill.teachers.b.options == {"global_residual": False}
    teacher_a = path.with_name(f"teacher_a{suffix}.yaml")
    if teacher_a.exists():  # Teacher A trained by the recipe
        a = _recipe(teacher_a, root)
        assert distill.teachers.a.weights == f"{a.output_dir}/{a.name}" and a.model.name == teacher_b.model.name
    else:  # an official checkpoint, given on the command line
        assert distill.teachers.a.weights.startswith("pretrained_models/")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stated_gpu_hours_follow_from_the_measured_steps(path, fake_roots):
    text = path.read_text(encoding="utf-8")
    cfg = _recipe(path, fake_roots[path.parent.name])
    found = re.search(r"# GPU-hours: ([\d.]+)( \(NOT MEASURED\))? = (\d+) iterations × ([\d.]+) ms", text)
    assert found, "the recipe states its expected GPU-hours and how they were estimated"
    hours, not_measured, iters, step = float(found[1]), found[2], int(found[3]), float(found[4])
    assert iters == cfg.train.iters
    assert hours == pytest.approx(round(iters * step / 3.6e6, 1))
    pair = {cfg.model.name} | ({cfg.teachers.a.name} if cfg.teachers else set())
    restormer_pair = pair <= {"restormer", "restormer-denoise", "res-sl"}
    assert bool(not_measured) == (not restormer_pair)  # only the Restormer pair was measured
    if restormer_pair:
        assert step == pytest.approx(MEASURED_MS["distill" if cfg.role == "distill" else "train"], abs=0.05)
