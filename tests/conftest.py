"""Shared fixtures: a small two-part asset with keypoints, and offline environment defaults."""

from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import trimesh  # noqa: E402

from renderers.asset import ShapeAsset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def make_toy_asset(seed: int = 0) -> ShapeAsset:
    """A slab (part 0) with a sphere on top (part 1) and an unlabelled cylinder (-1).

    Keypoints: slot 0 = near the slab's front-left corner, 1 = sphere top, 3 = near its
    back-right corner (all on the surface).
    """
    rng = np.random.default_rng(seed)
    slab = trimesh.creation.box((0.5, 0.08, 0.4))
    ball = trimesh.creation.icosphere(3, 0.12 + 0.03 * rng.random()).apply_translation((0, 0.16, 0))
    peg = trimesh.creation.cylinder(0.03, 0.2).apply_translation((0.18, -0.12, 0.1))
    mesh = trimesh.util.concatenate([slab, ball, peg])
    labels = np.r_[np.zeros(len(slab.faces)), np.ones(len(ball.faces)), -np.ones(len(peg.faces))]
    colors = np.array([[180, 120, 60, 255], [60, 90, 200, 255], [90, 200, 90, 255]])
    mesh.visual.face_colors = colors[labels.astype(int)]
    scale = 1.0 / np.linalg.norm(mesh.extents)
    center = mesh.bounds.mean(axis=0)
    mesh.apply_translation(-center)
    mesh.apply_scale(scale)
    kp = (
        np.array(
            [[-0.2, 0.04, -0.15], [0.0, 0.16 + 0.12 + 0.03 * rng.random(), 0.0], [0.2, 0.04, 0.15]]
        )
        - center
    ) * scale
    kp = trimesh.proximity.closest_point(mesh, kp)[0]
    return ShapeAsset(
        f"toy-{seed}",
        "chair",
        mesh,
        labels,
        ["back", "seat", "leg", "arm"],
        kp,
        [0, 1, 3],
        seed=seed,
    )


@pytest.fixture
def toy_asset() -> ShapeAsset:
    return make_toy_asset()


@pytest.fixture(scope="session")
def tiny_stores(tmp_path_factory):
    """A small real render store (procedural chairs, raycast, 8 views at 64 px) and its daisy
    feature store: ``(render_path, feature_path)``."""
    from pipeline.distill_stage import DistillStageConfig, run_distill_stage
    from pipeline.render_stage import RenderStageConfig, run_render_stage

    root = tmp_path_factory.mktemp("stores")
    renders = root / "chair.zarr"
    run_render_stage(RenderStageConfig(
        category="chair", objects=5, views=8, size=64, n_points=256, renderer="raycast",
        split_fractions=(0.6, 0.0, 0.4), out=str(renders), report_dir=str(root / "rep-render")))
    features = root / "daisy-chair.zarr"
    run_distill_stage(DistillStageConfig(
        category="chair", teacher="daisy", teacher_options={"input_size": 64, "grid": [16, 16]},
        renders=str(renders), out=str(features), report_dir=str(root / "rep-distill"),
        batch_size=8))
    return renders, features
