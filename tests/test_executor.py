"""pipeline/executor.py: in-process task runs and writer records."""

from __future__ import annotations

import subprocess
import sys

from pipeline.executor import run_tasks, writer_records
from tests.conftest import REPO


def test_run_tasks_in_process_tags_every_result_with_its_writer():
    out = list(run_tasks(lambda item, k: {"index": item, "v": item * k}, [0, 1, 2, 3], 10))
    assert [r["v"] for r in out] == [0, 10, 20, 30]
    assert len({r["worker"] for r in out}) == 1 and all(r["dask_worker"] is None for r in out)
    rows = writer_records([{**r, "ok": True} for r in out], ["a", "b", "c", "d"])
    assert [row["object_id"] for row in rows] == ["a", "b", "c", "d"]



def test_an_in_process_run_does_not_import_distributed():
    """Tagging a result outside dask must not import ``distributed`` (about 2 s a process)."""
    code = ("import sys; from pipeline.executor import run_tasks; "
            "list(run_tasks(lambda item: {'i': item}, [0, 1])); "
            "print('distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
