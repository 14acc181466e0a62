"""Small Zarr v3 helpers shared by the render and feature stores, and the path layer that lets
a store live at a local path or an fsspec URL (``s3://bucket/prefix/chair.zarr``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec


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


#: zarr settings for writing whole shards (measured, 50 x 128 x 128 uint8 views, zarr 3.1):
#: the default pipeline (batches of 1 chunk, each checked for all-fill first) takes 24 ms per
#: object shard; batches of 64 chunks with no empty-chunk check take 9 ms. Stored values, and
#: so digests and fingerprints, are the same; an all-fill view is stored instead of omitted.
WHOLE_SHARD_WRITES = {"codec_pipeline.batch_size": 64, "array.write_empty_chunks": True}


def whole_shard_writes() -> Any:
    """Context manager: :data:`WHOLE_SHARD_WRITES` for the writes inside it."""
    return zarr.config.set(WHOLE_SHARD_WRITES)


@dataclass(frozen=True)
class ObjectEncoding:
    """How one object's block of an array made by :func:`create_object_array` is stored: one
    shard of per-view chunks (``sharded``) or one plain chunk, each chunk the raw C-order bytes
    compressed by ``zstd`` (a numcodecs ``Zstd``: its level and checksum; the writes go through
    :func:`_zstd_compressor`, the same frames), under ``prefix`` + the chunk key."""

    prefix: str
    sharded: bool
    zstd: Any
    dtype: np.dtype
    metadata: Any

    def key(self, index: int) -> str:
        """Store key of object ``index``'s shard (or chunk)."""
        coords = (index,) + (0,) * (len(self.metadata.shape) - 1)
        return self.prefix + self.metadata.encode_chunk_key(coords)


def object_encoding(array: zarr.Array) -> ObjectEncoding | None:
    """The :class:`ObjectEncoding` of ``array`` when it has exactly the layout
    :func:`create_object_array` makes (one shard or chunk per object; bytes + zstd codecs; a
    crc32c shard index at the end; a little-endian or one-byte numeric dtype), else None."""
    meta = array.metadata
    dtype = np.dtype(array.dtype)
    if getattr(meta, "zarr_format", None) != 3 or dtype.kind not in "biuf" or (
            dtype.itemsize > 1 and dtype.byteorder not in ("<", "=")) or not np.little_endian:
        return None
    per_object = tuple(meta.shape[1:])
    if tuple(getattr(meta.chunk_grid, "chunk_shape", ())) != (1, *per_object):
        return None

    def plain(codecs: tuple) -> ZstdCodec | None:
        if (len(codecs) == 2 and isinstance(codecs[0], BytesCodec)
                and (dtype.itemsize == 1 or _is_little(codecs[0]))
                and isinstance(codecs[1], ZstdCodec)):
            return codecs[1]
        return None

    codecs = tuple(meta.codecs)
    sharded = len(codecs) == 1 and isinstance(codecs[0], ShardingCodec)
    if sharded:
        inner = codecs[0]
        index_codecs = tuple(inner.index_codecs)
        if (not per_object or inner.index_location.value != "end"
                or tuple(inner.chunk_shape) != (1, 1, *per_object[1:])
                or len(index_codecs) != 2 or not isinstance(index_codecs[0], BytesCodec)
                or not _is_little(index_codecs[0])
                or not isinstance(index_codecs[1], Crc32cCodec)):
            return None
        zstd = plain(tuple(inner.codecs))
    else:
        zstd = plain(codecs)
    if zstd is None:
        return None
    from numcodecs import Zstd

    path = array.store_path.path
    return ObjectEncoding(f"{path}/" if path else "", sharded,
                          Zstd(level=zstd.level, checksum=zstd.checksum), dtype, meta)


def _is_little(codec: BytesCodec) -> bool:
    return codec.endian is not None and codec.endian.value == "little"


def encode_object(encoding: ObjectEncoding, value: np.ndarray) -> bytes:
    """The stored bytes of one object's block ``value`` (the array's per-object shape and
    dtype): the same bytes zarr writes under :func:`whole_shard_writes` (tested). A shard is
    the zstd chunks of the views in order, then the index, (views, 2) little-endian uint64
    (offset, length), then its crc32c (little-endian uint32)."""
    import google_crc32c

    value = np.ascontiguousarray(value, dtype=encoding.dtype)
    compress = _zstd_compressor(encoding.zstd.level, encoding.zstd.checksum).compress
    if not encoding.sharded:
        return compress(value)
    parts = [compress(view) for view in value]
    lengths = np.array([len(p) for p in parts], np.uint64)
    offsets = np.cumsum(lengths) - lengths
    index = np.stack([offsets, lengths], axis=-1).astype("<u8").tobytes()
    crc = np.array([google_crc32c.value(index)], "<u4").tobytes()
    return b"".join(parts) + index + crc


_THREAD_COMPRESSORS = threading.local()


def _zstd_compressor(level: int, checksum: bool) -> Any:
    """This thread's reusable ``zstandard.ZstdCompressor`` (one zstd frame per call, with the
    content size, and the checksum if asked): the frames numcodecs' ``Zstd`` writes, without
    its new compression context per chunk (measured: 51 -> 12 us for an empty 64 KB view,
    84 -> 58 us for a typical RGB view). The bytes are numcodecs' where both bundle the same
    libzstd (pyproject pins zstandard 0.23.0: 1.5.6, as numcodecs 0.16); another version
    writes other valid frames of the same values. Compressors are not thread-safe, hence one
    per thread.
    """
    import zstandard

    cache = _THREAD_COMPRESSORS.__dict__
    key = (level, bool(checksum))
    if key not in cache:
        cache[key] = zstandard.ZstdCompressor(level=level, write_checksum=bool(checksum),
                                              write_content_size=True)
    return cache[key]


def read_object(array: zarr.Array, index: int) -> np.ndarray:
    """``array[index]``, one object's whole block. Arrays with an :func:`object_encoding` are
    decoded here from one get of the shard (the same values as zarr, tested): its crc32c
    index is checked and every chunk's zstd frame checksum; a failure raises ValueError.
    Others are read through zarr."""
    encoding = object_encoding(array)
    if encoding is None or 0 in array.shape[1:] or not 0 <= index < array.shape[0]:
        return array[index]
    import google_crc32c
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    shape, dtype = tuple(array.shape[1:]), encoding.dtype
    found = sync(array.store_path.store.get(encoding.key(int(index)),
                                            prototype=default_buffer_prototype()))
    if found is None:  # never written: the fill value, as zarr reads it
        return np.full(shape, array.fill_value, dtype)
    raw = memoryview(found.to_bytes())
    if not encoding.sharded:
        return np.frombuffer(_decode(encoding, raw, "chunk"), dtype).reshape(shape).copy()
    n_index = shape[0] * 16
    body = len(raw) - n_index - 4
    if body < 0:
        raise ValueError(f"shard of {len(raw)} bytes is shorter than its index")
    index_bytes = raw[body : body + n_index]
    if google_crc32c.value(bytes(index_bytes)) != int.from_bytes(raw[body + n_index :],
                                                                 "little"):
        raise ValueError("shard index fails its crc32c checksum")
    offsets = np.frombuffer(index_bytes, "<u8").reshape(shape[0], 2)
    out = np.empty(shape, dtype)
    for view, (offset, length) in enumerate(offsets.tolist()):
        if offset == _MISSING_CHUNK:
            out[view] = array.fill_value
        elif offset + length > body:
            raise ValueError(f"shard chunk {view} runs past the end of the data")
        else:
            chunk = _decode(encoding, raw[offset : offset + length], f"shard chunk {view}")
            out[view] = np.frombuffer(chunk, dtype).reshape(shape[1:])
    return out


def _decode(encoding: ObjectEncoding, data: memoryview, what: str) -> bytes:
    """zstd-decode one chunk (its frame checksum checked); ValueError naming it if it fails."""
    try:
        return encoding.zstd.decode(data)
    except Exception as exc:  # numcodecs raises RuntimeError for a bad frame
        raise ValueError(f"{what} fails to decode ({type(exc).__name__}: {exc})") from exc


_MISSING_CHUNK = 2**64 - 1  # a shard index entry (offset and length) for an absent chunk


def write_objects(arrays: Mapping[str, zarr.Array], index: int,
                  values: Mapping[str, np.ndarray | Future], pool: Executor | None = None
                  ) -> None:
    """``arrays[name][index] = values[name]`` for every name (a value may be a Future of
    one, resolved when its array's turn comes, in ``arrays`` order). Arrays with an
    :func:`object_encoding` are encoded here, one pass per object, and stored in one batch of
    concurrent puts; others go through zarr. Measured (50 x 128 x 128 views, zarr 3.1): zarr's
    own pipeline spends about 0.4 ms per chunk, 20 ms per per-view array and 2 ms per tiny one;
    encoded here the stored bytes are the same. With ``pool`` the arrays are encoded on its
    threads (zstd releases the GIL), else in this thread."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    encoded = []
    with whole_shard_writes():
        for name, array in arrays.items():
            value = values[name]
            value = np.asarray(value.result() if isinstance(value, Future) else value)
            encoding = object_encoding(array)
            if (encoding is None or tuple(value.shape) != tuple(array.shape[1:])
                    or 0 in value.shape):
                array[index] = value
                continue
            encoded.append((array.store_path.store, encoding.key(index),
                            pool.submit(encode_object, encoding, value) if pool is not None
                            else encode_object(encoding, value)))
    puts = [(store, key, data.result() if isinstance(data, Future) else data)
            for store, key, data in encoded]
    if puts:
        buffer = default_buffer_prototype().buffer

        async def put_all() -> None:
            await asyncio.gather(*(store.set(key, buffer.from_bytes(data))
                                   for store, key, data in puts))

        sync(put_all())


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
    """Create the store at ``path`` whole or not at all (callers hold its writer lock).

    Local paths: ``build`` fills a sibling ``<path>.creating`` folder (arrays and attrs), which
    then replaces ``path`` by renames; a run killed meanwhile leaves only the sibling, removed
    by the next creation. URLs (object stores have no rename): a ``<path>.creating`` marker
    object is written first, then ``path`` is cleared and built in place, and the marker is
    deleted last; a run killed meanwhile leaves the marker, so :func:`half_made` is true:
    readers refuse the store and the next creation rebuilds it."""
    if is_url(path):
        marker = f"{_strip(path)}{CREATING_SUFFIX}"
        fs, root = _fs(marker)
        fs.pipe_file(root, canonical_json({"pid": os.getpid(), "host": socket.gethostname(),
                                           "started": time.time()}).encode())
        remove(path)
        build(zarr.open_group(_strip(path), mode="w", zarr_format=3))
        remove(marker)
        return
    path = Path(path)
    tmp, old = Path(f"{path}{CREATING_SUFFIX}"), Path(f"{path}.replaced")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    build(zarr.open_group(str(tmp), mode="w", zarr_format=3))
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a Zarr group (a local path or an fsspec URL such as ``s3://bucket/x.zarr``),
    turning library errors into a StoreError that names the path."""
    try:
        return zarr.open_group(_strip(path) if is_url(path) else str(path), mode=mode)
    except Exception as exc:
        raise StoreError(
            f"{path}: not a readable Zarr store ({type(exc).__name__}: {exc}); "
            "delete it and re-run the stage that writes it"
        ) from exc


# --- paths and URLs ---------------------------------------------------------------------------
# A store path is a local path or an fsspec URL (``s3://bucket/prefix/chair.zarr``; s3fs reads
# credentials and the endpoint from the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_ENDPOINT_URL or FSSPEC_S3_ENDPOINT_URL). These helpers work on both.

CREATING_SUFFIX = ".creating"


def is_url(path: str | Path) -> bool:
    """Whether ``path`` is a URL with a scheme other than ``file://`` (e.g. ``s3://b/x``)."""
    if isinstance(path, Path):
        return False
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and scheme.replace("+", "").isalnum() and scheme.lower() != "file"


def _strip(path: str | Path) -> str:
    return str(path).rstrip("/")


def _fs(path: str | Path, **options: Any) -> tuple[Any, str]:
    """The fsspec filesystem of URL ``path`` and the path inside it (listing cache cleared, so
    other processes' writes are seen)."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(_strip(path), **options)
    fs.invalidate_cache()
    return fs, root


def join(path: str | Path, *parts: str) -> str:
    """``path/part/...`` for a local path or a URL."""
    if is_url(path):
        return "/".join([_strip(path), *parts])
    return str(Path(path, *parts))


def exists(path: str | Path) -> bool:
    """A file or folder at a local path; an object or a non-empty prefix at a URL."""
    if not is_url(path):
        return Path(path).exists()
    fs, root = _fs(path)
    return bool(fs.exists(root))


def is_nonempty(path: str | Path) -> bool:
    """Something at ``path``: a file, a folder with entries, an object or a non-empty prefix."""
    if not is_url(path):
        p = Path(path)
        return p.is_file() or (p.is_dir() and any(p.iterdir()))
    fs, root = _fs(path)
    return bool(fs.exists(root)) and (fs.isfile(root) or bool(fs.ls(root, detail=False)))


def half_made(path: str | Path) -> bool:
    """A URL store whose creation never finished (its ``<path>.creating`` marker is there).
    Always False for local stores, which appear by rename only when whole."""
    return is_url(path) and exists(f"{_strip(path)}{CREATING_SUFFIX}")


def store_present(path: str | Path) -> bool:
    """A store (finished creating) is at ``path``: something there and not :func:`half_made`."""
    return is_nonempty(path) and not half_made(path)


def missing_note(path: str | Path) -> str:
    """``""``, or why the store at ``path`` is not usable although something is there."""
    if half_made(path):
        return (f" (only a half-made store: a run was killed while creating it; the marker "
                f"{_strip(path)}{CREATING_SUFFIX} is left)")
    return ""


def remove(path: str | Path) -> None:
    """Delete a file, folder, object or prefix; nothing there is fine."""
    if not is_url(path):
        p = Path(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        return
    fs, root = _fs(path)
    try:
        if fs.isfile(root):
            fs.rm_file(root)
        elif fs.exists(root):
            fs.rm(root, recursive=True)
    except FileNotFoundError:
        pass


def rename(src: str | Path, dst: str | Path) -> None:
    """Move ``src`` to ``dst``: a rename locally; on object stores a copy of every object, then
    a delete (not atomic: callers must not rely on it to publish a store)."""
    if is_url(src) != is_url(dst):
        raise ValueError(f"cannot move {src} to {dst}: one is a URL, the other is not")
    if not is_url(src):
        Path(src).rename(dst)
        return
    fs, root = _fs(src)
    target = _fs(dst)[1]
    if fs.isfile(root):
        fs.copy(root, target)
    else:
        for key in fs.find(root):
            fs.copy(key, target + key[len(root):])
    remove(src)


def du(path: str | Path) -> int:
    """Bytes stored under ``path`` (all files, or all objects of the prefix)."""
    if not is_url(path):
        p = Path(path)
        return p.stat().st_size if p.is_file() else sum(
            f.stat().st_size for f in p.rglob("*") if f.is_file())
    fs, root = _fs(path)
    return int(fs.du(root, total=True)) if fs.exists(root) else 0


def url_write_problem(path: str | Path, timeout_s: float = 5.0) -> str | None:
    """None if an object can be written and deleted beside URL ``path`` (a tiny probe
    ``<path>.write-probe-<random>``), else the reason with the settings to check."""
    options: dict[str, Any] = {}
    if str(path).partition("://")[0].lower() in ("s3", "s3a"):  # fail fast, no retry storm
        options = {"skip_instance_cache": True, "config_kwargs": {
            "connect_timeout": timeout_s, "read_timeout": timeout_s,
            "retries": {"max_attempts": 1}}}
    probe = f"{_strip(path)}.write-probe-{uuid.uuid4().hex[:12]}"
    try:
        fs, root = _fs(probe, **options)
        fs.pipe_file(root, b"")
        fs.rm_file(root)
    except Exception as exc:  # noqa: BLE001 - any failure of the probe is the answer
        return (f"cannot write to the object store ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:160]}); check that the bucket exists, the "
                "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the endpoint "
                "(AWS_ENDPOINT_URL)")
    return None


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
        if orthogonal:
            return array.oindex[selection]
        if isinstance(selection, int | np.integer):  # a whole object: one get, decoded here
            return read_object(array, int(selection))
        return array[selection]
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
