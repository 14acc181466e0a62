"""Small Zarr v3 helpers shared by the render and feature stores."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec


class StoreError(RuntimeError):
    """A store is missing, corrupt, incomplete or stale; the message says what to do."""


class StaleStoreError(StoreError):
    """A sound store computed from other inputs or settings (the message names what changed)."""


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
        compressors=ZstdCodec(level=level, checksum=True),  # bit flips fail to decode
        fill_value=fill_value,
        overwrite=True,
    )


def create_group_atomically(path: str | Path, build: Callable[[zarr.Group], None]) -> None:
    """Create the store at ``path`` whole or not at all: ``build`` fills a sibling
    ``<path>.creating`` folder (arrays and attrs), which then replaces ``path`` by renames.
    A run killed meanwhile leaves only the sibling, removed by the next creation (callers hold
    the store's writer lock, so any sibling is a dead run's)."""
    path = Path(path)
    tmp, old = Path(f"{path}.creating"), Path(f"{path}.replaced")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    build(zarr.open_group(str(tmp), mode="w", zarr_format=3))
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a Zarr group, turning library errors into a StoreError that names the path."""
    try:
        return zarr.open_group(str(path), mode=mode)
    except Exception as exc:
        raise StoreError(
            f"{path}: not a readable Zarr store ({type(exc).__name__}: {exc}); "
            "delete it and re-run the stage that writes it"
        ) from exc


def describe_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every (nested, dotted) key whose value differs, e.g.
    ``rig.image_size: 128 -> 64``; used by the stale-store messages instead of hashes."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b, name = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += describe_changes(a, b, f"{name}.")
        elif canonical_json(a) != canonical_json(b):
            out.append(f"{name}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = "(unset)" if value is None else canonical_json(value).strip('"')
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_checked(
    array: zarr.Array, selection: Any, store: str | Path, name: str, orthogonal: bool = False,
    rerun: str = "the stage", object_ids: list[str] | None = None,
) -> np.ndarray:
    """Read ``array[selection]`` (``array.oindex[selection]`` if ``orthogonal``, for index
    lists); a chunk that fails to decode (zstd checksum, truncated shard) becomes a StoreError
    naming the store, the object (from ``object_ids``), the array and the fix."""
    try:
        return array.oindex[selection] if orthogonal else array[selection]
    except Exception as exc:
        first = selection[0] if isinstance(selection, tuple) else selection
        where = f"at {selection}"
        if object_ids is not None and isinstance(first, int | np.integer):
            where = f"of object {object_ids[int(first)]} (index {int(first)})"
        raise StoreError(
            f"{store}: array {name!r} {where} fails to decode ({type(exc).__name__}: "
            f"{str(exc)[:120]}); run `fnerf-pipeline verify {store} --repair`, then re-run "
            f"{rerun} to redo the damaged objects"
        ) from exc
