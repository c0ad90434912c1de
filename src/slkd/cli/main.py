"""The ``slkd`` command line. User errors are printed as one line, without a traceback."""

from __future__ import annotations

import argparse
import re
import sys

from slkd import __version__
from slkd.cli import compress, demo, distill, evaluate, export, profile, restore, train
from slkd.cli.plugins import add_plugin_argument, load_plugins, plugin_arguments
from slkd.engine.allocator import tune_allocator
from slkd.engine.memory import format_bytes
from slkd.errors import SlkdError
from slkd.models import get_preset, list_models


def _models(_args) -> int:
    for name in list_models():
        preset = get_preset(name)
        teacher = f" (student of {preset.teacher})" if preset.teacher else ""
        student = f" (default student: {preset.student})" if preset.student else ""
        print(f"{name:<24}{preset.description}{teacher}{student}")
    return 0


_TRIED = re.compile(r"tried to allocate (\d+ bytes|[\d.]+ ?[KMGT]i?B)", re.IGNORECASE)


def allocation_failure(exc: BaseException) -> str | None:
    """`` (tried to allocate N)`` when ``exc`` is a failed allocation (``MemoryError``, torch's
    "DefaultCPUAllocator: can't allocate memory", "CUDA out of memory"), "" when the size is not
    known, None for any other error."""
    text = str(exc)
    if not isinstance(exc, MemoryError) and not any(
            s in text for s in ("can't allocate memory", "out of memory", "Cannot allocate memory")):
        return None
    found = _TRIED.search(text)
    if found is None:
        return ""
    size = found.group(1)
    if size.endswith("bytes"):
        size = format_bytes(int(size.split()[0]))
    return f" (tried to allocate {size})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slkd",
        description="Compress image-restoration networks by Simultaneous Learning Knowledge "
        "Distillation; profile, apply and evaluate restoration models.",
    )
    parser.add_argument("--version", action="version", version=f"slkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    models = sub.add_parser("models", help="list the model presets")
    models.set_defaults(func=_models)
    for module in (compress, train, distill, profile, restore, evaluate, export, demo):
        module.add_parser(sub)
    for command in sub.choices.values():  # main() imported them already; every command accepts them
        add_plugin_argument(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # before the first tensor: freed activations stay in the heap for reuse
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # before the parser: a plugin's methods are choices of its options
        load_plugins(plugin_arguments(argv))
    except SlkdError as exc:
        print(f"slkd: error: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SlkdError as exc:
        print(f"slkd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or a read-only folder that no command put into words
        where = f": {exc.filename}" if exc.filename else ""
        print(f"slkd {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:  # an allocation no estimate foresaw
        tried = allocation_failure(exc)
        if tried is None:
            raise
        print(f"slkd {args.command}: error: out of memory{tried}; use smaller images, batches or "
              "sizes (or --tile where the command has it)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slkd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
