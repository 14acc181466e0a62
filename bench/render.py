"""Render throughput: views/s of a renderer at 128x128 and the time share of each pass.

    python bench/render.py [--renderer pyrender] [--objects 6] [--categories chair,table]

Runs the real render stage (procedural shapes -> Zarr store) and, in the same process, the
GL-free raycast backend as a baseline. With ``--single-core`` it re-runs itself with llvmpipe
and numpy limited to one thread (LP_NUM_THREADS=1) to give the per-core figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(renderer: str, category: str, objects: int, out: Path) -> dict:
    from pipeline.render_stage import RenderStageConfig, run_render_stage

    cfg = RenderStageConfig(category=category, objects=objects, renderer=renderer,
                            out=str(out / f"{renderer}-{category}.zarr"),
                            report_dir=str(out / f"report-{renderer}-{category}"))
    t0 = time.perf_counter()
    result = run_render_stage(cfg)
    m = result.metrics
    m["wall_with_report_s"] = time.perf_counter() - t0
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--renderer", default="pyrender")
    ap.add_argument("--baseline", default="raycast")
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--categories", default="chair,table,airplane,car,motorcycle,bottle")
    ap.add_argument("--single-core", action="store_true", help="also measure with 1 thread")
    ap.add_argument("--json", action="store_true", help="print one JSON line (internal)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cat in args.categories.split(","):
            for name in (args.renderer, args.baseline):
                rows.append((cat, name, run(name, cat, args.objects, Path(tmp))))
    if args.json:
        print(json.dumps({name: m["views_per_s"] for _, name, m in rows if _ == rows[0][0]}))
        return
    print(f"\n{'category':<11}{'renderer':<10}{'views/s':>9}  time share")
    for cat, name, m in rows:
        share = ", ".join(f"{k} {v:.0%}" for k, v in m["time_share"].items())
        print(f"{cat:<11}{name:<10}{m['views_per_s']:>9.1f}  {share}")
    main_rate = [m["views_per_s"] for _, n, m in rows if n == args.renderer]
    base_rate = [m["views_per_s"] for _, n, m in rows if n == args.baseline]
    mean_main, mean_base = sum(main_rate) / len(main_rate), sum(base_rate) / len(base_rate)
    print(f"\nmean views/s: {args.renderer} {mean_main:.1f}, {args.baseline} {mean_base:.1f} "
          f"(ratio {mean_main / mean_base:.2f}x) on {os.cpu_count()} cores")
    if args.single_core:
        env = {**os.environ, "LP_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, __file__, "--objects", str(args.objects),
                              "--categories", "chair", "--json"], env=env, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        print(f"single core (LP_NUM_THREADS=1), chair: {out} views/s")


if __name__ == "__main__":
    main()
