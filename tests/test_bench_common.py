"""The measured child runner of the benchmarks: the peak memory it reports is the child's own,
not inflated by a large parent (Linux carries the pre-exec high-water mark across exec)."""

from __future__ import annotations

import math
import sys

import pytest

from benchmarks.common import run_measured_child


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's /proc")
def test_child_peak_is_its_own_and_exit_codes_pass_through(tmp_path, monkeypatch):
    (tmp_path / "alloc_child.py").write_text(
        "import sys\n"
        "block = bytearray(int(sys.argv[1]) * 2**20)\n"
        "block[::4096] = b'x' * len(block[::4096])  # touch every page\n"
        "sys.exit(int(sys.argv[2]))\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    ballast = bytearray(600 * 2**20)  # the parent is large ...
    ballast[::4096] = b"y" * len(ballast[::4096])
    small = run_measured_child("alloc_child", ["50", "0"])
    big = run_measured_child("alloc_child", ["300", "3"])
    del ballast
    assert small.exit_code == 0 and big.exit_code == 3  # sys.exit code reaches the parent
    # ... but the children report their own peaks: interpreter + what they allocated
    assert 50 * 2**20 < small.peak_rss_bytes < 300 * 2**20
    assert 300 * 2**20 < big.peak_rss_bytes < 550 * 2**20
    assert big.peak_rss_bytes - small.peak_rss_bytes == pytest.approx(250 * 2**20, rel=0.1)


def test_a_failing_child_reports_its_error(tmp_path, monkeypatch):
    (tmp_path / "bad_child.py").write_text("raise ValueError('boom')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    run = run_measured_child("bad_child", [])
    assert run.exit_code == 1 and "ValueError: boom" in run.stderr
    assert run.seconds > 0 and (math.isnan(run.peak_rss_bytes) or run.peak_rss_bytes > 0)


BENCHMARKS = [("speed", "--json", ["--quick"]), ("onnx_latency", "--json", []),
              ("restore_memory", "--out", ["--quick"]), ("memory_model", "--out", []),
              ("loader_speed", "--out", ["--quick"]), ("loss_balance", "--json", ["--config", "c.yaml"])]


@pytest.mark.parametrize("module, option, extra", BENCHMARKS)
def test_a_benchmark_never_replaces_a_result_without_overwrite(tmp_path, capsys, module, option, extra):
    """Each benchmark's default output is a committed result (benchmarks/results/…): a rerun
    replaced it without a word. It is refused, in one line, before anything runs."""
    import importlib

    main = importlib.import_module(f"benchmarks.{module}").main
    result = tmp_path / "result.json"
    result.write_text('{"measured": "earlier"}')
    with pytest.raises(SystemExit) as info:
        main([option, str(result), *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[0] and "--overwrite" in err[0]
    assert result.read_text() == '{"measured": "earlier"}'


@pytest.mark.parametrize("module, argv", [
    ("speed", ["--threads", "0"]), ("speed", ["--batch", "-1"]), ("speed", ["--threads", "100000"]),
    ("onnx_latency", ["--case-budget", "nan"]), ("onnx_latency", ["--sizes", "-8"]),
    ("restore_memory", ["--size", "0", "8"]), ("memory_model", ["--repeat", "0"]),
    ("loader_speed", ["--batch-size", "0"]), ("loss_balance", ["--config", "c.yaml", "--batches", "-1"]),
])
def test_benchmark_numbers_are_parsed_by_the_one_parser(capsys, module, argv):
    import importlib

    with pytest.raises(SystemExit) as info:
        importlib.import_module(f"benchmarks.{module}").main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --" in err and "Traceback" not in err
