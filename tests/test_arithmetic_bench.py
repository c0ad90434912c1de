"""benchmarks/arithmetic.py's traffic count: what it counts, exactly (its timings are measured by
hand on a quiet machine, never in tests)."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.arithmetic import _Written, main, traffic


def test_written_counts_every_operator_output():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    x = torch.rand(2, 3, 8, 6)
    with torch.inference_mode(), _Written() as counter:
        y = torch.relu(conv(x))
    # the convolution's output and relu's, nothing read
    assert counter.elements == 2 * y.numel() == 2 * 2 * 5 * 8 * 6


def test_traffic_of_a_pair_against_itself_and_a_real_pair(tmp_path):
    same = traffic(("res-sl-tiny", "res-sl-tiny"), 16)
    assert same["written_ratio"] == 1.0 and same["macs_ratio"] == 1.0
    pair = traffic(("restormer-tiny", "res-sl-tiny"), 16)
    # the teacher writes more than the student but not as many times more as it computes
    assert 1.0 < pair["written_ratio"] < pair["macs_ratio"]
    out = tmp_path / "t.json"
    assert main(["--quick", "--parts", "traffic", "--json", str(out)]) == 0
    assert out.is_file()
