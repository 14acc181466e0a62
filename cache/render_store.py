"""The render store: ``data/renders/<category>.zarr`` (contract: docs/contracts.md, section 1).

Zarr v3, one chunk per (object, view), one shard per object. Per-object completion is explicit:
an object's arrays and one digest per array (``digests``) are written first, then its ``done``
flag, so a killed run never leaves an object that looks complete, and re-running resumes at the
first object whose flag is not set. Reads are verified (:mod:`cache.integrity`): zstd checksums
catch flipped bits, the digests catch lost or swapped chunks, and the attrs' ``done_objects``
catch a lost ``done`` flag.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from cache import integrity
from cache.zarr_io import (
    StoreError,
    create_group_atomically,
    create_object_array,
    describe_changes,
    exists,
    half_made,
    missing_note,
    open_group,
    read_checked,
    short_hash,
    store_present,
    write_objects,
)
from renderers.job import RenderedObject

FORMAT_VERSION = 2  # 2: per-array digests, zstd checksums, done_objects

# name -> (dtype, per-object shape given (V, H, P, S), per-view chunking, fill value)
ARRAYS: dict[str, tuple[str, Any, bool, Any]] = {
    "rgb": ("uint8", lambda V, H, P, S: (V, H, H, 3), True, 0),
    "alpha": ("uint8", lambda V, H, P, S: (V, H, H), True, 0),
    "depth": ("float32", lambda V, H, P, S: (V, H, H), True, 0.0),
    "part": ("int16", lambda V, H, P, S: (V, H, H), True, -1),
    "K": ("float32", lambda V, H, P, S: (V, 3, 3), False, 0.0),
    "c2w": ("float32", lambda V, H, P, S: (V, 4, 4), False, 0.0),
    "kp3d": ("float32", lambda V, H, P, S: (P, 3), False, 0.0),
    "kp_id": ("int32", lambda V, H, P, S: (P,), False, -1),
    "kp2d": ("float32", lambda V, H, P, S: (V, P, 2), False, 0.0),
    "kp_visible": ("bool", lambda V, H, P, S: (V, P), False, False),
    "points": ("float32", lambda V, H, P, S: (S, 3), False, 0.0),
    "point_part": ("int16", lambda V, H, P, S: (S,), False, -1),
    "seed": ("int64", lambda V, H, P, S: (2,), False, 0),
}
CONTENT_ARRAYS = tuple(ARRAYS)  # the arrays each object's digests cover, in digest order
ARRAYS[integrity.DIGESTS] = ("uint8", lambda V, H, P, S: (len(CONTENT_ARRAYS), 32), False, 0)
ARRAYS[integrity.DONE] = ("uint8", lambda V, H, P, S: (), False, 0)
IMAGE_ARRAYS = ("rgb", "alpha", "depth", "part")


@dataclass(frozen=True)
class StoreLayout:
    """Sizes fixed at creation: objects N, views V, image size H, keypoint slots P, points S."""

    n_objects: int
    n_views: int
    image_size: int
    n_keypoints: int
    n_points: int

    def shape_args(self) -> tuple[int, int, int, int]:
        return self.n_views, self.image_size, max(1, self.n_keypoints), max(1, self.n_points)


#: per store path: (config key, writer) of :meth:`RenderStoreWriter.in_this_process`
_PROCESS_WRITERS: dict[str, tuple[str | None, RenderStoreWriter]] = {}


@functools.cache
def _write_pool() -> ThreadPoolExecutor:
    """This process's two threads for an object write's sha256 digests and zstd encodes (both
    release the GIL). The write runs between two objects' renders, when GL leaves both cores
    idle (measured: 39-43 -> 29-33 ms an object, 50 views at 128 px)."""
    return ThreadPoolExecutor(2, thread_name_prefix="render-store-write")


class RenderStoreWriter:
    """Creates or resumes a render store and writes one object at a time (any process)."""

    def __init__(self, path: str | Path, group: zarr.Group | None = None):
        """Open an existing store for object writes (used inside workers)."""
        self.path = str(path)
        self.group = open_group(self.path, mode="r+") if group is None else group
        self._arrays: dict[str, zarr.Array] | None = None  # the content arrays, opened once

    @classmethod
    def in_this_process(cls, path: str | Path) -> RenderStoreWriter:
        """This process's writer of the store at ``path``, reused from object to object.

        Opening its 15 arrays reads 15 metadata files (about 10 ms an object here), so
        a task reuses the writer of its store; a store made anew at ``path`` with other
        settings (another config key) gets a new writer.
        """
        path = str(path)
        group = open_group(path, mode="r+")
        key = group.attrs.get("config_key")
        cached = _PROCESS_WRITERS.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        writer = cls(path, group)
        _PROCESS_WRITERS[path] = (key, writer)
        return writer

    @classmethod
    def create_or_resume(
        cls,
        path: str | Path,
        layout: StoreLayout,
        attrs: dict,
        overwrite: bool = False,
        if_stale: str = "fail",
    ) -> RenderStoreWriter:
        """Create the store, or reopen it to resume when it was made with the same settings.

        ``attrs`` must hold ``object_ids``, ``splits`` and a ``config`` dict; the config hash
        decides whether an existing store can be resumed (same config) or is stale; a stale
        store is an error unless ``if_stale == "overwrite"``.
        """
        path = str(path)
        config_key = short_hash({"config": attrs["config"], "object_ids": attrs["object_ids"]})
        exists = store_present(path)  # a half-made (URL) store is rebuilt
        if exists and not overwrite:
            group = open_group(path, mode="r+")
            found = group.attrs.get("config_key")
            if found != config_key and if_stale != "overwrite":
                raise StoreError(
                    f"{path}: existing render store was written with other settings "
                    f"({stale_reason(dict(group.attrs), attrs)}); pass --if-stale overwrite to "
                    "re-render it, or choose another --out"
                )
            if found == config_key:
                return cls(path)
        V, H, P, S = layout.shape_args()

        def build(group: zarr.Group) -> None:
            for name, (dtype, shape_fn, per_view, fill) in ARRAYS.items():
                create_object_array(
                    group, name, layout.n_objects, shape_fn(V, H, P, S), dtype, fill, per_view
                )
            group.attrs.update({**attrs, "config_key": config_key,
                                "format_version": FORMAT_VERSION, "complete": False,
                                "content_arrays": list(CONTENT_ARRAYS)})

        create_group_atomically(path, build)
        return cls(path)

    def done_mask(self) -> np.ndarray:
        """(N,) bool: objects already written completely."""
        return self.group["done"][:].astype(bool)

    def write_object(self, index: int, obj: RenderedObject) -> None:
        """Write every array of object ``index`` and its digests (one batch of puts), then its
        ``done`` flag (last)."""
        g, v = self.group, obj.views
        values = {
            "rgb": v.rgb,
            "alpha": v.alpha,
            "depth": v.depth,
            "part": v.part,
            "K": obj.K,
            "c2w": obj.c2w,
            "kp3d": obj.kp3d,
            "kp_id": obj.kp_id,
            "kp2d": obj.kp2d,
            "kp_visible": obj.kp_visible,
            "points": obj.points,
            "point_part": obj.point_part,
            "seed": np.array([obj.job.seed, obj.job.camera_seed], np.int64),
        }
        if self._arrays is None:
            self._arrays = {name: g[name] for name in (*CONTENT_ARRAYS, *integrity.FLAGS)}
        arrays = {name: self._arrays[name] for name in CONTENT_ARRAYS}
        for name, array in arrays.items():
            values[name] = np.asarray(values[name], dtype=array.dtype)  # digest what is stored
            if tuple(values[name].shape) != tuple(array.shape[1:]):
                raise StoreError(
                    f"{self.path}: object {obj.job.object_id} array {name} has shape "
                    f"{values[name].shape}, store expects {array.shape[1:]}"
                )
        pool = _write_pool()  # the digests and the encodes on two threads: GL is idle now
        values[integrity.DIGESTS] = pool.submit(integrity.object_digests, dict(values),
                                               CONTENT_ARRAYS)
        arrays[integrity.DIGESTS] = self._arrays[integrity.DIGESTS]
        write_objects(arrays, index, values, pool)  # the digests in the same batch of puts
        integrity.mark_done(self._arrays, index)  # last: the object is done

    def damaged(self, indices: list[int]) -> list[integrity.Problem]:
        """Problems of the done objects ``indices`` (every array re-read against its digest)."""
        ids = self.group.attrs["object_ids"]
        return [p for i in indices for p in integrity.check_object(
            self.group, self.path, i, ids[i], CONTENT_ARRAYS, CONTENT_ARRAYS)]

    def reset(self, indices: list[int]) -> None:
        """Clear the done flags of ``indices`` so this run redoes them."""
        integrity.reset_objects(self.group, indices)

    def finalize(self, extra_attrs: dict) -> str:
        """Mark the store complete (all objects done or listed as skipped); returns fingerprint."""
        done = self.done_mask()
        skipped = extra_attrs.get("skipped", {})
        ids = self.group.attrs["object_ids"]
        missing = [i for i, d in zip(ids, done, strict=True) if not d and i not in skipped]
        fingerprint = fingerprint_of(self.group)
        self.group.attrs.update({**extra_attrs, "complete": not missing, "fingerprint": fingerprint,
                                 "done_objects": np.flatnonzero(done).tolist()})
        return fingerprint


def fingerprint_of(group: zarr.Group) -> str:
    """sha256 over the config key, every object's digests and the done flags (order matters)."""
    return integrity.fingerprint_of(group, str(group.attrs.get("config_key")))


def stale_reason(found: dict, wanted: dict) -> str:
    """What differs between a store's attrs and the wanted ones, as ``key: old -> new``."""
    changes = describe_changes(found.get("config", {}), wanted.get("config", {}))
    if found.get("object_ids") != wanted.get("object_ids"):
        old, new = found.get("object_ids") or [], wanted.get("object_ids") or []
        changes.append(f"objects: {len(old)} -> {len(new)} "
                       f"({len(set(new) - set(old))} new, {len(set(old) - set(new))} dropped)")
    return ", ".join(changes) or "another pipeline version"


class RenderStore:
    """Read access to a finished render store, with clear errors for bad stores."""

    def __init__(self, path: str | Path, allow_incomplete: bool = False):
        self.path = str(path)
        if not exists(self.path) or half_made(self.path):
            raise StoreError(f"{self.path}: no render store here{missing_note(self.path)}; run "
                             "`fnerf-pipeline render` first")
        self.group = open_group(self.path)
        missing = [name for name in ARRAYS if name not in self.group]
        if missing:
            raise StoreError(
                f"{self.path}: render store lacks arrays {missing}; it was written by another "
                "version or is damaged - re-run `fnerf-pipeline render --overwrite`"
            )
        self.attrs = dict(self.group.attrs)
        self._arrays: dict[str, zarr.Array] = {}
        self.verify_s = 0.0  # seconds spent verifying reads (re-reads and digests)
        if self.attrs.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.path}: render store format {self.attrs.get('format_version')} is not "
                f"this version's {FORMAT_VERSION} (it has no verifiable digests); re-render it "
                "with `fnerf-pipeline render --overwrite`"
            )
        if not self.attrs.get("complete") and not allow_incomplete:
            n_done = int(self.group["done"][:].sum())
            raise StoreError(
                f"{self.path}: render store is incomplete ({n_done}/{self.n_objects} objects "
                "done); re-run the render stage to resume it"
            )
        if self.attrs.get("complete"):
            self._check_flags()

    def _check_flags(self) -> None:
        """Done flags against the attrs' done list, the digests against the fingerprint."""
        problems = integrity.check_done_flags(self.group, self.object_ids)
        if problems:
            raise StoreError(integrity.describe(problems, self.path, "the render stage"))
        if fingerprint_of(self.group) != self.attrs.get("fingerprint"):
            raise StoreError(
                f"{self.path}: the stored digests do not match the store's fingerprint (the "
                f"digests array was changed); run `fnerf-pipeline verify {self.path}`"
            )

    def verify(self, indices: list[int], names: tuple[str, ...] = CONTENT_ARRAYS,
               rerun: str = "the render stage") -> None:
        """Re-read arrays ``names`` of objects ``indices`` against their digests; any damage is
        a StoreError naming the objects, the arrays and the fix. Call before using them."""
        t0 = time.perf_counter()
        problems = [p for i in indices for p in integrity.check_object(
            self.group, self.path, i, self.object_ids[i], names, CONTENT_ARRAYS)]
        self.verify_s += time.perf_counter() - t0
        if problems:
            raise StoreError(integrity.describe(problems, self.path, rerun))

    def object_digests(self) -> np.ndarray:
        """(N, 32) uint8: one digest per object (over its per-array digests)."""
        return np.stack([integrity.array_digest(d)
                         for d in self.read(integrity.DIGESTS, slice(None))])

    def read_object(self, index: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Whole-object arrays ``names`` of ``index``, each checked against its digest."""
        digests = self.read(integrity.DIGESTS, index)
        out = {}
        for name in names:
            out[name] = self.read(name, index)
            t0 = time.perf_counter()
            ok = np.array_equal(integrity.array_digest(out[name]),
                                digests[CONTENT_ARRAYS.index(name)])
            self.verify_s += time.perf_counter() - t0
            if not ok:
                self.verify([index], (name,))  # raises with the precise reason
        return out

    @functools.cached_property
    def _rgb_shape(self) -> tuple[int, ...]:
        """(N, V, H, W, 3), read once (opening an array reads its metadata: ~1 ms each time)."""
        return tuple(int(n) for n in self.group["rgb"].shape)

    @property
    def n_objects(self) -> int:
        return self._rgb_shape[0]

    @property
    def n_views(self) -> int:
        return self._rgb_shape[1]

    @property
    def image_size(self) -> int:
        return self._rgb_shape[2]

    @property
    def object_ids(self) -> list[str]:
        return list(self.attrs["object_ids"])

    @property
    def splits(self) -> list[str]:
        return list(self.attrs["splits"])

    @property
    def fingerprint(self) -> str:
        return str(self.attrs.get("fingerprint") or fingerprint_of(self.group))

    def valid_indices(self, split: str | None = None) -> list[int]:
        """Objects written completely (skipped ones excluded), optionally of one split."""
        done = self.group["done"][:].astype(bool)
        return [
            i
            for i in range(self.n_objects)
            if done[i] and (split is None or self.splits[i] == split)
        ]

    def array(self, name: str) -> zarr.Array:
        """The (cached) array handle ``name``; opening one reads its metadata from disk."""
        if name not in self._arrays:
            if name not in self.group:
                raise StoreError(f"{self.path}: no array {name!r} in the render store")
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def read_views(self, name: str, index: int, views: np.ndarray) -> np.ndarray:
        """``array[name][index, views]`` (V', ...) for a list of views, in the given order.

        One read per run of consecutive views (a slice), then stacked: zarr's ``oindex`` on the
        sharded arrays costs several times as much as single-view reads."""
        arr, vs = self.array(name), [int(v) for v in views]
        runs: list[list[int]] = []
        for v in vs:
            if runs and v == runs[-1][1]:
                runs[-1][1] += 1
            else:
                runs.append([v, v + 1])
        parts = [read_checked(arr, (index, slice(a, b)), self.path, name,
                              rerun="the render stage", object_ids=self.attrs["object_ids"])
                 for a, b in runs or [[0, 0]]]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def read(self, name: str, index: Any) -> np.ndarray:
        """``array[name][index]`` with corrupt-chunk errors turned into StoreError."""
        return read_checked(self.array(name), index, self.path, name, rerun="the render stage",
                            object_ids=self.attrs["object_ids"])
