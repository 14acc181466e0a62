"""One writer per store: an exclusive ``flock`` on a sibling ``<store>.lock`` file.

The pipeline stages that write a store or run directory (render, distill-cache, train) hold
``StoreLock(path, stage=...)`` while they write. The lock file lives *next to* the store, never
inside it, because stores are wiped and recreated with ``zarr`` mode ``"w"``.

How it works:

* ``open(<store>.lock, O_RDWR | O_CREAT)`` then ``flock(LOCK_EX | LOCK_NB)``. The kernel drops a
  flock when its holder dies (even by SIGKILL), so a dead holder never blocks anybody: its stale
  record is simply taken over (``StoreLock.took_over_from``).
* The holder writes a one-object JSON record (pid, host, start time, stage, argv, store path) into
  the file and keeps the descriptor open until release.
* Release unlinks the file *while still holding the lock*, then closes it. Another process that
  opened the old file just before the unlink can then win the flock on an inode that no longer
  is the lock file; so after every successful flock we compare ``fstat(fd)`` with
  ``stat(path)`` and, if they differ, close and start again (the standard pattern). A busy
  flock is retried a few times (~40 ms) before refusing, which rides out a holder caught
  between its unlink and close, and a concurrent ``holder()`` probe (a brief shared flock).
* flock may not be shared between hosts on a network filesystem, so a record written by another
  host is not trusted to be dead just because its flock could be taken: it is refused until it is
  older than ``stale_after_s`` (the message says to delete the lock file if that run is dead).
  Records from this host are decided by flock alone.
* Stores on object storage (``s3://...``) cannot be flocked: their lock file is a local file in
  :func:`lock_dir`, keyed on the URL. Such a lock excludes a second writer **on this machine
  only**; two machines writing the same URL are not excluded (run one writer per URL; dask
  workers elsewhere are fine, they write only the objects the locked driver hands out).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from cache.zarr_io import StoreError, is_url

DEFAULT_STALE_AFTER_S = 24 * 3600.0
_MAX_ATTEMPTS = 50
_EMPTY_RECORD_RETRIES = 5  # a new holder writes its record just after winning the flock
_EMPTY_RECORD_WAIT_S = 0.02
_BUSY_RETRIES = 3  # flock attempts before refusing: rides out a releasing holder or a probe
_BUSY_WAIT_S = 0.02


class StoreLocked(StoreError):
    """Another run holds (or may hold) the write lock of a store; the message names it."""


def lock_dir() -> Path:
    """Where the lock files of URL stores live: ``$FNERF_LOCK_DIR``, else
    ``$XDG_CACHE_HOME/fnerf-pipeline/locks`` (``~/.cache/...`` by default)."""
    if os.environ.get("FNERF_LOCK_DIR"):
        return Path(os.environ["FNERF_LOCK_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache, "fnerf-pipeline", "locks")


def lock_path(path: str | Path) -> Path:
    """The lock file of a store or run directory: the sibling ``<path>.lock``; for a URL store
    (``s3://...``, no flock there) a local file in :func:`lock_dir` keyed on the URL, so these
    locks exclude writers on this machine only."""
    if is_url(path):
        url = str(path).rstrip("/")
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in url.rsplit("/", 1)[-1])
        return lock_dir() / f"{name[:80]}-{hashlib.sha256(url.encode()).hexdigest()[:16]}.lock"
    p = Path(path)
    if p.name in ("", ".", ".."):
        p = p.resolve()
    return p.with_name(p.name + ".lock")


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: Any) -> float | None:
    """Epoch seconds of an ISO 8601 time (``Z`` or offset; naive is taken as UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _one_line(text: Any, limit: int = 200) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _short_argv(argv: Any) -> str:
    """The holder's command line for a message: first word shortened to its file name."""
    words = str(argv).split()
    if words and "/" in words[0]:
        words[0] = words[0].rsplit("/", 1)[-1] or words[0]
    return _one_line(" ".join(words))


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_record(raw: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _read_record(fd: int, wait_if_empty: bool = False) -> dict[str, Any] | None:
    """The JSON record in the lock file, or None if empty/unreadable."""
    tries = _EMPTY_RECORD_RETRIES if wait_if_empty else 1
    for i in range(tries):
        try:
            raw = _read_fd(fd)
        except OSError:
            return None
        if raw.strip() or i == tries - 1:
            return _parse_record(raw)
        time.sleep(_EMPTY_RECORD_WAIT_S)
    return None


def _holder_desc(rec: dict[str, Any]) -> str:
    return (
        f"pid {rec.get('pid', '?')} on host {_one_line(rec.get('host', '?'), 80)}, "
        f"started {_one_line(rec.get('started', '?'), 40)}: {_short_argv(rec.get('argv', '?'))}"
    )


def _record_age_s(rec: dict[str, Any], fd: int) -> float:
    """Seconds since the record's start time (the file's mtime if the time is unreadable)."""
    t = _parse_iso(rec.get("started"))
    if t is None:
        try:
            t = os.fstat(fd).st_mtime
        except OSError:
            return 0.0
    return time.time() - t


def _is_foreign_and_fresh(rec: dict[str, Any] | None, fd: int, stale_after_s: float) -> bool:
    if rec is None or "host" not in rec or rec.get("host") == socket.gethostname():
        return False
    return _record_age_s(rec, fd) < stale_after_s


def _unwritable(lock: Path, exc: OSError) -> StoreError:
    reason = exc.strerror or type(exc).__name__
    return StoreError(
        f"{lock}: cannot create the lock file, the folder is not writable ({reason}); "
        "choose another --out"
    )


def _same_file(fd: int, lock: Path) -> bool:
    try:
        st_path = os.stat(lock)
    except FileNotFoundError:
        return False
    st_fd = os.fstat(fd)
    return (st_fd.st_dev, st_fd.st_ino) == (st_path.st_dev, st_path.st_ino)


class StoreLock:
    """Exclusive write lock on a store or run directory: ``with StoreLock(path, stage=...):``.

    Raises StoreLocked if another live run holds it (or a recent record from another host is
    present), StoreError if the lock file cannot be created. After acquiring,
    ``took_over_from`` is the record left by a dead previous holder (or None) and ``record``
    is this holder's own record.
    """

    def __init__(
        self,
        path: str | Path,
        stage: str,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self.path: Path | str = str(path).rstrip("/") if is_url(path) else Path(path)
        self.stage = stage
        self.stale_after_s = float(stale_after_s)
        self.lock_file = lock_path(path)
        self.took_over_from: dict[str, Any] | None = None
        self.record: dict[str, Any] | None = None
        self._fd: int | None = None
        self._owner_pid: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def _refuse_live(self, rec: dict[str, Any] | None) -> StoreLocked:
        if rec is None:
            return StoreLocked(
                f"{self.path}: another run is writing this store (its lock record in "
                f"{self.lock_file} is empty or unreadable); wait for it to finish, "
                "or use another --out"
            )
        stage = _one_line(rec.get("stage", "pipeline"), 40)
        return StoreLocked(
            f"{self.path}: another {stage} run is writing this store ({_holder_desc(rec)}); "
            "wait for it to finish, or use another --out"
        )

    def _refuse_foreign(self, rec: dict[str, Any]) -> StoreLocked:
        stage = _one_line(rec.get("stage", "pipeline"), 40)
        return StoreLocked(
            f"{self.path}: a {stage} run on another host may be writing this store "
            f"({_holder_desc(rec)}); its lock cannot be checked from here. Wait for it to "
            f"finish or use another --out; if that run is dead, delete {self.lock_file}"
        )

    def acquire(self) -> StoreLock:
        """Take the lock or raise StoreLocked / StoreError (always a one-line message)."""
        if self._fd is not None:
            raise StoreError(f"{self.lock_file}: this StoreLock is already held")
        lock = self.lock_file
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(lock, exc) from exc
        busy = 0
        for _ in range(_MAX_ATTEMPTS):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise _unwritable(lock, exc) from exc
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    busy += 1
                    if busy < _BUSY_RETRIES:
                        # Maybe a holder between unlink and close, or a brief holder() probe.
                        os.close(fd)
                        time.sleep(_BUSY_WAIT_S)
                        continue
                    raise self._refuse_live(_read_record(fd, wait_if_empty=True)) from None
                except OSError as exc:
                    raise StoreError(
                        f"{lock}: cannot lock this file ({exc.strerror or exc}); the filesystem "
                        "may not support locking, choose another --out"
                    ) from exc
                if not _same_file(fd, lock):
                    # The previous holder released (unlinked) it between our open and flock.
                    os.close(fd)
                    continue
                old = _read_record(fd)
                if _is_foreign_and_fresh(old, fd, self.stale_after_s):
                    assert old is not None
                    raise self._refuse_foreign(old)
                self._write_record(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            self._fd = fd
            self._owner_pid = os.getpid()
            self.took_over_from = old
            return self
        raise StoreError(f"{lock}: the lock file keeps being replaced; try again")

    def _write_record(self, fd: int) -> None:
        rec = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _now_iso(),
            "stage": self.stage,
            "argv": " ".join(sys.argv),
            "path": self.path if isinstance(self.path, str) else str(self.path.absolute()),
        }
        data = (json.dumps(rec, sort_keys=True) + "\n").encode("utf-8")
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise _unwritable(self.lock_file, exc) from exc
            raise StoreError(
                f"{self.lock_file}: cannot write the lock record ({exc.strerror or exc}); "
                "choose another --out"
            ) from exc
        self.record = rec

    def release(self) -> None:
        """Unlink the lock file (while still holding it), then close it. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Only the acquiring process removes the file (not a forked child), and only if the
            # path is still our inode (someone may have deleted it by hand and re-locked).
            if self._owner_pid == os.getpid() and _same_file(fd, self.lock_file):
                with contextlib.suppress(OSError):
                    os.unlink(self.lock_file)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def holder(path: str | Path, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> dict[str, Any] | None:
    """The record of the run holding ``path``'s lock, or None if nobody does.

    "Holding" means what ``StoreLock`` would refuse on: a live flock, or a recent record from
    another host. A live holder whose record is unreadable gives ``{"unreadable": True}``.
    Never creates or removes the lock file.
    """
    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StoreError(f"{lock}: cannot read the lock file ({exc.strerror or exc})") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_record(fd, wait_if_empty=True) or {"unreadable": True}
        except OSError as exc:
            raise StoreError(f"{lock}: cannot check the lock ({exc.strerror or exc})") from exc
        rec = _read_record(fd)
        return rec if _is_foreign_and_fresh(rec, fd, stale_after_s) else None
    finally:
        os.close(fd)  # also drops our brief shared lock
