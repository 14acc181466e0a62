"""The train stage: resolve the config from CLI/params, train, write the stage metrics and the
report (during training and at the end, :class:`TrainReportHook`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cache.atomic import write_json
from renderers.categories import check_store_category, resolve_category

PROFILES = ("default", "official", "paper")

#: keys that name a run or its inputs, not the recipe (ignored when listing deviations)
_NOT_RECIPE = ("name", "category", "teacher", "profile", "deviations", "data.renders",
               "data.features", "data.num_workers", "model.d_feature", "model.allow_random_encoder")


def official_config():
    """The released FeatureNeRF recipe as exactly as this code allows (``train/train.py``).

    ReLU density, kaiming-initialised heads, no gradient clipping, fp32, target rays from all 50
    views (source included), the ray-mean coordinate term with the self-supervised target (the
    samples' own positions, no geometry), raw teacher features (no rescaling), lambda 0.25 /
    0.25, Adam 1e-4 constant, 4 objects x 128 rays, bbox sampling until step 100k, ResNet-34
    with ImageNet weights (required), width 512, 5 blocks, 64 + 16 + 16 samples, 600k steps.
    """
    from train.config import TrainConfig

    cfg = TrainConfig()
    cfg.steps, cfg.lr, cfg.ckpt_every = 600_000, 1e-4, 500
    cfg.grad_clip, cfg.amp = 0.0, False
    cfg.model.density_activation, cfg.model.zero_init_heads = "relu", False
    cfg.model.backbone, cfg.model.pretrained_encoder = "resnet34", True
    cfg.render.coord_reduce = "mean"
    cfg.data.coord_target, cfg.data.feature_scale = "self", 1.0
    cfg.data.objects_per_step, cfg.data.rays_per_object = 4, 128
    cfg.data.n_target_views, cfg.data.bbox_until_step = 0, 100_000
    return cfg


def profile_config(profile: str):
    """The TrainConfig of a named profile (every deviation from ``official`` is listed in the
    saved ``config.yaml`` under ``deviations``, see :func:`deviations_from_official`).

    - ``official``: :func:`official_config`.
    - ``paper``: the official model and schedule with the project's training fixes: softplus
      density (ReLU collapsed to zero density within a few Adam steps on our renders),
      zero-initialised feature / coordinate heads, gradient clipping at 1, fp16 AMP on CUDA,
      4 target views per object and step (less I/O), the opacity-weighted coordinate term and
      teacher targets rescaled to unit RMS.
    - ``default``: a CPU-sized model for the offline default pipeline: the paper profile with an
      ImageNet EfficientNet-Lite0 encoder (the only pretrained weights available offline),
      width 128, 4 blocks, 24 + 8 + 8 samples, 4 objects x 96 rays, Adam 5e-4.
    """
    cfg = official_config()
    if profile not in PROFILES:
        raise ValueError(f"unknown training profile {profile!r}; choose one of {PROFILES}")
    cfg.profile = profile
    if profile == "official":
        return cfg
    cfg.grad_clip, cfg.amp = 1.0, True
    cfg.model.density_activation, cfg.model.zero_init_heads = "softplus", True
    cfg.render.coord_reduce = "weighted"
    cfg.data.feature_scale, cfg.data.n_target_views = None, 4
    if profile == "paper":
        return cfg
    cfg.steps, cfg.lr, cfg.ckpt_every = 400, 5e-4, 200  # = params.yaml train.steps
    cfg.model.backbone, cfg.model.width, cfg.model.n_blocks = "effnet-lite0", 128, 4
    cfg.model.combine_layer = 2
    cfg.render.n_coarse, cfg.render.n_importance, cfg.render.n_depth = 24, 8, 8
    cfg.data.objects_per_step, cfg.data.rays_per_object = 4, 96
    return cfg


def deviations_from_official(cfg) -> list[str]:
    """``key: official -> value`` for every recipe setting of ``cfg`` that differs from
    :func:`official_config` (schedule and naming keys excluded)."""
    from train.trainer import config_changes

    official, current = official_config().to_dict(), cfg.to_dict()

    def value(d: dict, key: str) -> Any:  # both configs have the same nested keys
        for part in key.split("."):
            d = d[part]
        return d

    return [f"{key}: {value(official, key)!r} -> {value(current, key)!r}"
            for key in config_changes(official, current) if key not in _NOT_RECIPE]


def build_train_config(
    category: str,
    teacher: str,
    name: str | None,
    config_path: str | None,
    overrides: dict[str, Any],
    profile: str = "default",
):
    """A TrainConfig from defaults, an optional YAML file and CLI overrides (None = unset)."""
    from train.config import TrainConfig

    resolved = resolve_category(category, free=True)
    category = resolved.name
    cfg = TrainConfig.load_yaml(config_path) if config_path else profile_config(profile)
    plain = teacher.lower() in ("none", "pixelnerf")
    cfg.category = category
    cfg.teacher = None if plain else teacher
    cfg.name = name or (f"{category}-pixelnerf" if plain else f"{category}-{teacher}")
    cfg.data.renders = overrides.pop("renders", None) or f"data/renders/{category}.zarr"
    if not resolved.synset:  # a free name: only for the imported / mesh store made under it
        from cache.render_store import RenderStore

        check_store_category(category, RenderStore(cfg.data.renders).attrs, cfg.data.renders)
    features = overrides.pop("features", None)
    cfg.data.features = None if plain else (features or f"data/features/{teacher}/{category}.zarr")
    if plain:
        cfg.loss.feature, cfg.loss.coord = 0.0, 0.0
        cfg.model.predict_coord = False
    routes = {
        "steps": (cfg, "steps"),
        "lr": (cfg, "lr"),
        "device": (cfg, "device"),
        "seed": (cfg, "seed"),
        "runs_dir": (cfg, "runs_dir"),
        "ckpt_every": (cfg, "ckpt_every"),
        "objects_per_step": (cfg.data, "objects_per_step"),
        "rays_per_object": (cfg.data, "rays_per_object"),
        "loader_workers": (cfg.data, "num_workers"),
        "feature_weight": (cfg.loss, "feature"),
        "coord_weight": (cfg.loss, "coord"),
        "backbone": (cfg.model, "backbone"),
        "width": (cfg.model, "width"),
        "pretrained": (cfg.model, "pretrained_encoder"),
        "allow_random_encoder": (cfg.model, "allow_random_encoder"),
        "coord_target": (cfg.data, "coord_target"),
        "n_coarse": (cfg.render, "n_coarse"),
        "n_importance": (cfg.render, "n_importance"),
        "n_depth": (cfg.render, "n_depth"),
    }
    for key, value in overrides.items():
        if value is not None:
            target, attr = routes[key]
            setattr(target, attr, value)
    if cfg.loss.coord == 0:
        cfg.model.predict_coord = False
    cfg.deviations = deviations_from_official(cfg)
    return cfg


def snapshot_objects(store, n: int, usable: set[int] | None = None) -> tuple[str, list[int]]:
    """The split the report's fixed objects come from (``val``, else ``test``, else
    ``train``: the first with complete objects, among ``usable`` when given, e.g. those with
    teacher features) and its first ``n`` objects (store indices)."""
    for split in ("val", "test", "train"):
        found = [i for i in store.valid_indices(split) if usable is None or i in usable]
        if found:
            return split, found[:n]
    raise ValueError(f"{store.path}: no complete objects to show in the train report")


def load_fixed_views(cfg, with_teacher: bool):
    """The report's :class:`~pipeline.reports.train.FixedViews` of ``cfg.snapshot`` (images
    box-downsampled to ``snapshot.size``) and its colour basis: the feature store's
    ``colour_basis()``, else one fitted on these teacher maps (the same every time: the maps
    are fixed), None without teacher maps."""
    import numpy as np

    from cache.feature_store import FeatureStore
    from cache.render_store import RenderStore
    from pipeline.reports.features import ColourBasis, fit_colour_basis
    from pipeline.reports.train import FixedViews, resize_image

    s = cfg.snapshot
    store = RenderStore(cfg.data.renders)
    features = FeatureStore(cfg.data.features) if with_teacher else None
    # objects with teacher maps (the official data has none for its val objects)
    usable = set(features.attrs.get("done_objects") or []) if features else set()
    split, objects = snapshot_objects(store, s.objects, usable or None)
    target = store.n_views // 2 if s.target_view is None else s.target_view

    def images(view: int):
        return np.stack([resize_image(store.read("rgb", (o, view)), s.size) for o in objects])

    teacher, basis = None, None
    if features is not None:
        teacher = np.stack([features.read((o, target)).astype(np.float32) for o in objects])
        basis = ColourBasis.of_store(features) or fit_colour_basis(teacher)
    fixed = FixedViews(objects, [store.object_ids[o] for o in objects], split, s.source_view,
                       target, images(s.source_view), images(target), teacher)
    return store, fixed, basis


class TrainReportHook:
    """The trainer's ``on_report`` (rank 0): render the fixed views with the current model,
    keep the snapshot beside the report and rewrite ``reports/train/<run>/index.html``.
    The fixed views are read at the first call (:func:`load_fixed_views`)."""

    def __init__(self, cfg, report_dir: str | Path):
        self.cfg, self.report_dir = cfg, Path(report_dir)
        self._views: tuple | None = None
        self._pruned_stale = False

    def views(self) -> tuple:
        """``(render store, FixedViews, colour basis)``, loaded once."""
        if self._views is None:
            with_teacher = bool(self.cfg.data.features) and self.cfg.loss.feature != 0
            self._views = load_fixed_views(self.cfg, with_teacher)
        return self._views

    @property
    def snapshot_dir(self) -> Path:
        return self.report_dir / "snapshots"

    def render(self, model) -> list:
        """Per fixed object, its full novel-view render at ``snapshot.size`` (deterministic
        samples; the caller holds ``torch.no_grad()`` and eval mode)."""
        from pipeline.evaluation.features import NerfRenderer, RenderSettings

        store, f, _ = self.views()
        device = next(model.parameters()).device
        settings = RenderSettings.from_checkpoint({"config": self.cfg.to_dict()})
        renderer = NerfRenderer(model, store, settings, self.cfg.snapshot.size, device,
                                fg_only=False, cache_size=1)
        return [renderer.render(o, f.source_view, f.target_view, full=True) for o in f.objects]

    def __call__(self, step: int, model, summary: dict[str, Any]) -> None:
        from pipeline.reports.train import (
            draw_snapshot,
            load_snapshots,
            prune_snapshots,
            save_snapshot,
            write_train_report,
        )

        keep = self.cfg.snapshot.keep
        if not self._pruned_stale:  # snapshots past the resumed step belong to another run
            prune_snapshots(self.snapshot_dir, keep, summary["start_step"])
            self._pruned_stale = True
        snapshots, fixed = [], None
        if self.cfg.snapshot.objects > 0:  # 0: the report without novel views
            _, fixed, basis = self.views()
            scale = self.cfg.data.feature_scale or 1.0  # set by the trainer (auto: 1 / RMS)
            save_snapshot(self.snapshot_dir,
                          draw_snapshot(step, self.render(model), fixed, basis, scale))
            prune_snapshots(self.snapshot_dir, keep)
            snapshots = load_snapshots(self.snapshot_dir, fixed.object_ids)
        write_train_report(self.report_dir / "index.html", self.cfg.to_dict(), summary,
                           stage_metrics(self.cfg, summary), snapshots, fixed)


def report_dir_of(cfg) -> Path:
    """``reports/train/<name>`` beside the runs directory."""
    return Path(cfg.runs_dir).parent / "reports" / "train" / cfg.name


def stage_metrics(cfg, summary: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json`` of the stage from a trainer summary (the object visits only when the
    summary has them, i.e. at the end)."""
    metrics = {
        "name": cfg.name,
        "steps": summary["steps"],
        "rays_per_s": summary["rays_per_s"],
        "wall_s": summary["wall_s"],
        "report_s": summary.get("report_s", 0.0),
        "verify_s": summary["verify_s"],
        "resumed_from": summary["start_step"],
        "loss_first": summary["first"],
        "loss_last": summary["last"],
        "loss_mean": summary["mean"],
        "ranks": summary["world"],
        "deviations_from_official": len(cfg.deviations),
    }
    visits = summary.get("object_visits")
    if visits:
        metrics.update({
            "objects_trained": len(visits),
            "objects_never_visited": int(sum(v == 0 for v in visits.values())),
            "object_visits_min": min(visits.values()),
            "object_visits_max": max(visits.values()),
        })
    return metrics


def run_train_stage(cfg, resume: bool = True, if_stale: str = "fail") -> dict[str, Any]:
    """Train; write ``reports/train/<name>/metrics.json`` beside ``runs/`` (losses, rays/s) and
    the report ``index.html`` (:class:`TrainReportHook`: during training and at the end).

    Under torchrun only rank 0 writes the reports; the losses and rays/s in them are already
    reduced over the ranks (mean of the losses, sum of the rays/s)."""
    import os

    from train.trainer import train

    main = int(os.environ.get("RANK", "0")) == 0
    report_dir = report_dir_of(cfg)
    hook = TrainReportHook(cfg, report_dir) if main else None
    summary = train(cfg, resume=resume, if_stale=if_stale, on_report=hook)
    if not main:
        return summary
    write_json(cfg.run_dir / "object_visits.json",
               {"store_index_to_visits": summary["object_visits"]})
    write_json(report_dir / "metrics.json", stage_metrics(cfg, summary))
    from pipeline.reports.train import loss_rows

    write_json(report_dir / "plots" / "loss.json", loss_rows(list(summary.get("recent") or [])))
    return summary
