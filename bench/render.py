"""Render stage throughput against a bare pyrender loop over the same meshes and poses.

    python bench/render.py [--objects 6] [--categories chair,table] [--repeats 2] [--size 128]

Baseline (**bare**): the process's pyrender OffscreenRenderer (the one the stage uses), one
scene per mesh (the stage's lights and camera), and ``render(RGBA)`` per view, which returns
RGBA and GL depth: nothing else (no asset generation, no ray cast, no keypoints, no store).
**stage**: ``run_render_stage`` end to end (asset generation, GL RGBA pass, embree ray cast
for depth and part labels, keypoints, surface points, Zarr writes with sha256 digests, the
HTML report), timed from the call to its return. Both run in this process, interleaved per
category, on the same procedural meshes (the store's seeds) and poses (the store's ``c2w``).
ratio = stage views/s / bare views/s. The time share of the stage's parts follows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def stage(category: str, objects: int, size: int, out: Path) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds of this process, metrics) of one fresh render stage run."""
    from pipeline.render_stage import RenderStageConfig, run_render_stage

    cfg = RenderStageConfig(category=category, objects=objects, renderer="pyrender", size=size,
                            out=str(out / f"{category}.zarr"),
                            report_dir=str(out / f"report-{category}"), overwrite=True)
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_render_stage(cfg)
    return time.perf_counter() - t0, time.process_time() - c0, result.metrics


def bare(store_path: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, views) of the bare pyrender loop over the store's meshes and
    poses."""
    from cache.render_store import RenderStore
    from renderers.procedural import generate
    from renderers.pyrender_backend import OPENCV_TO_OPENGL, _key_light_pose
    from renderers.registry import get_renderer

    store = RenderStore(store_path)
    renderer = get_renderer("pyrender")
    pr, size = renderer._pyrender, store.image_size
    assets = [generate(store.attrs["category"], seed) for seed in store.attrs["seeds"]]
    poses = [store.read("c2w", i).astype(np.float64) for i in range(store.n_objects)]
    K = store.read("K", (0, 0)).astype(np.float64)
    offscreen = renderer._offscreen(size)
    flags = pr.RenderFlags.RGBA | pr.RenderFlags.SKIP_CULL_FACES
    t0, c0 = time.perf_counter(), time.process_time()
    views = 0
    for asset, c2w in zip(assets, poses, strict=True):
        scene = pr.Scene(bg_color=[0, 0, 0, 0], ambient_light=[renderer.ambient] * 3)
        scene.add(pr.Mesh.from_trimesh(asset.mesh, smooth=False))
        cam = scene.add(pr.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2],
                                            znear=0.05, zfar=20.0))
        light = scene.add(pr.DirectionalLight(color=np.ones(3),
                                              intensity=renderer.light_intensity))
        scene.add(pr.DirectionalLight(color=np.ones(3), intensity=0.5 * renderer.light_intensity),
                  pose=_key_light_pose())
        for v in range(len(c2w)):
            pose = c2w[v] @ OPENCV_TO_OPENGL
            scene.set_pose(cam, pose)
            scene.set_pose(light, pose)
            offscreen.render(scene, flags=flags)  # (RGBA, depth)
            views += 1
    return time.perf_counter() - t0, time.process_time() - c0, views


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--categories", default="chair,table,airplane,car,motorcycle,bottle")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    rows = []
    shares: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stage("chair", 1, args.size, Path(tmp) / "warm")  # GL context and shaders, not counted
        for r in range(args.repeats):
            for cat in args.categories.split(","):
                out = Path(tmp) / f"run{r}"
                s_wall, s_cpu, m = stage(cat, args.objects, args.size, out)
                b_wall, b_cpu, b_views = bare(out / f"{cat}.zarr")
                rows.append((cat, m["views"], s_wall, b_views, b_wall, m, s_cpu, b_cpu))
                for k, v in m["time_share"].items():
                    shares[k] = shares.get(k, 0.0) + v * m["views"] / m["views_per_s"]
                print(f"{cat:<11} stage {m['views'] / s_wall:6.1f} views/s  bare "
                      f"{b_views / b_wall:6.1f} views/s  ratio "
                      f"{m['views'] * b_wall / (s_wall * b_views):.2f}  (per CPU second: "
                      f"{m['views'] * b_cpu / (s_cpu * b_views):.2f})", flush=True)
    print(f"\nbaseline: bare pyrender loop (same OffscreenRenderer, one scene per mesh, RGBA + GL "
          f"depth per view; no asset generation, ray cast, keypoints, store or report) over the "
          f"stage's meshes and poses, {args.size} px, same process, {os.cpu_count()} cores")
    views = sum(r[1] for r in rows)
    s_total, b_total = sum(r[2] for r in rows), sum(r[4] for r in rows)
    b_views = sum(r[3] for r in rows)
    ratio = views * b_total / (s_total * b_views)
    cpu_ratio = views * sum(r[7] for r in rows) / (sum(r[6] for r in rows) * b_views)
    print(f"stage {views / s_total:.1f} views/s (end to end, {views} views in {s_total:.1f} s), "
          f"bare {b_views / b_total:.1f} views/s -> ratio {ratio:.2f}; views per CPU second "
          f"(all threads of the process; less sensitive to other load): ratio {cpu_ratio:.2f}")
    top = {k: v for k, v in shares.items() if "." not in k}
    busy = sum(top.values()) or 1.0
    parts = ", ".join(f"{k} {v / busy:.0%}" for k, v in top.items())
    subs = ", ".join(f"{k} {v / busy:.0%}" for k, v in shares.items() if "." in k)
    print(f"per-object time (sum over objects): {parts}; within render: {subs}")
    print(f"outside the objects (plan, store create/finalize, report): "
          f"{s_total - sum(r[1] / r[5]['views_per_s'] for r in rows):.2f} s of {s_total:.1f} s")


if __name__ == "__main__":
    main()
