"""``slkd restore``: apply a model to an image or a folder of images."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from slkd.cli.common import (
    add_model_arguments,
    add_tiling_arguments,
    check_tiling,
    load_model,
    note,
    resolve_device,
)
from slkd.data.image_io import IMAGE_EXTENSIONS, list_images, read_image, write_image
from slkd.engine.inference import restore
from slkd.errors import SlkdError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore an image or every image of a folder",
        description="Restore INPUT (a file or a folder) into OUTPUT (a file or a folder). "
        "Images are padded to a multiple of 8 and cropped back; --tile bounds memory on large "
        "images. Output files keep the input names (and bit depth; alpha is re-attached). An "
        "unreadable file is reported by name and the rest of the folder is still processed.",
    )
    add_model_arguments(p, weights_required=True)
    add_tiling_arguments(p)
    p.add_argument("input", metavar="INPUT", help="image file or folder")
    p.add_argument("output", metavar="OUTPUT", help="output file, or folder for a folder input")
    p.set_defaults(func=run)


def _plan(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; refuses plans that would overwrite the inputs."""
    if not inp.exists():
        raise SlkdError(f"input not found: {inp}")
    if inp.is_dir():
        if out.exists() and not out.is_dir():
            raise SlkdError(f"input {inp} is a folder, so OUTPUT must be a folder, but {out} is a file")
        if out.resolve() == inp.resolve():
            raise SlkdError("OUTPUT is the INPUT folder: restored images would overwrite the originals")
        sources = list_images(inp)
        if not sources:
            raise SlkdError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {inp}")
        return [(src, out / src.name) for src in sources]
    dest = out / inp.name if out.is_dir() else out
    if dest.resolve() == inp.resolve():
        raise SlkdError("OUTPUT is the INPUT file: the original would be overwritten")
    if dest.suffix.lower() not in IMAGE_EXTENSIONS:
        raise SlkdError(f"cannot tell the image format of {dest}: use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return [(inp, dest)]


def run(args) -> int:
    check_tiling(args)
    plan = _plan(Path(args.input), Path(args.output))
    device = resolve_device(args.device)
    model = load_model(args.model, args.weights, device)
    failed = []
    for i, (src, dest) in enumerate(plan, 1):
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image = read_image(src)
            for w in caught:
                note(f"warning: {w.message}")
            out = restore(model, image.tensor[None], tile=args.tile, overlap=args.overlap,
                          blend=args.blend, device=device)
            write_image(dest, out[0], bit_depth=image.bit_depth, alpha=image.alpha)
        except SlkdError as exc:
            failed.append(src.name)
            note(f"[{i}/{len(plan)}] skipped {src.name}: {exc}")
            continue
        _, h, w = image.tensor.shape
        note(f"[{i}/{len(plan)}] {src.name} {w}×{h} → {dest} ({time.perf_counter() - start:.2f} s)")
    if failed:
        note(f"{len(failed)} of {len(plan)} image(s) could not be restored: {', '.join(failed)}")
        return 1
    return 0
