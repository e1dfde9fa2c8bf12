"""The user-cache of derived arrays: built once, reused, rebuilt when damaged, never required."""

import os

import numpy as np
import pytest

from brainxai.mni import cache


def test_built_once_then_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    source = tmp_path / "source.bin"
    source.write_bytes(b"atlas")
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(5), "b": np.eye(2)}

    first = cache.derived_arrays("thing", source, build)
    second = cache.derived_arrays("thing", source, build)
    assert len(calls) == 1
    np.testing.assert_array_equal(second["a"], first["a"])
    np.testing.assert_array_equal(second["b"], np.eye(2))
    assert [p.name for p in (tmp_path / "c" / "brainxai").iterdir()] == [cache.cache_file("thing", source).name]
    # A new version of the derivation, or a changed source, is a new entry.
    cache.derived_arrays("thing", source, build, version="2")
    assert len(calls) == 2
    source.write_bytes(b"another atlas")
    cache.derived_arrays("thing", source, build)
    assert len(calls) == 3


def test_damaged_entry_is_rebuilt_and_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    source = tmp_path / "source.bin"
    source.write_bytes(b"atlas")
    entry = cache.cache_file("thing", source)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"PK\x03\x04 half a file")
    out = cache.derived_arrays("thing", source, lambda: {"a": np.ones(3)})
    np.testing.assert_array_equal(out["a"], np.ones(3))
    with np.load(entry) as d:  # replaced by a whole one
        np.testing.assert_array_equal(d["a"], np.ones(3))

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be", encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    out = cache.derived_arrays("thing", source, lambda: {"a": np.zeros(2)})
    np.testing.assert_array_equal(out["a"], np.zeros(2))
    assert not any(name.endswith(".npz") for name in os.listdir(tmp_path))  # no stray temporary files


@pytest.mark.parametrize("compress", [False, True])
def test_a_bit_flipped_entry_is_rebuilt_never_read(tmp_path, monkeypatch, compress):
    """A damaged entry that still parses as a zip would give wrong atlas maps: the zip's CRC must catch it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    source = tmp_path / "source.bin"
    source.write_bytes(b"atlas")
    arrays = {"a": np.arange(100_000, dtype=np.float32)}
    cache.derived_arrays("thing", source, lambda: arrays, compress=compress)
    entry = cache.cache_file("thing", source)
    damaged = bytearray(entry.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # inside the array's bytes
    entry.write_bytes(bytes(damaged))
    calls = []
    out = cache.derived_arrays("thing", source, lambda: calls.append(1) or arrays, compress=compress)
    assert calls == [1] and np.array_equal(out["a"], arrays["a"])
