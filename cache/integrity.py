"""Verified reads for the per-object Zarr stores (render and feature stores).

Every object of a store carries one sha256 per content array (``digests``, (N, A, 32) uint8, in
the order of the ``content_arrays`` attr), written after its arrays and before its ``done`` flag.
Chunks are zstd-compressed with the zstd frame checksum on, so a flipped bit fails to decode;
a deleted shard or chunk reads back as the fill value and fails its digest. The attrs list the
objects that were done when the store was finalised (``done_objects``), so a lost ``done`` chunk
is caught too. These functions are pure checks over an open group: they report problems and
never change the store (see :func:`reset_objects` for the repair).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from cache.zarr_io import exists, join, read_object, write_objects

DIGESTS = "digests"
DONE = "done"
FLAGS = (DIGESTS, DONE)  # the per-object bookkeeping arrays of every store


@dataclass(frozen=True)
class Problem:
    """One bad object: its store index and id, the array (or ``done``) and what is wrong."""

    index: int
    object_id: str
    array: str
    reason: str

    def line(self) -> str:
        return f"object {self.object_id} (index {self.index}): {self.array}: {self.reason}"


def array_digest(value: np.ndarray) -> np.ndarray:
    """(32,) uint8 sha256 over dtype, shape and C-order bytes of one object's array."""
    value = np.ascontiguousarray(value)
    h = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
    h.update(value.reshape(-1).view(np.uint8))  # the C-order bytes, without a copy
    return np.frombuffer(h.digest(), np.uint8)


def object_digests(values: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """(A, 32) uint8: :func:`array_digest` of ``values[name]`` for each of ``names``."""
    return np.stack([array_digest(values[n]) for n in names])


def mark_object_done(group: zarr.Group | Mapping[str, zarr.Array], index: int,
                     digests: np.ndarray) -> None:
    """Write object ``index``'s (A, 32) digests, then its ``done`` flag (last: a run killed in
    between leaves the object not done). ``group``: the store's group, or its digest and done
    arrays already opened (by name)."""
    write_objects({DIGESTS: group[DIGESTS]}, index, {DIGESTS: digests})
    mark_done(group, index)


def mark_done(group: zarr.Group | Mapping[str, zarr.Array], index: int) -> None:
    """Set object ``index``'s ``done`` flag (after its arrays and digests are written)."""
    write_objects({DONE: group[DONE]}, index, {DONE: np.uint8(1)})


def chunk_file(store: str | Path, array: zarr.Array, index: int) -> str:
    """The file (or object, for a URL store) that holds object ``index`` of ``array``: its
    shard, or its single chunk.

    Every per-object array has one shard (or chunk) per object along axis 0 and one along each
    other axis, so the key is ``c/<index>/0/.../0`` (Zarr v3 default key encoding).
    """
    return join(store, array.path, "c", str(index), *(["0"] * (array.ndim - 1)))


def _missing_chunk(store: str | Path, array: zarr.Array, index: int) -> str | None:
    """``chunk file ... is missing`` when the object's chunk file is gone, else None (also when
    the store cannot tell, e.g. an object store that does not answer)."""
    name = chunk_file(store, array, index)
    try:
        return None if exists(name) else f"chunk file {name} is missing"
    except Exception:  # noqa: BLE001 - only refines the message; the digest already failed
        return None


def check_object(
    group: zarr.Group, store: str | Path, index: int, object_id: str, names: Sequence[str],
    content_arrays: Sequence[str],
) -> list[Problem]:
    """Re-read arrays ``names`` of object ``index`` and compare them with its stored digests."""
    problems = []
    try:
        stored = read_object(group[DIGESTS], index)
    except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt chunk
        return [Problem(index, object_id, DIGESTS, f"unreadable ({type(exc).__name__})")]
    for name in names:
        array = group[name]
        try:
            value = read_object(array, index)
        except Exception as exc:  # noqa: BLE001
            problems.append(Problem(index, object_id, name,
                                    f"a chunk fails its checksum ({type(exc).__name__})"))
            continue
        if not np.array_equal(array_digest(value), stored[content_arrays.index(name)]):
            problems.append(Problem(index, object_id, name, _missing_chunk(store, array, index)
                                    or "content differs from its digest"))
    return problems


def check_done_flags(group: zarr.Group, object_ids: Sequence[str]) -> list[Problem]:
    """Objects listed as done in the attrs whose ``done`` flag is not set (a lost chunk), and
    a flag count that disagrees with the attrs' ``n_done``."""
    done = group[DONE][:].astype(bool)
    listed = group.attrs.get("done_objects")
    if listed is None:
        return []
    problems = [Problem(i, object_ids[i], DONE, "listed as done in the attrs but its done flag "
                        "is not set (the flag's chunk was deleted or overwritten)")
                for i in listed if not done[i]]
    extra = sorted(set(np.flatnonzero(done).tolist()) - set(listed))
    problems += [Problem(i, object_ids[i], DONE, "done flag set but the object was not done when "
                         "the store was finalised") for i in extra]
    return problems


def fingerprint_of(group: zarr.Group, key: str) -> str:
    """sha256 over ``key`` (the settings' hash), every object's digests and the done flags."""
    h = hashlib.sha256(str(key).encode())
    h.update(group[DIGESTS][:].tobytes())
    h.update(group[DONE][:].tobytes())
    return h.hexdigest()


def reset_objects(group: zarr.Group, indices: Iterable[int]) -> list[int]:
    """Clear the done flags of ``indices`` and mark the store incomplete, so the stage that
    wrote it redoes exactly these objects on its next run. Returns the indices reset."""
    indices = sorted(set(int(i) for i in indices))
    for i in indices:
        group[DONE][i] = 0
    listed = [i for i in group.attrs.get("done_objects", []) if i not in set(indices)]
    group.attrs.update({"complete": False, "done_objects": listed, "fingerprint": None})
    return indices


def describe(problems: Sequence[Problem], store: str | Path, rerun: str, limit: int = 5) -> str:
    """One line: the first ``limit`` problems and the fix (verify --repair, then ``rerun``)."""
    shown = "; ".join(p.line() for p in problems[:limit])
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return (f"{store}: {len({p.index for p in problems})} damaged object(s): {shown}{more}; run "
            f"`fnerf-pipeline verify {store} --repair`, then re-run {rerun} to redo only those")
