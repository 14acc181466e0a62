"""One script for a ~10-minute GPU session: teacher caches, training throughput, loader supply.

    python bench/gpu.py                 # on a CUDA machine, after the README install
    python bench/gpu.py --cpu-smoke     # tiny sizes on the CPU (CI runs this so it cannot rot)

Runs unattended from a fresh clone, offline: every model is random-initialised with the real
architecture (throughput does not depend on the weights), and the render store is made here
(procedural chairs, ray cast). It prints, each against a baseline measured in the same process:

1. DINO ViT-S/8 cache, end to end (render store in, Zarr out: ``run_distill_stage``) against
   the bare model forward on the same images (ratio);
2. the same for the Latent Diffusion UNet (SD-1.5 shapes) at the teacher's default grid;
3. paper-profile training rays/s and peak GPU memory at 1 object per step and at the largest
   power-of-two objects per step that fits (or the time budget allows);
4. the loader's supply (steps/s of the DataLoader alone) against the trainer's demand
   (steps/s of the training step on pre-loaded batches).

Without CUDA and without ``--cpu-smoke`` it prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

#: sizes per mode: objects x views x image size of the render store, teacher input sizes,
#: training steps per measurement, largest objects per step tried
SIZES = {
    "gpu": {"objects": 6, "views": 50, "size": 128, "dino_input": 256, "ldm_input": 512,
            "ldm": "sd15", "steps": 20, "max_objects": 64, "loader_steps": 40},
    "cpu-smoke": {"objects": 3, "views": 4, "size": 64, "dino_input": 64, "ldm_input": 64,
                  "ldm": "tiny", "steps": 2, "max_objects": 2, "loader_steps": 3},
}


def make_renders(tmp: Path, s: dict) -> Path:
    from pipeline.render_stage import RenderStageConfig, run_render_stage

    out = tmp / "chair.zarr"
    run_render_stage(RenderStageConfig(
        category="chair", objects=s["objects"], views=s["views"], size=s["size"],
        renderer="raycast", split_fractions=(0.7, 0.0, 0.3), out=str(out),
        report_dir=str(tmp / "rep-render")))
    return out


def ldm_folder(tmp: Path, kind: str) -> Path:
    """A random-initialised diffusers folder: SD-1.5 UNet/VAE shapes, or a tiny one."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    folder = tmp / f"ldm-{kind}"
    torch.manual_seed(0)
    if kind == "sd15":
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768,
                                    attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4,
                            layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
    else:
        unet = UNet2DConditionModel(
            sample_size=8, layers_per_block=1, block_out_channels=(8, 16, 16, 16),
            norm_num_groups=4, cross_attention_dim=32, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                            norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2)
    unet.save_pretrained(str(folder / "unet"))
    vae.save_pretrained(str(folder / "vae"))
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                  beta_end=0.012).save_pretrained(str(folder / "scheduler"))
    return folder


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def teacher_ratio(name: str, options: dict, renders: Path, tmp: Path, device: str) -> dict:
    """Bare teacher forward vs the distill-cache stage on the same images (images/s)."""
    from cache.render_store import RenderStore
    from pipeline.distill_stage import (
        DistillStageConfig,
        VerifiedObjects,
        get_teacher,
        read_batch,
        run_distill_stage,
    )

    store = RenderStore(renders)
    teacher = get_teacher(name, options)
    objects = VerifiedObjects(store, extras=False)
    pairs = [(o, v) for o in store.valid_indices() for v in range(store.n_views)]
    batch = 16 if device.startswith("cuda") else 4
    batches = [read_batch(objects, pairs[k:k + batch], "chair")
               for k in range(0, len(pairs), batch)]
    teacher(batches[0])  # warm-up (kernels, allocator)
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        teacher(b)
    sync(device)
    bare = len(pairs) / (time.perf_counter() - t0)
    cfg = DistillStageConfig(category="chair", teacher=name, teacher_options=options,
                             renders=str(renders), out=str(tmp / f"{name}.zarr"),
                             report_dir=str(tmp / f"rep-{name}"), batch_size=batch)
    metrics = run_distill_stage(cfg)
    stage = metrics["images_per_s"]
    grid = metrics["grid"]
    mb = metrics["store_mb"] / max(1, metrics["objects"])
    print(f"{name} cache: bare forward {bare:.1f} img/s, stage end to end {stage:.1f} img/s "
          f"-> {stage / bare:.2f}x of bare; grid {grid[0]}x{grid[1]}x{metrics['feature_dim']}, "
          f"{mb:.1f} MB per object ({store.n_views} views)", flush=True)
    return {"bare": bare, "stage": stage}


def train_throughput(renders: Path, features: Path, tmp: Path, s: dict, device: str) -> None:
    """Paper-profile rays/s and peak memory at 1 .. max objects per step; loader vs trainer."""
    from pipeline.train_stage import build_train_config
    from train.data import RayBatchDataset, StepSampler, make_loader
    from train.trainer import train

    def config(objects: int, name: str):
        cfg = build_train_config("chair", "dino", name, None, {
            "renders": str(renders), "features": str(features), "device": device,
            "runs_dir": str(tmp / "runs"), "steps": s["steps"], "ckpt_every": 0,
            "objects_per_step": objects, "allow_random_encoder": True}, profile="paper")
        cfg.model.pretrained_encoder = device.startswith("cuda")  # CPU smoke: no weights lookup
        cfg.data.split = "train"
        if not device.startswith("cuda"):
            cfg.model.width, cfg.model.n_blocks, cfg.model.backbone = 32, 2, "resnet18"
            cfg.render.n_coarse, cfg.render.n_importance, cfg.render.n_depth = 4, 2, 2
            cfg.data.rays_per_object, cfg.data.n_target_views = 16, 2
        return cfg

    objects, last_rate = 1, None
    while objects <= s["max_objects"]:
        cfg = config(objects, f"bench-{objects}")
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        try:
            summary = train(cfg, resume=False, progress=False)
        except torch.cuda.OutOfMemoryError:
            print(f"train paper profile: {objects} objects/step does not fit", flush=True)
            break
        peak = (torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda")
                else float("nan"))
        last_rate = summary["rays_per_s"]
        print(f"train paper profile, {objects} objects x {cfg.data.rays_per_object} rays/step: "
              f"{last_rate:.0f} rays/s, peak {peak:.2f} GiB", flush=True)
        objects *= 2
    cfg = config(4 if device.startswith("cuda") else 1, "bench-loader")
    ds = RayBatchDataset(cfg.data)
    n = s["loader_steps"]
    loader = make_loader(ds, StepSampler(len(ds), cfg.data, 0, 0, n + 2), cfg.data.num_workers)
    it = iter(loader)
    next(it), next(it)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    supply = n / (time.perf_counter() - t0)
    cfg.steps = n
    demand_summary = train(cfg, resume=False, progress=False)
    demand = demand_summary["steps"] / demand_summary["wall_s"]
    print(f"loader supply {supply:.1f} steps/s ({cfg.data.num_workers} workers) vs trainer "
          f"{demand:.1f} steps/s (loader included) -> supply / demand {supply / demand:.1f}x",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--skip", default="", help="comma list of sections: dino,ldm,train")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("bench/gpu.py: no CUDA device here; nothing measured (use --cpu-smoke for the "
              "tiny CPU run)")
        return
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    s, device = SIZES[mode], ("cpu" if args.cpu_smoke else "cuda")
    skip = set(filter(None, args.skip.split(",")))
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (smoke sizes)"
    print(f"bench/gpu.py on {name}, torch {torch.__version__}, mode {mode}", flush=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        renders = make_renders(tmp, s)
        dino = {"weights": "random", "input_size": s["dino_input"], "device": device}
        if "dino" not in skip or "train" not in skip:
            teacher_ratio("dino", dino, renders, tmp, device)
        if "ldm" not in skip:
            ldm = {"model": str(ldm_folder(tmp, s["ldm"])), "text_encoder": "none",
                   "input_size": s["ldm_input"], "device": device}
            teacher_ratio("ldm", ldm, renders, tmp, device)
        if "train" not in skip:
            train_throughput(renders, tmp / "dino.zarr", tmp, s, device)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
