"""The run-state reader: one reading of a run folder's metrics.jsonl (finished, seconds, best)."""

import json

import pytest

from slkd.engine.runlog import RunState, run_state


def _write(run, events, weights=True, cut=False):
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(e) + "\n" for e in events)
    if cut:
        text += '{"event": "checkpoint", "step": 99'  # a line cut off by a kill
    (run / "metrics.jsonl").write_text(text)
    if weights:
        (run / "weights.pth").write_bytes(b"w")


EVENTS = [
    {"event": "start", "step": 0, "time": 100.0},
    {"event": "val", "step": 5, "time": 110.0, "dataset": "a", "psnr": 20.0, "ssim": 0.5},
    {"event": "checkpoint", "step": 5, "time": 120.0},
    # a second process: killed after its checkpoint at 10; the first counted to its checkpoint
    {"event": "start", "step": 5, "time": 1000.0},
    {"event": "val", "step": 10, "time": 1030.0, "dataset": "a", "psnr": 22.5, "ssim": 0.6},
    {"event": "val", "step": 10, "time": 1030.0, "dataset": "b", "psnr": 18.0, "ssim": 0.4},
    {"event": "checkpoint", "step": 10, "time": 1040.5},
]


def test_a_run_that_reached_its_iterations_is_finished_with_its_logged_seconds(tmp_path):
    _write(tmp_path / "run", EVENTS, cut=True)
    state = run_state(tmp_path / "run", 10)
    assert state.finished and state.last_checkpoint == 10
    assert state.seconds == pytest.approx(20.0 + 40.5)
    assert {k: v["psnr"] for k, v in state.best.items()} == {"a": 22.5, "b": 18.0}
    assert state.best["a"]["step"] == 10
    assert not run_state(tmp_path / "run", 11).finished  # asked for more steps than it ran


def test_without_its_weights_or_its_log_a_run_is_not_finished(tmp_path):
    _write(tmp_path / "noweights", EVENTS, weights=False)
    assert not run_state(tmp_path / "noweights", 10).finished
    assert run_state(tmp_path / "empty", 10) == RunState(finished=False, last_checkpoint=-1, seconds=None)


def test_one_duration_and_number_formatter_for_logs_and_tables():
    from slkd.engine.text import cell, duration, log_number

    assert [duration(s) for s in (0, 59.4, 59.6, 127.5, 3600, 3725, float("inf"))] == [
        "0m00s", "0m59s", "1m00s", "2m08s", "1h00m", "1h02m", "?"]
    assert [log_number(v) for v in (0.08443, 12345.678, 0.000123, 0.0, 7)] == [
        "0.08443", "1.235e+04", "1.23e-04", "0", "7"]
    assert [cell(v, ".2f") for v in (28.766, float("inf"), float("-inf"), float("nan"), None)] == [
        "28.77", "∞", "−∞", "–", "–"]
