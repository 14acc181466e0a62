"""The command line as a user drives it (real procedural shapes, real renders)."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
from click.testing import CliRunner

from cache.render_store import RenderStore
from pipeline.cli import main
from tests.conftest import REPO


def render_args(tmp_path, *extra: str) -> list[str]:
    return ["render", "--category", "chair", "--objects", "3", "--views", "5", "--size", "64",
            "--points", "128", "--out", str(tmp_path / "chair.zarr"),
            "--report-dir", str(tmp_path / "report"), *extra]


def test_render_writes_store_report_and_metrics(tmp_path):
    result = CliRunner().invoke(main, render_args(tmp_path))
    assert result.exit_code == 0, result.output
    store = RenderStore(tmp_path / "chair.zarr")
    assert store.read("rgb", 0).shape == (5, 64, 64, 3)
    assert store.attrs["renderer"].startswith("pyrender")
    # procedural chairs carry real labels and keypoints
    part = store.read("part", 0)
    assert {0, 1, 2} <= set(np.unique(part)) - {-1}
    assert (store.read("kp_id", 0) >= 0).sum() >= 10
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Contact sheet" in html and "data:image/png;base64," in html and "http" not in html
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["objects"] == 3 and metrics["failures"] == 0 and metrics["views_per_s"] > 0


def test_unknown_category_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["render", "--category", "spaceship",
                                       "--out", str(tmp_path / "x.zarr")])
    assert result.exit_code != 0
    assert "unknown category 'spaceship'" in result.output and "chair (03001627)" in result.output
    assert "Traceback" not in result.output


def test_missing_shapenet_root_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, render_args(tmp_path, "--source", "shapenet",
                                                  "--shapenet-root", str(tmp_path / "nope")))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert str(tmp_path / "nope") in result.output


def test_killed_render_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "chair.zarr"
    args = [sys.executable, "-m", "pipeline.cli", "render", "--category", "chair",
            "--objects", "12", "--views", "20", "--size", "64", "--renderer", "raycast",
            "--out", str(out), "--report-dir", str(tmp_path / "report")]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            done = int(RenderStore(out, allow_incomplete=True).group["done"][:].sum())
        except Exception:
            continue
        if done >= 2:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert 2 <= done < 12, f"could not interrupt the run (done={done})"
    partial = RenderStore(out, allow_incomplete=True)
    assert not partial.attrs["complete"]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["objects_resumed"] >= 2 and metrics["objects"] == 12
    assert RenderStore(out).valid_indices() == list(range(12))
