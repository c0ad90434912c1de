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
:func:`pair_folders` is the one pairing of two folders (``slkd eval``, ``slkd compress``, the
training data sets of ``slkd train``/``distill``); what it accepts (docs/reliability.md §7):

* refused: a degraded image without a target; two files of one folder whose names differ only
  in extension or letter case (``x.png`` + ``x.jpg``, ``norain-10.png`` + ``norain-10.PNG``):
  the pairing could not tell which is meant;
* named warnings with counts: targets no degraded image pairs with (left out), and files whose
  extension is not an image type slkd reads (``.jfif``, ``.gif`` …; not read).

A folder that holds images of its own **and** sub-folders of images (``vsets/CBSD/``,
``vsets/Kodak/`` and ``vsets/preview.png``) is refused (:func:`scan_eval_folder`): it could be
one set or a folder of sets, and reading it as either would silently score the wrong images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from slkd.data.image_io import list_images, read_image
from slkd.data.selection import names_list, unread_warnings
from slkd.data.tasks import task_spec
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
    #: what was left out, by name (targets without input, files not read); callers print them
    warnings: tuple[str, ...] = ()

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
            if degraded.shape[0] != clean.shape[0]:
                raise DatasetError(f"{item.degraded.name} is {channels_word(degraded.shape[0])} but its "
                                   f"target {item.clean.name} is {channels_word(clean.shape[0])}: a "
                                   "pair must have one colour type")
            return {"lq": degraded, "gt": clean, "name": item.name}
        if task_spec(self.task).synthetic is None:
            raise DatasetError(
                f"--task {self.task} needs degraded/clean pairs, but {item.clean.parent} holds clean "
                "images only (noise can be synthesised for --task denoise)"
            )
        return {"lq": add_test_noise(clean, self.sigma, self.seed), "gt": clean, "name": item.name}


def channels_word(channels: int) -> str:
    """How a channel count is named in messages: "grey (1 channel)", "RGB (3 channels)"."""
    return {1: "grey (1 channel)", 3: "RGB (3 channels)"}.get(int(channels), f"{int(channels)}-channel")


def _refuse_duplicate_stems(files: list[Path], what: str) -> None:
    """Two files whose names differ only in extension or letter case (``x.png`` + ``x.jpg``,
    ``a.png`` + ``a.PNG``): pairing by name cannot tell which is meant."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        groups.setdefault(path.stem.casefold(), []).append(path)
    clashes = [" and ".join(p.name for p in group) for group in groups.values() if len(group) > 1]
    if clashes:
        where = files[0].parent
        raise DatasetError(
            f"{len(clashes)} name(s) in {where} are used by more than one {what} "
            f"({names_list(clashes)}): pairing by file name cannot tell which is meant, so "
            "nothing is guessed; rename or remove one of each"
        )


def match_pairs(degraded: list[Path], clean: list[Path]) -> list[tuple[Path, Path]]:
    """Pair each degraded file with its clean file by name (see module docstring); refuse a
    degraded file without a clean one, and two files of one list whose names differ only in
    extension or letter case."""
    _refuse_duplicate_stems(degraded, "degraded image")
    _refuse_duplicate_stems(clean, "clean image")
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


@dataclass(frozen=True)
class Pairing:
    """The pairs of two folders (:func:`pair_folders`) and what was left out, by name."""

    pairs: list[tuple[Path, Path]]
    warnings: tuple[str, ...]


def pair_folders(degraded_dir: Path, clean_dir: Path) -> Pairing:
    """The one pairing of a degraded folder with its clean folder, by file name
    (:func:`match_pairs`): refused cases raise :class:`DatasetError`; targets left without a
    degraded image and files that are not read come back as warnings naming them, with counts."""
    degraded_dir, clean_dir = Path(degraded_dir), Path(clean_dir)
    degraded, clean = list_images(degraded_dir), list_images(clean_dir)
    if not degraded:
        raise DatasetError(f"no images in {degraded_dir}" + "".join(
            f"; {w}" for w in unread_warnings(degraded_dir)))
    pairs = match_pairs(degraded, clean)
    warnings = unread_warnings(degraded_dir) + unread_warnings(clean_dir)
    used = {c for _, c in pairs}
    unused = [p.name for p in clean if p not in used]
    if unused:
        warnings.append(f"{len(unused)} of the {len(clean)} clean image(s) in {clean_dir} have no "
                        f"degraded image of the same name and are left out: {names_list(unused)}")
    return Pairing(pairs, tuple(warnings))


def _holds_images(folder: Path) -> bool:
    """``folder`` is an evaluation set: images of its own, or a paired layout."""
    return bool(list_images(folder)) or any((folder / d).is_dir() for pair in PAIRED_LAYOUTS for d in pair)


def _refuse_mixed(root: Path, images: list[Path]) -> None:
    """A folder holding images of its own and sub-folders of images is refused: one set (its
    own images) or a folder of sets (its sub-folders) — either reading would silently score
    the wrong images (the stray ``preview.png`` of a folder of sets became a set of one)."""
    subs = sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and _holds_images(p))
    if subs:
        raise DatasetError(
            f"{root} holds {len(images)} image(s) of its own ({names_list([p.name for p in images])}) "
            f"and sub-folders of images ({names_list(subs)}): it is not clear whether it is one set "
            "or a folder of sets; move the loose image(s) out to use the sub-folders as sets, or "
            "point at one sub-folder"
        )


def scan_eval_folder(root: str | Path) -> EvalFolder:
    """Recognise the layout of ``root`` and list its evaluation items (the pairing rules of
    :func:`pair_folders`; a folder of images and sub-folders of images is refused)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    for deg_name, clean_name in PAIRED_LAYOUTS:
        deg_dir, clean_dir = root / deg_name, root / clean_name
        if deg_dir.is_dir() and clean_dir.is_dir():
            pairing = pair_folders(deg_dir, clean_dir)
            items = tuple(EvalItem(d.stem, d, c) for d, c in pairing.pairs)
            loose = [p.name for p in list_images(root)]
            warnings = pairing.warnings + ((
                f"{len(loose)} image(s) at the top of {root} are not scored (the set is its "
                f"{deg_name}/ → {clean_name}/ pairs): {names_list(loose)}",) if loose else ())
            return EvalFolder(root, f"paired:{deg_name}/{clean_name}", items, warnings)
    for deg_name, _ in PAIRED_LAYOUTS:
        if (root / deg_name).is_dir() and list_images(root / deg_name):
            images = list_images(root / deg_name)
            return EvalFolder(root, "degraded-only", tuple(EvalItem(p.stem, p, None) for p in images),
                              tuple(unread_warnings(root / deg_name)))
    images = list_images(root)
    if not images:
        sub = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(
            f"no images and no known layout in {root}"
            + (f" (sub-folders: {', '.join(sub)}; point --data at one of them)" if sub else "")
            + "; expected images, or paired folders "
            + ", ".join(f"{a}/+{b}/" for a, b in PAIRED_LAYOUTS)
            + "".join(f"; {w}" for w in unread_warnings(root))
        )
    _refuse_mixed(root, images)
    return EvalFolder(root, "clean-only", tuple(EvalItem(p.stem, None, p) for p in images),
                      tuple(unread_warnings(root)))


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
    loose = unread_warnings(root)  # named once, with the first set
    if loose:
        first = next(iter(sets))
        sets[first] = replace(sets[first], warnings=tuple(loose) + sets[first].warnings)
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
