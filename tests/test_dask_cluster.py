"""render and distill-cache through a real ``dask.distributed`` cluster on localhost.

A scheduler and two single-threaded worker processes are started as subprocesses (the venv's
``dask`` entry point, run from the repository so the workers import the project); the stages
run through ``--scheduler`` and must give the same content digests and fingerprints as the
session's in-process run (``tiny_stores``), with every object written by exactly one worker.
An unreachable scheduler is refused within the 3 s preflight timeout, before anything is
written.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore
from pipeline.cli import main
from tests.conftest import REPO
from tests.test_faults import distill_args, render_args

N_WORKERS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dask(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``dask ARGS`` from the repository root in its own process group (so its nanny and
    worker children can be stopped together); output goes to ``log``."""
    exe = Path(sys.executable).with_name("dask")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dask"]
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    with open(log, "wb") as out:
        return subprocess.Popen([*cmd, *args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (the CLI and its children), SIGKILL if stuck."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _s3_server(logs: Path) -> tuple[subprocess.Popen | None, dict[str, str]]:
    """A moto S3 server and the AWS_* environment that points at it (dummy credentials that
    only it accepts), or (None, {}) without moto[server] / s3fs."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        return None, {}
    port = free_port()
    with open(logs / "moto.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "moto-dummy-key", "AWS_SECRET_ACCESS_KEY": "moto-dummy-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(logs / "no-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(logs / "no-credentials")}
    return proc, env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict]:
    """``{"address": tcp://127.0.0.1:PORT, "workers": {worker address, ...}, "s3_env": {...}}``
    of a running scheduler with two ``--nthreads 1 --nworkers 1`` workers (whose environment
    points at a local moto S3 server when moto is installed: ``s3_env``); stopped at the end."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-logs")
    address = f"tcp://127.0.0.1:{free_port()}"
    moto_proc, s3_env = _s3_server(logs)
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                   "--no-dashboard", log=logs / "scheduler.log")]
    try:
        client = None
        deadline = time.monotonic() + 60
        while client is None:
            try:
                client = Client(address, timeout=5)
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    pytest.fail("dask scheduler did not start: "
                                + (logs / "scheduler.log").read_text()[-2000:])
                time.sleep(0.5)
        for k in range(N_WORKERS):
            procs.append(_dask("worker", address, "--nthreads", "1", "--nworkers", "1",
                               "--no-dashboard", "--local-directory", str(logs / f"w{k}"),
                               log=logs / f"worker{k}.log", env=s3_env))
        try:
            client.wait_for_workers(N_WORKERS, timeout=120)
        except TimeoutError:
            pytest.fail("dask workers did not join: "
                        + (logs / "worker0.log").read_text()[-2000:])
        workers = set(client.scheduler_info()["workers"])
        client.close()
        yield {"address": address, "workers": workers, "s3_env": s3_env}
    finally:
        for proc in reversed(procs):
            _stop(proc)
        if moto_proc is not None:
            moto_proc.terminate()
            moto_proc.wait(timeout=10)


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"a traceback, not a clear error: {result.exception!r}"
    return result


def assert_one_writer_per_object(report_dir: Path, n_objects: int, workers: set[str]) -> None:
    """writers.json: every object once, each by one dask worker process (never this one), and
    both workers took part."""
    rows = json.loads((report_dir / "writers.json").read_text())
    indices = [r["index"] for r in rows]
    assert sorted(indices) == list(range(n_objects)), indices  # no index written twice
    assert all(r["ok"] for r in rows)
    assert {r["dask_worker"] for r in rows} <= workers
    pids = {r["worker"] for r in rows}
    assert f"{socket.gethostname()}:{os.getpid()}" not in pids  # not written by the client
    assert len({r["dask_worker"] for r in rows}) == N_WORKERS == len(pids), rows
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["writer_processes"] == N_WORKERS


def test_render_and_distill_on_a_cluster_equal_the_local_run(cluster, tiny_stores, tmp_path):
    local_r, local_f = RenderStore(tiny_stores[0]), FeatureStore(tiny_stores[1])
    out = tmp_path / "chair.zarr"
    result = cli(*render_args(out, tmp_path, "--scheduler", cluster["address"]))
    assert result.exit_code == 0, result.output
    store = RenderStore(out)
    np.testing.assert_array_equal(store.read("digests", slice(None)),
                                  local_r.read("digests", slice(None)))
    assert store.fingerprint == local_r.fingerprint
    assert_one_writer_per_object(tmp_path / "rep-render", store.n_objects, cluster["workers"])

    feats = tmp_path / "f.zarr"
    result = cli(*distill_args(out, feats, tmp_path, "--scheduler", cluster["address"]))
    assert result.exit_code == 0, result.output
    fstore = FeatureStore(feats, renders=store)
    np.testing.assert_array_equal(fstore.group["digests"][:], local_f.group["digests"][:])
    assert fstore.fingerprint == local_f.fingerprint
    assert_one_writer_per_object(tmp_path / "rep-distill", store.n_objects, cluster["workers"])


def test_cluster_workers_write_an_s3_store_equal_to_the_local_run(cluster, tiny_stores,
                                                                  tmp_path, monkeypatch):
    """The multi-host layout: the driver and the workers share only the object store."""
    if not cluster["s3_env"]:
        pytest.skip("needs moto[server] and s3fs (`pip install -e '.[dev]'`)")
    import s3fs

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3",
                "FSSPEC_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in cluster["s3_env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FNERF_LOCK_DIR", str(tmp_path / "locks"))
    s3fs.S3FileSystem.clear_instance_cache()  # instances made for another endpoint
    s3fs.S3FileSystem().mkdir("cluster")
    url = "s3://cluster/renders/chair.zarr"
    result = cli(*render_args(url, tmp_path, "--scheduler", cluster["address"]))
    assert result.exit_code == 0, result.output
    store, local = RenderStore(url), RenderStore(tiny_stores[0])
    np.testing.assert_array_equal(store.read("digests", slice(None)),
                                  local.read("digests", slice(None)))
    assert store.fingerprint == local.fingerprint
    assert_one_writer_per_object(tmp_path / "rep-render", store.n_objects, cluster["workers"])


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:{closed}", "tcp://10.255.255.1:8786"],
                         ids=["closed-port", "non-routable"])
@pytest.mark.parametrize("stage", ["render", "distill-cache"])
def test_unreachable_scheduler_is_refused_fast_before_anything_is_written(
        tiny_stores, tmp_path, address, stage):
    address = address.format(closed=free_port())  # bound then released: nothing listens
    out = tmp_path / "out.zarr"
    args = (render_args(out, tmp_path, "--scheduler", address) if stage == "render"
            else distill_args(tiny_stores[0], out, tmp_path, "--scheduler", address))
    t0 = time.monotonic()
    result = cli(*args)
    elapsed = time.monotonic() - t0
    assert result.exit_code != 0 and elapsed < 5.0, (elapsed, result.output)
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and address in lines[0] and "dask scheduler" in lines[0], \
        result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, lock or report
