"""The default pipeline's wall time, stage by stage, on a fresh copy of the repository.

    python bench/repro.py [--keep DIR] [--set KEY=VALUE ...] [--stages render,distill,...]

Clones the committed HEAD into a temporary folder (what a fresh clone gets: no data, no runs,
no reports), then runs ``dvc repro --single-item`` for each stage of ``dvc.yaml`` in pipeline
order and prints each stage's seconds, its share of the total and the total against the
30-minute budget. ``--set`` overrides params.yaml entries first (``dvc exp run -S`` style, e.g.
``--set distill.teacher=daisy`` for a queued teacher experiment). Run it on an otherwise idle
machine: parallel load distorts every figure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("render", "distill", "train", "train-pixelnerf", "evaluate")
BUDGET_S = 30 * 60


def set_param(params: dict, dotted: str) -> None:
    """Apply ``a.b=value`` (YAML-typed value) to a params dict in place."""
    key, _, value = dotted.partition("=")
    *path, last = key.split(".")
    node = params
    for part in path:
        node = node[part]
    node[last] = yaml.safe_load(value)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="clone into this folder and keep it (default: a temp dir)")
    ap.add_argument("--set", action="append", default=[], help="params override KEY=VALUE")
    ap.add_argument("--stages", default=",".join(STAGES))
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fnerf-repro-"))
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty; pass an empty or new folder to --keep")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    params_path = work / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    for item in args.set:
        set_param(params, item)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = str(Path(sys.executable).with_name("dvc"))
    times: dict[str, float] = {}
    for stage in args.stages.split(","):
        t0 = time.perf_counter()
        subprocess.run([dvc, "repro", "--single-item", stage], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
        times[stage] = time.perf_counter() - t0
        print(f"{stage:<16} {times[stage]:7.1f} s", flush=True)
    total = sum(times.values())
    print(f"{'total':<16} {total:7.1f} s = {total / 60:.1f} min "
          f"({total / BUDGET_S:.2f} x the 30-minute budget)")
    for stage, t in times.items():
        print(f"  {stage:<14} {t / total:6.1%}")
    print(f"work dir: {work}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
