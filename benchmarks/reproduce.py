"""``python -m benchmarks.reproduce``: the reproduction study's command line, kept under its
historical name; the study lives in the :mod:`benchmarks.study` package (see its docstring)."""

import sys

from benchmarks.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
