"""The FeatureNeRF training loop: caches in, self-contained checkpoints out.

Resume is bit-identical: batches and ray samples derive from ``(seed, step, rank)``, and a
checkpoint holds model, optimizer, AMP scaler, step, RNG states, config and the teacher identity.
Several GPUs: launch with ``torchrun --nproc_per_node N -m pipeline.cli train ...`` (DDP): rank
0 alone writes files, every rank samples its own objects and rays, and the logged losses are
reduced over the ranks at log steps only (no per-step host sync).

Progress reports: ``train(..., on_report=hook)`` calls ``hook(step, model, summary)`` on rank 0
only, every :func:`report_interval` steps and once at the end (:func:`run_report_hook`: under
``torch.no_grad()``, in eval mode, every RNG state restored afterwards), so a run with reports
trains bit-identically to one without. The trainer draws nothing; the hook does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
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

#: ``hook(steps done, model, summary so far)`` (rank 0; see :func:`run_report_hook`)
ReportHook = Callable[[int, FeatureNeRF, dict[str, Any]], None]

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
    """This process's place in the torchrun job (``world == 1``: no process group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), world, local)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.world <= 1:
        return
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[info.local_rank])
    else:
        dist.barrier()


def shutdown_distributed(ok: bool) -> None:
    """Leave the process group: a final barrier after a clean run (not after an error, where
    the other ranks may never reach it), then ``destroy_process_group``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if ok and dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        elif ok:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def sampling_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of the per-step ray-sampling generator (stratified jitter, importance ``u``, depth
    noise). Rank 0 keeps the single-process seed; other ranks are offset by ``rank * 2**52``
    (distinct for any seed below 4.5e9 and step below 1e6)."""
    return seed * 1_000_003 + step + rank * (1 << 52)


def param_digest(named: Iterable[tuple[str, Tensor]]) -> str:
    """sha256 over ``(name, dtype, shape, bytes)`` of named tensors, in the given order."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


#: set to a directory: every rank writes ``rank-<r>.json`` (step, parameter sha256) at the end
PARAM_DUMP_ENV = "FNERF_DEBUG_PARAM_DUMP"


class LossLog:
    """Loss bookkeeping without per-step host syncs and with bounded memory.

    :meth:`add` accumulates a step's detached 0-d loss tensors into a (K,) float64 window sum
    on the device. :meth:`flush` (log steps only) reduces the window and the current step over
    the ranks (mean; rays/s summed) in one ``all_reduce`` and converts once to floats. Kept:
    ``first`` / ``last`` (the values of the first and the latest flushed step), ``mean`` (all
    steps of this run) and ``recent`` (the last ``keep`` windows, each
    ``{"step", "steps", **means}``).
    """

    def __init__(self, world: int = 1, keep: int = 100):
        self.world, self.keys = world, []
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.recent: deque[dict[str, float]] = deque(maxlen=keep)
        self._sum: Tensor | None = None
        self._current: Tensor | None = None
        self._n = 0
        self._total: list[float] = []
        self._total_n = 0

    def add(self, terms: dict[str, Tensor]) -> None:
        """Add one step's terms (same keys every step; 0-d tensors, no host sync)."""
        if not self.keys:
            self.keys = list(terms)
        vec = torch.stack([terms[k].detach().reshape(()) for k in self.keys]).double()
        self._current = vec
        self._sum = vec.clone() if self._sum is None else self._sum + vec
        self._n += 1

    def flush(self, step: int, rays_s: float) -> tuple[dict[str, float], float]:
        """Reduce and convert: ``(window means, rays/s summed over ranks)``; resets the window.
        ``step`` is the 1-based step count the window ends at."""
        if self._sum is None or self._current is None:
            return {}, 0.0
        k = len(self.keys)
        packed = torch.cat([self._sum, self._current,
                            torch.tensor([rays_s], dtype=torch.float64, device=self._sum.device)])
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(packed)  # sum over ranks
        vals = packed.tolist()  # the one host sync of a log step
        window = {key: v / (self._n * self.world) for key, v in zip(self.keys, vals[:k],
                                                                      strict=True)}
        current = {key: v / self.world for key, v in zip(self.keys, vals[k:2 * k], strict=True)}
        if not self.first:
            self.first = current
        self.last = current
        sums = [v / self.world for v in vals[:k]]
        self._total = sums if not self._total else [a + b for a, b in zip(self._total, sums,
                                                                            strict=True)]
        self._total_n += self._n
        self.recent.append({"step": step, "steps": self._n, **window, "rays_s": vals[2 * k]})
        self._sum, self._n = None, 0
        return window, vals[2 * k]

    @property
    def mean(self) -> dict[str, float]:
        """Mean of every term over all flushed steps (all ranks)."""
        return {k: v / self._total_n for k, v in zip(self.keys, self._total, strict=True)} \
            if self._total_n else {}


#: not part of the recipe: may change on resume (``num_workers``: the batches are the same for
#: any loader worker count)
SCHEDULE_KEYS = ("steps", "ckpt_every", "log_every", "image_every", "keep_checkpoints", "device",
                 "runs_dir", "num_workers", "report_every", "snapshot")


def config_changes(saved: dict, current: dict) -> list[str]:
    """Keys (dotted) whose values differ, ignoring the schedule (which may grow on resume) and
    the loader's worker count (at any level: ``SCHEDULE_KEYS``)."""
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


def report_interval(cfg: TrainConfig) -> int:
    """Steps between progress reports: ``cfg.report_every``, or ``steps // 4`` (at least 1)
    when it is 0 or None."""
    return int(cfg.report_every) if cfg.report_every else max(1, cfg.steps // 4)


def report_due(done: int, interval: int, total: int, main: bool) -> bool:
    """Whether the step that brings the count to ``done`` reports: rank 0 only, every
    ``interval`` steps before the last (the end reports once, with the final summary)."""
    return main and done < total and done % interval == 0


def run_report_hook(hook: ReportHook, step: int, model: FeatureNeRF,
                    summary: dict[str, Any]) -> float:
    """Call ``hook(step, model, summary)`` without side effects on training: under
    ``torch.no_grad()`` in eval mode (train mode restored), with the torch / numpy / python
    (and CUDA) RNG states restored afterwards. A failing hook is a one-line warning on stderr,
    not a failed run. Returns the seconds it took."""
    t0, was_training, saved = time.perf_counter(), model.training, rng_state()
    try:
        with torch.no_grad():
            model.eval()
            hook(step, model, summary)
    except Exception as exc:  # the report is secondary: training goes on
        print(f"warning: train report at step {step} failed ({type(exc).__name__}: {exc}); "
              "training continues", file=sys.stderr)
    finally:
        model.train(was_training)
        set_rng_state(saved)
    return time.perf_counter() - t0


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True,
          if_stale: str = "fail", on_report: ReportHook | None = None) -> dict[str, Any]:
    """Train (or resume) ``cfg``; returns a summary with the final losses and throughput.

    ``on_report``: a progress hook (module doc), called on rank 0 every
    :func:`report_interval` steps and at the end; the summary it gets has ``done`` (steps
    so far) and ``finished``, and the final one is the returned summary.

    The run directory is locked (one writer). A run directory whose newest checkpoint was made
    with another configuration or on other inputs (render store, teacher features) is stale:
    an error (``if_stale="fail"``) or discarded and trained afresh (``"restart"``).

    Under torchrun (WORLD_SIZE > 1) only rank 0 writes files (lock, config.yaml, init.ckpt,
    checkpoints, TensorBoard); the ranks meet at a barrier after each write, and the process
    group is destroyed on the way out (after a final barrier when the run succeeded).
    """
    from contextlib import ExitStack

    from cache.store_lock import StoreLock

    with ExitStack() as stack:
        if int(os.environ.get("RANK", "0")) == 0:
            stack.enter_context(StoreLock(cfg.run_dir, stage="train"))
        try:
            summary = _train(cfg, resume, progress, if_stale, on_report)
        except BaseException:
            shutdown_distributed(ok=False)
            raise
        shutdown_distributed(ok=True)
        return summary


def train_step(step_module: nn.Module, model: FeatureNeRF, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, batch: dict[str, Tensor], gen: torch.Generator,
               cfg: TrainConfig, use_amp: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimisation step on a device batch; returns the detached 0-d total loss and terms
    (no host sync: convert them only when logging)."""
    device_type = batch["origins"].device.type
    with torch.autocast(device_type, dtype=torch.float16, enabled=use_amp):
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
    return total.detach(), {k: v.detach() for k, v in terms.items()}


def build_training(cfg: TrainConfig, dataset: RayBatchDataset, device: torch.device,
                   dist_info: DistInfo) -> tuple[FeatureNeRF, nn.Module, torch.optim.Optimizer,
                                                 torch.amp.GradScaler, bool]:
    """Model, (DDP-wrapped) step module, Adam, AMP scaler and whether AMP is on."""
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
    return model, step_module, optimizer, scaler, use_amp


def _share_feature_scale(cfg: TrainConfig, dist_info: DistInfo, device: torch.device) -> None:
    """Every rank uses rank 0's ``feature_scale`` (the estimate is deterministic; this guards
    against platform-dependent float rounding on other nodes)."""
    if dist_info.world <= 1 or cfg.data.feature_scale is None:
        return
    import torch.distributed as dist

    t = torch.tensor([float(cfg.data.feature_scale)], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    cfg.data.feature_scale = float(t.item())


def _train(cfg: TrainConfig, resume: bool, progress: bool, if_stale: str,
           on_report: ReportHook | None) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device)
    if dist_info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    torch.manual_seed(cfg.seed)
    run_dir = cfg.run_dir
    dataset = RayBatchDataset(cfg.data)
    _share_feature_scale(cfg, dist_info, device)
    model, step_module, optimizer, scaler, use_amp = build_training(cfg, dataset, device,
                                                                    dist_info)
    start = 0
    existing = checkpoints(run_dir)
    state, changed = None, []
    if resume and existing:
        state = load_checkpoint(existing[-1], device)
        changed = describe_config_changes(state["config"], cfg.to_dict())
        changed += input_changes(checkpoint_inputs(state), dataset.inputs)
        if changed and if_stale != "restart":
            raise ValueError(f"{run_dir}: its checkpoints were trained with another configuration "
                             f"or on other inputs ({'; '.join(changed)}); pass --if-stale restart "
                             "(or --no-resume) to train afresh, or use another --name")
    barrier(dist_info)  # every rank has read the checkpoint before rank 0 deletes or writes
    if changed:
        if dist_info.main:
            for old in existing:
                old.unlink(missing_ok=True)
            (run_dir / INIT_CKPT).unlink(missing_ok=True)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        saved_world = int(state.get("world", 1))
        if saved_world != dist_info.world and dist_info.main:
            print(f"warning: {run_dir} was trained on {saved_world} rank(s), resumed on "
                  f"{dist_info.world}: batches from step {start} on differ from an "
                  "uninterrupted run", file=sys.stderr)
    if dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(run_dir / "config.yaml")
        if start == 0:  # the untrained network, for the evaluation's step-0 control
            save_checkpoint(run_dir / INIT_CKPT, {
                "step": 0, "model": model.state_dict(), "config": cfg.to_dict(),
                "format": "fnerf-pipeline/ckpt-v1", "teacher_identity": dataset.teacher_identity,
                "render_fingerprint": dataset.render_fingerprint, "inputs": dataset.inputs,
                "weights_source": model.weights_source})
    barrier(dist_info)
    writer = _summary_writer(run_dir) if dist_info.main else None
    sampler = StepSampler(len(dataset), cfg.data, cfg.seed, start, cfg.steps,
                          dist_info.rank, dist_info.world)
    sampler_objects = dataset.objects
    loader = make_loader(dataset, sampler, cfg.data.num_workers,
                         pin_memory=device.type == "cuda")
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.name}", unit="step",
               disable=not (progress and dist_info.main), file=sys.stderr)
    log = LossLog(dist_info.world)
    rays_per_rank_step = cfg.data.objects_per_step * cfg.data.rays_per_object
    rays_s, report_s = 0.0, 0.0  # report_s: seconds in on_report (excluded from rays/s)
    reports = on_report if dist_info.main else None
    every = report_interval(cfg)
    t0, step = time.perf_counter(), start

    def summary(done: int) -> dict[str, Any]:
        return {"steps": cfg.steps, "start_step": start, "done": done,
                "finished": done >= cfg.steps, "wall_s": time.perf_counter() - t0,
                "report_s": report_s, "verify_s": dataset.verify_s, "world": dist_info.world,
                "rank": dist_info.rank,
                "rays_per_s": rays_s,  # all ranks summed, measured at the latest log step
                "first": log.first, "last": log.last, "mean": log.mean,
                "recent": list(log.recent), "weights_source": model.weights_source}

    state_extra = {"teacher_identity": dataset.teacher_identity,
                   "render_fingerprint": dataset.render_fingerprint, "inputs": dataset.inputs,
                   "weights_source": model.weights_source,
                   "object_indices": sampler_objects, "world": dist_info.world}
    for step, batch in enumerate(loader, start=start):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        gen = torch.Generator(device=device).manual_seed(
            sampling_seed(cfg.seed, step, dist_info.rank))
        total, terms = train_step(step_module, model, optimizer, scaler, batch, gen, cfg,
                                  use_amp)
        log.add({"loss": total, **terms})
        bar.update(1)
        last_step = step + 1 == cfg.steps
        if step % cfg.log_every == 0 or last_step or step == start:
            elapsed = time.perf_counter() - t0 - report_s
            local_rate = (step + 1 - start) * rays_per_rank_step / elapsed
            window, rays_s = log.flush(step + 1, local_rate)  # all ranks: a collective
            bar.set_postfix(loss=f"{window['loss']:.4f}", rays_s=f"{rays_s:.0f}")
            if writer is not None:
                for k, v in window.items():
                    writer.add_scalar(f"loss/{k}", v, step + 1)
                writer.add_scalar("perf/rays_per_s", rays_s, step + 1)
                if "rgb_fine" in window:
                    writer.add_scalar("psnr/train_fine",
                                      -10 * math.log10(max(window["rgb_fine"], 1e-10)), step + 1)
        if writer is not None and cfg.image_every and (step + 1) % cfg.image_every == 0:
            _log_images(writer, model, batch, cfg, step + 1)
        if (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0) or last_step:
            if dist_info.main:
                _checkpoint(run_dir, step + 1, model, optimizer, scaler, cfg, state_extra)
            barrier(dist_info)
        if reports is not None and report_due(step + 1, every, cfg.steps, dist_info.main):
            report_s += run_report_hook(reports, step + 1, model, summary(step + 1))
    bar.close()
    if writer is not None:
        writer.close()
    done = step + 1 if cfg.steps > start else start
    final = summary(done)
    dump = os.environ.get(PARAM_DUMP_ENV)
    if dump:  # debugging / tests: the parameters every rank ends with
        Path(dump).mkdir(parents=True, exist_ok=True)
        (Path(dump) / f"rank-{dist_info.rank}.json").write_text(json.dumps({
            "step": done, "world": dist_info.world,
            "params_sha256": param_digest(model.named_parameters())}))
    visits = sampler.visit_counts(0, cfg.steps)  # the whole schedule, all ranks
    ckpts = checkpoints(run_dir)
    final.update(object_visits=dict(zip(map(int, sampler_objects), visits.tolist(), strict=True)),
                 checkpoint=str(ckpts[-1]) if ckpts else None)
    if reports is not None:
        final["report_s"] = report_s + run_report_hook(reports, done, model, final)
    return final


def _checkpoint(run_dir: Path, step: int, model: FeatureNeRF, optimizer, scaler,
                cfg: TrainConfig, extra: dict) -> None:
    """Rank 0 only: write ``step-XXXXXXX.ckpt`` atomically, keep the newest ``keep``."""
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict(), "rng": rng_state(), "config": cfg.to_dict(),
             "format": "fnerf-pipeline/ckpt-v1", **extra}
    save_checkpoint(run_dir / "checkpoints" / CKPT_PATTERN.format(step), state)
    for old in checkpoints(run_dir)[: -max(1, cfg.keep_checkpoints)]:
        old.unlink(missing_ok=True)


def _summary_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the summary still has the losses
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
