"""Render stage throughput against a bare pyrender loop over the same meshes and poses.

    python bench/render.py [--objects 6] [--categories chair,table] [--repeats 2] [--size 128]
        [--separate]

Baseline (**bare**): the process's pyrender OffscreenRenderer (the one the stage uses), one
scene per mesh (the stage's lights and camera), and ``render(RGBA)`` per view, which returns
RGBA and GL depth: nothing else (no asset generation, no ray cast, no keypoints, no store).
**stage**: ``run_render_stage`` end to end (asset generation, GL RGBA pass, embree ray cast
for depth and part labels, keypoints, surface points, Zarr writes with sha256 digests, the
HTML report), timed from the call to its return. Both run in this process on the same meshes
and poses. ratio = stage views/s / bare views/s. The time share of the stage's parts follows.

Two pairings (this machine's speed drifts 15-20 % within minutes, so pair closely):
- **interleaved** (the headline): the bare loop of each object runs right after the stage's
  renderer returns that object (a wrapper around its ``render``), on the same mesh and poses;
  its time is taken out of the stage's wall. Stage and baseline share the same seconds, and
  the stage pays any cache the bare loop evicts.
- **separate**: after the stage, the bare loop over the store's meshes and poses (one block).
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


def stage(category: str, objects: int, size: int, out: Path, interleave: list | None = None
          ) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds of this process, metrics) of one fresh render stage run.

    With ``interleave`` (a list), the bare loop of every object runs right after the stage's
    renderer returns it; (wall, CPU, views) of each is appended to the list and taken out of
    the returned stage times.
    """
    from pipeline.render_stage import RenderStageConfig, run_render_stage
    from renderers.registry import get_renderer

    cfg = RenderStageConfig(category=category, objects=objects, renderer="pyrender", size=size,
                            out=str(out / f"{category}.zarr"),
                            report_dir=str(out / f"report-{category}"), overwrite=True)
    renderer = get_renderer("pyrender")
    stage_render = renderer.render
    if interleave is not None:
        def render_then_bare(asset, K, c2w, size):
            views = stage_render(asset, K, c2w, size)
            interleave.append(bare_object(renderer, asset, K, c2w, size))
            return views

        renderer.render = render_then_bare
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_render_stage(cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        renderer.render = stage_render
    if interleave:
        wall -= sum(b[0] for b in interleave)
        cpu -= sum(b[1] for b in interleave)
    return wall, cpu, result.metrics


def bare_object(renderer, asset, K: np.ndarray, c2w: np.ndarray, size: int
                ) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, views) of the bare pyrender loop over one mesh's poses."""
    from renderers.pyrender_backend import OPENCV_TO_OPENGL, _key_light_pose

    pr = renderer._pyrender
    offscreen = renderer._offscreen(size)
    flags = pr.RenderFlags.RGBA | pr.RenderFlags.SKIP_CULL_FACES
    t0, c0 = time.perf_counter(), time.process_time()
    scene = pr.Scene(bg_color=[0, 0, 0, 0], ambient_light=[renderer.ambient] * 3)
    scene.add(pr.Mesh.from_trimesh(asset.mesh, smooth=False))
    cam = scene.add(pr.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2],
                                        znear=0.05, zfar=20.0))
    light = scene.add(pr.DirectionalLight(color=np.ones(3), intensity=renderer.light_intensity))
    scene.add(pr.DirectionalLight(color=np.ones(3), intensity=0.5 * renderer.light_intensity),
              pose=_key_light_pose())
    for v in range(len(c2w)):
        pose = c2w[v] @ OPENCV_TO_OPENGL
        scene.set_pose(cam, pose)
        scene.set_pose(light, pose)
        offscreen.render(scene, flags=flags)  # (RGBA, depth)
    return time.perf_counter() - t0, time.process_time() - c0, len(c2w)


def bare(store_path: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, views) of the bare pyrender loop over the store's meshes and
    poses."""
    from cache.render_store import RenderStore
    from renderers.procedural import generate
    from renderers.registry import get_renderer

    store = RenderStore(store_path)
    renderer = get_renderer("pyrender")
    assets = [generate(store.attrs["category"], seed) for seed in store.attrs["seeds"]]
    poses = [store.read("c2w", i).astype(np.float64) for i in range(store.n_objects)]
    K = store.read("K", (0, 0)).astype(np.float64)
    runs = [bare_object(renderer, asset, K, c2w, store.image_size)
            for asset, c2w in zip(assets, poses, strict=True)]
    return tuple(sum(r[i] for r in runs) for i in range(3))


def ratio_line(label: str, views: int, s_wall: float, s_cpu: float, b_wall: float,
               b_cpu: float, b_views: int) -> str:
    return (f"{label:<24} stage {views / s_wall:6.1f} views/s  bare {b_views / b_wall:6.1f} "
            f"views/s  ratio {views * b_wall / (s_wall * b_views):.3f}  (per CPU second: "
            f"{views * b_cpu / (s_cpu * b_views):.3f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--categories", default="chair,table,airplane,car,motorcycle,bottle")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--separate", action="store_true",
                    help="also time the bare loop as one block after each stage run")
    args = ap.parse_args()
    rows, separate = [], []
    part_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stage("chair", 1, args.size, Path(tmp) / "warm")  # GL context and shaders, not counted
        for r in range(args.repeats):
            for cat in args.categories.split(","):
                out = Path(tmp) / f"run{r}"
                bares: list = []
                s_wall, s_cpu, m = stage(cat, args.objects, args.size, out, interleave=bares)
                b_wall, b_cpu, b_views = (sum(b[i] for b in bares) for i in range(3))
                object_s = m["views"] / m["views_per_s"] - b_wall  # the bare runs sat in render
                rows.append((m["views"], s_wall, s_cpu, b_wall, b_cpu, b_views, object_s))
                for k, v in m["time_share"].items():
                    part_s[k] = part_s.get(k, 0.0) + v * (object_s + b_wall)
                part_s["render"] -= b_wall
                print(ratio_line(f"{cat} interleaved", m["views"], s_wall, s_cpu, b_wall, b_cpu,
                                 b_views), flush=True)
                if args.separate:
                    sep = bare(out / f"{cat}.zarr")
                    separate.append((m["views"], s_wall, s_cpu, *sep))
                    print(ratio_line(f"{cat} separate", m["views"], s_wall, s_cpu, *sep),
                          flush=True)
    print(f"\nbaseline: bare pyrender loop (same OffscreenRenderer, one scene per mesh, RGBA + GL "
          f"depth per view; no asset generation, ray cast, keypoints, store or report) over the "
          f"stage's meshes and poses, {args.size} px, same process, {os.cpu_count()} cores; "
          f"interleaved: each object's bare loop right after the stage rendered it, its time "
          f"taken out of the stage's")
    for label, group in (("interleaved", rows), ("separate", separate)):
        if group:
            sums = [sum(row[i] for row in group) for i in range(6)]
            print(ratio_line(f"all, {label}", *sums)
                  + f"  [{sums[0]} views, stage {sums[1]:.1f} s]")
    top = {k: v for k, v in part_s.items() if "." not in k}
    busy = sum(top.values()) or 1.0
    parts = ", ".join(f"{k} {v / busy:.0%}" for k, v in top.items())
    subs = ", ".join(f"{k} {v / busy:.0%}" for k, v in part_s.items() if "." in k)
    print(f"per-object time (sum over objects): {parts}; within render: {subs}")
    s_total = sum(row[1] for row in rows)
    print(f"outside the objects (plan, store create/finalize, report): "
          f"{s_total - sum(row[6] for row in rows):.2f} s of {s_total:.1f} s")


if __name__ == "__main__":
    main()
