"""pipeline/executor.py: in-process task runs and writer records."""

from __future__ import annotations

from pipeline.executor import run_tasks, writer_records


def test_run_tasks_in_process_tags_every_result_with_its_writer():
    out = list(run_tasks(lambda item, k: {"index": item, "v": item * k}, [0, 1, 2, 3], 10))
    assert [r["v"] for r in out] == [0, 10, 20, 30]
    assert len({r["worker"] for r in out}) == 1 and all(r["dask_worker"] is None for r in out)
    rows = writer_records([{**r, "ok": True} for r in out], ["a", "b", "c", "d"])
    assert [row["object_id"] for row in rows] == ["a", "b", "c", "d"]

