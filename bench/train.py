"""Training throughput: model rays/s and the data loader's samples/s, same process.

    python bench/train.py [--profile default|paper] [--steps 6] [--workers 0,2]

Builds a small real render store (procedural chairs, 50 views at 128 px) and its DAISY feature
store, then measures (1) the loader alone, in items/s and rays/s, for each worker count, and
(2) full training steps (forward, backward, Adam) in rays/s for the profile's model. The loader
must feed at least 5x what the model consumes; the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="default", choices=["default", "paper"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--loader-steps", type=int, default=30)
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--objects", type=int, default=6)
    args = ap.parse_args()
    import torch

    from pipeline.distill_stage import DistillStageConfig, run_distill_stage
    from pipeline.render_stage import RenderStageConfig, run_render_stage
    from pipeline.train_stage import profile_config
    from train.data import RayBatchDataset, StepSampler, make_loader
    from train.trainer import train

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        renders, feats = tmp / "chair.zarr", tmp / "daisy.zarr"
        run_render_stage(RenderStageConfig(category="chair", objects=args.objects,
                                           split_fractions=(1.0, 0.0, 0.0), renderer="raycast",
                                           out=str(renders), report_dir=str(tmp / "r")))
        run_distill_stage(DistillStageConfig(category="chair", teacher="daisy",
                                             renders=str(renders), out=str(feats),
                                             report_dir=str(tmp / "d")))
        cfg = profile_config(args.profile)
        cfg.name, cfg.runs_dir, cfg.steps, cfg.ckpt_every = "bench", str(tmp / "runs"), 1, 0
        cfg.data.renders, cfg.data.features = str(renders), str(feats)
        cfg.model.pretrained_encoder = False
        rays_per_step = cfg.data.objects_per_step * cfg.data.rays_per_object
        print(f"\nprofile {args.profile}: {cfg.data.objects_per_step} objects x "
              f"{cfg.data.rays_per_object} rays, width {cfg.model.width}, {cfg.model.backbone}, "
              f"{cfg.render.n_coarse}+{cfg.render.n_importance}+{cfg.render.n_depth} samples, "
              f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
        loader_rates = {}
        for workers in (int(w) for w in args.workers.split(",")):
            ds = RayBatchDataset(cfg.data)
            sampler = StepSampler(len(ds), cfg.data, 0, 0, args.loader_steps + 2)
            it = iter(make_loader(ds, sampler, workers))
            next(it), next(it)  # start-up (spawned workers) excluded
            t0 = time.perf_counter()
            for _ in range(args.loader_steps):
                next(it)
            wall = time.perf_counter() - t0
            loader_rates[workers] = args.loader_steps * rays_per_step / wall
            items = args.loader_steps * cfg.data.objects_per_step / wall
            print(f"loader, {workers} workers: {items:.1f} items/s = "
                  f"{loader_rates[workers]:.0f} rays/s")
        train(cfg, resume=False, progress=False)  # warm-up step (allocations, encoder)
        cfg.steps = 1 + args.steps
        summary = train(cfg, resume=True, progress=False)
        model_rate = summary["rays_per_s"]
        print(f"model (forward + backward + Adam): {model_rate:.0f} rays/s "
              f"({summary['wall_s'] / args.steps:.2f} s/step)")
        best = max(loader_rates.values())
        print(f"loader / model ratio: {best / model_rate:.1f}x (best loader setting)")


if __name__ == "__main__":
    main()
