"""Small Zarr v3 helpers shared by the render and feature stores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec


class StoreError(RuntimeError):
    """A store is missing, corrupt, incomplete or stale; the message says what to do."""


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing configs and identities."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, n: int = 16) -> str:
    """Hex sha256 prefix of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


def create_object_array(
    group: zarr.Group,
    name: str,
    n_objects: int,
    per_object: tuple[int, ...],
    dtype: Any,
    fill_value: Any = 0,
    per_view: bool = True,
    level: int = 3,
) -> zarr.Array:
    """Create an (N, *per_object) array, one chunk per (object, view) and one shard per object.

    ``per_view`` means the first per-object axis is views and gets its own chunk per view.
    """
    shape = (n_objects, *per_object)
    if per_view and per_object:
        chunks = (1, 1, *per_object[1:])
        shards: tuple[int, ...] | None = (1, *per_object)
    else:
        chunks, shards = (1, *per_object), None
    chunks = tuple(max(1, c) for c in chunks)
    if shards is not None:
        shards = tuple(max(1, s) for s in shards)
    return group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        shards=shards,
        dtype=dtype,
        compressors=ZstdCodec(level=level),
        fill_value=fill_value,
        overwrite=True,
    )


def open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a Zarr group, turning library errors into a StoreError that names the path."""
    try:
        return zarr.open_group(str(path), mode=mode)
    except Exception as exc:
        raise StoreError(
            f"{path}: not a readable Zarr store ({type(exc).__name__}: {exc}); "
            "delete it and re-run the stage that writes it"
        ) from exc


def digest_arrays(*arrays: np.ndarray) -> str:
    """sha256 over the raw bytes of ``arrays`` (used as a per-object content digest)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def read_checked(
    array: zarr.Array, selection: Any, store: str | Path, name: str, orthogonal: bool = False,
    rerun: str = "the stage",
) -> np.ndarray:
    """Read ``array[selection]`` (``array.oindex[selection]`` if ``orthogonal``, for index
    lists); a corrupt chunk becomes a StoreError naming the store, the array and ``rerun``."""
    try:
        return array.oindex[selection] if orthogonal else array[selection]
    except Exception as exc:
        raise StoreError(
            f"{store}: array {name!r} could not be read at {selection} "
            f"({type(exc).__name__}: {exc}); the store is corrupt - delete it and re-run {rerun}"
        ) from exc
