"""Fault injection over real stores: every case ends in a clear one-line error naming the object
or path and the fix, or in a correct resume; nothing is lost or silently used.

Stores are copies of the session's tiny real stores (raycast renders of procedural chairs and
their DAISY features). Cases: bit flips, deleted shards and ``done`` chunks, concurrent writers,
SIGKILL at seeded random points of each stage, a full disk and a read-only target (a tmpfs in a
user+mount namespace, skipped with the reason where the machine does not allow one), stale
inputs, and each bad argument a user probe found.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore
from cache.store_lock import lock_path
from cache.verify import verify_store
from cache.zarr_io import StoreError
from pipeline.cli import main
from tests.conftest import REPO
from tests.test_trainer import small_config
from train.trainer import checkpoints, load_checkpoint, train


def copy_stores(tiny_stores, tmp_path) -> tuple[Path, Path]:
    renders, features = tmp_path / "chair.zarr", tmp_path / "feat.zarr"
    shutil.copytree(tiny_stores[0], renders)
    shutil.copytree(tiny_stores[1], features)
    return renders, features


def shard(store: Path, array: str, index: int) -> Path:
    """The file holding object ``index`` of ``array`` (one shard/chunk per object)."""
    files = sorted((store / array / "c" / str(index)).rglob("*"))
    return next(f for f in files if f.is_file())


def flip_bit(path: Path, rng: np.random.Generator) -> None:
    data = bytearray(path.read_bytes())
    i = int(rng.integers(0, len(data)))
    data[i] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"a traceback, not a clear error: {result.exception!r}"
    return result


def assert_one_line_error(result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def distill_args(renders: Path, out: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["distill-cache", "--category", "chair", "--teacher", "daisy", "--input-size", "64",
            "--option", "grid=[16, 16]", "--batch-size", "8", "--renders", str(renders),
            "--out", str(out), "--report-dir", str(tmp_path / "rep-distill"), *extra]


def render_args(out: Path, tmp_path: Path, *extra: str) -> list[str]:
    """The settings of the session's tiny render store (so a re-run resumes it)."""
    return ["render", "--category", "chair", "--objects", "5", "--views", "8", "--size", "64",
            "--points", "256", "--renderer", "raycast", "--split-fractions", "0.6,0,0.4",
            "--out", str(out), "--report-dir", str(tmp_path / "rep-render"), *extra]


# --- damaged stores ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("array", ["rgb", "depth", "part"])
def test_bit_flip_in_a_render_shard_is_caught(tiny_stores, tmp_path, array, seed):
    renders, _ = copy_stores(tiny_stores, tmp_path)
    flip_bit(shard(renders, array, 1), np.random.default_rng(seed))
    check = verify_store(renders)
    assert [p.object_id for p in check.problems] == [RenderStore(renders).object_ids[1]]
    assert check.problems[0].array == array


def test_bit_flip_stops_distill_then_verify_repair_and_rerender_redo_only_it(tiny_stores,
                                                                           tmp_path):
    renders, _ = copy_stores(tiny_stores, tmp_path)
    original = RenderStore(renders).fingerprint
    oid = RenderStore(renders).object_ids[2]
    flip_bit(shard(renders, "rgb", 2), np.random.default_rng(0))
    assert_one_line_error(cli(*distill_args(renders, tmp_path / "f.zarr", tmp_path)),
                          f"object {oid}", "rgb", "verify")
    assert not (tmp_path / "f.zarr" / "feat").exists() or not FeatureStore_complete(
        tmp_path / "f.zarr")
    listed = cli("verify", str(renders))
    assert listed.exit_code == 1 and f"BAD object {oid}" in listed.output
    assert cli("verify", str(renders), "--repair").exit_code == 0
    result = cli(*render_args(renders, tmp_path))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rep-render" / "metrics.json").read_text())
    assert metrics["objects_rendered_now"] == 1 and metrics["objects_resumed"] == 4
    assert verify_store(renders).ok
    assert RenderStore(renders).fingerprint == original  # the re-render is bit-identical


def FeatureStore_complete(path: Path) -> bool:
    try:
        FeatureStore(path)
    except StoreError:
        return False
    return True


def test_deleted_render_shard_is_an_error_for_train_and_redone_by_render(tiny_stores,
                                                                        tmp_path):
    renders, features = copy_stores(tiny_stores, tmp_path)
    store = RenderStore(renders)
    victim = store.valid_indices("train")[0]
    shard(renders, "depth", victim).unlink()
    cfg = small_config((renders, features), tmp_path)
    with pytest.raises(StoreError, match=rf"object {store.object_ids[victim]} .*depth: chunk "
                                         r"file .* is missing.*--repair"):
        train(cfg, progress=False)
    assert not (tmp_path / "runs" / "t" / "checkpoints").exists()
    result = cli(*render_args(renders, tmp_path))  # the render stage re-verifies on resume
    assert result.exit_code == 0, result.output
    assert "redoing it" in result.output
    assert verify_store(renders).ok


def test_deleted_done_chunk_is_named_not_dropped(tiny_stores, tmp_path):
    renders, features = copy_stores(tiny_stores, tmp_path)
    oid = RenderStore(renders).object_ids[3]
    (renders / "done" / "c" / "3").unlink()
    with pytest.raises(StoreError, match=rf"object {oid} .*done flag is not set"):
        RenderStore(renders)
    assert_one_line_error(cli(*distill_args(renders, tmp_path / "f.zarr", tmp_path)),
                          f"object {oid}")
    (features / "done" / "c" / "1").unlink()
    foid = FeatureStore_ids(features)[1]
    with pytest.raises(StoreError, match=rf"object {foid} .*done"):
        FeatureStore(features)


def FeatureStore_ids(path: Path) -> list[str]:
    import zarr

    return list(zarr.open_group(str(path)).attrs["object_ids"])


def test_bit_flip_in_a_feature_shard_stops_train_and_distill_redoes_it(tiny_stores, tmp_path):
    renders, features = copy_stores(tiny_stores, tmp_path)
    store = RenderStore(renders)
    victim = store.valid_indices("train")[1]
    flip_bit(shard(features, "feat", victim), np.random.default_rng(3))
    with pytest.raises(StoreError, match=rf"object {store.object_ids[victim]} .*feat"):
        train(small_config((renders, features), tmp_path), progress=False)
    reference = FeatureStore(tiny_stores[1]).read(slice(None))
    result = cli(*distill_args(renders, features, tmp_path))
    assert result.exit_code == 0 and "redoing it" in result.output, result.output
    np.testing.assert_array_equal(FeatureStore(features).read(slice(None)), reference)


def test_a_changed_digest_is_caught_by_the_fingerprint(tiny_stores, tmp_path):
    import zarr

    renders, _ = copy_stores(tiny_stores, tmp_path)
    digests = zarr.open_group(str(renders), mode="r+")["digests"]
    d = digests[0]
    d[0, 0] ^= 1
    digests[0] = d
    with pytest.raises(StoreError, match="fingerprint"):
        RenderStore(renders)
    assert not verify_store(renders).ok


# --- concurrent writers -----------------------------------------------------------------------

def hold_lock(path: Path, stage: str) -> subprocess.Popen:
    code = (f"from cache.store_lock import StoreLock; import time\n"
            f"with StoreLock({str(path)!r}, stage={stage!r}):\n    time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    deadline = time.time() + 30
    while time.time() < deadline and not (lock_path(path).exists() and
                                          lock_path(path).read_text().strip()):
        time.sleep(0.05)
    return proc


def test_second_render_on_the_same_out_is_refused_while_the_first_finishes(tmp_path):
    out = tmp_path / "chair.zarr"
    args = [sys.executable, "-m", "pipeline.cli", "render", "--category", "chair", "--objects",
            "40", "--views", "24", "--size", "64", "--renderer", "raycast", "--out", str(out),
            "--report-dir", str(tmp_path / "rep1")]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not lock_path(out).exists():
        time.sleep(0.05)
    second = subprocess.run([*args[:-1], str(tmp_path / "rep2")], cwd=REPO,
                            capture_output=True, text=True)
    assert first.poll() is None, "the first run ended before the second started: inconclusive"
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode != 0 and "Traceback" not in second.stderr
    assert f"another render run is writing this store (pid {first.pid}" in second.stderr
    assert verify_store(out).ok and len(RenderStore(out).valid_indices()) == 40


@pytest.mark.parametrize("stage", ["distill-cache", "train"])
def test_second_writer_is_refused_for_distill_and_train(tiny_stores, tmp_path, stage):
    renders, features = copy_stores(tiny_stores, tmp_path)
    target = features if stage == "distill-cache" else tmp_path / "runs" / "t"
    holder = hold_lock(target, stage)
    try:
        if stage == "distill-cache":
            line = assert_one_line_error(cli(*distill_args(renders, features, tmp_path)),
                                         f"pid {holder.pid}")
        else:
            with pytest.raises(StoreError, match=f"pid {holder.pid}") as info:
                train(small_config((renders, features), tmp_path), progress=False)
            line = str(info.value)
        assert "another" in line and stage in line
    finally:
        holder.kill()
        holder.wait()
    # the holder died (SIGKILL): its lock is taken over and the stage runs
    if stage == "train":
        assert train(small_config((renders, features), tmp_path), progress=False)["steps"] == 2


# --- SIGKILL at random points -----------------------------------------------------------------

def kill_after(args: list[str], seconds: float) -> None:
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("seed", range(3))
def test_render_killed_at_a_random_point_resumes_to_the_same_bytes(tiny_stores, tmp_path, seed):
    out = tmp_path / "chair.zarr"
    delay = float(np.random.default_rng([seed, 1]).uniform(0.5, 3.0))
    kill_after([sys.executable, "-m", "pipeline.cli", *render_args(out, tmp_path)], delay)
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *render_args(out, tmp_path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert RenderStore(out).fingerprint == RenderStore(tiny_stores[0]).fingerprint
    assert verify_store(out).ok


@pytest.mark.parametrize("seed", range(3))
def test_distill_killed_at_a_random_point_resumes_to_the_same_features(tiny_stores, tmp_path,
                                                                      seed):
    renders, _ = copy_stores(tiny_stores, tmp_path)
    out = tmp_path / "f.zarr"
    args = [sys.executable, "-m", "pipeline.cli", *distill_args(renders, out, tmp_path)]
    kill_after(args, float(np.random.default_rng([seed, 2]).uniform(0.5, 4.0)))
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_array_equal(FeatureStore(out).read(slice(None)),
                                  FeatureStore(tiny_stores[1]).read(slice(None)))
    assert verify_store(out).ok


@pytest.mark.parametrize("seed", range(1))
def test_train_killed_at_a_random_point_resumes_bit_identically(tiny_stores, tmp_path, seed):
    cfg = small_config(tiny_stores, tmp_path, steps=6, ckpt_every=2)
    config_file = tmp_path / "cfg.yaml"
    cfg.save_yaml(config_file)

    def args(runs: Path) -> list[str]:
        return [sys.executable, "-m", "pipeline.cli", "train", "--category", "chair",
                "--teacher", "daisy", "--name", "t", "--config", str(config_file), "--renders",
                str(tiny_stores[0]), "--features", str(tiny_stores[1]), "--runs-dir", str(runs)]

    kill_after(args(tmp_path / "runs"), float(np.random.default_rng([seed, 3]).uniform(4, 12)))
    for runs in (tmp_path / "runs", tmp_path / "reference"):  # resume; an uninterrupted run
        result = subprocess.run(args(runs), cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
    resumed = load_checkpoint(checkpoints(tmp_path / "runs" / "t")[-1])
    ref = load_checkpoint(checkpoints(tmp_path / "reference" / "t")[-1])
    assert resumed["step"] == ref["step"] == 6
    for k, v in ref["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


# --- full disk, read-only target --------------------------------------------------------------

def in_tmpfs(mount: Path, options: str, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` with a tmpfs mounted at ``mount`` (user + mount namespace), or skip."""
    mount.mkdir(parents=True, exist_ok=True)
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1): cannot mount a small tmpfs without root here")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {mount}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine does not allow a user-namespace tmpfs: {probe.stderr!r}")
    script = f"mount -t tmpfs -o {options} tmpfs {mount} && cd {REPO} && {command}"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True)


def test_disk_full_is_one_line_and_the_report_lists_what_finished(tmp_path):
    disk = tmp_path / "disk"
    out = disk / "chair.zarr"
    report = tmp_path / "report"
    render = (f"{sys.executable} -m pipeline.cli render --category chair --objects 12 --views 20 "
              f"--size 64 --renderer raycast --out {out} --report-dir {report}")
    result = in_tmpfs(disk, "size=400k", f"{render}; echo rc=$?; {sys.executable} -m "
                                         f"pipeline.cli verify {out}")
    assert "rc=1" in result.stdout, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "no space left" in errors[0] and str(out) in errors[0]
    metrics = json.loads((report / "metrics.json").read_text())
    assert 1 <= metrics["objects"] < 12  # what finished is reported ...
    assert "all objects verified" in result.stdout  # ... and intact


def test_distill_disk_full_is_one_line_and_keeps_what_finished(tiny_stores, tmp_path):
    import shlex

    disk = tmp_path / "disk"
    out = disk / "f.zarr"
    distill = shlex.join([sys.executable, "-m", "pipeline.cli",
                          *distill_args(tiny_stores[0], out, tmp_path)])
    result = in_tmpfs(disk, "size=120k", f"{distill}; echo rc=$?; {sys.executable} -m "
                                         f"pipeline.cli verify {out}")
    assert "rc=1" in result.stdout, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "no space left" in errors[0] and "object(s) done" in errors[0]
    assert (tmp_path / "rep-distill" / "metrics.json").exists()
    assert "all objects verified" in result.stdout


def test_read_only_target_is_refused_before_anything_is_written(tmp_path):
    disk = tmp_path / "ro"
    out = disk / "chair.zarr"
    result = in_tmpfs(disk, "ro", f"{sys.executable} -m pipeline.cli render --category chair "
                                  f"--objects 2 --views 4 --size 64 --renderer raycast --out {out}"
                                  f" --report-dir {tmp_path / 'rep'}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(out) in errors[0] and "--out" in errors[0] and "Read-only" in errors[0]
    assert not (tmp_path / "rep").exists()


# --- bad arguments ----------------------------------------------------------------------------

BAD_RENDER_ARGS = {
    "sofa has no procedural family": (["--category", "sofa"], "procedural categories: airplane"),
    "size 0": (["--size", "0"], "--size 0"),
    "size 7": (["--size", "7"], "--size 7"),
    "size not a multiple of 16": (["--size", "100"], "multiple of 16"),
    "views -1": (["--views", "-1"], "--views -1"),
    "views 1": (["--views", "1"], "--views 1"),
    "objects -1": (["--objects", "-1"], "--objects -1"),
    "objects 0": (["--objects", "0"], "--objects 0"),
    "workers 0": (["--workers", "0"], "--workers 0"),
    "points 0": (["--points", "0"], "--points 0"),
    "bad split fractions": (["--split-fractions", "1,-1,0"], "--split-fractions"),
    "unreachable scheduler": (["--scheduler", "tcp://127.0.0.1:1"], "tcp://127.0.0.1:1"),
}


@pytest.mark.parametrize("case", sorted(BAD_RENDER_ARGS))
def test_bad_render_argument_is_one_line_before_any_store(tmp_path, case):
    extra, needle = BAD_RENDER_ARGS[case]
    out = tmp_path / "chair.zarr"
    args = ["render", "--category", "chair", "--objects", "2", "--views", "4", "--size", "64",
            "--out", str(out), "--report-dir", str(tmp_path / "rep")]
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        i = args.index(flag) + 1 if flag in args else None
        if i is None:
            args += [flag, value]
        else:
            args[i] = value
    t0 = time.perf_counter()
    line = assert_one_line_error(cli(*args), needle)
    assert time.perf_counter() - t0 < 10
    assert line.count("valid") <= 1 and "KeyError" not in line
    assert not out.exists() and not (tmp_path / "rep").exists()


def test_all_objects_failing_never_exits_zero_and_gives_no_skip_hint(tmp_path, monkeypatch):
    import renderers.procedural as procedural

    def broken(seed: int):
        raise KeyError("the generator is broken")

    monkeypatch.setitem(procedural.FAMILIES, "chair", broken)
    base = ["render", "--category", "chair", "--objects", "3", "--views", "4", "--size", "64",
            "--renderer", "raycast", "--out", str(tmp_path / "c.zarr"), "--report-dir",
            str(tmp_path / "rep")]
    line = assert_one_line_error(cli(*base), "3 x KeyError")
    assert "--on-error skip" not in line
    assert_one_line_error(cli(*base, "--on-error", "skip"), "0 chair objects were written")


def test_dino_weights_missing_offline_is_one_line(tiny_stores, tmp_path):
    renders, _ = copy_stores(tiny_stores, tmp_path)
    result = cli("distill-cache", "--category", "chair", "--teacher", "dino", "--renders",
                 str(renders), "--out", str(tmp_path / "d.zarr"), "--report-dir",
                 str(tmp_path / "rep"))
    assert_one_line_error(result, "--weights")
    assert not (tmp_path / "d.zarr").exists()


# --- stale inputs -----------------------------------------------------------------------------

def test_train_refuses_a_checkpoint_made_on_other_renders(tiny_stores, tmp_path):
    renders, features = copy_stores(tiny_stores, tmp_path)
    train(small_config((renders, features), tmp_path), progress=False)
    other = tmp_path / "other.zarr"
    result = cli(*render_args(other, tmp_path, "--seed", "1"))
    assert result.exit_code == 0, result.output
    result = cli(*distill_args(other, tmp_path / "other-f.zarr", tmp_path))
    assert result.exit_code == 0, result.output
    cfg = small_config((other, tmp_path / "other-f.zarr"), tmp_path, steps=3)
    with pytest.raises(ValueError, match=r"renders seed: 0 -> 1.*--if-stale restart"):
        train(cfg, progress=False)
    summary = train(cfg, progress=False, if_stale="restart")
    assert summary["start_step"] == 0


def test_stale_feature_store_names_the_changed_setting(tiny_stores, tmp_path):
    renders, features = copy_stores(tiny_stores, tmp_path)
    result = cli(*render_args(renders, tmp_path, "--size", "32", "--if-stale", "overwrite"))
    assert result.exit_code == 0, result.output
    assert_one_line_error(cli(*distill_args(renders, features, tmp_path)),
                          "rig.image_size: 64 -> 32", "--if-stale overwrite")


def test_evaluate_on_stale_inputs_fails_unless_allowed(tiny_stores, tmp_path):
    renders, features = copy_stores(tiny_stores, tmp_path)
    train(small_config((renders, features), tmp_path), progress=False)
    result = cli(*render_args(renders, tmp_path, "--seed", "1", "--if-stale", "overwrite"))
    assert result.exit_code == 0, result.output
    args = ["evaluate", "--category", "chair", "--run", str(tmp_path / "runs" / "t"),
            "--pixelnerf-run", "", "--renders", str(renders), "--features", "", "--pairs", "2",
            "--eval-size", "16", "--nvs-objects", "1", "--nvs-views", "1", "--device", "cpu",
            "--report-dir", str(tmp_path / "rep-eval")]
    line = assert_one_line_error(cli(*args), "stale inputs", "seed: 0 -> 1", "--allow-stale")
    assert "student" in line and not (tmp_path / "rep-eval").exists()
    result = cli(*args, "--allow-stale")
    assert result.exit_code == 0, result.output
    assert "warning: stale input" in result.output
    metrics = json.loads((tmp_path / "rep-eval" / "metrics.json").read_text())
    assert metrics["chair.stale_inputs"] == 1 and "seed: 0 -> 1" in metrics["chair.stale"][0]
