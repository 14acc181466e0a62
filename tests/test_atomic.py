"""cache/atomic.py: files appear whole or not at all."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cache.atomic import atomic_write_bytes, atomic_write_with, write_json


def test_atomic_write_with_writes_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.npz"
    atomic_write_with(target, lambda fh: np.savez(fh, x=np.arange(3)))
    with np.load(target) as npz:
        assert npz["x"].tolist() == [0, 1, 2]
    assert [p.name for p in target.parent.iterdir()] == ["a.npz"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"old")

    def half_then_fail(fh) -> None:
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_with(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_write_json_is_sorted_and_readable(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text) == {"a": [1, 2], "b": 1} and text.index('"a"') < text.index('"b"')
