"""Atomic writes keep old content on failure and give files the usual permissions."""

import os
import stat

import pytest

from slkd.fileio import atomic_write, atomic_write_bytes


def test_atomic_write_bytes_creates_parents_and_normal_permissions(tmp_path):
    target = tmp_path / "a" / "b" / "f.bin"
    atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(target.parent) == ["f.bin"]


def test_failed_write_keeps_previous_content(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def half_written(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, half_written)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]
