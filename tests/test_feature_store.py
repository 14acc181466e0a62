import numpy as np
import pytest

from cache.feature_store import (
    FeatureStore,
    FeatureStoreWriter,
    apply_pca,
    fit_pca,
    store_key,
)
from cache.zarr_io import StoreError

ATTRS = {"identity": {"name": "t", "layer": 9}, "render_fingerprint": "abc", "pca_dim": None,
         "render_config": {"rig": {"image_size": 128}}, "object_ids": ["a", "b"]}
DIGESTS = np.zeros((2, 32), np.uint8)


def make(tmp_path, attrs=ATTRS, **kw):
    kw.setdefault("render_digests", DIGESTS)
    return FeatureStoreWriter.create_or_resume(tmp_path / "f.zarr", 2, 3, (4, 4), 8, attrs, **kw)


def test_layout_is_float16_chunk_per_view_shard_per_object(tmp_path):
    w = make(tmp_path)
    feat = w.group["feat"]
    assert feat.dtype == np.float16 and feat.shape == (2, 3, 4, 4, 8)
    assert feat.chunks == (1, 1, 4, 4, 8) and feat.shards == (1, 3, 4, 4, 8)


def test_stale_identity_or_fingerprint_is_refused(tmp_path):
    w = make(tmp_path)
    for i in range(2):
        w.write_views(i, np.arange(3), np.ones((3, 4, 4, 8), np.float32))
        w.mark_done(i)
    w.finalize([0, 1], {})
    make(tmp_path)  # same key: resumes
    with pytest.raises(StoreError, match="layer: 9 -> 8"):
        make(tmp_path, {**ATTRS, "identity": {"name": "t", "layer": 8}})
    with pytest.raises(StoreError, match=r"rig.image_size: 128 -> 64"):  # names the setting
        make(tmp_path, {**ATTRS, "render_fingerprint": "xyz",
                        "render_config": {"rig": {"image_size": 64}}})
    changed = DIGESTS.copy()
    changed[1, 0] = 1
    with pytest.raises(StoreError, match=r"renders of 1 object\(s\) changed .*: b"):
        make(tmp_path, {**ATTRS, "render_fingerprint": "xyz"}, render_digests=changed)
    with pytest.raises(StoreError, match="stale"):
        FeatureStore(tmp_path / "f.zarr", render_fingerprint="xyz")
    with pytest.raises(StoreError, match="stale"):
        FeatureStore(tmp_path / "f.zarr", identity={"name": "t", "layer": 8})
    fresh = make(tmp_path, {**ATTRS, "render_fingerprint": "xyz"}, if_stale="overwrite")
    assert not fresh.done_mask().any()
    assert store_key({"a": 1}, "f", None) != store_key({"a": 1}, "f", 64)


def test_incomplete_store_is_refused_and_resumes(tmp_path):
    w = make(tmp_path)
    w.write_views(0, np.arange(3), np.ones((3, 4, 4, 8), np.float32))
    w.mark_done(0)
    assert not w.finalize([0, 1], {})
    with pytest.raises(StoreError, match="incomplete"):
        FeatureStore(tmp_path / "f.zarr")
    np.testing.assert_array_equal(make(tmp_path).done_mask(), [True, False])


def test_pca_keeps_background_zero_and_reconstructs_low_rank_data():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 16))
    x = rng.normal(size=(500, 3)) @ basis + 5.0
    x[:50] = 0  # background rows
    mean, comps = fit_pca(x, 3)
    y = apply_pca(x, mean, comps)
    assert (y[:50] == 0).all()
    recon = y[50:] @ comps.T + mean
    np.testing.assert_allclose(recon, x[50:], atol=1e-4)
    with pytest.raises(StoreError, match="at least 20"):
        fit_pca(x[:10], 20)


def test_pca_spans_the_svd_subspace_with_a_fixed_sign():
    rng = np.random.default_rng(1)
    rotation = np.linalg.qr(rng.normal(size=(40, 40)))[0]
    x = (rng.normal(size=(3000, 40)) * np.linspace(3.0, 0.1, 40)) @ rotation + 2.0
    x[:100] = 0  # background rows are ignored
    mean, comps = fit_pca(x, 8)
    fg = x[100:]
    _, _, vt = np.linalg.svd(fg - fg.mean(axis=0), full_matrices=False)
    ref = vt[:8].T
    np.testing.assert_allclose(mean, fg.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(comps @ comps.T, ref @ ref.T, atol=1e-5)  # same subspace
    np.testing.assert_allclose(np.abs(comps.T @ ref), np.eye(8), atol=1e-5)  # same axes, +-
    top = np.abs(comps).argmax(axis=0)
    assert (comps[top, np.arange(8)] > 0).all()  # sign fixed: largest loading positive
    mean2, comps2 = fit_pca(x[::-1].copy(), 8)  # row order does not matter
    np.testing.assert_allclose(comps2, comps, atol=1e-5)
