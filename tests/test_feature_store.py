import numpy as np
import pytest

from cache.feature_store import (
    FeatureStore,
    FeatureStoreWriter,
    apply_pca,
    fit_pca,
    principal_axes,
    principal_components,
    store_key,
    variance_kept,
)
from cache.zarr_io import StoreError

ATTRS = {"identity": {"name": "t", "layer": 9}, "render_fingerprint": "abc", "pca_dim": None,
         "render_config": {"rig": {"image_size": 128}}, "object_ids": ["a", "b"]}
DIGESTS = np.zeros((2, 32), np.uint8)


def make(tmp_path, attrs=ATTRS, **kw):
    kw.setdefault("render_digests", DIGESTS)
    return FeatureStoreWriter.create_or_resume(tmp_path / "f.zarr", 2, 3, (4, 4), 8, attrs, **kw)


def make_complete(tmp_path) -> FeatureStoreWriter:
    """:func:`make`, with both objects written (all-ones features) and the store finalized."""
    w = make(tmp_path)
    for i in range(2):
        w.write_views(i, np.arange(3), np.ones((3, 4, 4, 8), np.float32))
        w.mark_done(i)
    w.finalize([0, 1], {})
    return w


def test_layout_is_float16_chunk_per_view_shard_per_object(tmp_path):
    w = make(tmp_path)
    feat = w.group["feat"]
    assert feat.dtype == np.float16 and feat.shape == (2, 3, 4, 4, 8)
    assert feat.chunks == (1, 1, 4, 4, 8) and feat.shards == (1, 3, 4, 4, 8)


def test_stale_identity_or_fingerprint_is_refused(tmp_path):
    make_complete(tmp_path)
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


def test_principal_variances_are_the_variances_along_the_axes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 12)) * np.linspace(4.0, 0.2, 12) + 1.0
    p = principal_components(x)
    projected = (x - p.mean) @ p.axes
    np.testing.assert_allclose(p.variances, projected.var(axis=0, ddof=1), rtol=1e-8)
    assert (np.diff(p.variances) <= 0).all()
    mean, axes = principal_axes(x, 5)
    np.testing.assert_array_equal(axes, p.axes[:, :5])


def test_variance_kept_is_monotone_capped_and_one_at_full_width():
    variances = np.sort(np.random.default_rng(3).uniform(0, 1, 40))[::-1] ** 3
    kept = variance_kept(variances, [10])
    assert list(kept) == ["d3", "d8", "d10", "d16", "d32", "full"]  # 64, 128 >= 40 channels
    values = list(kept.values())
    assert all(a < b for a, b in zip(values, values[1:], strict=False)) and kept["full"] == 1.0
    assert kept["d10"] == pytest.approx(variances[:10].sum() / variances.sum())
    assert variance_kept(np.ones(3)) == {"full": 1.0}


def test_bases_are_stored_and_a_store_without_them_still_opens(tmp_path):
    w = make_complete(tmp_path)
    fingerprint = FeatureStore(tmp_path / "f.zarr").fingerprint
    store = FeatureStore(tmp_path / "f.zarr")
    assert store.colour_basis() is None and store.variance_kept() == {}  # an older store
    variances = np.arange(8, 0, -1).astype(np.float32)
    w.set_colour_basis(np.zeros(8), np.eye(8)[:, :3], -np.ones(3), np.ones(3), variances)
    store = FeatureStore(tmp_path / "f.zarr")  # the basis does not change the fingerprint
    assert store.fingerprint == fingerprint
    mean, comps, lo, hi = store.colour_basis()
    assert comps.shape == (8, 3) and comps.dtype == np.float32 and hi.tolist() == [1, 1, 1]
    assert store.variance_kept()["d3"] == pytest.approx(21 / 36)
    w.set_pca(np.zeros(8), np.eye(8)[:, :4], np.ones(8))  # a PCA store: the teacher spectrum
    assert FeatureStore(tmp_path / "f.zarr").variance_kept()["d3"] == pytest.approx(3 / 8)


def test_a_changed_or_undigested_basis_is_refused_and_named_by_verify(tmp_path):
    from cache.verify import verify_store

    w = make_complete(tmp_path)
    w.set_colour_basis(np.zeros(8), np.eye(8)[:, :3], -np.ones(3), np.ones(3), np.ones(8))
    w.set_pca(np.zeros(8), np.eye(8)[:, :4], np.ones(8))
    assert verify_store(tmp_path / "f.zarr").ok
    w.group["colour_lo"][0] = -2.0  # one value of the stored basis changes
    with pytest.raises(StoreError, match="'colour_lo' does not match its digest"):
        FeatureStore(tmp_path / "f.zarr").colour_basis()
    check = verify_store(tmp_path / "f.zarr")
    assert not check.ok and any("colour_lo" in line for line in check.store_problems)
    w.group.create_array("pca_mean", data=np.ones(8, np.float32), overwrite=True)  # no digest
    digests = dict(w.group.attrs["derived_digests"])
    del digests["pca_mean"]
    w.group.attrs["derived_digests"] = digests
    with pytest.raises(StoreError, match="'pca_mean' records no digest"):
        FeatureStore(tmp_path / "f.zarr").pca()
