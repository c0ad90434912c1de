"""The weights committed under benchmarks/weights/ (the study's teachers and students): each
safetensors file has its provenance JSON, matches the hash recorded there, loads into the preset
it names, and the folder stays under its size limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.publish import FOLDER_LIMIT_BYTES, WEIGHTS
from slkd.models import load_pretrained
from slkd.models.export import sha256_file

FILES = sorted(WEIGHTS.rglob("*.safetensors")) if WEIGHTS.is_dir() else []
ROOT = Path(__file__).resolve().parents[1]


def test_folder_stays_under_its_limit():
    total = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file()) if WEIGHTS.is_dir() else 0
    assert total < FOLDER_LIMIT_BYTES


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(WEIGHTS)) for p in FILES])
def test_each_file_has_its_provenance_and_loads(path):
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == sha256_file(path), "the file is not the one its JSON describes"
    assert meta["file"] == str(path.relative_to(ROOT))
    assert meta["command"] and meta["config"] and meta["validation"]["psnr"] is not None
    model = load_pretrained(meta["model"], path, options=meta["options"])
    assert sum(p.numel() for p in model.parameters()) == meta["params"]
