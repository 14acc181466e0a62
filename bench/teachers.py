"""Teacher stage vs bare teacher forward, per teacher, and the PCA decompositions' seconds.

    python bench/teachers.py [--objects 12] [--slow-objects 2] [--teachers daisy,effnet,dino,ldm]
                             [--repeats 1] [--pca-only]

Per teacher, in one process and on the same images (procedural chairs, 50 views at 128 px,
rendered once with the raycast backend):
- **bare**: ``teacher(batch)`` over every view, batches of 16, images already in memory (no
  store, no digests, no report): the baseline;
- **stage**: ``run_distill_stage`` end to end (verified reads, teacher, Zarr writes with
  digests, read-after-write verification, stats, HTML report), timed from the call to its
  return, and its streaming part alone (``images_per_s`` in the stage metrics);
- ratio = stage images/s / bare images/s (1.0 = all I/O and reporting hidden); "per CPU s":
  the same with CPU seconds of the process (all threads), which shows the extra work the stage
  does independently of other load on the machine.
Teachers: DAISY (no weights), EfficientNet-Lite0 (the ImageNet weights shipped in the wheel),
DINO ViT-S/8 with random init at 256 px, and the LDM code path on a tiny random-init SD-shaped
diffusers model (input 256 px, grid 16x16) saved to a temporary folder (offline). DINO and LDM
run on ``--slow-objects`` objects (slow on CPU). Then ``fit_pca`` / ``pca_rgb`` timings: the
former M x C SVD against the covariance ``eigh`` on one BLAS thread (same process).
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

import numpy as np  # noqa: E402


def make_renders(out: Path, objects: int) -> Path:
    from pipeline.render_stage import RenderStageConfig, run_render_stage

    report = out.parent / f"rep-{out.stem}"
    run_render_stage(RenderStageConfig(category="chair", objects=objects, renderer="raycast",
                                       out=str(out), report_dir=str(report)))
    return out


def tiny_sd(folder: Path) -> Path:
    """A random-init SD-shaped model (VAE x8, 4-level UNet, 96 + 64 hooked channels)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64, 96), norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    ).save_pretrained(str(folder / "unet"))
    AutoencoderKL(
        block_out_channels=(16, 32, 32, 32), layers_per_block=1, latent_channels=4,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    ).save_pretrained(str(folder / "vae"))
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                  beta_end=0.012).save_pretrained(str(folder / "scheduler"))
    return folder


def bare_rate(teacher, renders_path: Path, batch_size: int) -> tuple[float, float]:
    """(images/s, images per CPU second) of ``teacher(batch)`` alone over every view of the
    store, in stage order."""
    from cache.render_store import RenderStore
    from pipeline.distill_stage import VerifiedObjects, read_batch

    store = RenderStore(renders_path)
    objects = VerifiedObjects(store, extras=False)
    pairs = [(o, v) for o in store.valid_indices() for v in range(store.n_views)]
    batches = [read_batch(objects, pairs[k : k + batch_size], "chair")
               for k in range(0, len(pairs), batch_size)]  # all in memory before timing
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in batches:
        teacher(batch)
    return len(pairs) / (time.perf_counter() - t0), len(pairs) / (time.process_time() - c0)


def stage_rates(name: str, options: dict, renders_path: Path, tmp: Path, run: int,
                batch_size: int) -> tuple[float, float, float, dict]:
    """(end-to-end images/s, streaming images/s, images per CPU second, metrics) of one fresh
    distill-cache run."""
    from pipeline.distill_stage import DistillStageConfig, run_distill_stage

    cfg = DistillStageConfig(category="chair", teacher=name, teacher_options=dict(options),
                             renders=str(renders_path), out=str(tmp / f"{name}-{run}.zarr"),
                             report_dir=str(tmp / f"rep-{name}-{run}"), batch_size=batch_size)
    t0, c0 = time.perf_counter(), time.process_time()
    m = run_distill_stage(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return m["images"] / wall, m["images_per_s"], m["images"] / cpu, m


def bench_teachers(args: argparse.Namespace, tmp: Path) -> None:
    from pipeline.distill_stage import get_teacher, read_batch  # noqa: F401 (warm imports)

    big = make_renders(tmp / "chairs.zarr", args.objects)
    small = make_renders(tmp / "chairs-small.zarr", args.slow_objects)
    specs = {
        "daisy": ({}, big),
        "effnet": ({"device": "cpu"}, big),
        "dino": ({"weights": "random", "device": "cpu"}, small),
        "ldm": ({"model": str(tiny_sd(tmp / "tiny_sd")), "text_encoder": "none",
                 "input_size": 256, "device": "cpu"}, small),
    }
    rows = []
    for name in args.teachers.split(","):
        options, renders = specs[name]
        teacher = get_teacher(name, options)  # the instance the stage uses (built once)
        bare_rate(teacher, renders, args.batch_size)  # warm-up pass, not counted
        for r in range(args.repeats):
            bare, bare_cpu = bare_rate(teacher, renders, args.batch_size)
            e2e, stream, stage_cpu, m = stage_rates(name, options, renders, tmp, r,
                                                    args.batch_size)
            rows.append((name, m["images"], bare, stream, e2e, stage_cpu / bare_cpu))
            print(f"{name}: bare {bare:.1f} img/s, stage stream {stream:.1f}, end to end "
                  f"{e2e:.1f} (teacher {m['teacher_s']:.2f} s, read {m['read_s']:.2f} s, "
                  f"write {m['write_s']:.2f} s, verify {m['verify_s']:.2f} s, stage wall "
                  f"{m['stage_wall_s']:.2f} s)", flush=True)
    print("\nbaseline: the bare teacher forward, teacher(batch) over the same images in memory "
          f"(batch {args.batch_size}), same process; {os.cpu_count()} cores")
    print(f"{'teacher':<8}{'images':>7}{'bare img/s':>12}{'stream':>9}{'ratio':>7}"
          f"{'end-to-end':>12}{'ratio':>7}{'per CPU s ratio':>17}")
    for name, n, bare, stream, e2e, cpu_ratio in rows:
        print(f"{name:<8}{n:>7}{bare:>12.1f}{stream:>9.1f}{stream / bare:>7.2f}"
              f"{e2e:>12.1f}{e2e / bare:>7.2f}{cpu_ratio:>17.2f}")


def bench_pca(repeats: int = 3) -> None:
    """Seconds of the former SVD and the covariance eigh, default BLAS threads, same data."""
    from threadpoolctl import threadpool_info

    from cache.feature_store import fit_pca
    from pipeline.reports.features import pca_rgb

    def old_fit(features: np.ndarray, dim: int) -> np.ndarray:
        x = features[np.abs(features).sum(axis=1) > 0].astype(np.float64)
        return np.linalg.svd(x - x.mean(axis=0), full_matrices=False)[2][:dim].T

    def old_rgb(feats: np.ndarray) -> np.ndarray:
        flat = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
        x = flat[np.abs(flat).sum(axis=1) > 0]
        return np.linalg.svd(x - x.mean(axis=0), full_matrices=False)[2][:3]

    def best(fn, *a) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(*a)
            times.append(time.perf_counter() - t0)
        return min(times)

    rng = np.random.default_rng(0)
    blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads"
                     for i in threadpool_info() if i["user_api"] == "blas")
    print(f"\nPCA (best of {repeats}; BLAS default: {blas}; synthetic features with a "
          "decaying spectrum, 35% foreground)")
    print(f"{'call':<40}{'SVD s':>8}{'eigh s':>8}")
    for c, rows, dim in ((107, 262_144, 64), (384, 262_144, 64), (960, 65_536, 128)):
        feats = (rng.normal(size=(rows, c)) * np.geomspace(3, 0.01, c)).astype(np.float32)
        feats[rng.random(rows) > 0.35] = 0
        print(f"{f'fit_pca ({rows} x {c} -> {dim})':<40}{best(old_fit, feats, dim):>8.2f}"
              f"{best(fit_pca, feats, dim):>8.2f}")
    for c in (107, 384, 960):
        feats = (rng.normal(size=(4, 32, 32, c)) * np.geomspace(3, 0.01, c)).astype(np.float32)
        feats[:, :10] = 0
        print(f"{f'pca_rgb (4 x 32 x 32 x {c}), x4 per report':<40}"
              f"{4 * best(old_rgb, feats):>8.2f}{4 * best(pca_rgb, feats):>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=12, help="objects for daisy and effnet")
    ap.add_argument("--slow-objects", type=int, default=2, help="objects for dino and ldm")
    ap.add_argument("--teachers", default="daisy,effnet,dino,ldm")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--pca-only", action="store_true")
    args = ap.parse_args()
    if not args.pca_only:
        with tempfile.TemporaryDirectory() as tmpdir:
            bench_teachers(args, Path(tmpdir))
    bench_pca()


if __name__ == "__main__":
    main()
