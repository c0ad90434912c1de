"""``--plugin MODULE``: import a user's module before the command reads its config, so that the
methods and extractors it registers (:func:`slkd.distill.register_distiller`,
:func:`slkd.distill.register_extractor`) work from the command line.

``MODULE`` is a dotted name importable from ``sys.path`` (the current folder included, as with
``python -m``) or the path of a ``.py`` file. :func:`slkd.cli.main.main` imports every
``--plugin`` of the command line before it builds its parser, so a registered method is also one
of ``slkd compress --method``'s choices; a module that cannot be imported is a one-line error
that names it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

from slkd.errors import SlkdError

__all__ = ["add_plugin_argument", "load_plugin", "load_plugins", "plugin_arguments"]

OPTION = "--plugin"


def add_plugin_argument(parser) -> None:
    parser.add_argument(OPTION, action="append", default=[], metavar="MODULE",
                        help="import MODULE first (a dotted module name or a .py file) so that what it "
                        "registers (distillation methods, extractors, tasks, model presets) can be used; "
                        "repeatable")


def plugin_arguments(argv: Sequence[str]) -> list[str]:
    """The values of every ``--plugin X`` / ``--plugin=X`` in ``argv``, in order."""
    found = []
    for i, arg in enumerate(argv):
        if arg == OPTION and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith(OPTION + "="):
            found.append(arg[len(OPTION) + 1:])
    return found


def _from_file(path: Path) -> ModuleType:
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) and Path(loaded.__file__).resolve() == path:
            return loaded  # imported already (e.g. by an earlier --plugin of the same file)
        raise SlkdError(f"{OPTION} {path}: a module named {name!r} is imported already; rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugin(spec: str) -> ModuleType:
    """Import ``spec`` (a dotted module name or a ``.py`` file); any failure is a one-line
    :class:`SlkdError` naming it."""
    path = Path(spec)
    try:
        if spec.endswith(".py") or os.sep in spec:
            if not path.is_file():
                raise SlkdError(f"{OPTION} {spec}: no such file")
            return _from_file(path.resolve())
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())
        return importlib.import_module(spec)
    except SlkdError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever the user's module raised
        lines = str(exc).strip().splitlines()
        raise SlkdError(f"{OPTION} {spec}: cannot import it ({type(exc).__name__}"
                        f"{': ' + lines[0] if lines else ''})") from None


def load_plugins(specs: Sequence[str]) -> list[ModuleType]:
    return [load_plugin(spec) for spec in specs]
