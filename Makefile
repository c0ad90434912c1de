# `make demo` and `make test` work on a fresh machine: they create .venv, install the CPU build of
# torch (override with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>"),
# install slkd, and run.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.slkd-installed

.PHONY: setup demo test bench-quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/slkd demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# every study of the reproduction study (benchmarks/study) end to end at toy size (1 seed, a few iterations):
# checks the scripts, not SLKD; needs ../shared/data (or SLKD_DATA)
bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.study all --quick --jobs 2

clean:
	rm -rf $(VENV) runs
