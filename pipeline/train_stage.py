"""The train stage: resolve the config from CLI/params, train, write the stage metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.report import write_json
from renderers.categories import resolve_category


def profile_config(profile: str):
    """The TrainConfig of a named profile.

    - ``paper``: the official recipe (ResNet-34 with ImageNet weights when available, width
      512, 5 blocks, 64 + 16 + 16 samples, 4 objects x 128 rays, Adam 1e-4).
    - ``default``: a CPU-sized model for the offline default pipeline (ResNet-18, width 128,
      4 blocks, 24 + 8 + 8 samples, 4 objects x 96 rays, Adam 5e-4), minutes on 2 cores.
    """
    from train.config import TrainConfig

    cfg = TrainConfig()
    if profile == "paper":
        cfg.steps, cfg.ckpt_every = 600_000, 500
        return cfg
    if profile != "default":
        raise ValueError(f"unknown training profile {profile!r}; choose default or paper")
    cfg.steps, cfg.lr, cfg.ckpt_every = 1200, 5e-4, 200
    cfg.model.backbone, cfg.model.width, cfg.model.n_blocks = "resnet18", 128, 4
    cfg.model.combine_layer = 2
    cfg.render.n_coarse, cfg.render.n_importance, cfg.render.n_depth = 24, 8, 8
    cfg.data.objects_per_step, cfg.data.rays_per_object = 4, 96
    return cfg


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

    category = resolve_category(category).name
    cfg = TrainConfig.load_yaml(config_path) if config_path else profile_config(profile)
    plain = teacher.lower() in ("none", "pixelnerf")
    cfg.category = category
    cfg.teacher = None if plain else teacher
    cfg.name = name or (f"{category}-pixelnerf" if plain else f"{category}-{teacher}")
    cfg.data.renders = overrides.pop("renders", None) or f"data/renders/{category}.zarr"
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
    return cfg


def run_train_stage(cfg, resume: bool = True, if_stale: str = "fail") -> dict[str, Any]:
    """Train; write ``reports/train/<name>/metrics.json`` beside ``runs/`` (losses, rays/s)."""
    from train.trainer import train

    summary = train(cfg, resume=resume, if_stale=if_stale)
    metrics = {
        "name": cfg.name,
        "steps": summary["steps"],
        "rays_per_s": summary["rays_per_s"],
        "wall_s": summary["wall_s"],
        "resumed_from": summary["start_step"],
        "loss_first": summary["first"],
        "loss_last": summary["last"],
    }
    write_json(Path(cfg.runs_dir).parent / "reports" / "train" / cfg.name / "metrics.json", metrics)
    return summary
