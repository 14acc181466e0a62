"""The evaluate stage end to end on the tiny trained models, and the task loops with an
oracle feature source (GT surface coordinates) that must score near-perfectly."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cache.render_store import RenderStore
from cache.zarr_io import StoreError
from pipeline.evaluation.controls import CONTROL_NAMES
from pipeline.evaluation.pairs import CrossViewPair, make_pairs
from pipeline.evaluation.stage import EvaluateConfig, run_evaluate_stage, run_name
from pipeline.evaluation.tasks import run_2d_task, run_3d_task, scaled_thresholds
from tests.test_eval_features import trained_runs


@pytest.fixture(scope="session")
def eval_runs(tiny_stores, tmp_path_factory):
    return trained_runs(tiny_stores, tmp_path_factory.mktemp("eval-runs"))


class OracleXYZ:
    """Features = random Fourier features of the GT surface point (object frame): cosine
    similarity ~ a Gaussian kernel of the 3D distance, so NN matching is geometric. With
    ``shuffle`` the target object's points are permuted (a broken feature field)."""

    kind = "oracle"

    def __init__(self, store: RenderStore, name: str = "oracle", scale: float = 40.0,
                 shuffle: bool = False):
        self.store, self.name, self.shuffle = store, name, shuffle
        self.w = np.random.default_rng(0).normal(scale=scale, size=(3, 256))

    def embed(self, xyz: np.ndarray) -> np.ndarray:
        a = xyz @ self.w
        return np.concatenate([np.cos(a), np.sin(a)], axis=-1).astype(np.float32)

    def surface(self, obj: int, view: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.store
        depth, K, c2w = s.read("depth", (obj, view)), s.read("K", (obj, view)), s.read(
            "c2w", (obj, view))
        rows, cols = np.mgrid[: depth.shape[0], : depth.shape[1]]
        cam = np.stack([(cols + 0.5 - K[0, 2]) / K[0, 0] * depth,
                        (rows + 0.5 - K[1, 2]) / K[1, 1] * depth, depth], -1)
        return cam @ c2w[:3, :3].T + c2w[:3, 3], depth > 0

    def map_2d(self, obj: int, input_view: int, view: int) -> np.ndarray:
        xyz, fg = self.surface(obj, view)
        if self.shuffle:
            xyz = xyz[::-1, ::-1]
        return np.where(fg[..., None], self.embed(xyz), 0.0)

    def at_points(self, obj: int, input_view: int, xyz: np.ndarray) -> np.ndarray:
        return self.embed(xyz[::-1] if self.shuffle else xyz)


def test_oracle_features_score_near_perfectly_and_a_broken_field_does_not(tiny_stores):
    store = RenderStore(tiny_stores[0])
    test = store.valid_indices("test")
    pairs = make_pairs(store.object_ids, test, store.n_views, n_pairs=8, seed=0)
    good, bad = OracleXYZ(store), OracleXYZ(store, "broken", shuffle=True)
    px = scaled_thresholds(store.image_size)
    cv = run_2d_task("cross_view", pairs.cross_view, store, [good, bad], px).summary()
    assert cv["oracle"]["n_pairs_kp"] == 8
    # parts hidden in the source view cannot be transferred exactly, keypoints can
    assert cv["oracle"]["pck"][1] >= 0.95 and cv["oracle"]["miou"] >= 0.75, cv
    assert cv["broken"]["pck"][1] <= 0.5 and cv["broken"]["miou"] <= 0.5, cv
    same = [CrossViewPair(p.obj, p.src_view, p.src_view) for p in pairs.cross_view[:3]]
    ident = run_2d_task("cross_view", same, store, [good], px).summary()["oracle"]
    assert ident["miou"] == 1.0 and ident["pck"][1] == 1.0, ident
    res3d = run_3d_task(pairs.cross_instance[:2], store, [OracleXYZ(store, scale=5.0)])
    # the same point cloud shape is not shared across instances: only sanity (finite, in range)
    s = res3d.summary()["oracle"]
    assert 0 <= s["miou"] <= 1 and all(0 <= v <= 1 for v in s["pck"])
    self3d = run_3d_task([p.__class__(p.src, p.src, p.view) for p in pairs.cross_instance[:2]],
                         store, [good]).summary()["oracle"]
    assert self3d["miou"] == 1.0 and self3d["pck"][3] >= 0.9, self3d  # kp vs nearest sample


def test_config_defaults_follow_the_layout():
    cfg = EvaluateConfig(category="03001627")
    assert cfg.category == "chair" and cfg.run == "runs/chair-effnet"
    assert cfg.renders == "data/renders/chair.zarr"
    assert cfg.features == "data/features/effnet/chair.zarr"
    assert cfg.pixelnerf_run == "runs/chair-pixelnerf"
    assert cfg.report_dir == "reports/evaluate/chair-effnet"
    assert run_name("runs/x/checkpoints/step-0000010.ckpt") == "x"
    with pytest.raises(ValueError, match="unknown tasks"):
        EvaluateConfig(tasks=("kp4d",))


def test_evaluate_stage_end_to_end(tiny_stores, eval_runs, tmp_path):
    out = tmp_path / "reports" / "evaluate" / "tiny"
    cfg = EvaluateConfig(
        category="chair", run=str(eval_runs["student"]), pixelnerf_run=str(eval_runs["pixelnerf"]),
        renders=str(tiny_stores[0]), features=str(tiny_stores[1]), n_pairs=2, eval_size=24,
        n_views=2, nvs_objects=1, n_visual=1, device="cpu", report_dir=str(out), progress=False)
    metrics = run_evaluate_stage(cfg)
    assert metrics == json.loads((out / "metrics.json").read_text())
    methods = ("student_internal", "student_feature", "teacher_2d", "pixelnerf_internal")
    for m in methods:
        for group, dim, ths in (("cross_instance", "2d", ("2.5", "5", "7.5", "10")),
                                ("cross_view", "2d", ("2.5", "5", "7.5", "10")),
                                ("cross_instance", "3d", ("0.025", "0.05", "0.075", "0.1"))):
            for t in ths:
                v = metrics[f"chair.{group}.kp{dim}.pck@{t}.{m}"]
                assert v is None or 0.0 <= v <= 1.0
            v = metrics[f"chair.{group}.part{dim}.miou.{m}"]
            assert v is None or 0.0 <= v <= 1.0
    for m in ("student", "pixelnerf"):
        assert np.isfinite(metrics[f"chair.nvs.psnr.{m}"]) and -1 <= metrics[f"chair.nvs.ssim.{m}"]
        assert metrics[f"chair.nvs.n_images.{m}"] == 2
    assert metrics["chair.cross_instance.n_pairs"] == metrics["chair.cross_view.n_pairs"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert "lpips" in summary["skipped"]["nvs.lpips"] or "AlexNet" in summary["skipped"][
        "nvs.lpips"]
    assert summary["render"]["student"]["eval_size"] == 24
    assert summary["render"]["student"]["s_per_map"] > 0
    rows = json.loads((out / "plots" / "pck2d_cross_instance.json").read_text())
    every = (*methods, *CONTROL_NAMES)
    assert {r["method"] for r in rows} == set(every) and len(rows) == 4 * len(every)
    assert {"threshold", "method", "pck"} <= set(rows[0])
    per_pair = json.loads((out / "pairs_cross_view.json").read_text())
    assert len(per_pair) == 2 * len(every) and "obj_id" in per_pair[0]["pair"]
    html = (out / "index.html").read_text()
    assert "<script" not in html and not re.search(r"(src|href)=\"https?:", html)
    assert html.count("data:image/png;base64,") >= 10
    assert "Part texture swap" in html and "worst pairs" in html


def test_missing_baselines_are_skipped_with_a_reason(tiny_stores, eval_runs, tmp_path, capsys):
    out = tmp_path / "rep"
    kw = dict(
        category="chair", run=str(eval_runs["student"]), pixelnerf_run=str(tmp_path / "none"),
        renders=str(tiny_stores[0]), n_pairs=1, eval_size=16, tasks=("cross_instance",),
        swap_example=False, n_visual=0, device="cpu", report_dir=str(out), progress=False)
    missing = tmp_path / "no-features.zarr"
    with pytest.raises(StoreError, match=f"--features {missing}: no feature store.*--features ''"):
        run_evaluate_stage(EvaluateConfig(features=str(missing), **kw))  # never skipped quietly
    assert not out.exists()
    metrics = run_evaluate_stage(EvaluateConfig(features="", **kw))
    skipped = json.loads((out / "summary.json").read_text())["skipped"]
    assert "no checkpoint" in skipped["pixelnerf_internal"]
    assert "disabled" in skipped["teacher_2d"]
    assert "skipped pixelnerf_internal" in capsys.readouterr().err
    assert not any(k.endswith((".teacher_2d", ".pixelnerf_internal")) for k in metrics)
    assert "chair.cross_instance.kp2d.pck@5.student_internal" in metrics
    assert not any(".nvs." in k or "kp3d" in k for k in metrics)
