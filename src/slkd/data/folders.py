"""Evaluation folders in the layouts of the public benchmarks, and the literature's test noise.

Layouts understood:

* paired folders ``input/``+``target/`` (Rain100L; Restormer's ``Datasets/`` for Rain13K,
  GoPro, HIDE and the deraining test sets), ``noisy/``+``mean/`` (PolyU, CC15),
  ``hazy/``+``clear/`` (SOTS here, RESIDE ITS/OTS), ``hazy/``+``gt/`` (RESIDE's own SOTS),
  ``blurred/``+``gt/`` (Levin), ``lq/``+``gt/`` (BasicSR), ``input_crops/``+``target_crops/``
  (Restormer's SIDD crops);
* clean-only folders of images (CBSD68, Kodak24, Set12 …), degraded on the fly;
* a folder of such sets (Restormer's ``Datasets/test/`` holding ``Test100/``, ``Rain100H/`` …):
  :func:`scan_eval_sets`.

Pairs are matched **by file name**, never by sorted position: a degraded image ``X`` pairs with
the target of the same stem, or else with the target whose stem is the longest prefix of ``X``
followed by ``_`` or ``-`` (SOTS ``1400_3`` → ``1400``, Levin ``im1_kernel2_img`` → ``im1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slkd.data.image_io import list_images, read_image
from slkd.errors import DatasetError

#: (degraded folder, clean folder) names, tried in order
PAIRED_LAYOUTS = (
    ("input", "target"),
    ("noisy", "mean"),
    ("hazy", "clear"),
    ("hazy", "gt"),
    ("blurred", "gt"),
    ("lq", "gt"),
    ("input_crops", "target_crops"),
)


@dataclass(frozen=True)
class EvalItem:
    """One evaluation case: a name for reports, the degraded file (None when it is synthesised
    from the clean one) and the clean file (None when there is no ground truth)."""

    name: str
    degraded: Path | None
    clean: Path | None


@dataclass(frozen=True)
class EvalFolder:
    root: Path
    layout: str  # "paired:<degraded>/<clean>", "clean-only" or "degraded-only"
    items: tuple[EvalItem, ...]

    @property
    def paired(self) -> bool:
        return self.layout.startswith("paired")


class EvalSamples:
    """The items of an evaluation folder as evaluation samples ``{"lq", "gt", "name"}``
    (:func:`slkd.engine.evaluation.evaluate`), read when asked for.

    Paired items give their two files (which must have one size); clean-only items get Gaussian
    test noise (:func:`add_test_noise` with ``sigma`` and ``seed``) for ``task="denoise"`` and are
    refused for other tasks; items without ground truth give ``gt=None`` (no-reference metrics).
    ``reference=False`` scores every item as it is, without ground truth: its degraded file, or
    its clean one when there is no degraded file.
    """

    def __init__(self, items: tuple[EvalItem, ...] | list[EvalItem], task: str, sigma: float = 25.0,
                 seed: int = 0, reference: bool = True) -> None:
        self.items, self.task, self.sigma, self.seed, self.reference = list(items), task, sigma, seed, reference

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        if not self.reference or item.clean is None:
            return {"lq": read_image(item.degraded or item.clean).tensor, "gt": None, "name": item.name}
        clean = read_image(item.clean).tensor
        if item.degraded is not None:
            degraded = read_image(item.degraded).tensor
            if degraded.shape[-2:] != clean.shape[-2:]:
                raise DatasetError(
                    f"{item.degraded.name} is {degraded.shape[-1]}×{degraded.shape[-2]} but its target "
                    f"{item.clean.name} is {clean.shape[-1]}×{clean.shape[-2]}"
                )
            return {"lq": degraded, "gt": clean, "name": item.name}
        if self.task != "denoise":
            raise DatasetError(
                f"--task {self.task} needs degraded/clean pairs, but {item.clean.parent} holds clean "
                "images only (noise can be synthesised for --task denoise)"
            )
        return {"lq": add_test_noise(clean, self.sigma, self.seed), "gt": clean, "name": item.name}


def match_pairs(degraded: list[Path], clean: list[Path]) -> list[tuple[Path, Path]]:
    """Pair each degraded file with its clean file by name (see module docstring)."""
    by_stem = {p.stem: p for p in clean}
    # longest stems first, so "im10" wins over "im1" for "im10_kernel1_img"
    stems = sorted(by_stem, key=len, reverse=True)
    pairs, unmatched = [], []
    for path in degraded:
        target = by_stem.get(path.stem)
        if target is None:
            for stem in stems:
                if path.stem.startswith(stem) and path.stem[len(stem):len(stem) + 1] in ("_", "-"):
                    target = by_stem[stem]
                    break
        if target is None:
            unmatched.append(path.name)
        else:
            pairs.append((path, target))
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (" …" if len(unmatched) > 5 else "")
        raise DatasetError(
            f"{len(unmatched)} degraded image(s) have no clean image of the same name: {shown}"
        )
    return pairs


def scan_eval_folder(root: str | Path) -> EvalFolder:
    """Recognise the layout of ``root`` and list its evaluation items."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    for deg_name, clean_name in PAIRED_LAYOUTS:
        deg_dir, clean_dir = root / deg_name, root / clean_name
        if deg_dir.is_dir() and clean_dir.is_dir():
            degraded, clean = list_images(deg_dir), list_images(clean_dir)
            if not degraded:
                raise DatasetError(f"no images in {deg_dir}")
            pairs = match_pairs(degraded, clean)
            items = tuple(EvalItem(d.stem, d, c) for d, c in pairs)
            return EvalFolder(root, f"paired:{deg_name}/{clean_name}", items)
    for deg_name, _ in PAIRED_LAYOUTS:
        if (root / deg_name).is_dir() and list_images(root / deg_name):
            images = list_images(root / deg_name)
            return EvalFolder(root, "degraded-only", tuple(EvalItem(p.stem, p, None) for p in images))
    images = list_images(root)
    if not images:
        sub = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(
            f"no images and no known layout in {root}"
            + (f" (sub-folders: {', '.join(sub)}; point --data at one of them)" if sub else "")
            + "; expected images, or paired folders "
            + ", ".join(f"{a}/+{b}/" for a, b in PAIRED_LAYOUTS)
        )
    return EvalFolder(root, "clean-only", tuple(EvalItem(p.stem, None, p) for p in images))


def scan_eval_sets(root: str | Path) -> dict[str, EvalFolder]:
    """The evaluation sets in ``root``: ``root`` itself when it is one (any layout of
    :func:`scan_eval_folder`), else each sub-folder, by name (Restormer's ``Datasets/test/``
    with ``Test100/``, ``Rain100H/`` …). A sub-folder in no known layout is named in the error
    rather than skipped."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    own = any((root / d).is_dir() for pair in PAIRED_LAYOUTS for d in pair) or list_images(root)
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if own or not subs:
        return {root.name: scan_eval_folder(root)}
    sets = {}
    for sub in subs:
        try:
            sets[sub.name] = scan_eval_folder(sub)
        except DatasetError as exc:
            raise DatasetError(f"{root} holds no images of its own, so each sub-folder is read as "
                               f"a set, but {sub.name}/ is not one: {exc}") from None
    return sets


def add_test_noise(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Gaussian test noise as the literature adds it: N(0, sigma/255) in float, not clipped.

    The generator is re-seeded with ``seed`` for every image and draws in H×W×C order with
    NumPy's legacy ``RandomState`` (what Restormer's and DnCNN's test scripts do with
    ``np.random.seed(0)``), so noisy test images are identical to theirs. ``clean`` is C×H×W.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    c, h, w = clean.shape
    noise = np.random.RandomState(seed).normal(0.0, sigma / 255.0, size=(h, w, c))
    return clean + torch.from_numpy(noise.astype(np.float32)).permute(2, 0, 1)
