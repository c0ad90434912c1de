"""Every ```python block of README.md runs as it is written, each in a fresh namespace in an
empty folder, on the CPU; the own-loop block is also checked for what it claims."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks() -> list[str]:
    """The README's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def library_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Library\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no '## Library' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)


def run_block(code: str, name: str) -> dict:
    scope: dict = {"__name__": "readme_block"}
    exec(compile(code, f"README.md ({name})", "exec"), scope)  # noqa: S102 - our own README
    return scope


def test_the_readme_has_its_python_blocks():
    """The two Library blocks (own loop, building blocks) are among the README's blocks, and the
    first two commands of the README are `make demo` and `make test`."""
    blocks = python_blocks()
    assert len(blocks) >= 2 and all(b in blocks for b in library_blocks())
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^```bash\n(.*?)^```", text, re.S | re.M).group(1).splitlines()
    assert [line.split("#")[0].strip() for line in first[:2]] == ["make demo", "make test"]


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_readme_python_block_runs(index, tmp_path, monkeypatch, capsys):
    """Block ``index`` runs to the end in a fresh namespace, in an empty folder (on the CPU: the
    blocks make CPU tensors and models, and restore() runs where the model's weights are)."""
    monkeypatch.chdir(tmp_path)
    run_block(python_blocks()[index], f"python block {index + 1}")


def test_the_readme_own_loop_block_runs(tmp_path, monkeypatch):
    """The ```python block of README's Library section that uses slkd.distill: at most ~15
    lines, no YAML, no command line; it trains two steps and writes the student alone."""
    blocks = [b for b in library_blocks() if "slkd.distill" in b]
    assert len(blocks) == 1, "expected one own-loop block using slkd.distill in the Library section"
    code = blocks[0]
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 16, f"the own-loop block has {len(lines)} lines"
    assert "yaml" not in code.lower() and "slkd.cli" not in code
    monkeypatch.chdir(tmp_path)
    scope = run_block(code, "Library")
    loss, terms = scope["loss"], scope["terms"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(terms) == {"loss_pix", "loss_kl", "loss_nc", "loss_et"}
    saved = torch.load(tmp_path / "student.pth", weights_only=True)["params"]
    assert set(saved) == set(scope["student"].state_dict())  # no adapter in the export
    assert all(torch.equal(saved[k], v) for k, v in scope["student"].state_dict().items())


def test_the_readme_building_blocks_block_does_what_its_comments_say(tmp_path, monkeypatch, capsys):
    """The building-blocks block: the official Restormer's parameter count, a strict reload of
    the file it wrote, a restored image of the input's size, and the taps of the student."""
    blocks = [b for b in library_blocks() if "FeatureTaps" in b]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    scope = run_block(blocks[0], "building blocks")
    assert sum(p.numel() for p in scope["teacher"].parameters()) == 26_126_644
    assert scope["out"].shape == scope["x"].shape == (1, 3, 60, 44)
    assert 0.0 <= float(scope["out"].min()) and float(scope["out"].max()) <= 1.0
    assert set(scope["taps"].features) == {"encoder_level1", "latent"}
    assert (tmp_path / "restormer.pth").is_file()
