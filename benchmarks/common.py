"""What every benchmark report shares: the machine description and writing the JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def machine(**extra) -> dict:
    """CPU count, platform, torch and Python versions (plus ``extra`` keys)."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__, "python": platform.python_version(), **extra}


def write_report(path: str | Path, report: dict) -> Path:
    """Write ``report`` as indented JSON to ``path`` (folders created) and say so."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return out
