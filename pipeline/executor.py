"""One task per object through dask, with a progress bar (objects/s, ETA).

- ``workers == 1`` and no scheduler: tasks run in this process, in order (no IPC, lowest
  overhead; GL and torch already use both cores of a small machine).
- ``workers > 1``: a local ``dask.distributed`` cluster of single-threaded worker processes.
- ``scheduler``: the address of an existing ``dask.distributed`` scheduler.
Tasks must return plain dicts and never raise for per-object failures (they report them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tqdm import tqdm


def _worker_setup() -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


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
                result = fn(item, *args)
                bar.update(1)
                yield result
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
            client.run(_worker_setup)
            futures = [client.submit(fn, item, *args, pure=False) for item in items]
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
