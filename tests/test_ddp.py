"""DDP on the CPU (gloo, 2 ranks through torchrun): identical parameters on every rank, rank-0
only files, ``--if-stale restart`` on 2 ranks, stopped-then-resumed bit-identical, and the
sampler's per-rank slices."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_trainer import small_config
from train.data import DataConfig, StepSampler
from train.trainer import (
    PARAM_DUMP_ENV,
    checkpoints,
    load_checkpoint,
    model_from_checkpoint,
    param_digest,
    sampling_seed,
)

REPO = Path(__file__).resolve().parents[1]

try:
    import torch.distributed as dist

    GLOO = dist.is_available() and dist.is_gloo_available()
except ImportError:  # pragma: no cover - builds without torch.distributed
    GLOO = False

needs_gloo = pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(stores, config_file: Path, runs: Path, *extra: str,
             dump: Path | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m pipeline.cli train`` on the CPU; asserts exit 0."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "pipeline.cli", "train", "--category", "chair", "--teacher", "daisy",
           "--name", "t", "--config", str(config_file), "--renders", str(stores[0]),
           "--features", str(stores[1]), "--runs-dir", str(runs), "--device", "cpu", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(PARAM_DUMP_ENV, None)
    if dump is not None:
        env[PARAM_DUMP_ENV] = str(dump)
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope="module")
def ddp_runs(tiny_stores, tmp_path_factory):
    """An uninterrupted 2-rank run of 4 steps (``a``) and one stopped at 2 and resumed (``b``)."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = small_config(tiny_stores, tmp, steps=4, ckpt_every=2, log_every=1)
    config_file = tmp / "cfg.yaml"
    cfg.save_yaml(config_file)
    torchrun(tiny_stores, config_file, tmp / "a" / "runs", dump=tmp / "dump-a")
    torchrun(tiny_stores, config_file, tmp / "b" / "runs", "--steps", "2")
    torchrun(tiny_stores, config_file, tmp / "b" / "runs", dump=tmp / "dump-b")
    return tmp, config_file


@needs_gloo
def test_ranks_end_with_identical_parameters(ddp_runs):
    tmp, _ = ddp_runs
    for run in ("a", "b"):
        dumps = [json.loads((tmp / f"dump-{run}" / f"rank-{r}.json").read_text())
                 for r in (0, 1)]
        assert [d["world"] for d in dumps] == [2, 2] and [d["step"] for d in dumps] == [4, 4]
        assert dumps[0]["params_sha256"] == dumps[1]["params_sha256"], run
        ckpt = load_checkpoint(checkpoints(tmp / run / "runs" / "t")[-1])
        assert ckpt["world"] == 2
        model = model_from_checkpoint(ckpt)
        assert param_digest(model.named_parameters()) == dumps[0]["params_sha256"]


@needs_gloo
def test_only_rank_zero_writes_files(ddp_runs):
    tmp, _ = ddp_runs
    run = tmp / "a" / "runs" / "t"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-0000002.ckpt", "step-0000004.ckpt"]
    assert not list(run.rglob("*.tmp")) and not (tmp / "a" / "runs" / "t.lock").exists()
    assert (run / "init.ckpt").is_file() and (run / "config.yaml").is_file()
    assert len(list((run / "tb").iterdir())) == 1  # one event file: rank 0's
    metrics = json.loads((tmp / "a" / "reports" / "train" / "t" / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["steps"] == 4 and metrics["rays_per_s"] > 0
    assert set(metrics["loss_first"]) == set(metrics["loss_last"]) >= {"loss", "rgb_fine"}
    visits = json.loads((run / "object_visits.json").read_text())["store_index_to_visits"]
    assert sum(visits.values()) == 4 * 2 * 2  # steps x ranks x objects per rank


@needs_gloo
def test_stopped_then_resumed_matches_the_uninterrupted_run(ddp_runs):
    tmp, _ = ddp_runs
    a = load_checkpoint(checkpoints(tmp / "a" / "runs" / "t")[-1])
    b = load_checkpoint(checkpoints(tmp / "b" / "runs" / "t")[-1])
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


@needs_gloo
def test_if_stale_restart_on_two_ranks(ddp_runs, tiny_stores):
    """Formerly every rank deleted the same stale checkpoints: FileNotFoundError on rank 1."""
    tmp, config_file = ddp_runs
    shutil.copytree(tmp / "b" / "runs", tmp / "c" / "runs")
    torchrun(tiny_stores, config_file, tmp / "c" / "runs", "--lr", "0.001", "--steps", "2",
             "--if-stale", "restart")
    run = tmp / "c" / "runs" / "t"
    assert [p.name for p in checkpoints(run)] == ["step-0000002.ckpt"]
    state = load_checkpoint(checkpoints(run)[-1])
    assert state["config"]["lr"] == 0.001 and state["step"] == 2
    assert not list(run.rglob("*.tmp"))


@pytest.mark.parametrize("n, world, b", [(37, 2, 4), (3, 2, 2), (100, 2, 4)])
def test_rank_slices_are_disjoint_and_cover_the_split(n, world, b):
    cfg = DataConfig(objects_per_step=b)
    samplers = [StepSampler(n, cfg, seed=5, start=0, end=60, rank=r, world=world)
                for r in range(world)]
    seen = np.zeros(n, int)
    for step, batches in enumerate(zip(*samplers, strict=True)):
        picks = [[k.position for k in batch] for batch in batches]
        flat = [p for ranks in picks for p in ranks]
        assert flat == samplers[0].positions(step).tolist()  # rank r = slice r
        if n >= b * world:
            assert len(set(flat)) == len(flat), (step, picks)
        slots = [k.slot for batch in batches for k in batch]
        assert len(set(slots)) == len(slots)  # per-item rng seeds differ across ranks
        np.add.at(seen, flat, 1)
    assert (seen > 0).all(), np.flatnonzero(seen == 0)


def test_ray_sampling_seed_differs_per_rank_and_keeps_rank_zero():
    assert sampling_seed(42, 7, 0) == 42 * 1_000_003 + 7  # single-process runs unchanged
    seeds = {sampling_seed(s, t, r) for s in (0, 42) for t in (0, 1, 999_999) for r in range(4)}
    assert len(seeds) == 2 * 3 * 4
