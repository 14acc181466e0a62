"""The committed dvc.lock matches the committed code, params and commands.

On a fresh clone the data outputs are absent (they are not pushed anywhere), so only the stage
inputs that git tracks count: code folders and files, params.yaml and the commands. A failure
lists the stale stages; the fix is `dvc repro` on the default params and committing dvc.lock.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DVC = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))


def git_tracked(path: str) -> bool:
    out = subprocess.run(["git", "ls-files", "--", path], cwd=REPO, capture_output=True,
                         text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


def stale_inputs(status: dict) -> list[str]:
    """``stage: what changed`` for every tracked input that differs from dvc.lock."""
    out = []
    for stage, entries in status.items():
        for entry in entries:
            if entry == "changed command":
                out.append(f"{stage}: command")
            elif isinstance(entry, dict):
                for dep, state in entry.get("changed deps", {}).items():
                    if dep == "params.yaml" or git_tracked(dep):
                        out.append(f"{stage}: {dep} {state}")
    return out


def test_dvc_lock_is_in_sync_with_the_code():
    if not Path(DVC).exists() or not (REPO / "dvc.lock").exists() or not (REPO / ".git").exists():
        pytest.skip("needs dvc, a git checkout and dvc.lock")
    result = subprocess.run([DVC, "status", "--json"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    stale = stale_inputs(json.loads(result.stdout or "{}"))
    assert not stale, ("dvc.lock predates these inputs; run `dvc repro` and commit dvc.lock: "
                       + "; ".join(stale))


def test_stale_inputs_reads_dvc_status_json():
    status = {"render@chair": [{"changed deps": {"renderers": "modified",
                                                 "data/renders/chair.zarr": "deleted"}}],
              "evaluate@chair": ["changed command", {"changed outs": {"x": "deleted"}}]}
    assert stale_inputs(status) == ["render@chair: renderers modified", "evaluate@chair: command"]
