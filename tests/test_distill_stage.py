import json

import numpy as np
import pytest

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore
from cache.zarr_io import StoreError
from pipeline.distill_stage import (
    DistillStageConfig,
    _group_pairs,
    cli_options,
    run_distill_stage,
)
from teachers.base import alpha_to_grid


def test_store_matches_render_store_and_zeroes_background(tiny_stores):
    renders_path, features_path = tiny_stores
    renders, feats = RenderStore(renders_path), FeatureStore(features_path)
    assert feats.feat.shape == (5, 8, 16, 16, feats.dim) and feats.feat.dtype == np.float16
    assert feats.attrs["render_fingerprint"] == renders.fingerprint
    assert feats.attrs["identity"]["name"] == "daisy"
    for i in range(5):
        f = feats.read(i).astype(np.float32)
        fg = alpha_to_grid(renders.read("alpha", i), (16, 16))
        assert (f[~fg] == 0).all() and (np.abs(f[fg]).sum(-1) > 0).mean() > 0.99


def test_rerun_is_a_no_op_and_changed_options_are_stale(tiny_stores, tmp_path):
    renders_path, features_path = tiny_stores
    opts = {"input_size": 64, "grid": [16, 16]}
    cfg = DistillStageConfig(category="chair", teacher="daisy", teacher_options=opts,
                             renders=str(renders_path), out=str(features_path),
                             report_dir=str(tmp_path / "rep"))
    metrics = run_distill_stage(cfg)
    assert metrics["objects_computed_now"] == 0
    report = (tmp_path / "rep" / "index.html").read_text()
    assert "PCA-to-RGB" in report and "http" not in report
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["bg_zero_fraction"] == 1.0
    stale = DistillStageConfig(category="chair", teacher="daisy",
                               teacher_options={**opts, "radius": 5}, renders=str(renders_path),
                               out=str(features_path), report_dir=str(tmp_path / "rep"))
    with pytest.raises(StoreError, match="stale"):
        run_distill_stage(stale)


def test_interrupted_run_resumes_per_object(tiny_stores, tmp_path, monkeypatch):
    renders_path, _ = tiny_stores
    out = tmp_path / "f.zarr"
    cfg = DistillStageConfig(category="chair", teacher="daisy", renders=str(renders_path),
                             out=str(out), report_dir=str(tmp_path / "rep"), batch_size=8,
                             teacher_options={"input_size": 64, "grid": [16, 16]})
    import cache.feature_store as fs

    original = fs.FeatureStoreWriter.mark_done
    calls = {"n": 0}

    def die_on_third(self, index, feat=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(self, index, feat)

    monkeypatch.setattr(fs.FeatureStoreWriter, "mark_done", die_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_distill_stage(cfg)
    monkeypatch.setattr(fs.FeatureStoreWriter, "mark_done", original)
    metrics = run_distill_stage(cfg)
    assert metrics["objects_computed_now"] == 3  # two were done before the interruption
    full = FeatureStore(out)
    ref = FeatureStore(tiny_stores[1])
    np.testing.assert_array_equal(full.read(slice(None)), ref.read(slice(None)))


def test_pca_store_keeps_basis(tiny_stores, tmp_path):
    renders_path, _ = tiny_stores
    cfg = DistillStageConfig(category="chair", teacher="daisy", renders=str(renders_path),
                             out=str(tmp_path / "p.zarr"), report_dir=str(tmp_path / "rep"),
                             pca=8, pca_fit_views=16,
                             teacher_options={"input_size": 64, "grid": [16, 16]})
    run_distill_stage(cfg)
    store = FeatureStore(tmp_path / "p.zarr")
    mean, comps = store.pca()
    assert store.dim == 8 and comps.shape == (store.attrs["teacher_dim"], 8)
    np.testing.assert_allclose(comps.T @ comps, np.eye(8), atol=1e-4)


def test_render_store_without_arrays_is_a_clear_error(tiny_stores, tmp_path):
    import shutil

    broken = tmp_path / "broken.zarr"
    shutil.copytree(tiny_stores[0], broken)
    shutil.rmtree(broken / "alpha")
    cfg = DistillStageConfig(category="chair", renders=str(broken), out=str(tmp_path / "f.zarr"),
                             report_dir=str(tmp_path / "rep"))
    with pytest.raises(StoreError, match=r"lacks arrays \['alpha'\]"):
        run_distill_stage(cfg)


def test_wrong_category_and_option_errors(tiny_stores, tmp_path):
    cfg = DistillStageConfig(category="table", renders=str(tiny_stores[0]),
                             out=str(tmp_path / "f.zarr"), report_dir=str(tmp_path / "rep"))
    with pytest.raises(StoreError, match="holds 'chair' renders"):
        run_distill_stage(cfg)
    with pytest.raises(ValueError, match="--timestep do"):
        cli_options("dino", {"timestep": 5})
    assert cli_options("ldm", {"prompt": "x {category}"}) == {"prompt_template": "x {category}"}


def test_group_pairs_splits_runs():
    assert _group_pairs([(0, 3), (0, 4), (1, 0), (1, 2)]) == [(0, [3, 4]), (1, [0]), (1, [2])]


def test_pca_rgb_matches_the_svd_colouring_up_to_sign():
    from pipeline.reports.features import pca_rgb

    rng = np.random.default_rng(0)
    feats = (rng.normal(size=(4, 16, 16, 24)) * np.linspace(4, 0.5, 24)).astype(np.float32)
    feats[:, :3] = 0  # background cells stay black
    new = pca_rgb(feats).reshape(-1, 3).astype(int)
    flat = feats.reshape(-1, 24).astype(np.float64)  # the former SVD implementation
    fg = np.abs(flat).sum(axis=1) > 0
    x = flat[fg] - flat[fg].mean(axis=0)
    y = x @ np.linalg.svd(x, full_matrices=False)[2][:3].T
    lo, hi = np.percentile(y, 2, axis=0), np.percentile(y, 98, axis=0)
    old = (np.clip((y - lo) / (hi - lo), 0, 1) * 255).astype(int)
    assert (new[~fg] == 0).all()
    for c in range(3):  # a flipped axis maps v -> 255 - v (up to rounding)
        same, flipped = np.abs(new[fg, c] - old[:, c]), np.abs(new[fg, c] - (255 - old[:, c]))
        assert same.max() <= 1 or flipped.max() <= 1, c
