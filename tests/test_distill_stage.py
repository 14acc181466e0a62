import json

import numpy as np
import pytest

from cache.feature_store import FeatureStore, FeatureStoreWriter
from cache.render_store import RenderStore
from cache.zarr_io import StoreError
from pipeline.distill_stage import (
    DistillStageConfig,
    _group_pairs,
    cli_options,
    run_distill_stage,
)
from teachers.base import alpha_to_grid
from teachers.timm_teacher import DEFAULT_MODEL


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
    metrics = run_distill_stage(cfg)
    store = FeatureStore(tmp_path / "p.zarr")
    mean, comps = store.pca()
    assert store.dim == 8 and comps.shape == (store.attrs["teacher_dim"], 8)
    np.testing.assert_allclose(comps.T @ comps, np.eye(8), atol=1e-4)
    # the colouring lives in the stored 8-D space; variance kept is the teacher space's
    colour_mean, colour_comps, _, _ = store.colour_basis()
    assert colour_mean.shape == (8,) and colour_comps.shape == (8, 3)
    kept = store.variance_kept()
    assert 0 < kept["d3"] < kept["d8"] < kept["full"] == 1.0
    assert metrics["variance_kept_d8"] == kept["d8"]
    report = (tmp_path / "rep" / "index.html").read_text()
    assert f"PCA to 8 of {store.attrs['teacher_dim']} teacher channels keeps " \
           f"{kept['d8']:.1%}" in report


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
    assert cli_options("timm", {"model_id": "m", "facet": "token"}) == cli_options(
        "dino", {"model_id": "m", "facet": "token"})
    assert cli_options("ldm", {"prompt": "x {category}"}) == {"prompt_template": "x {category}"}


def test_group_pairs_splits_runs():
    assert _group_pairs([(0, 3), (0, 4), (1, 0), (1, 2)]) == [(0, [3, 4]), (1, [0]), (1, [2])]


def test_each_timm_model_gets_its_own_default_paths():
    def config(teacher, **options):
        return DistillStageConfig(category="chair", teacher=teacher, teacher_options=options)

    clip = config("timm", model_name="vit_base_patch16_clip_224.openai")
    siglip = config("timm", model_name="vit_base_patch16_siglip_224")
    assert clip.out == "data/features/timm-vit_base_patch16_clip_224.openai/chair.zarr"
    assert siglip.out == "data/features/timm-vit_base_patch16_siglip_224/chair.zarr"
    assert clip.report_dir != siglip.report_dir and clip.label != siglip.label
    assert config("timm").out == config("timm", model_name=DEFAULT_MODEL).out
    assert config("dino", model_name="vit_small_patch8_224.dino").out == (
        "data/features/dino/chair.zarr")
    explicit = DistillStageConfig(category="chair", teacher="timm", out="x.zarr",
                                  teacher_options={"model_name": "resnet50"})
    assert explicit.out == "x.zarr"


def _wild_test_objects(path, renders: RenderStore) -> None:
    """Rewrite the test objects' features of the store at ``path`` as huge, offset values
    (background still zero), with matching digests, and finalize it again."""
    writer = FeatureStoreWriter(path)
    for i in renders.valid_indices("test"):
        feat = writer.group["feat"][i].astype(np.float32)
        wild = np.where(np.abs(feat).sum(-1, keepdims=True) > 0, feat * 300 + 500, 0)
        writer.write_views(i, np.arange(renders.n_views), wild)
        writer.mark_done(i, wild.astype(np.float16))
    writer.finalize(renders.valid_indices(), {})


def test_colour_basis_is_fitted_on_train_objects_only(tiny_stores, tmp_path):
    import shutil

    renders_path, features_path = tiny_stores
    renders = RenderStore(renders_path)
    assert renders.valid_indices("test") and renders.valid_indices("train")
    reference = FeatureStore(features_path).colour_basis()
    assert reference is not None and reference[1].shape[1] == 3
    copy = tmp_path / "f.zarr"
    shutil.copytree(features_path, copy)
    _wild_test_objects(copy, renders)
    for name in ("colour_mean", "colour_components", "colour_lo", "colour_hi"):
        shutil.rmtree(copy / name)  # an older store: no basis, opens as before
    assert FeatureStore(copy).colour_basis() is None
    cfg = DistillStageConfig(category="chair", teacher="daisy", renders=str(renders_path),
                             out=str(copy), report_dir=str(tmp_path / "rep"),
                             teacher_options={"input_size": 64, "grid": [16, 16]})
    metrics = run_distill_stage(cfg)  # nothing to compute; fits the missing basis
    assert metrics["objects_computed_now"] == 0 and metrics["colour_fit_s"] > 0
    refit = FeatureStore(copy)
    for a, b in zip(refit.colour_basis(), reference, strict=True):
        # the first fit used the rows its writer kept in-stream, this one reads them back
        np.testing.assert_array_equal(a, b)
    test_feat = refit.read(renders.valid_indices("test")[0]).astype(np.float32)
    fg = test_feat[np.abs(test_feat).sum(-1) > 0]
    assert np.abs(fg.mean(0) - refit.colour_basis()[0]).max() > 100  # the wild ones are far
    report = (tmp_path / "rep" / "index.html").read_text()
    assert "the category&#x27;s fixed basis stored with the feature store" in report


def test_report_and_metrics_give_variance_kept_per_width(tiny_stores, tmp_path):
    renders_path, features_path = tiny_stores
    store = FeatureStore(features_path)
    kept, dim = store.variance_kept(), store.dim
    assert list(kept) == [f"d{d}" for d in (3, 8, 16, 32, 64, 128) if d < dim] + ["full"]
    values = list(kept.values())
    assert all(a < b for a, b in zip(values, values[1:], strict=False)) and values[-1] == 1.0
    cfg = DistillStageConfig(category="chair", teacher="daisy", renders=str(renders_path),
                             out=str(features_path), report_dir=str(tmp_path / "rep"),
                             teacher_options={"input_size": 64, "grid": [16, 16]})
    run_distill_stage(cfg)
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert {k: metrics[f"variance_kept_{k}"] for k in kept} == kept
    report = (tmp_path / "rep" / "index.html").read_text()
    assert "Share of foreground variance kept by the top D principal axes" in report
    assert "PCA to" not in report  # no --pca: no headline


def test_each_object_is_read_back_as_it_is_written(tiny_stores, tmp_path, monkeypatch):
    renders_path, _ = tiny_stores
    cfg = DistillStageConfig(category="chair", teacher="daisy", renders=str(renders_path),
                             out=str(tmp_path / "f.zarr"), report_dir=str(tmp_path / "rep"),
                             teacher_options={"input_size": 64, "grid": [16, 16]}, batch_size=8)
    verified_after: list[list[int]] = []
    original_verify = FeatureStore.verify
    monkeypatch.setattr(FeatureStore, "verify", lambda self, idx, *a, **k: (
        verified_after.append(list(idx)), original_verify(self, idx, *a, **k))[1])
    run_distill_stage(cfg)
    assert verified_after == []  # every object was checked by the writer, none left for later
    # a write that stores other values than the digest describes stops the stage at once
    original_write = FeatureStoreWriter.write_views

    def off_by_one(self, index, views, feat):
        original_write(self, index, views, feat + (1.0 if index == 3 else 0.0))

    monkeypatch.setattr(FeatureStoreWriter, "write_views", off_by_one)
    bad = DistillStageConfig(**{**cfg.__dict__, "out": str(tmp_path / "g.zarr"),
                                "report_dir": str(tmp_path / "rep2")})
    with pytest.raises(StoreError, match="content differs from its digest.*distill-cache"):
        run_distill_stage(bad)
    assert not FeatureStoreWriter(tmp_path / "g.zarr").damaged([0, 1, 2])
