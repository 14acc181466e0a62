"""One-writer-per-store locking (cache.store_lock)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cache import store_lock
from cache.store_lock import StoreLock, StoreLocked, holder, lock_path
from cache.zarr_io import StoreError

REPO = Path(__file__).resolve().parents[1]


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_record(lock: Path, **fields: object) -> dict:
    rec = {
        "pid": 424242,
        "host": "other-host",
        "started": _iso(datetime.now(timezone.utc)),
        "stage": "render",
        "argv": "/opt/bin/fnerf-pipeline render --category chair",
        "path": "/elsewhere/chair.zarr",
        **fields,
    }
    lock.write_text(json.dumps(rec))
    return rec


def test_lock_path_is_a_sibling(tmp_path: Path) -> None:
    assert lock_path("data/renders/chair.zarr") == Path("data/renders/chair.zarr.lock")
    assert lock_path("runs/x/") == Path("runs/x.lock")
    assert lock_path(tmp_path / "s.zarr").parent == tmp_path


def test_acquire_writes_record_and_release_removes_it(tmp_path: Path) -> None:
    store = tmp_path / "deep" / "renders" / "chair.zarr"  # parents do not exist yet
    lk = StoreLock(store, stage="render")
    with lk as got:
        assert got is lk and lk.held
        rec = json.loads(lock_path(store).read_text())
        assert rec["pid"] == os.getpid()
        assert rec["host"] == socket.gethostname()
        assert rec["stage"] == "render"
        assert rec["argv"] == " ".join(sys.argv)
        assert rec["path"] == str(store.absolute())
        started = datetime.fromisoformat(rec["started"].replace("Z", "+00:00"))
        assert abs((datetime.now(timezone.utc) - started).total_seconds()) < 60
        assert rec == lk.record
        assert lk.took_over_from is None
        assert holder(store) == rec
        assert not store.exists()  # the lock never creates the store itself
    assert not lk.held
    assert not lock_path(store).exists()
    assert holder(store) is None
    lk.release()  # idempotent


def test_second_lock_in_same_process_refuses(tmp_path: Path) -> None:
    store = tmp_path / "chair.zarr"
    with StoreLock(store, stage="render"):
        before = lock_path(store).read_bytes()
        with pytest.raises(StoreLocked) as ei:
            StoreLock(store, stage="train").acquire()
        msg = str(ei.value)
        assert isinstance(ei.value, StoreError)
        assert "\n" not in msg
        assert msg.startswith(f"{store}: another render run is writing this store")
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in msg
        assert "use another --out" in msg
        assert lock_path(store).read_bytes() == before  # the refused attempt changed nothing
    with StoreLock(store, stage="train") as again:  # free again once released
        assert again.took_over_from is None


def test_live_holder_with_unreadable_record_still_refuses(tmp_path: Path) -> None:
    store = tmp_path / "chair.zarr"
    lock = lock_path(store)
    lock.write_text("{not json")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreLocked, match="empty or unreadable") as ei:
            StoreLock(store, stage="render").acquire()
        assert "\n" not in str(ei.value)
        assert holder(store) == {"unreadable": True}
    finally:
        os.close(fd)


def test_other_process_blocks_until_killed_then_taken_over(tmp_path: Path) -> None:
    store = tmp_path / "runs" / "x"
    lock = lock_path(store)
    code = textwrap.dedent(
        f"""
        import time
        from cache.store_lock import StoreLock
        with StoreLock({str(store)!r}, stage="distill-cache"):
            time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 15
        rec = None
        while time.monotonic() < deadline:
            try:
                rec = json.loads(lock.read_text())
                break
            except (FileNotFoundError, ValueError):
                assert proc.poll() is None, "lock-holding subprocess exited early"
                time.sleep(0.02)
        assert rec is not None and rec["pid"] == proc.pid

        with pytest.raises(StoreLocked) as ei:
            StoreLock(store, stage="train").acquire()
        msg = str(ei.value)
        assert f"pid {proc.pid}" in msg and "another distill-cache run" in msg
        assert "\n" not in msg
        assert holder(store)["pid"] == proc.pid

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert lock.exists()  # SIGKILL left the record behind ...
        assert holder(store) is None  # ... but nobody holds the flock any more

        with StoreLock(store, stage="train") as lk:
            assert lk.took_over_from is not None
            assert lk.took_over_from["pid"] == proc.pid
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert not lock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_recent_foreign_host_record_refuses(tmp_path: Path) -> None:
    store = tmp_path / "chair.zarr"
    lock = lock_path(store)
    _write_record(lock)
    before = lock.read_bytes()
    with pytest.raises(StoreLocked) as ei:
        StoreLock(store, stage="render").acquire()
    msg = str(ei.value)
    assert "\n" not in msg
    assert "pid 424242 on host other-host" in msg
    assert "fnerf-pipeline render --category chair" in msg
    assert f"if that run is dead, delete {lock}" in msg
    assert lock.read_bytes() == before  # not taken over, not removed
    assert holder(store)["host"] == "other-host"


def test_old_foreign_host_record_is_taken_over(tmp_path: Path) -> None:
    store = tmp_path / "chair.zarr"
    lock = lock_path(store)
    old = _write_record(lock, started=_iso(datetime.now(timezone.utc) - timedelta(hours=25)))
    assert holder(store) is None
    with StoreLock(store, stage="render") as lk:
        assert lk.took_over_from == old
        assert json.loads(lock.read_text())["host"] == socket.gethostname()
    # A custom threshold: a 10-minute-old foreign record is stale after 5 minutes.
    rec = _write_record(lock, started=_iso(datetime.now(timezone.utc) - timedelta(minutes=10)))
    with pytest.raises(StoreLocked):
        StoreLock(store, stage="render").acquire()
    with StoreLock(store, stage="render", stale_after_s=300) as lk:
        assert lk.took_over_from == rec


def test_same_host_record_without_flock_is_taken_over(tmp_path: Path) -> None:
    store = tmp_path / "chair.zarr"
    rec = _write_record(lock_path(store), host=socket.gethostname())  # recent, but dead
    with StoreLock(store, stage="render") as lk:
        assert lk.took_over_from == rec
    lock_path(store).write_text("garbage")  # a dead holder's half-written record
    with StoreLock(store, stage="render") as lk:
        assert lk.took_over_from is None
        assert json.loads(lock_path(store).read_text())["pid"] == os.getpid()


def test_unwritable_location_is_a_one_line_store_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    store = afile / "store.zarr"
    with pytest.raises(StoreError) as ei:
        StoreLock(store, stage="render").acquire()
    err = ei.value
    assert not isinstance(err, (StoreLocked, OSError))
    msg = str(err)
    assert "\n" not in msg
    assert str(lock_path(store)) in msg and "not writable" in msg and "another --out" in msg
    assert holder(store) is None  # no lock file can exist there
    with pytest.raises(StoreError):
        with StoreLock(afile / "sub" / "store.zarr", stage="train"):
            pass


def test_acquire_retries_when_lock_file_replaced_before_flock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: a previous holder unlinks the file between our open() and our flock()."""
    store = tmp_path / "chair.zarr"
    lock = lock_path(store)
    real_flock = fcntl.flock
    calls = {"n": 0}

    def racing_flock(fd: int, op: int) -> None:
        calls["n"] += 1
        real_flock(fd, op)
        if calls["n"] == 1:  # our first flock wins, but on an inode that is then unlinked
            os.unlink(lock)
            lock.write_text("")  # and a new lock file appears at the path

    monkeypatch.setattr(store_lock.fcntl, "flock", racing_flock)
    lk = StoreLock(store, stage="render").acquire()
    monkeypatch.undo()
    try:
        assert calls["n"] >= 2
        assert lk._fd is not None
        assert os.fstat(lk._fd).st_ino == os.stat(lock).st_ino
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(StoreLocked):  # the file at the path really is locked
            StoreLock(store, stage="train").acquire()
    finally:
        lk.release()
    assert not lock.exists()


def test_release_does_not_remove_a_newer_holders_file(tmp_path: Path) -> None:
    store = tmp_path / "chair.zarr"
    lock = lock_path(store)
    first = StoreLock(store, stage="render").acquire()
    try:
        lock.unlink()  # someone deleted the lock file by hand ...
        second = StoreLock(store, stage="train").acquire()  # ... and a new run locked it
    finally:
        first.release()
    try:
        assert lock.exists()
        assert json.loads(lock.read_text())["stage"] == "train"
        with pytest.raises(StoreLocked, match="another train run"):
            StoreLock(store, stage="render").acquire()
    finally:
        second.release()
    assert not lock.exists()
