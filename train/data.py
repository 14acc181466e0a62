"""Streaming training batches from the render and feature stores.

Per step and object: ``n_input`` random input views, ``n_target_views`` other random views, and
``rays`` random pixels among those target views (inside the alpha bounding box while
``use_bbox``). Only the chunks of the chosen views are read; stores are opened lazily inside each
DataLoader worker (spawn context, no dask in workers). Every random choice comes from
``(seed, step, slot)``, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore
from train.losses import sample_feature_targets
from train.rays import bbox_pixel_sampler, pixel_centers, pixel_rays


@dataclass
class DataConfig:
    """Where the caches are and how each step samples them."""

    renders: str = "data/renders/chair.zarr"
    features: str | None = "data/features/daisy/chair.zarr"
    split: str = "train"
    objects_per_step: int = 4
    rays_per_object: int = 128
    n_input: int = 1
    n_target_views: int = 4  # 0 = all views, the input view included (official)
    bbox_until_step: int = 100_000
    num_workers: int = 0
    # "self" (official, no geometry: the samples' own object-frame positions) or "gt-surface"
    # (a variant supervised with the ground-truth depth map: it uses GT geometry that the
    # pixelNeRF baseline does not get, so it is never a headline method)
    coord_target: str = "self"
    # multiply teacher targets by this; None = auto: 1 / RMS of foreground target values, so
    # the feature MSE is O(1) whatever the teacher's scale (official: 1.0, raw DINO keys)
    feature_scale: float | None = None


@dataclass(frozen=True)
class ItemKey:
    """One object of one step; all randomness of the item derives from these fields.

    ``position`` indexes the dataset's object list (not the store).
    """

    position: int
    seed: int
    step: int
    slot: int
    use_bbox: bool


#: the render arrays a training item reads (verified for every training object up front)
TRAIN_ARRAYS = ("rgb", "alpha", "depth", "K", "c2w")


class RayBatchDataset(Dataset):
    """Map-style dataset over ``ItemKey`` (see :class:`StepSampler`).

    Opening it verifies the stores: every training object's arrays are re-read against their
    digests (render and feature store) before the first step, so training never uses a damaged
    or stale object. ``inputs`` describes them for the checkpoint's resume check.
    """

    def __init__(self, cfg: DataConfig, object_indices: list[int] | None = None,
                 verify: bool = True):
        self.cfg = cfg
        store = RenderStore(cfg.renders)  # validated once here; reopened lazily in workers
        self.objects = object_indices or store.valid_indices(cfg.split)
        if not self.objects:
            raise ValueError(f"{cfg.renders}: no complete {cfg.split!r} objects to train on")
        if verify:
            store.verify(self.objects, TRAIN_ARRAYS)
        self.n_views, self.image_size = store.n_views, store.image_size
        self.render_fingerprint = store.fingerprint
        self.inputs = {"render_fingerprint": store.fingerprint,
                       "render_config": store.attrs.get("config"),
                       "feature_fingerprint": None, "teacher_identity": None}
        if cfg.features:
            feats = FeatureStore(cfg.features, renders=store)
            if verify:
                feats.verify(self.objects)
            self.feature_dim = feats.dim
            self.teacher_identity = feats.attrs.get("identity")
            self.inputs.update(feature_fingerprint=feats.fingerprint,
                               teacher_identity=self.teacher_identity)
            if cfg.feature_scale is None:
                cfg.feature_scale = estimate_feature_scale(feats, self.objects)
            self.verify_s = store.verify_s + feats.verify_s
        else:
            self.feature_dim, self.teacher_identity = 0, None
            self.verify_s = store.verify_s
        self._renders: RenderStore | None = None
        self._features: FeatureStore | None = None
        self._cameras: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.objects)

    def _open(self) -> tuple[RenderStore, FeatureStore | None]:
        if self._renders is None:
            self._renders = RenderStore(self.cfg.renders)
            if self.cfg.features:
                self._features = FeatureStore(self.cfg.features)
        return self._renders, self._features

    def cameras(self, obj: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``K`` (V, 3, 3) and ``c2w`` (V, 4, 4) float32 of store object ``obj``, read once per
        process (about 5 KB per object; every zarr read costs ~1 ms of overhead)."""
        if obj not in self._cameras:
            renders = self._open()[0]
            self._cameras[obj] = (torch.from_numpy(renders.read("K", obj)).float(),
                                  torch.from_numpy(renders.read("c2w", obj)).float())
        return self._cameras[obj]

    def __getitem__(self, key: ItemKey) -> dict[str, torch.Tensor]:
        renders, features = self._open()
        cfg, obj = self.cfg, self.objects[key.position]
        rng = np.random.default_rng([key.seed, key.step, key.slot])
        if cfg.n_target_views <= 0:  # official: target rays from all views, source included
            inputs = np.sort(rng.choice(self.n_views, cfg.n_input, replace=False))
            targets = np.arange(self.n_views)
        else:
            views = rng.choice(self.n_views, cfg.n_input + cfg.n_target_views, replace=False)
            inputs, targets = np.sort(views[: cfg.n_input]), np.sort(views[cfg.n_input :])
        K, c2w = self.cameras(obj)
        rgb_all = renders.read_views("rgb", obj, np.concatenate([inputs, targets]))
        rgb_in, rgb_t = rgb_all[: len(inputs)], rgb_all[len(inputs) :]
        alpha_t = renders.read_views("alpha", obj, targets)
        depth_t = renders.read_views("depth", obj, targets)

        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        per_view = -(-cfg.rays_per_object // len(targets))
        idx = bbox_pixel_sampler(torch.from_numpy(alpha_t > 0), per_view, key.use_bbox, gen)
        uv = pixel_centers(idx)  # (T, r, 2)
        origins, dirs = pixel_rays(K[targets], c2w[targets], uv)
        xs, ys = idx[..., 0], idx[..., 1]
        t_index = torch.arange(len(targets))[:, None].expand_as(xs)
        rgb = torch.from_numpy(rgb_t)[t_index, ys, xs].float() / 255.0
        depth = torch.from_numpy(depth_t)[t_index, ys, xs]
        # surface point from z-depth: along the unit ray, distance = z / (dir . camera z axis)
        cam_z = c2w[targets][:, None, :3, 2].expand_as(dirs)
        dist = depth / (dirs * cam_z).sum(-1).clamp_min(1e-6)
        # per-view draws rounded up, then a random subset: no view loses its rays to the cut
        keep = torch.randperm(xs.numel(), generator=gen)[: cfg.rays_per_object]
        item = {
            "images": torch.from_numpy(rgb_in).permute(0, 3, 1, 2).float() / 255.0,
            "K_in": K[inputs], "c2w_in": c2w[inputs],
            "origins": origins.reshape(-1, 3)[keep],
            "dirs": dirs.reshape(-1, 3)[keep],
            "rgb": rgb.reshape(-1, 3)[keep],
            "coord": (origins + dirs * dist[..., None]).reshape(-1, 3)[keep],
            "fg": (depth > 0).reshape(-1)[keep],
        }
        if features is not None:
            fmap = features.read_views(obj, targets)
            feat = sample_feature_targets(torch.from_numpy(fmap), uv, (self.image_size,) * 2)
            scale = 1.0 if cfg.feature_scale is None else cfg.feature_scale
            item["feature"] = feat.reshape(-1, feat.shape[-1])[keep] * scale
        return item


def estimate_feature_scale(store: FeatureStore, objects: list[int], n_objects: int = 4,
                           n_views: int = 4, seed: int = 0) -> float:
    """1 / RMS of the foreground (non-zero) teacher features of a fixed subsample.

    ``n_objects`` of ``objects`` x ``n_views`` views each, chosen by a fixed seed (not the
    training seed), read view by view in float32 (squares summed in float64). Deterministic:
    every rank computes the same value from the same store (the trainer still broadcasts rank
    0's). Cost: 16 feature maps, whatever the store size.
    """
    rng = np.random.default_rng([seed, 104_729])
    picks = np.sort(rng.choice(len(objects), min(n_objects, len(objects)), replace=False))
    total_views = int(store.feat.shape[1])
    sq, count = 0.0, 0
    for pos in picks:
        views = np.sort(rng.choice(total_views, min(n_views, total_views), replace=False))
        feat = store.read_views(int(objects[pos]), views).astype(np.float32)
        feat = feat.reshape(-1, feat.shape[-1])  # (V' h w, D)
        fg = feat[np.abs(feat).sum(axis=1) > 0]
        sq += float(np.square(fg).sum(dtype=np.float64))
        count += fg.size
    return float(1.0 / np.sqrt(sq / count)) if sq > 0 else 1.0


class StepSampler(torch.utils.data.Sampler):
    """Yields, for steps ``start..end-1``, the batch of ``ItemKey`` of each step.

    Epochs: every epoch draws a fresh seeded permutation of all ``n`` objects (seed
    ``(seed, epoch)``) and cuts it into consecutive global steps of ``objects_per_step * world``
    objects; rank ``r`` takes its own slice of each step, so ranks never share an object within
    a step. An epoch is ``n // (b * world)`` steps (the ``n mod (b * world)`` objects at the end
    of a permutation wait for the next epoch, whose permutation differs), so every object is
    visited, the batch of a step depends only on ``(seed, step, rank)`` and a resumed run sees
    exactly the batches it would have seen. With fewer objects than one global step, each step
    is a fresh permutation repeated to length (objects then repeat within a step).
    """

    def __init__(self, n_objects: int, cfg: DataConfig, seed: int, start: int, end: int,
                 rank: int = 0, world: int = 1):
        if n_objects <= 0:
            raise ValueError("StepSampler: no objects to sample")
        self.n, self.cfg, self.seed = n_objects, cfg, seed
        self.start, self.end, self.rank, self.world = start, end, rank, world
        self._epoch: tuple[int, np.ndarray] = (-1, np.arange(0))

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    @property
    def steps_per_epoch(self) -> int:
        """Steps per pass over the objects (1 when one global step holds them all)."""
        return max(1, self.n // (self.cfg.objects_per_step * self.world))

    def positions(self, step: int) -> np.ndarray:
        """(world * b,) object positions drawn at ``step`` by all ranks, rank-major."""
        per_step = self.cfg.objects_per_step * self.world
        epoch, within = divmod(step, self.steps_per_epoch)
        if self._epoch[0] != epoch:  # one permutation per epoch, reused by its steps
            self._epoch = (epoch, np.random.default_rng([self.seed, epoch, 7919]).permutation(
                self.n))
        order = self._epoch[1]
        if self.n < per_step:
            return np.resize(order, per_step)
        return order[within * per_step : (within + 1) * per_step]

    def batch(self, step: int) -> list[ItemKey]:
        b = self.cfg.objects_per_step
        picks = self.positions(step)[self.rank * b : (self.rank + 1) * b]
        use_bbox = step < self.cfg.bbox_until_step
        return [ItemKey(int(o), self.seed, step, self.rank * b + s, use_bbox)
                for s, o in enumerate(picks)]

    def visit_counts(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """(n,) how often each object position is drawn (all ranks) over steps start..end-1."""
        counts = np.zeros(self.n, np.int64)
        for step in range(start, self.end if end is None else end):
            np.add.at(counts, self.positions(step), 1)
        return counts

    def __iter__(self):
        for step in range(self.start, self.end):
            yield self.batch(step)


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-object dicts into (B, ...) tensors."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def make_loader(dataset: RayBatchDataset, sampler: StepSampler, num_workers: int,
                pin_memory: bool = False, prefetch_factor: int = 4):
    """A DataLoader over whole-step batches (spawned workers, stores opened per worker).

    ``pin_memory``: page-locked batches for asynchronous host-to-GPU copies (the trainer turns
    it on for CUDA). ``prefetch_factor``: steps each worker prepares ahead (workers > 0).
    """
    kwargs = {}
    if num_workers > 0:
        kwargs = {"multiprocessing_context": "spawn", "persistent_workers": True,
                  "prefetch_factor": prefetch_factor}

    return torch.utils.data.DataLoader(
        _StepDataset(dataset), batch_size=None, sampler=sampler, num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(), **kwargs)


class _StepDataset(Dataset):
    """Adapter: index = a list of ItemKey (a whole step) -> collated batch."""

    def __init__(self, inner: RayBatchDataset):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, keys: list[ItemKey]) -> dict[str, torch.Tensor]:
        return collate([self.inner[k] for k in keys])
