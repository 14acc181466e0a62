"""Training throughput: loader supply against trainer demand, MLP work per ray, DDP scaling.

    python bench/train.py [--profiles default,paper] [--steps 6] [--loader-steps 30]
                          [--workers 0,1,2] [--prefetch 2,4] [--end-to-end 16] [--ddp 8]

Builds a small real render store (procedural chairs, 50 views at 128 px) and its DAISY feature
store, then for each profile measures

1. **loader supply**: batches (whole steps) per second the DataLoader produces alone, for each
   worker count (and prefetch factor for workers > 0; ``pin_memory`` only where CUDA is),
2. **trainer demand**: steps per second of forward + backward + Adam on pre-loaded batches,
3. their ratio (the loader must supply at least 5x the demand at the paper profile with the
   default workers), and the MLP evaluations per ray, counted on the model's forward calls
   (coarse samples + fine samples actually evaluated: the fine pass reuses the coarse outputs).

Then (default profile) trainer steps/s *with* the loader for each worker count (the setting the
defaults are chosen by; loader and trainer share the cores), and with ``--ddp S`` the step time
of 2 torchrun processes against 1 (gloo on the CPU; each rank trains its own objects, so one
2-process step is twice the rays).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_config(profile: str, renders: Path, feats: Path, runs: Path):
    """The profile's TrainConfig on the bench stores (random encoder: no weights lookup)."""
    from pipeline.train_stage import profile_config

    cfg = profile_config(profile)
    cfg.name, cfg.runs_dir, cfg.ckpt_every, cfg.device = f"bench-{profile}", str(runs), 0, "cpu"
    cfg.data.renders, cfg.data.features = str(renders), str(feats)
    cfg.model.pretrained_encoder = False
    return cfg


def loader_supply(cfg, workers: int, prefetch: int, n: int, pin: bool) -> float:
    """Batches per second of the loader alone. Excluded: the first 2 (worker start-up) and the
    ``workers * prefetch`` the workers made ahead meanwhile."""
    from train.data import RayBatchDataset, StepSampler, make_loader

    ds = RayBatchDataset(cfg.data)
    skip = 2 + workers * prefetch
    it = iter(make_loader(ds, StepSampler(len(ds), cfg.data, 0, 0, n + skip), workers,
                          pin_memory=pin, prefetch_factor=prefetch))
    for _ in range(skip):
        next(it)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


def trainer_demand(cfg, steps: int, workers: int | None = None,
                   prefetch: int = 4) -> tuple[float, float]:
    """``(steps/s, MLP evaluations per ray)`` of the training step. ``workers=None``: on 4
    pre-loaded batches (demand alone); else fed by a loader with that many workers (the first
    ``2 + workers * prefetch`` steps excluded: start-up and the batches made meanwhile)."""
    import torch

    from train.data import RayBatchDataset, StepSampler, make_loader
    from train.trainer import DistInfo, build_training, sampling_seed, train_step

    device = torch.device("cpu")
    torch.manual_seed(cfg.seed)
    ds = RayBatchDataset(cfg.data)
    model, step_module, optimizer, scaler, use_amp = build_training(cfg, ds, device, DistInfo())
    evals = [0]

    def count(module, args):  # FeatureNeRF.forward(xyz (B, N, 3), dirs (B, N, 3))
        evals[0] += args[0].shape[0] * args[0].shape[1]

    hook = model.register_forward_pre_hook(count)
    skip = 2 + (workers or 0) * prefetch
    n_batches = steps + skip
    loader = make_loader(ds, StepSampler(len(ds), cfg.data, 0, 0, n_batches),
                         workers or 0, pin_memory=False, prefetch_factor=prefetch)
    if workers is None:
        pre = [b for _, b in zip(range(4), loader, strict=False)]
        batches = (pre[i % len(pre)] for i in range(n_batches))
    else:
        batches = iter(loader)
    t0 = time.perf_counter()
    for step, batch in enumerate(batches):
        if step == skip:  # warm-up (allocations, worker start-up) excluded
            t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(sampling_seed(cfg.seed, step))
        total, _ = train_step(step_module, model, optimizer, scaler, batch, gen, cfg, use_amp)
        if step == 0:
            per_ray = evals[0] / (batch["origins"].shape[0] * batch["origins"].shape[1])
            hook.remove()
        total.item()  # the loop's own sync, so the timing covers the work
    return steps / (time.perf_counter() - t0), per_ray


def read_timing(renders: Path, feats: Path, n: int = 20) -> None:
    """ms per object for 4 random target views: zarr ``oindex`` against ``read_views``."""
    import numpy as np

    from cache.feature_store import FeatureStore
    from cache.render_store import RenderStore

    rs, fs = RenderStore(renders), FeatureStore(feats)
    rng = np.random.default_rng(0)
    picks = [(int(rng.integers(rs.group["rgb"].shape[0])),
              np.sort(rng.choice(rs.n_views, 4, replace=False))) for _ in range(n)]
    reads = {
        "rgb": (lambda o, v: rs.array("rgb").oindex[o, v.tolist()],
                lambda o, v: rs.read_views("rgb", o, v)),
        "feat": (lambda o, v: fs.feat.oindex[o, v.tolist()], lambda o, v: fs.read_views(o, v)),
    }
    for name, (oindex, per_view) in reads.items():
        times = []
        for fn in (oindex, per_view):
            t0 = time.perf_counter()
            for o, v in picks:
                fn(o, v)
            times.append((time.perf_counter() - t0) / n * 1e3)
        print(f"  4 {name} views of one object: oindex {times[0]:.1f} ms, read_views "
              f"{times[1]:.1f} ms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_RUN_IDS = itertools.count()


def ddp_step_time(cfg, nproc: int, steps: int, tmp: Path) -> dict:
    """s/step and rays/s (all ranks) of ``torchrun --nproc_per_node nproc -m pipeline.cli
    train`` over ``steps`` steps after a 2-step warm-up run (start-up excluded)."""
    cfg.name = f"ddp-{nproc}-{next(_RUN_IDS)}"  # a fresh run every call
    config_file = tmp / f"ddp-{nproc}.yaml"
    cfg.save_yaml(config_file)
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for total in (2, 2 + steps):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m",
               "pipeline.cli", "train", "--category", "chair", "--teacher", "daisy",
               "--name", cfg.name, "--config", str(config_file), "--renders", cfg.data.renders,
               "--features", cfg.data.features, "--runs-dir", cfg.runs_dir, "--device", "cpu",
               "--steps", str(total)]
        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
    metrics = json.loads((Path(cfg.runs_dir).parent / "reports" / "train" / cfg.name /
                          "metrics.json").read_text())
    return {"s_per_step": metrics["wall_s"] / steps, "rays_per_s": metrics["rays_per_s"],
            "threads": threads}


def best(measure, rounds: int) -> tuple[float, list[float]]:
    """``(best, all)`` of ``rounds`` rate measurements (best: least disturbed by other load)."""
    rates = [measure() for _ in range(rounds)]
    return max(rates), rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", default="default,paper")
    ap.add_argument("--steps", type=int, default=6, help="timed trainer steps (demand)")
    ap.add_argument("--loader-steps", type=int, default=30)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--prefetch", default="2,4", help="prefetch factors tried for workers > 0")
    ap.add_argument("--end-to-end", type=int, default=16,
                    help="timed steps with the loader per worker count (default profile; 0 off)")
    ap.add_argument("--ddp", type=int, default=0, help="timed steps for DDP 2 vs 1 (0 off)")
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds per measurement; the best is reported (shared machines)")
    args = ap.parse_args()
    import torch

    from pipeline.distill_stage import DistillStageConfig, run_distill_stage
    from pipeline.render_stage import RenderStageConfig, run_render_stage
    from pipeline.train_stage import profile_config

    workers_list = [int(w) for w in args.workers.split(",")]
    prefetch_list = [int(p) for p in args.prefetch.split(",")]
    pins = [False, True] if torch.cuda.is_available() else [False]
    rounds = max(1, args.repeat)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} "
          f"threads, CUDA {'yes' if torch.cuda.is_available() else 'no (pin_memory n/a)'}, "
          f"load average {os.getloadavg()[0]:.2f}, best of {rounds}")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        renders, feats = tmp / "chair.zarr", tmp / "daisy.zarr"
        run_render_stage(RenderStageConfig(category="chair", objects=args.objects,
                                           split_fractions=(1.0, 0.0, 0.0), renderer="raycast",
                                           out=str(renders), report_dir=str(tmp / "r")))
        run_distill_stage(DistillStageConfig(category="chair", teacher="daisy",
                                             renders=str(renders), out=str(feats),
                                             report_dir=str(tmp / "d")))
        print("\nstore reads:")
        read_timing(renders, feats)
        for profile in filter(None, args.profiles.split(",")):
            cfg = bench_config(profile, renders, feats, tmp / "runs")
            default_workers = profile_config(profile).data.num_workers
            r = cfg.render
            print(f"\nprofile {profile}: {cfg.data.objects_per_step} objects x "
                  f"{cfg.data.rays_per_object} rays, {cfg.data.n_target_views} target views, "
                  f"width {cfg.model.width}, {cfg.model.backbone}, "
                  f"{r.n_coarse}+{r.n_importance}+{r.n_depth} samples")
            per_ray = trainer_demand(cfg, 1)[1]
            demand, _ = best(lambda cfg=cfg: trainer_demand(cfg, args.steps)[0], rounds)
            print(f"  MLP evaluations per ray: {per_ray:.0f} (coarse {r.n_coarse} + fine "
                  f"{r.n_importance + r.n_depth}; the fine pass reuses the coarse outputs)")
            print(f"  trainer demand (pre-loaded batches): {demand:.2f} steps/s "
                  f"({1 / demand:.2f} s/step)")
            for workers in workers_list:
                for prefetch in (prefetch_list if workers > 0 else [0]):
                    for pin in pins:
                        supply, _ = best(lambda cfg=cfg, w=workers, f=prefetch, p=pin:
                                         loader_supply(cfg, w, f or 2, args.loader_steps, p),
                                         rounds)
                        tag = f"{workers} workers" + (f", prefetch {prefetch}" if workers else
                                                      "") + (", pinned" if pin else "")
                        mark = "  <- default workers" if workers == default_workers else ""
                        print(f"  loader supply, {tag}: {supply:.1f} batches/s -> supply / "
                              f"demand {supply / demand:.1f}x{mark}")
        if args.end_to_end:
            cfg = bench_config("default", renders, feats, tmp / "runs")
            print("\ndefault profile, trainer fed by the loader (they share the cores):")
            rates: dict[int, list[float]] = {w: [] for w in workers_list}
            for _ in range(rounds):  # interleaved rounds: other load hits every setting alike
                for workers in workers_list:
                    rates[workers].append(trainer_demand(cfg, args.end_to_end, workers)[0])
            for workers, rs in rates.items():
                print(f"  {workers} workers: {max(rs):.2f} steps/s ({1 / max(rs):.2f} s/step); "
                      f"rounds {', '.join(f'{x:.2f}' for x in rs)}")
        if args.ddp:
            cfg = bench_config("default", renders, feats, tmp / "runs")
            cfg.data.num_workers = 0  # else the workers' spawn lands in the timed (resumed) run
            runs = {1: [], 2: []}
            for _ in range(rounds):
                for nproc in (1, 2):
                    runs[nproc].append(ddp_step_time(cfg, nproc, args.ddp, tmp))
            one, two = (min(runs[n], key=lambda m: m["s_per_step"]) for n in (1, 2))
            print(f"\nDDP, default profile, 0 loader workers, {args.ddp} steps (gloo, CPU): "
                  f"1 process ({one['threads']} threads) {one['s_per_step']:.2f} s/step, "
                  f"{one['rays_per_s']:.0f} rays/s; 2 processes ({two['threads']} thread each) "
                  f"{two['s_per_step']:.2f} s/step, {two['rays_per_s']:.0f} rays/s -> step time "
                  f"2/1 = {two['s_per_step'] / one['s_per_step']:.2f}x, throughput "
                  f"{two['rays_per_s'] / one['rays_per_s']:.2f}x")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
