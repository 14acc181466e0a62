"""The FeatureNeRF training loop: caches in, self-contained checkpoints out.

Resume is bit-identical: batches and ray samples derive from ``(seed, step)``, and a checkpoint
holds model, optimizer, AMP scaler, step, RNG states, config and the teacher identity.
Several GPUs: launch with ``torchrun --nproc_per_node N -m pipeline.cli train ...`` (DDP).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from train.config import TrainConfig
from train.data import RayBatchDataset, StepSampler, make_loader
from train.losses import featurenerf_loss
from train.model import FeatureNeRF, render_rays

CKPT_PATTERN = "step-{:07d}.ckpt"
INIT_CKPT = "init.ckpt"  # the model as initialised (step 0), model weights and config only


class TrainStep(nn.Module):
    """encode + render as one forward, so DDP sees a regular module call."""

    def __init__(self, model: FeatureNeRF, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict:
        r = self.cfg.render
        self.model.encode(batch["images"], batch["K_in"], batch["c2w_in"])
        return render_rays(
            self.model, batch["origins"], batch["dirs"], r.near, r.far, r.n_coarse,
            r.n_importance, r.n_depth, train=True, generator=generator,
            coord_reduce=r.coord_reduce, return_internal=False)


def loss_targets(batch: dict[str, Tensor], cfg: TrainConfig) -> dict[str, Tensor]:
    """Targets for :func:`featurenerf_loss` from a data batch."""
    targets = {"rgb": batch["rgb"]}
    if "feature" in batch and cfg.loss.feature != 0:
        targets["feature"] = batch["feature"]
    if cfg.data.coord_target == "gt-surface":  # variant: ground-truth geometry
        targets["coord"], targets["coord_mask"] = batch["coord"], batch["fg"]
    elif cfg.data.coord_target != "self":
        raise ValueError(f"data.coord_target must be 'self' or 'gt-surface', got "
                         f"{cfg.data.coord_target!r}")
    return targets


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step-*.ckpt"))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic torch.save (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, with a clear error if it is bad."""
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); "
                         "delete it to resume from the previous one") from exc


def model_from_checkpoint(state: dict, device: str | torch.device = "cpu") -> FeatureNeRF:
    """Rebuild the model of a checkpoint (no ImageNet download: weights come from the file)."""
    cfg = TrainConfig.from_dict(state["config"])
    model_cfg = type(cfg.model)(**{**cfg.model.to_dict(), "pretrained_encoder": False})
    model = FeatureNeRF(model_cfg)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), world, local)


SCHEDULE_KEYS = ("steps", "ckpt_every", "log_every", "image_every", "keep_checkpoints", "device",
                 "runs_dir")


def config_changes(saved: dict, current: dict) -> list[str]:
    """Keys (dotted) whose values differ, ignoring the schedule (which may grow on resume)."""
    changed = []
    for key in sorted(set(saved) | set(current)):
        if key in SCHEDULE_KEYS:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{k}" for k in config_changes(a, b)]
        elif a != b:
            changed.append(key)
    return changed


def describe_config_changes(saved: dict, current: dict) -> list[str]:
    """``key: old -> new`` for the recipe keys that differ (schedule keys ignored)."""
    from cache.zarr_io import describe_changes

    keep = set(config_changes(saved, current))
    return [c for c in describe_changes(saved, current) if c.split(":")[0] in keep]


def input_changes(saved: dict, current: dict) -> list[str]:
    """What differs between a checkpoint's inputs and this run's (``RayBatchDataset.inputs``):
    the render settings by name, or a content change under the same settings; the teacher."""
    from cache.zarr_io import describe_changes

    out = []
    if saved.get("render_fingerprint") != current.get("render_fingerprint"):
        diffs = describe_changes(saved.get("render_config") or {},
                                 current.get("render_config") or {})
        out.append("renders " + (", ".join(diffs) if diffs and saved.get("render_config")
                                 else "re-rendered or changed (same settings, other content)"))
    if (saved.get("teacher_identity") or {}) != (current.get("teacher_identity") or {}):
        diffs = describe_changes(saved.get("teacher_identity") or {},
                                 current.get("teacher_identity") or {})
        out.append("teacher " + ", ".join(diffs))
    elif saved.get("feature_fingerprint") not in (None, current.get("feature_fingerprint")):
        out.append("features recomputed (same teacher, other content)")
    return out


def checkpoint_inputs(state: dict) -> dict:
    """The inputs a checkpoint was trained on (older checkpoints kept two of them top-level)."""
    return state.get("inputs") or {k: state.get(k) for k in ("render_fingerprint",
                                                              "teacher_identity")}


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True,
          if_stale: str = "fail") -> dict[str, Any]:
    """Train (or resume) ``cfg``; returns a summary with the final losses and throughput.

    The run directory is locked (one writer). A run directory whose newest checkpoint was made
    with another configuration or on other inputs (render store, teacher features) is stale:
    an error (``if_stale="fail"``) or discarded and trained afresh (``"restart"``).
    """
    from contextlib import ExitStack

    from cache.store_lock import StoreLock

    with ExitStack() as stack:
        if int(os.environ.get("RANK", "0")) == 0:
            stack.enter_context(StoreLock(cfg.run_dir, stage="train"))
        return _train(cfg, resume, progress, if_stale)


def _train(cfg: TrainConfig, resume: bool, progress: bool, if_stale: str) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device)
    if dist_info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    torch.manual_seed(cfg.seed)
    run_dir = cfg.run_dir
    dataset = RayBatchDataset(cfg.data)
    if cfg.loss.feature != 0 and dataset.feature_dim == 0:
        raise ValueError("feature loss weight > 0 but no feature store given (--teacher)")
    cfg.model.d_feature = dataset.feature_dim if cfg.loss.feature != 0 else 0
    model = FeatureNeRF(cfg.model).to(device)
    step_module: nn.Module = TrainStep(model, cfg)
    if dist_info.world > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = 0
    existing = checkpoints(run_dir)
    if resume and existing:
        state = load_checkpoint(existing[-1], device)
        changed = describe_config_changes(state["config"], cfg.to_dict())
        changed += input_changes(checkpoint_inputs(state), dataset.inputs)
        if changed and if_stale != "restart":
            raise ValueError(f"{run_dir}: its checkpoints were trained with another configuration "
                             f"or on other inputs ({'; '.join(changed)}); pass --if-stale restart "
                             "(or --no-resume) to train afresh, or use another --name")
        if changed:
            for old in existing:
                old.unlink()
            (run_dir / INIT_CKPT).unlink(missing_ok=True)
            existing = []
    if resume and existing:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start = int(state["step"])
    if dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(run_dir / "config.yaml")
        if start == 0:  # the untrained network, for the evaluation's step-0 control
            save_checkpoint(run_dir / INIT_CKPT, {
                "step": 0, "model": model.state_dict(), "config": cfg.to_dict(),
                "format": "fnerf-pipeline/ckpt-v1", "teacher_identity": dataset.teacher_identity,
                "render_fingerprint": dataset.render_fingerprint, "inputs": dataset.inputs,
                "weights_source": model.weights_source})
    writer = _summary_writer(run_dir) if dist_info.main else None
    sampler = StepSampler(len(dataset), cfg.data, cfg.seed, start, cfg.steps,
                          dist_info.rank, dist_info.world)
    sampler_objects = dataset.objects
    loader = make_loader(dataset, sampler, cfg.data.num_workers)
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.name}", unit="step",
               disable=not (progress and dist_info.main), file=sys.stderr)
    history: list[dict[str, float]] = []
    rays_per_step = cfg.data.objects_per_step * cfg.data.rays_per_object * dist_info.world
    t0, step = time.perf_counter(), start
    state_extra = {"teacher_identity": dataset.teacher_identity,
                   "render_fingerprint": dataset.render_fingerprint, "inputs": dataset.inputs,
                   "weights_source": model.weights_source,
                   "object_indices": sampler_objects}
    for step, batch in enumerate(loader, start=start):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = step_module(batch, gen)
            total, terms = featurenerf_loss(outputs, loss_targets(batch, cfg), cfg.loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        for p in model.parameters():  # official: NaN/Inf gradients are zeroed
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        record = {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        history.append(record)
        done_steps = step + 1 - start
        rays_s = done_steps * rays_per_step / (time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", rays_s=f"{rays_s:.0f}")
        if writer is not None and (step % cfg.log_every == 0 or step + 1 == cfg.steps):
            for k, v in record.items():
                writer.add_scalar(f"loss/{k}", v, step + 1)
            writer.add_scalar("perf/rays_per_s", rays_s, step + 1)
            if "rgb_fine" in terms:
                writer.add_scalar("psnr/train_fine", -10 * math.log10(max(terms["rgb_fine"].item(),
                                                                            1e-10)), step + 1)
        if writer is not None and cfg.image_every and (step + 1) % cfg.image_every == 0:
            _log_images(writer, model, batch, cfg, step + 1)
        if dist_info.main and (
            (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0) or step + 1 == cfg.steps
        ):
            _checkpoint(run_dir, step + 1, model, optimizer, scaler, cfg, state_extra)
    bar.close()
    if writer is not None:
        writer.close()
    wall = time.perf_counter() - t0
    n = max(1, len(history))
    visits = sampler.visit_counts(0, cfg.steps)  # the whole schedule, all ranks
    return {
        "object_visits": dict(zip(map(int, sampler_objects), visits.tolist(), strict=True)),
        "steps": cfg.steps, "start_step": start, "wall_s": wall, "verify_s": dataset.verify_s,
        "rays_per_s": (n * rays_per_step / wall) if history else 0.0,
        "first": history[0] if history else {}, "last": history[-1] if history else {},
        "history": history, "checkpoint": str(checkpoints(run_dir)[-1]) if
        checkpoints(run_dir) else None,
    }


def _checkpoint(run_dir: Path, step: int, model: FeatureNeRF, optimizer, scaler,
                cfg: TrainConfig, extra: dict) -> None:
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict(), "rng": rng_state(), "config": cfg.to_dict(),
             "format": "fnerf-pipeline/ckpt-v1", **extra}
    save_checkpoint(run_dir / "checkpoints" / CKPT_PATTERN.format(step), state)
    for old in checkpoints(run_dir)[: -max(1, cfg.keep_checkpoints)]:
        old.unlink(missing_ok=True)


def _summary_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: scalars are still in the history
        return None
    return SummaryWriter(str(run_dir / "tb"))


@torch.no_grad()
def _log_images(writer, model: FeatureNeRF, batch: dict[str, Tensor], cfg: TrainConfig,
                step: int) -> None:
    """The first input view and the fine RGB rendered back from it (32x32, cheap)."""
    from train.rays import pixel_rays

    size = 32
    K = batch["K_in"][:1, 0].clone()
    K[:, :2] *= size / batch["images"].shape[-1]
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    uv = torch.stack([xs, ys], -1).reshape(1, -1, 2).float().to(K.device) + 0.5
    origins, dirs = pixel_rays(K, batch["c2w_in"][:1, 0], uv)
    model.encode(batch["images"][:1], batch["K_in"][:1], batch["c2w_in"][:1])
    out = render_rays(model, origins, dirs, cfg.render.near, cfg.render.far, cfg.render.n_coarse,
                      cfg.render.n_importance, cfg.render.n_depth, train=False,
                      return_internal=False)
    rgb = out["fine"]["rgb"].reshape(size, size, 3).clamp(0, 1).permute(2, 0, 1)
    writer.add_image("render/fine_rgb", rgb, step)
    writer.add_image("input/view0", batch["images"][0, 0], step)
