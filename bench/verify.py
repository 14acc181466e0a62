"""What verified reads cost: full verification of a store against a plain read of it.

    python bench/verify.py [RENDER_STORE] [FEATURE_STORE] [--repro-dir DIR]

For each store: the seconds of ``cache.verify.verify_store`` (every array of every done object
re-read and hashed) against a plain read of the same arrays in the same process (ratio), i.e.
the hashing share. With ``--repro-dir`` (a ``bench/repro.py --keep`` folder) it also sums the
``verify_s`` each stage of that ``dvc repro`` recorded and gives it as a share of the stage
times, the cost of verification inside a default run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain_read_s(path: str) -> float:
    """Seconds to read every content array of every done object, no hashing."""
    import numpy as np

    from cache.zarr_io import open_group

    group = open_group(path)
    names = group.attrs["content_arrays"]
    done = np.flatnonzero(group["done"][:])
    t0 = time.perf_counter()
    for i in done:
        for name in names:
            group[name][int(i)]
    return time.perf_counter() - t0


def stage_verify_seconds(repro: Path) -> None:
    rows = []
    for metrics in sorted(repro.glob("reports/**/metrics.json")):
        m = json.loads(metrics.read_text())
        wall = m.get("stage_wall_s") or m.get("wall_s")
        if "verify_s" in m:
            rows.append((str(metrics.parent.relative_to(repro)), m["verify_s"], wall))
    for summary in sorted(repro.glob("reports/evaluate/**/summary.json")):
        s = json.loads(summary.read_text())
        if "verify_s" in s:
            rows.append((str(summary.parent.relative_to(repro)), s["verify_s"], s["wall_s"]))
    total_v = sum(r[1] for r in rows)
    total_w = sum(r[2] or 0 for r in rows)
    for name, v, w in rows:
        print(f"  {name:40s} verify {v:6.2f} s of {w or 0:7.1f} s stage")
    print(f"verification inside the run: {total_v:.1f} s of {total_w:.0f} s of stage time "
          f"({100 * total_v / max(total_w, 1e-9):.2f} %)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stores", nargs="*", default=["data/renders/chair.zarr",
                                                   "data/features/effnet/chair.zarr"])
    ap.add_argument("--repro-dir", type=Path)
    args = ap.parse_args()
    from cache.verify import verify_store

    base = args.repro_dir or Path(".")
    for store in args.stores:
        path = str(base / store)
        if not Path(path).exists():
            print(f"{path}: not found, skipped")
            continue
        plain = plain_read_s(path)
        check = verify_store(path)
        print(f"{path}: {check.n_done} objects, verify {check.seconds:.2f} s vs plain read "
              f"{plain:.2f} s -> {check.seconds / plain:.2f}x ({'ok' if check.ok else 'BAD'})")
    if args.repro_dir:
        stage_verify_seconds(args.repro_dir)


if __name__ == "__main__":
    main()
