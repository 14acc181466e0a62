"""bench/gpu.py cannot rot: its CPU fallback runs every section at tiny sizes."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_gpu_bench_cpu_smoke_prints_every_section():
    result = subprocess.run([sys.executable, "bench/gpu.py", "--cpu-smoke"], cwd=REPO,
                            capture_output=True, text=True, timeout=600,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                 "HF_HUB_OFFLINE": "1", "PYOPENGL_PLATFORM": "egl"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for needle in ("dino cache: bare forward", "ldm cache: bare forward", "x of bare",
                   "train paper profile, 1 objects", "supply / demand"):
        assert needle in out, (needle, out)
