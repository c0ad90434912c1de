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
from slkd.cli.onnx_option import check_model_or_onnx, load_onnx
from slkd.data.image_io import IMAGE_EXTENSIONS, list_images, read_image, write_image
from slkd.engine.inference import restore
from slkd.engine.memory import available_memory, estimate_memory, format_bytes as _gib
from slkd.errors import SlkdError
from slkd.fileio import file_in_the_way

#: tile sizes suggested when an image is too large for the memory, preferred first (the largest
#: one smaller than the image whose estimate fits)
SUGGESTED_TILES = (256, 128, 64, 32)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore an image or every image of a folder",
        description="Restore INPUT (a file or a folder) into OUTPUT (a file or a folder). "
        "Images are padded to a multiple of 8 and cropped back; --tile bounds memory on large "
        "images. Output files keep the input names (and bit depth; alpha is re-attached); an "
        "existing output file is only replaced with --overwrite. An unreadable file (also a GIF "
        "or a dangling link) is reported by name and the rest of the folder is still processed. "
        "Before each image the memory it needs is estimated; an image that would not fit in "
        "the memory available is skipped with the estimate and a suggested --tile. --onnx FILE "
        "runs an exported network instead of --model/--weights (its memory is not estimated).",
    )
    add_model_arguments(p, weights_required=True, onnx=True)
    add_tiling_arguments(p)
    p.add_argument("--force", action="store_true",
                   help="restore even an image whose memory estimate exceeds the memory available")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist already (refused without it)")
    p.add_argument("input", metavar="INPUT", help="image file or folder")
    p.add_argument("output", metavar="OUTPUT", help="output file, or folder for a folder input")
    p.set_defaults(func=run)


#: image files in a folder that are not restored but named as skipped (read_image refuses them)
REFUSED_EXTENSIONS = frozenset({".gif"})


def _plan(inp: Path, out: Path, overwrite: bool = False) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; refuses plans that would overwrite the inputs, and, without
    ``overwrite``, plans that would replace any existing file (nothing is written then)."""
    if not inp.exists():
        raise SlkdError(f"input not found: {inp}")
    blocking = file_in_the_way(out)
    if blocking is not None:  # found up front, not at the first image's write
        raise SlkdError(f"OUTPUT {out} is under {blocking}, which is a file; nothing can be written there")
    if inp.is_dir():
        if out.exists() and not out.is_dir():
            raise SlkdError(f"input {inp} is a folder, so OUTPUT must be a folder, but {out} is a file")
        if out.resolve() == inp.resolve():
            raise SlkdError("OUTPUT is the INPUT folder: restored images would overwrite the originals")
        # GIFs are listed so that each is named as skipped, instead of vanishing from the folder
        refused = [p for p in inp.iterdir() if p.suffix.lower() in REFUSED_EXTENSIONS
                   and not p.name.startswith(".")]
        sources = sorted(list_images(inp) + refused, key=lambda p: p.name)
        if not sources:
            raise SlkdError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {inp}")
        plan = [(src, out / src.name) for src in sources]
    else:
        dest = out / inp.name if out.is_dir() else out
        if dest.resolve() == inp.resolve():
            raise SlkdError("OUTPUT is the INPUT file: the original would be overwritten")
        if dest.suffix.lower() not in IMAGE_EXTENSIONS:
            raise SlkdError(f"cannot tell the image format of {dest}: use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
        plan = [(inp, dest)]
    existing = [dest for src, dest in plan if (dest.exists() or dest.is_symlink())
                and src.suffix.lower() not in REFUSED_EXTENSIONS]
    if existing and not overwrite:
        if len(plan) == 1:
            raise SlkdError(f"{existing[0]} exists; pass --overwrite to replace it (nothing was written)")
        shown = ", ".join(d.name for d in existing[:5]) + (" …" if len(existing) > 5 else "")
        raise SlkdError(f"{len(existing)} of the {len(plan)} output file(s) exist in {out} ({shown}); "
                        "pass --overwrite to replace them (nothing was written)")
    return plan


def _memory_problem(model, image, args, device) -> str | None:
    """Why ``image`` should not be restored with these settings (None when it fits)."""
    c, h, w = image.tensor.shape

    def shortfall(tile):
        est = estimate_memory(model, h, w, channels=c, tile=tile, device=device)
        where = [(est.device_bytes, available_memory(device), str(device))]
        if device.type != "cpu":
            where.append((est.host_bytes, available_memory("cpu"), "cpu"))
        for needed, free, name in where:
            if free is not None and needed > free:
                return est, needed, free, name
        return est, None, None, None

    estimate, needed, free, name = shortfall(args.tile)
    if needed is None:
        return None
    how = "in one piece" if args.tile is None else f"in {args.tile}×{args.tile} tiles"
    message = (f"restoring this {w}×{h} image {how} needs about {_gib(needed)} on {name} "
               f"(network {_gib(estimate.activations)}, image buffers {_gib(estimate.buffers)}) "
               f"but only {_gib(free)} is available")
    tiles = [t for t in SUGGESTED_TILES
             if t < max(h, w) and t > args.overlap and (args.tile is None or t < args.tile)]
    suggestion = None
    for tile in tiles:
        tiled, short, _, _ = shortfall(tile)
        if short is None:
            suggestion = f"use --tile {tile} (about {_gib(tiled.total)})"
            break
    if suggestion is None and tiles:
        suggestion = f"even --tile {tiles[-1]} would not fit; free some memory"
    elif suggestion is None:
        suggestion = "tiling cannot make it smaller; free some memory"
    return f"{message}; {suggestion}, or pass --force to try anyway"


def run(args) -> int:
    check_model_or_onnx(args, weights_needed=True)
    check_tiling(args)
    plan = _plan(Path(args.input), Path(args.output), overwrite=args.overwrite)
    if args.onnx is not None:  # ONNX Runtime's CPU provider; the estimate traces PyTorch models only
        device, model = resolve_device("cpu"), load_onnx(args)
    else:
        device = resolve_device(args.device)
        model = load_model(args.model, args.weights, device, path=args.inference)
    failed = []
    for i, (src, dest) in enumerate(plan, 1):
        start = time.perf_counter()
        try:
            # the reader's and writer's warnings (alpha dropped, 16 bits not storable …) become
            # notes naming the file, instead of Python warning lines
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    image = read_image(src)
                    problem = (None if args.force or args.onnx is not None
                               else _memory_problem(model, image, args, device))
                    if problem:
                        raise SlkdError(problem)
                    out = restore(model, image.tensor[None], tile=args.tile, overlap=args.overlap,
                                  blend=args.blend, device=device)
                    write_image(dest, out[0], bit_depth=image.bit_depth, alpha=image.alpha)
                finally:
                    for w in caught:
                        note(f"warning: {w.message}")
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
