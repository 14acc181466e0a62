"""Checks a stage runs before it writes anything, and the one-line forms of OS failures.

- :func:`check_range`: an integer setting inside its allowed range, named by its CLI flag;
- :func:`check_writable`: the target of ``--out`` (or any output) can be written;
- :func:`check_scheduler`: a dask scheduler answers within a short timeout;
- :func:`redo_damaged`: a resumed store's done objects are re-verified, damaged ones reset;
- :func:`os_error_message`: disk full, read-only, permission errors as one line naming the path.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cache.zarr_io import StoreError, is_url, url_write_problem

#: render sizes: the encoders' deepest map (stride 32) needs at least one cell, and a size that
#: is a multiple of 16 keeps the stride-16 feature grids aligned with the image
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, IMAGE_SIZE_MULTIPLE = 32, 1024, 16


class PreflightError(ValueError):
    """A setting or an output location is unusable; raised before any store is created."""


def check_range(flag: str, value: int, minimum: int, maximum: int | None = None,
                why: str = "") -> None:
    """``minimum <= value <= maximum`` or a PreflightError naming ``flag`` and the range."""
    if value < minimum or (maximum is not None and value > maximum):
        span = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise PreflightError(f"{flag} {value}: must be {span}{f' ({why})' if why else ''}")


def check_image_size(flag: str, size: int) -> None:
    """A render size the encoders and teacher grids allow (see ``MIN_IMAGE_SIZE``)."""
    check_range(flag, size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE,
                "the encoder's deepest feature map needs at least one cell")
    if size % IMAGE_SIZE_MULTIPLE:
        raise PreflightError(f"{flag} {size}: must be a multiple of {IMAGE_SIZE_MULTIPLE} (the "
                             f"encoder's stride-16 grid must tile the image), e.g. "
                             f"{max(MIN_IMAGE_SIZE, size // 16 * 16)}")


def check_writable(path: str | Path, flag: str) -> None:
    """Create and delete a probe file in ``path`` (or its nearest existing parent), so a
    read-only or full location fails here, before a store is created, naming ``flag``. For a
    URL store (``s3://...``) a tiny probe object is written and deleted beside it instead."""
    if is_url(path):
        problem = url_write_problem(path)
        if problem:
            raise PreflightError(f"{flag} {path}: {problem}")
        return
    target = Path(path)
    probe_dir = target if target.is_dir() else target.parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise PreflightError(f"{flag} {path}: {probe_dir} is a file, not a folder; choose "
                             f"another {flag}")
    try:
        fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=".fnerf-write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PreflightError(os_error_message(exc, flag, path)) from None


def check_scheduler(address: str, timeout_s: float = 3.0) -> None:
    """A TCP connection to a ``tcp://host:port`` dask scheduler within ``timeout_s``."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if parsed.scheme not in ("tcp", "tls") or not parsed.hostname or not parsed.port:
        raise PreflightError(f"--scheduler {address}: expected tcp://HOST:PORT")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise PreflightError(
            f"--scheduler {address}: no dask scheduler answered within {timeout_s:g} s "
            f"({exc.strerror or type(exc).__name__}); start one (`dask scheduler`) and pass its "
            "address, or drop --scheduler to run locally") from None
    if parsed.scheme == "tcp":
        problem = _dask_identity_problem(f"tcp://{parsed.hostname}:{parsed.port}", timeout_s)
        if problem:
            raise PreflightError(
                f"--scheduler {address}: something listens there but no dask scheduler answered "
                f"within {timeout_s:g} s ({problem}); check the address (`dask scheduler` prints "
                "it), or drop --scheduler to run locally")


def _dask_identity_problem(address: str, timeout_s: float) -> str | None:
    """None if ``address`` answers dask's ``identity`` call as a scheduler within
    ``timeout_s`` (a TCP connect alone also succeeds on proxies and other servers)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    async def identity() -> object:
        from distributed.comm import connect

        comm = await connect(address, timeout=timeout_s)
        try:
            await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout_s)
            return await asyncio.wait_for(comm.read(), timeout_s)
        finally:
            comm.abort()

    pool = ThreadPoolExecutor(1)  # its own event loop, whatever the caller runs
    try:
        reply = pool.submit(asyncio.run, identity()).result(timeout=timeout_s + 1)
    except FutureTimeout:
        return "no reply"
    except Exception as exc:  # noqa: BLE001 - garbage fails in any way (even MemoryError)
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:80]}"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        return f"the reply is not a scheduler's: {str(reply)[:80]}"
    return None


def os_error_message(exc: OSError, flag: str = "", path: str | Path | None = None) -> str:
    """One line for an OS failure: the path, what happened and the fix (``flag``: the option
    that chose the path, e.g. ``--out``)."""
    where = path or exc.filename or "(unknown path)"
    other = f"another {flag}" if flag else "another location"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{where}: no space left on the device; free some space or choose {other}, "
                "then re-run (finished objects are kept and resumed)")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{where}: cannot write there ({exc.strerror}); choose {other}"
    return f"{where}: {exc.strerror or exc} (errno {exc.errno})"


def is_fatal_os_error(exc: BaseException) -> bool:
    """OS failures no other object would escape (full disk, read-only or forbidden target)."""
    return isinstance(exc, OSError) and exc.errno in (
        errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def redo_damaged(writer: Any, done: list[int]) -> set[int]:
    """Re-verify a resumed store's done objects; damaged ones are reset (and named on stderr)
    so this run redoes them. ``writer`` has ``damaged(indices)`` and ``reset(indices)``.
    Returns the reset indices."""
    problems = writer.damaged(done)
    for p in problems:
        print(f"warning: {writer.path}: {p.line()}; redoing it", file=sys.stderr)
    bad = sorted({p.index for p in problems})
    if bad:
        writer.reset(bad)
    return set(bad)


def require_some(n_done: int, what: str, failures: dict[str, str]) -> None:
    """A stage that ends with 0 usable objects never succeeds."""
    if n_done == 0:
        reasons = summarize_failures(failures)
        raise StoreError(f"0 {what} were written{': ' + reasons if reasons else ''}")


def stop_on_failure(stage: str, fatal: str | None, n_new: int, n_done: int, category: str,
                    failures: dict[str, str], report_path: str | Path) -> None:
    """End an object stage with one error: a fatal failure (naming how many new objects were
    written and the report), or no usable object at all (:func:`require_some`)."""
    if fatal:
        raise StoreError(f"{stage} stopped after {n_new} new object(s): {fatal} "
                         f"(report: {report_path})")
    require_some(n_done, f"{category} objects", failures)


def summarize_failures(failures: dict[str, str], limit: int = 3) -> str:
    """Identical reasons once each, with their count and a few object ids."""
    by_reason: dict[str, list[str]] = {}
    for oid, reason in failures.items():
        by_reason.setdefault(reason, []).append(oid)
    parts = []
    for reason, ids in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")
        parts.append(f"{len(ids)} x {reason} [{shown}]" if len(ids) > 1 else f"{ids[0]}: {reason}")
    return "; ".join(parts)
