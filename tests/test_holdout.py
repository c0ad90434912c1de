"""Validation splits carved out of a training folder (``holdout``): seeded, disjoint, stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from slkd.data.datasets import DegradedImageDataset, PairedImageDataset
from slkd.data.selection import holdout_split
from slkd.engine.builders import build_dataset
from slkd.engine.config import ConfigError, DatasetConfig, from_dict
from slkd.errors import DatasetError

from test_datasets import DATA, identity, make_folder


def test_split_is_a_fixed_function_of_names_and_seed() -> None:
    names = [f"im{i:02d}" for i in range(20)]
    # golden: committed teachers and study results were trained on the complement of this
    # sample; a change of the sampling would silently move validation images into training
    assert sorted(holdout_split(names, 5, 0)) == ["im01", "im08", "im12", "im13", "im15"]
    assert holdout_split(list(reversed(names)), 5, 0) == holdout_split(names, 5, 0)  # order-free
    assert holdout_split(names + names, 5, 0) == holdout_split(names, 5, 0)  # distinct groups
    assert holdout_split(names, 5, 1) != holdout_split(names, 5, 0)


@pytest.mark.parametrize("count", [0, 20, 21, -1, True, 2.0])
def test_split_needs_a_count_that_leaves_both_sides(count) -> None:
    with pytest.raises(DatasetError, match="holdout.count"):
        holdout_split([f"im{i}" for i in range(20)], count)


def test_held_and_rest_partition_a_degraded_folder(tmp_path: Path) -> None:
    make_folder(tmp_path / "clean", {f"x{i}": (3, 16, 16) for i in range(7)})
    make_folder(tmp_path / "drop", {"x0": (3, 8, 8)})
    common = dict(exclude=str(tmp_path / "drop"))
    held = DegradedImageDataset(tmp_path / "clean", identity, holdout=(2, 3, "held"), **common)
    rest = DegradedImageDataset(tmp_path / "clean", identity, holdout=(2, 3, "rest"), **common)
    assert len(held) == 2 and len(rest) == 4
    assert set(held.names).isdisjoint(rest.names)
    assert set(held.names) | set(rest.names) == {f"x{i}" for i in range(1, 7)}  # after exclude
    assert set(held.names) == holdout_split([f"x{i}" for i in range(1, 7)], 2, 3)


def test_pairs_sharing_a_clean_image_stay_on_one_side(tmp_path: Path) -> None:
    specs = {f"{c}_{k}": (3, 12, 12) for c in ("1400", "1401", "1402", "1403") for k in (1, 2, 3)}
    make_folder(tmp_path / "hazy", specs)
    make_folder(tmp_path / "clear", {c: (3, 12, 12) for c in ("1400", "1401", "1402", "1403")})
    held = PairedImageDataset(tmp_path, holdout=(1, 0, "held"))
    rest = PairedImageDataset(tmp_path, holdout=(1, 0, "rest"))
    assert len(held) == 3 and len(rest) == 9  # one clean image and its three hazy versions
    assert {n.split("_")[0] for n in held.names}.isdisjoint(n.split("_")[0] for n in rest.names)


def test_config_key_reaches_the_dataset(tmp_path: Path) -> None:
    make_folder(tmp_path / "clean", {f"x{i}": (3, 16, 16) for i in range(6)})
    base = {"type": "degraded", "roots": ["clean"], "degradation": {"name": "gaussian_noise"}}
    held = build_dataset(from_dict(DatasetConfig, {**base, "holdout": {"count": 2, "take": "held"}}),
                         tmp_path, train=False, where="data.val[0]")
    rest = build_dataset(from_dict(DatasetConfig, {**base, "holdout": {"count": 2, "take": "rest"}}),
                         tmp_path, train=True, where="data.train")
    assert sorted(held.names + rest.names) == [f"x{i}" for i in range(6)]
    with pytest.raises(ConfigError, match="holdout.take"):
        from_dict(DatasetConfig, {**base, "holdout": {"count": 2, "take": "some"}}, "data.train")
    with pytest.raises(DatasetError, match="data.train: holdout.count"):
        build_dataset(from_dict(DatasetConfig, {**base, "holdout": {"count": 6, "take": "rest"}}),
                      tmp_path, train=True, where="data.train")


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "BSDS500").is_dir(), reason="needs ../shared/data (BSDS500, CBSD68)")
def test_the_denoising_validation_split_of_cbsd432() -> None:
    """The study's split: 32 of CBSD432 held out, none of them in CBSD68."""
    def split(take):
        return DegradedImageDataset(DATA / "BSDS500", identity, recursive=True, exclude=str(DATA / "CBSD68"),
                                    holdout=(32, 0, take), cache="none")
    held, rest = split("held"), split("rest")
    cbsd68 = {p.stem for p in (DATA / "CBSD68").iterdir()}
    assert len(held) == 32 and len(rest) == 400
    assert not cbsd68 & (set(held.names) | set(rest.names))
    assert set(held.names).isdisjoint(rest.names)
