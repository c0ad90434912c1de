"""Reports of finished runs: training curves from ``metrics.jsonl``, comparison image grids and
Markdown tables (used by ``slkd demo``; usable on any run folder).

Plots use matplotlib's non-interactive Agg backend (no display needed) and are written
atomically, like every other file slkd writes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from slkd.engine.runlog import logged_seconds, read_events
from slkd.fileio import atomic_write

__all__ = [
    "PIXEL_LOSS_KEYS",
    "image_grid",
    "logged_seconds",
    "markdown_table",
    "plot_curves",
    "read_events",
    "read_train_events",
]

#: how the pixel loss is called in ``metrics.jsonl``: ``loss_pix`` for distillation runs,
#: ``loss_<name>`` of ``train.loss`` for supervised ones
PIXEL_LOSS_KEYS = ("loss_pix", "loss_l1", "loss_charbonnier", "loss_mse")


def read_train_events(run_dir: str | Path) -> list[dict]:
    """The ``train`` events of a run's ``metrics.jsonl`` in step order (a resumed run's
    repeated steps keep their last record). A missing file is an error; a line cut off by a
    crash is skipped."""
    by_step = {int(e["step"]): e for e in read_events(run_dir) if e.get("event") == "train"}
    return [by_step[s] for s in sorted(by_step)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 110) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    return path


def plot_curves(runs: Mapping[str, str | Path], out: str | Path, *,
                terms_of: str | None = None) -> Path:
    """Training curves as one PNG.

    Left panel: the pixel loss (L1 to the ground truth) of every run against the iteration —
    the one term all runs share. Right panel (when ``terms_of`` names one of ``runs``): each
    logged loss term of that run separately (log scale), e.g. SLKD's L_pix, L_KL, L_NC, L_ET.
    """
    plt = _pyplot()
    panels = 2 if terms_of else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.0), squeeze=False)
    ax = axes[0][0]
    for label, run_dir in runs.items():
        events = read_train_events(run_dir)
        key = next((k for k in PIXEL_LOSS_KEYS if events and k in events[0]), None)
        if key is None:
            continue
        ax.plot([e["step"] for e in events], [e[key] for e in events], label=label, lw=1.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("pixel L1 to the ground truth (train patches)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    if terms_of:
        ax = axes[0][1]
        events = read_train_events(runs[terms_of])
        keys = [k for k in (events[0] if events else {}) if k.startswith("loss_")]
        for key in keys:
            values = [e.get(key, math.nan) for e in events]
            if all(v > 0 for v in values if v == v):
                ax.plot([e["step"] for e in events], values, label=key[5:], lw=1.5)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss term (unweighted)")
        ax.set_yscale("log")
        ax.set_title(f"{terms_of}: loss terms")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    try:
        return _save(fig, Path(out))
    finally:
        plt.close(fig)


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    img = image.detach().float().clamp(0, 1).cpu()
    if img.dim() != 3:
        raise ValueError(f"expected a C×H×W image, got shape {tuple(img.shape)}")
    arr = img.permute(1, 2, 0).numpy()
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


def image_grid(rows: Sequence[Sequence[torch.Tensor]], columns: Sequence[str], out: str | Path,
               *, row_labels: Sequence[str] | None = None,
               captions: Sequence[Sequence[str]] | None = None, crop: int | None = 128) -> Path:
    """A grid of images (one row per image, one column per model) as a PNG.

    ``crop``: show the central ``crop``×``crop`` region of every image (same region across a
    row), so that restoration differences are visible; None shows whole images.
    ``captions[r][c]`` is printed under each panel (e.g. its PSNR).
    """
    if not rows or any(len(r) != len(columns) for r in rows):
        raise ValueError("image_grid: every row needs one image per column")
    plt = _pyplot()
    n_rows, n_cols = len(rows), len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols, 2.6 * n_rows), squeeze=False)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            arr = _to_hwc(image)
            if crop:
                h, w = arr.shape[:2]
                ch, cw = min(crop, h), min(crop, w)
                top, left = (h - ch) // 2, (w - cw) // 2
                arr = arr[top:top + ch, left:left + cw]
            ax = axes[r][c]
            ax.imshow(arr, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
            if captions is not None:
                ax.set_xlabel(captions[r][c], fontsize=8)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=9)
    fig.tight_layout()
    try:
        return _save(fig, Path(out))
    finally:
        plt.close(fig)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]],
                   align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one letter per column (l, r, c), default left for
    the first column and right for the rest."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or any(len(r) != len(header) for r in rows):
        raise ValueError("markdown_table: every row and the alignment need one entry per column")
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
