"""Feature extractors of the evaluate stage (pipeline/evaluation/features.py).

Also hosts :func:`trained_runs`: a tiny student and a tiny pixelNeRF trained once per session
on the ``tiny_stores`` fixture, shared by the other evaluation test modules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore
from pipeline.evaluation.features import (
    NerfRenderer,
    NerfSource,
    TeacherSource,
    bilinear_support,
    resolve_checkpoint,
    upsample,
)
from pipeline.evaluation.metrics import foreground

TRAIN_STEPS = 3
_RUNS: dict[str, dict[str, Path]] = {}


def tiny_train_config(stores, root: Path, name: str, teacher: bool):
    """A seconds-long CPU run (resnet18, width 64, 8+4+4 samples) on the tiny stores."""
    from train.config import RenderConfig, TrainConfig
    from train.data import DataConfig
    from train.losses import LossWeights
    from train.model import ModelConfig

    cfg = TrainConfig(
        name=name, steps=TRAIN_STEPS, runs_dir=str(root / "runs"), ckpt_every=0, device="cpu",
        data=DataConfig(renders=str(stores[0]), features=str(stores[1]) if teacher else None,
                        objects_per_step=2, rays_per_object=32, n_target_views=2),
        model=ModelConfig(backbone="resnet18", pretrained_encoder=False, width=64, n_blocks=3,
                          combine_layer=2, predict_coord=teacher),
        render=RenderConfig(n_coarse=8, n_importance=4, n_depth=4),
    )
    if not teacher:
        cfg.teacher = None
        cfg.loss = LossWeights(feature=0.0, coord=0.0)
    return cfg


def trained_runs(tiny_stores, root: Path) -> dict[str, Path]:
    """{"student": run dir, "pixelnerf": run dir}, trained once per session (module cache)."""
    from train.trainer import train

    key = str(tiny_stores[0])
    if key not in _RUNS:
        runs = {}
        for name, teacher in (("student", True), ("pixelnerf", False)):
            cfg = tiny_train_config(tiny_stores, root, name, teacher)
            train(cfg, progress=False)
            runs[name] = cfg.run_dir
        _RUNS[key] = runs
    return _RUNS[key]


@pytest.fixture(scope="session")
def eval_runs(tiny_stores, tmp_path_factory):
    return trained_runs(tiny_stores, tmp_path_factory.mktemp("eval-runs"))


@pytest.fixture(scope="module")
def store(tiny_stores):
    return RenderStore(tiny_stores[0])


def test_upsample_is_bilinear_align_corners_false():
    feat = np.arange(4, dtype=np.float32).reshape(2, 2, 1)
    up = upsample(feat, (4, 4))[..., 0]
    # align_corners=False: output pixel centre 0.5 -> input coordinate 0.25 - 0.5 < 0 -> edge
    np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(up[:, 0], [0.0, 0.5, 1.5, 2.0])
    assert (upsample(feat, (2, 2)) == feat).all()


def test_bilinear_support_covers_every_pixel_the_upsampling_reads():
    rng = np.random.default_rng(0)
    mask = rng.random((64, 64)) < 0.05
    support = bilinear_support(mask, (24, 24))
    low = rng.normal(size=(24, 24, 3)).astype(np.float32)
    full = upsample(low, (64, 64))
    masked = upsample(np.where(support[..., None], low, 0.0), (64, 64))
    np.testing.assert_allclose(masked[mask], full[mask], rtol=0, atol=1e-6)
    assert support.sum() < 24 * 24  # it is a real restriction
    assert (bilinear_support(mask, (64, 64)) == mask).all()


def test_teacher_source_maps_and_points_agree(tiny_stores, store):
    teacher = TeacherSource(FeatureStore(tiny_stores[1]), store)
    obj = store.valid_indices("test")[0]
    fmap = teacher.map_2d(obj, 5, 2)  # the input view is irrelevant for a 2D model
    raw = teacher.raw(obj, 2)
    assert fmap.shape == (store.image_size, store.image_size, raw.shape[-1])
    np.testing.assert_allclose(fmap, upsample(raw, fmap.shape[:2]))
    # surface points of view 2 (from the GT depth) project back onto their pixel centres, where
    # the point feature equals the upsampled map
    depth = store.read("depth", (obj, 2))
    K, c2w = store.read("K", (obj, 2)), store.read("c2w", (obj, 2))
    rows, cols = np.nonzero(depth > 0)
    rows, cols = rows[::17], cols[::17]
    z = depth[rows, cols]
    cam = np.stack([(cols + 0.5 - K[0, 2]) / K[0, 0] * z, (rows + 0.5 - K[1, 2]) / K[1, 1] * z,
                    z], axis=1)
    xyz = cam @ c2w[:3, :3].T + c2w[:3, 3]
    np.testing.assert_allclose(teacher.at_points(obj, 2, xyz), fmap[rows, cols], atol=1e-3)


def test_foreground_only_rendering_matches_a_full_render(eval_runs, store):
    obj = store.valid_indices("test")[0]
    fast = NerfRenderer.from_checkpoint(eval_runs["student"], store, eval_size=32)
    slow = NerfRenderer.from_checkpoint(eval_runs["student"], store, eval_size=32, fg_only=False)
    assert fast.settings.n_coarse == 8  # the checkpoint's render settings
    fg = foreground(store.read("part", (obj, 3)), store.read("alpha", (obj, 3)))
    for head in ("internal", "feature"):
        a = NerfSource("a", fast, head).map_2d(obj, 1, 3)
        b = NerfSource("b", slow, head).map_2d(obj, 1, 3)
        assert a.shape == (store.image_size, store.image_size, a.shape[-1])
        np.testing.assert_allclose(a[fg], b[fg], rtol=1e-4, atol=1e-5)
        assert np.abs(b[fg]).max() > 0
    assert a.shape[-1] == fast.model.feature_head.out_features
    masked = fast.render(obj, 1, 3)
    assert 0 < masked["mask"].sum() < 32 * 32 and (masked["internal"][~masked["mask"]] == 0).all()
    timing = fast.timing.summary()
    assert timing["maps"] == 1 and timing["rays_per_map"] == masked["mask"].sum()
    assert timing["s_per_full_map"] >= timing["s_per_map"] > 0


def test_cross_view_input_changes_the_target_map(eval_runs, store):
    obj = store.valid_indices("test")[0]
    src = NerfSource("s", NerfRenderer.from_checkpoint(eval_runs["student"], store, eval_size=16))
    novel = src.map_2d(obj, 0, 4)  # official: target view rendered from the source image
    own = src.map_2d(obj, 4, 4)
    assert not np.allclose(novel, own)
    np.testing.assert_array_equal(novel, src.map_2d(obj, 0, 4))  # cached, deterministic
    assert src.renderer.timing.summary()["maps"] == 2


def test_points_are_queried_with_rays_from_the_input_camera(eval_runs, store):
    obj = store.valid_indices("test")[0]
    r = NerfRenderer.from_checkpoint(eval_runs["student"], store)
    pts = store.read("points", obj)[:40]
    got = NerfSource("s", r).at_points(obj, 2, pts)
    assert got.shape == (40, r.model.config.width)
    c2w = store.read("c2w", (obj, 2))
    dirs = pts - c2w[:3, 3]
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    r.encode(obj, 2)
    with torch.no_grad():
        ref = r.model(torch.from_numpy(pts)[None].float(), torch.from_numpy(dirs)[None].float())
    np.testing.assert_allclose(got, ref["internal"][0].numpy(), rtol=1e-5, atol=1e-6)
    other = NerfSource("s", r).at_points(obj, 5, pts)  # another input image
    assert not np.allclose(got, other)
    feat = NerfSource("f", r, "feature").at_points(obj, 2, pts)
    assert feat.shape == (40, r.model.feature_head.out_features)


def test_pixelnerf_checkpoint_has_internal_but_no_feature_head(eval_runs, store):
    r = NerfRenderer.from_checkpoint(eval_runs["pixelnerf"], store, eval_size=16)
    assert not r.has_feature
    with pytest.raises(ValueError, match="no distilled feature head"):
        NerfSource("pix", r, "feature")
    assert resolve_checkpoint(eval_runs["pixelnerf"]).suffix == ".ckpt"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(eval_runs["pixelnerf"] / "nope")
