"""One task per object through dask, with a progress bar (objects/s, ETA).

- ``workers == 1`` and no scheduler: tasks run in this process, in order (no IPC, lowest
  overhead; GL and torch already use both cores of a small machine).
- ``workers > 1``: a local ``dask.distributed`` cluster of single-threaded worker processes.
- ``scheduler``: the address of an existing ``dask.distributed`` scheduler (its workers must
  import this project and reach the stores: a shared folder or an object-store URL).
Tasks must return plain dicts and never raise for per-object failures (they report them).
Every result gets ``worker`` (``host:pid`` of the process that ran it) and ``dask_worker`` (the
dask worker's address, or None in this process), so a stage can record who wrote each object.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cache.atomic import write_json

#: seconds to wait for a scheduler's first worker before giving up with a clear error
WORKER_WAIT_S = 60.0


def _worker_setup() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def worker_id() -> str:
    """``host:pid`` of this process (the writer recorded per object)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dask_worker_address() -> str | None:
    """This dask worker's address; None outside one (without importing ``distributed``, which
    costs about 2 s: a process that has not imported it is no dask worker)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        return str(distributed.get_worker().address)
    except ValueError:
        return None


def tagged(fn: Callable[..., dict], item: Any, *args: Any) -> dict:
    """``fn(item, *args)`` with ``worker`` and ``dask_worker`` added (see module doc)."""
    result = fn(item, *args)
    if isinstance(result, dict):
        result.setdefault("worker", worker_id())
        result.setdefault("dask_worker", _dask_worker_address())
    return result


def run_tasks(
    fn: Callable[..., dict],
    items: Sequence[Any],
    *args: Any,
    workers: int = 1,
    scheduler: str | None = None,
    desc: str = "objects",
    unit: str = "obj",
) -> Iterator[dict]:
    """Yield ``fn(item, *args)`` for every item as tasks finish, updating a progress bar."""
    bar = tqdm(
        total=len(items), desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=0.5
    )
    try:
        if workers <= 1 and not scheduler:
            for item in items:
                result = tagged(fn, item, *args)
                bar.update(1)
                yield result
            return
        if not items:
            return
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None
        if scheduler:
            client = Client(scheduler)
        else:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = Client(cluster)
        try:
            if scheduler:
                _wait_for_a_worker(client, scheduler)
            client.run(_worker_setup)
            futures = [client.submit(tagged, fn, item, *args, pure=False) for item in items]
            for future in as_completed(futures):
                result = future.result()
                bar.update(1)
                yield result
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    finally:
        bar.close()


def _wait_for_a_worker(client: Any, scheduler: str) -> None:
    """A scheduler without workers would queue the tasks forever: wait, then say so."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        from pipeline.guards import PreflightError

        raise PreflightError(
            f"--scheduler {scheduler}: no dask worker joined within {WORKER_WAIT_S:g} s; start "
            f"one (`dask worker {scheduler}`, run where this project imports)") from None


def writer_records(results: Sequence[dict], object_ids: Sequence[str] | None = None) -> list[dict]:
    """One row per task result: object ``index``, ``object_id``, ``ok``, ``worker`` and
    ``dask_worker`` (written to a stage's ``writers.json``: who wrote each object this run)."""
    return [{"index": int(r["index"]),
             "object_id": r.get("object_id") or (object_ids[int(r["index"])] if object_ids
                                                 else str(r["index"])),
             "ok": bool(r.get("ok")), "worker": r.get("worker"),
             "dask_worker": r.get("dask_worker")} for r in results]


def write_stage_outputs(report_dir: str | Path, results: Sequence[dict], metrics: dict,
                        write_report: Callable[[Path], None]) -> Path:
    """An object stage's outputs in ``report_dir``: ``writers.json`` (who wrote each object),
    the report (``write_report(report_dir / "index.html")``) and ``metrics.json``; returns the
    report's path."""
    report_dir = Path(report_dir)
    write_json(report_dir / "writers.json", writer_records(results))
    report_path = report_dir / "index.html"
    write_report(report_path)
    write_json(report_dir / "metrics.json", metrics)
    return report_path
