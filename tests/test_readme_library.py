"""The README's own-loop example runs as it is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def library_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Library\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no '## Library' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)


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
    scope: dict = {"__name__": "readme_block"}
    exec(compile(code, "README.md (Library)", "exec"), scope)  # noqa: S102 - our own README
    loss, terms = scope["loss"], scope["terms"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(terms) == {"loss_pix", "loss_kl", "loss_nc", "loss_et"}
    saved = torch.load(tmp_path / "student.pth", weights_only=True)["params"]
    assert set(saved) == set(scope["student"].state_dict())  # no adapter in the export
    assert all(torch.equal(saved[k], v) for k, v in scope["student"].state_dict().items())
