"""slkd.engine.evaluation.evaluate: the one loop behind training validation, `slkd eval` and
the demo — conventions, inputs scored without a model, no-reference metrics, sharding, the
automatic tiling, and the same numbers from a training dataset and from an evaluation folder."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from slkd.data.datasets import DegradedImageDataset, PairedImageDataset
from slkd.data.folders import EvalSamples, add_test_noise, scan_eval_folder
from slkd.data.image_io import read_image, write_image
from slkd.engine.evaluation import AUTO_TILE, NO_REFERENCE, Convention, evaluate
from slkd.engine.inference import restore
from slkd.metrics import BENCHMARK_TASKS, TASKS, brisque, piqe, psnr, ssim
from slkd.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _smooth(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, c, h // 4 + 1, w // 4 + 1, generator=g)
    return nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("res-sl-tiny").eval()


@pytest.fixture
def paired(tmp_path):
    root = tmp_path / "pairs"
    for i in range(3):
        clean = _smooth(3, 24, 32, seed=i)
        write_image(root / "target" / f"p{i}.png", clean)
        write_image(root / "input" / f"p{i}.png", (clean + 0.2 * _smooth(3, 24, 32, seed=10 + i) - 0.1).clamp(0, 1))
    return root


@pytest.fixture
def clean_only(tmp_path):
    root = tmp_path / "clean"
    for i in range(3):
        write_image(root / f"c{i}.png", _smooth(3, 24, 40, seed=20 + i))
    return root


def test_task_list_is_defined_once():
    assert TASKS == BENCHMARK_TASKS + ("reconstruct",)
    from slkd.cli.evaluate import add_parser  # noqa: F401 - `slkd eval --task` offers BENCHMARK_TASKS
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    add_parser(sub)
    task_action = next(a for a in sub.choices["eval"]._actions if a.dest == "task")
    assert tuple(task_action.choices) == BENCHMARK_TASKS


def test_rows_and_means_are_the_metrics_of_each_output(model, paired):
    samples = EvalSamples(scan_eval_folder(paired).items, "derain")
    result = evaluate(model, samples, task="derain")
    assert result.convention == Convention(y_channel=True) and result.count == 3
    expected = []
    for i in range(3):
        lq = read_image(paired / "input" / f"p{i}.png").tensor
        gt = read_image(paired / "target" / f"p{i}.png").tensor
        out = restore(model, lq[None])[0]
        expected.append((float(psnr(out, gt, y_channel=True)), float(ssim(out, gt, y_channel=True))))
    assert [r["name"] for r in result.rows] == ["p0", "p1", "p2"]
    assert [(r["psnr"], r["ssim"]) for r in result.rows] == expected  # bit for bit
    assert result.mean["psnr"] == sum(e[0] for e in expected) / 3
    assert result.mean["ssim"] == sum(e[1] for e in expected) / 3
    # the RGB convention is another number: the task really sets it
    rgb = evaluate(model, samples, task="denoise")
    assert rgb.convention.y_channel is False and abs(rgb.mean["psnr"] - result.mean["psnr"]) > 1e-3


def test_no_model_scores_the_inputs_and_clean_input_feeds_the_target(model, paired):
    samples = EvalSamples(scan_eval_folder(paired).items, "derain")
    inputs = evaluate(None, samples, task="derain")
    for i, row in enumerate(inputs.rows):
        lq = read_image(paired / "input" / f"p{i}.png").tensor
        gt = read_image(paired / "target" / f"p{i}.png").tensor
        assert row["psnr"] == float(psnr(lq, gt, y_channel=True))
    recon = evaluate(model, samples, clean_input=True)
    gt = read_image(paired / "target" / "p0.png").tensor
    assert recon.rows[0]["psnr"] == float(psnr(restore(model, gt[None])[0], gt))


def test_no_reference_scores_inputs_and_outputs(model, paired):
    items = scan_eval_folder(paired).items[:2]
    samples = EvalSamples(items, "real", reference=False)
    assert samples[0]["gt"] is None
    alone = evaluate(None, samples, metrics=NO_REFERENCE)
    assert alone.no_reference and set(alone.mean) == {"input"} and "output" not in alone.rows[0]
    result = evaluate(model, samples, metrics=NO_REFERENCE)
    lq = read_image(items[0].degraded).tensor
    out = restore(model, lq[None])[0]
    assert result.rows[0] == {"name": "p0", "input": {"brisque": float(brisque(lq)), "piqe": float(piqe(lq))},
                              "output": {"brisque": float(brisque(out)), "piqe": float(piqe(out))}}
    assert result.mean["output"]["piqe"] == (result.rows[0]["output"]["piqe"] + result.rows[1]["output"]["piqe"]) / 2
    with pytest.raises(ValueError, match="all full-reference or all no-reference"):
        evaluate(model, samples, metrics=("psnr", "piqe"))


def test_shards_split_the_images_between_processes(paired):
    samples = EvalSamples(scan_eval_folder(paired).items, "derain")
    whole = evaluate(None, samples, task="derain")
    parts = [evaluate(None, samples, task="derain", shard=(rank, 2)) for rank in (0, 1)]
    assert [r["name"] for r in parts[0].rows] == ["p0", "p2"] and [r["name"] for r in parts[1].rows] == ["p1"]
    assert sorted(parts[0].rows + parts[1].rows, key=lambda r: r["name"]) == whole.rows


def test_a_training_dataset_and_an_eval_folder_give_the_same_numbers(model, clean_only, paired):
    """Validation during training (a dataset's evaluation items) and `slkd eval` (a folder) are
    one computation: σ = 25 test noise seeded as the literature, pairs by name."""
    from_folder = evaluate(model, EvalSamples(scan_eval_folder(clean_only).items, "denoise", sigma=25, seed=0))
    from_dataset = evaluate(model, DegradedImageDataset(clean_only, "gaussian_noise"))
    assert from_dataset.rows == from_folder.rows and from_dataset.mean == from_folder.mean
    pairs = evaluate(model, PairedImageDataset(paired), task="derain")
    folder = evaluate(model, EvalSamples(scan_eval_folder(paired).items, "derain"), task="derain")
    assert pairs.rows == folder.rows
    clean = read_image(clean_only / "c0.png").tensor
    assert from_folder.rows[0]["psnr"] == float(psnr(restore(model, add_test_noise(clean, 25.0)[None])[0], clean))


def test_slkd_eval_reports_what_evaluate_computes(cli, model, clean_only, tmp_path):
    weights = tmp_path / "w.pth"
    from slkd.models import save_weights

    save_weights(model, weights)
    r = cli("eval", "--model", "res-sl-tiny", "--weights", weights, "--data", clean_only, "--task", "denoise",
            "--json", "--device", "cpu")
    assert r.code == 0, r.err
    reported = json.loads(r.out)
    # the CLI runs the network the fastest way for the device (--inference auto): the same scores
    # to the bit as evaluate() on that same path
    from slkd.engine.inference import inference_model

    fast = inference_model(copy.deepcopy(model), "cpu", "auto")
    direct = evaluate(fast, EvalSamples(scan_eval_folder(clean_only).items, "denoise"))
    assert reported["images"] == direct.rows and reported["mean"] == direct.mean


class _Sizes(nn.Module):
    """A 1×1 convolution that records the spatial sizes it is run on."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.seen: list[tuple[int, int]] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return self.conv(x)


def test_auto_tiling_only_for_large_images():
    net = _Sizes()
    side = int(AUTO_TILE["pixels"] ** 0.5) + 8  # just above the threshold
    big = torch.rand(1, side, side)
    small = torch.rand(1, 64, 48)
    samples = [{"lq": small, "gt": small, "name": "small"}, {"lq": big, "gt": big, "name": "big"}]
    evaluate(net, samples, tile="auto")
    assert net.seen[0] == (64, 48)
    assert set(net.seen[1:]) == {(AUTO_TILE["tile"], AUTO_TILE["tile"])} and len(net.seen) == 1 + 9
