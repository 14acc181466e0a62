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
