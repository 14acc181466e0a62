"""Teacher throughput, feature-store writer speed and store size vs the official format.

    python bench/teachers.py [--objects 2] [--dino-images 8]

Prints images/s per teacher on this machine (DINO ViT-S/8 with random weights at 256 px,
fp32 on CPU; the tiny LDM test model; DAISY at 128 px; the oracle), the feature-store writer's
MB/s, and the size per object of our float16 Zarr store against the official float32
``np.savez_compressed`` npz (50, 384, 32, 32) on the same features (ratio, same process).
With CUDA, also DINO end to end (read render store -> features -> Zarr) in images/s.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def make_renders(tmp: Path, objects: int) -> Path:
    from pipeline.render_stage import RenderStageConfig, run_render_stage

    out = tmp / "chair.zarr"
    run_render_stage(RenderStageConfig(category="chair", objects=objects, renderer="raycast",
                                       out=str(out), report_dir=str(tmp / "rep")))
    return out


def rate(teacher, batch, repeats: int = 1) -> float:
    teacher(batch.select(slice(0, 1)))  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        teacher(batch)
    return repeats * batch.batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--dino-images", type=int, default=8)
    args = ap.parse_args()
    from cache.render_store import RenderStore
    from pipeline.distill_stage import read_batch
    from teachers.registry import build_teacher

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        store = RenderStore(make_renders(tmp, args.objects))
        pairs = [(0, v) for v in range(16)]
        batch = read_batch(store, pairs, "chair", extras=True)
        rows = []
        daisy = build_teacher("daisy")
        rows.append(("daisy (128 px)", rate(daisy, batch)))
        oracle = build_teacher("oracle", n_parts=4)
        rows.append(("oracle", rate(oracle, batch, 5)))
        dino = build_teacher("dino", weights="random")
        rows.append(("dino ViT-S/8 256 px fp32 (random init)",
                     rate(dino, batch.select(slice(0, args.dino_images)))))
        print(f"\n{'teacher':<42}{'images/s':>10}")
        for name, r in rows:
            print(f"{name:<42}{r:>10.2f}")

        # writer throughput and size, DINO-shaped features (50 views x 32 x 32 x 384)
        from cache.feature_store import FeatureStoreWriter

        rng = np.random.default_rng(0)
        feats = [dino(read_batch(store, [(o, v) for v in range(k, k + 10)], "chair", False))
                 for o in range(min(args.objects, 2)) for k in (0,)]
        one = np.concatenate(feats)  # real (random-init DINO) features, background zeroed
        obj = np.concatenate([one] * 5)[:50] if len(one) < 50 else one[:50]
        obj = (obj + rng.normal(0, 1e-3, obj.shape) * (obj != 0)).astype(np.float32)
        attrs = {"identity": {"name": "bench"}, "render_fingerprint": "x", "pca_dim": None}
        w = FeatureStoreWriter.create_or_resume(tmp / "f.zarr", 4, 50, (32, 32), 384, attrs)
        t0 = time.perf_counter()
        for i in range(4):
            w.write_views(i, np.arange(50), obj)
        wall = time.perf_counter() - t0
        mb = 4 * obj.size * 2 / 1e6
        ours = sum(p.stat().st_size for p in (tmp / "f.zarr" / "feat").rglob("*") if p.is_file())
        buf = io.BytesIO()
        t1 = time.perf_counter()
        np.savez_compressed(buf, feats=obj.transpose(0, 3, 1, 2))
        npz_s = time.perf_counter() - t1
        print(f"\nwriter: {mb / wall:.0f} MB/s of float16 ({4 * 50 / wall:.0f} views/s); "
              f"official npz_compressed writes {obj.nbytes / 1e6 / npz_s:.0f} MB/s of float32")
        print(f"size per object: ours {ours / 4 / 1e6:.1f} MB (float16 zarr, zstd) vs official "
              f"{buf.tell() / 1e6:.1f} MB (float32 npz_compressed) -> ratio "
              f"{ours / 4 / buf.tell():.2f}; raw float32 {obj.nbytes / 1e6:.1f} MB")
        import torch

        if torch.cuda.is_available():
            from pipeline.distill_stage import DistillStageConfig, run_distill_stage

            cfg = DistillStageConfig(category="chair", teacher="dino",
                                     teacher_options={"weights": "random"},
                                     renders=str(store.path), out=str(tmp / "dino.zarr"),
                                     report_dir=str(tmp / "rep-dino"), batch_size=64)
            m = run_distill_stage(cfg)
            print(f"\nGPU end to end (read -> DINO -> zarr): {m['images_per_s']:.1f} images/s")


if __name__ == "__main__":
    main()
