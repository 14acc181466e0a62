"""Render and feature stores on object storage (``s3://bucket/path.zarr``), against a real
S3-compatible server (``moto[server]``) started on localhost by the fixture.

s3fs / botocore read the endpoint and the credentials from the environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``); the fixture sets dummy
ones that only the local moto server accepts. Covered: the URL path layer, an interrupted
creation (half-made store), the per-machine lock of a URL store, the write probe, and the whole
pipeline (render killed and resumed, distill-cache, train, evaluate) reading and writing S3.
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

try:
    import moto.server  # noqa: F401
    import s3fs
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"object-store tests need moto[server] and s3fs ({exc}); install them with "
                "`pip install -e '.[dev]'`", allow_module_level=True)

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore, RenderStoreWriter, StoreLayout
from cache.store_lock import StoreLock, StoreLocked, holder, lock_path
from cache.verify import verify_store
from cache.zarr_io import (
    StoreError,
    create_group_atomically,
    du,
    exists,
    half_made,
    is_nonempty,
    is_url,
    join,
    remove,
    rename,
    store_present,
)
from pipeline.cli import main
from pipeline.guards import PreflightError, check_writable
from tests.conftest import REPO
from tests.test_faults import distill_args, render_args

BUCKET = "fnerf-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[dict]:
    """A moto S3 server on localhost with bucket ``fnerf-test``; the AWS_* environment points
    at it (dummy credentials), URL-store locks go to a temporary FNERF_LOCK_DIR."""
    root = tmp_path_factory.mktemp("s3")
    port = free_port()
    with open(root / "moto.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                   "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    mp = pytest.MonkeyPatch()
    try:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3",
                    "FSSPEC_S3_ENDPOINT_URL"):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "moto-dummy-key")  # moto accepts any credentials
        mp.setenv("AWS_SECRET_ACCESS_KEY", "moto-dummy-secret")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        mp.setenv("AWS_CONFIG_FILE", str(root / "no-aws-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(root / "no-aws-credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("FNERF_LOCK_DIR", str(root / "locks"))
        s3fs.S3FileSystem.clear_instance_cache()  # instances made for another endpoint
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("moto server did not start: " + (root / "moto.log").read_text())
                time.sleep(0.2)
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        yield {"url": f"s3://{BUCKET}", "fs": fs, "locks": root / "locks"}
    finally:
        mp.undo()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"a traceback, not a clear error: {result.exception!r}"
    return result


def n_done_objects(fs, url: str) -> int:
    """``done`` chunk objects of a store on S3 (one per finished object)."""
    prefix = url.removeprefix("s3://") + "/done/c"
    fs.invalidate_cache()
    return len(fs.ls(prefix, detail=False)) if fs.exists(prefix) else 0


def test_url_path_layer_matches_local_paths(s3, tmp_path):
    assert is_url("s3://b/x.zarr") and is_url("gs://b/x") and not is_url("data/x.zarr")
    assert not is_url(tmp_path) and not is_url("file:///tmp/x")
    assert join("s3://b/x.zarr/", "rgb", "c") == "s3://b/x.zarr/rgb/c"
    for base in (f"{s3['url']}/layer", str(tmp_path / "layer")):
        a, b = join(base, "a"), join(base, "b")
        assert not exists(a) and not is_nonempty(a) and du(a) == 0
        if is_url(base):
            s3["fs"].pipe_file(join(a, "k/one").removeprefix("s3://"), b"12345")
        else:
            Path(a, "k").mkdir(parents=True)
            Path(a, "k", "one").write_bytes(b"12345")
        assert exists(a) and is_nonempty(a) and du(a) == 5
        rename(a, b)
        assert not exists(a) and du(b) == 5
        remove(b)
        remove(b)  # nothing there is fine
        assert not exists(b)


def test_interrupted_creation_is_half_made_refused_then_rebuilt(s3):
    url = f"{s3['url']}/half.zarr"

    def killed(group) -> None:
        group.create_array("rgb", shape=(2, 4), dtype="uint8")
        raise KeyboardInterrupt  # the run dies before its attrs are written

    with pytest.raises(KeyboardInterrupt):
        create_group_atomically(url, killed)
    assert half_made(url) and not store_present(url)
    for open_it in (RenderStore, FeatureStore, verify_store):
        with pytest.raises(StoreError, match="half-made"):
            open_it(url)
    layout = StoreLayout(n_objects=2, n_views=2, image_size=32, n_keypoints=1, n_points=4)
    attrs = {"object_ids": ["a", "b"], "splits": ["train", "test"], "config": {"k": 1}}
    writer = RenderStoreWriter.create_or_resume(url, layout, attrs)  # rebuilt, not "stale"
    assert store_present(url) and not half_made(url)
    assert writer.group.attrs["object_ids"] == ["a", "b"]
    assert RenderStore(url, allow_incomplete=True).n_objects == 2
    assert RenderStoreWriter.create_or_resume(url, layout, attrs).done_mask().tolist() == [0, 0]


def test_url_store_lock_is_a_local_file_that_excludes_a_second_writer(s3):
    url = f"{s3['url']}/locked.zarr"
    lock = lock_path(url)
    assert lock.parent == s3["locks"] and lock.name.startswith("locked.zarr-")
    assert lock_path(url + "/") == lock != lock_path(f"{s3['url']}/other/locked.zarr")
    with StoreLock(url, stage="render") as held:
        assert held.record["path"] == url and lock.exists()
        assert holder(url)["pid"] == os.getpid()
        with pytest.raises(StoreLocked, match=f"{url}: another render run"):
            StoreLock(url, stage="render").acquire()
    assert not lock.exists() and holder(url) is None


def test_write_probe_checks_the_bucket_and_leaves_nothing(s3):
    check_writable(f"{s3['url']}/probe/x.zarr", "--out")
    s3["fs"].invalidate_cache()
    assert not any("write-probe" in k for k in s3["fs"].find(BUCKET))
    t0 = time.monotonic()
    with pytest.raises(PreflightError, match=r"--out s3://no-such-bucket/x.zarr: cannot write"):
        check_writable("s3://no-such-bucket/x.zarr", "--out")
    assert time.monotonic() - t0 < 10


def test_pipeline_reads_and_writes_s3_and_a_killed_render_resumes(s3, tiny_stores, tmp_path):
    local_r, local_f = RenderStore(tiny_stores[0]), FeatureStore(tiny_stores[1])
    renders, features = f"{s3['url']}/renders/chair.zarr", f"{s3['url']}/features/chair.zarr"

    # render, SIGKILLed once its first object is on S3, then resumed
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *render_args(renders, tmp_path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while n_done_objects(s3["fs"], renders) == 0 and proc.poll() is None:
            assert time.monotonic() < deadline, "the render wrote nothing to S3 in 60 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = n_done_objects(s3["fs"], renders)
    assert 0 < killed_at < local_r.n_objects, killed_at
    result = cli(*render_args(renders, tmp_path))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rep-render" / "metrics.json").read_text())
    assert metrics["objects_resumed"] >= killed_at
    assert metrics["objects_rendered_now"] == local_r.n_objects - metrics["objects_resumed"]
    store = RenderStore(renders)
    np.testing.assert_array_equal(store.read("digests", slice(None)),
                                  local_r.read("digests", slice(None)))
    assert store.fingerprint == local_r.fingerprint and verify_store(renders).ok

    result = cli(*distill_args(renders, features, tmp_path))
    assert result.exit_code == 0, result.output
    fstore = FeatureStore(features, renders=store)
    np.testing.assert_array_equal(fstore.group["digests"][:], local_f.group["digests"][:])
    assert fstore.fingerprint == local_f.fingerprint
    assert json.loads((tmp_path / "rep-distill" / "metrics.json").read_text())["store_mb"] > 0

    from tests.test_eval_features import tiny_train_config
    from train.trainer import checkpoints, load_checkpoint

    config = tmp_path / "train.yaml"
    tiny_train_config((renders, features), tmp_path, "t", True).save_yaml(config)
    result = cli("train", "--category", "chair", "--teacher", "daisy", "--name", "t", "--config",
                 str(config), "--renders", renders, "--features", features, "--runs-dir",
                 str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(checkpoints(tmp_path / "runs" / "t")[-1])
    assert ckpt["render_fingerprint"] == local_r.fingerprint

    result = cli("evaluate", "--category", "chair", "--run", str(tmp_path / "runs" / "t"),
                 "--pixelnerf-run", "", "--renders", renders, "--features", features,
                 "--pairs", "2", "--eval-size", "16", "--nvs-objects", "1", "--nvs-views", "1",
                 "--device", "cpu", "--report-dir", str(tmp_path / "rep-eval"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rep-eval" / "metrics.json").read_text())
    assert metrics["chair.cross_view.n_pairs"] == 2


def test_deleted_s3_shard_is_named_by_verify(s3):
    from cache.feature_store import FeatureStoreWriter

    url = f"{s3['url']}/small-features.zarr"
    attrs = {"identity": {"name": "test"}, "render_fingerprint": "r", "pca_dim": None,
             "object_ids": ["a", "b"]}
    writer = FeatureStoreWriter.create_or_resume(url, 2, 2, (4, 4), 3, attrs)
    feat = np.random.default_rng(0).normal(size=(2, 2, 4, 4, 3)).astype(np.float16)
    for i in range(2):
        writer.write_views(i, np.arange(2), feat[i])
        writer.mark_done(i, feat[i])
    assert writer.finalize([0, 1], {}) and verify_store(url).ok
    shard = join(url, "feat", "c", "1", "0", "0", "0", "0")
    assert exists(shard)
    remove(shard)
    check = verify_store(url)
    assert [(p.object_id, p.array) for p in check.problems] == [("b", "feat")]
    assert check.problems[0].reason == f"chunk file {shard} is missing"
