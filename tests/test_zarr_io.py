"""Whole-object writes and reads encoded by cache.zarr_io itself, against zarr's own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr

from cache.zarr_io import (
    StoreError,
    create_object_array,
    object_encoding,
    read_checked,
    read_object,
    whole_shard_writes,
    write_objects,
)

# name -> (per-object shape, dtype, per_view): every layout the render and feature stores use
LAYOUTS = {
    "rgb": ((50, 16, 16, 3), "uint8", True),
    "depth": ((50, 16, 16), "float32", True),
    "part": ((50, 16, 16), "int16", True),
    "feat": ((50, 4, 4, 7), "float16", True),
    "kp_visible": ((50, 5), "bool", True),
    "K": ((50, 3, 3), "float32", False),
    "seed": ((2,), "int64", False),
    "digests": ((13, 32), "uint8", False),
    "done": ((), "uint8", False),
}


def _values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype, _) in LAYOUTS.items():
        value = (rng.normal(size=shape) * 50).astype(dtype)
        if shape and shape[0] == 50:
            value[3] = 0  # an all-fill view is stored too (whole_shard_writes)
        out[name] = value
    return out


def _group(path: Path, n_objects: int = 3) -> zarr.Group:
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, (shape, dtype, per_view) in LAYOUTS.items():
        create_object_array(group, name, n_objects, shape, dtype, per_view=per_view)
    return group


def _chunk_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}


def _libzstd_versions_agree() -> bool:
    """Whether zstandard (our writes) and numcodecs (zarr's) bundle the same libzstd: then
    they write the same bytes; else other valid frames of the same values."""
    import numcodecs.zstd
    import zstandard

    major, minor, micro = zstandard.ZSTD_VERSION
    return numcodecs.zstd.VERSION_NUMBER == major * 10000 + minor * 100 + micro


def test_the_pinned_zstandard_bundles_numcodecs_libzstd():
    """pyproject pins zstandard so that the stores' bytes equal zarr's own writes; a numcodecs
    that bundles another libzstd needs the zstandard release that bundles it."""
    import numcodecs.zstd
    import zstandard

    assert _libzstd_versions_agree(), (
        f"numcodecs bundles libzstd {numcodecs.zstd.VERSION_NUMBER}, zstandard "
        f"{zstandard.__version__} bundles {zstandard.ZSTD_VERSION}: pin the zstandard release "
        "that bundles numcodecs' libzstd in pyproject.toml")


def test_every_store_layout_has_an_object_encoding(tmp_path):
    group = _group(tmp_path / "a.zarr")
    for name in LAYOUTS:
        encoding = object_encoding(group[name])
        assert encoding is not None, name
        assert encoding.sharded == (LAYOUTS[name][2] and bool(LAYOUTS[name][0]))


@pytest.mark.parametrize("threads", [0, 2])
def test_write_objects_stores_the_bytes_zarr_writes(tmp_path, threads):
    by_zarr, by_us = _group(tmp_path / "zarr.zarr"), _group(tmp_path / "ours.zarr")
    pool = ThreadPoolExecutor(threads) if threads else None  # encodes on a pool's threads
    for index, seed in ((0, 0), (2, 1)):
        values = _values(seed)
        with whole_shard_writes():
            for name in LAYOUTS:
                by_zarr[name][index] = values[name]
        write_objects({n: by_us[n] for n in LAYOUTS}, index, values, pool)
    theirs, ours = _chunk_files(tmp_path / "zarr.zarr"), _chunk_files(tmp_path / "ours.zarr")
    assert len(ours) == 2 * len(LAYOUTS) and ours.keys() == theirs.keys()
    if _libzstd_versions_agree():  # the pinned zstandard's libzstd is numcodecs'
        assert ours == theirs
    reopened = zarr.open_group(str(tmp_path / "ours.zarr"))
    for name in LAYOUTS:
        assert np.array_equal(reopened[name][2], _values(1)[name]), name


def test_write_objects_takes_futures_of_values(tmp_path):
    group = _group(tmp_path / "a.zarr")
    values, resolved = _values(0), []
    pool = ThreadPoolExecutor(1)

    def later(name: str) -> np.ndarray:
        resolved.append(name)
        return values[name]

    lazy = {**values, "digests": pool.submit(later, "digests"), "K": pool.submit(later, "K")}
    write_objects({n: group[n] for n in LAYOUTS}, 1, lazy, pool)
    assert sorted(resolved) == ["K", "digests"]
    for name in LAYOUTS:
        assert np.array_equal(read_object(group[name], 1), values[name]), name


def test_read_object_gives_zarrs_values_and_the_fill_for_unwritten_objects(tmp_path):
    group = _group(tmp_path / "a.zarr")
    values = _values()
    write_objects({n: group[n] for n in LAYOUTS}, 1, values)
    for name in LAYOUTS:
        for index in (0, 1, 2):
            ours, theirs = read_object(group[name], index), group[name][index]
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
            assert np.array_equal(ours, theirs), (name, index)
        assert np.array_equal(read_object(group[name], 1), values[name])


def test_other_layouts_fall_back_to_zarr(tmp_path):
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="w", zarr_format=3)
    odd = group.create_array("odd", shape=(3, 10, 4), chunks=(1, 5, 4), dtype="float32")
    assert object_encoding(odd) is None
    value = np.arange(40, dtype=np.float32).reshape(10, 4)
    write_objects({"odd": odd}, 2, {"odd": value})
    assert np.array_equal(read_object(odd, 2), value)
    assert np.array_equal(odd[2], value)


@pytest.mark.parametrize("damage", ["flip a data byte", "flip an index byte", "truncate"])
def test_a_damaged_shard_is_an_error_naming_the_object(tmp_path, damage):
    group = _group(tmp_path / "a.zarr")
    write_objects({"rgb": group["rgb"]}, 1, {"rgb": _values()["rgb"]})
    shard = tmp_path / "a.zarr" / "rgb" / "c" / "1" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[10 if damage == "flip a data byte" else len(data) - 10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        read_object(group["rgb"], 1)
    with pytest.raises(StoreError, match="object b .index 1. fails to decode"):
        read_checked(group["rgb"], 1, tmp_path / "a.zarr", "rgb", object_ids=["a", "b", "c"])
