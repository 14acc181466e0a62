"""pipeline/reports/features.py: PCA-to-RGB colourings, per call or in a fixed basis."""

import numpy as np

from pipeline.reports.features import ColourBasis, fit_colour_basis, pca_rgb


def test_pca_rgb_matches_the_svd_colouring_up_to_sign():
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


def _instances(seed: int, shared: np.ndarray) -> np.ndarray:
    """(2, 12, 12, 32) features of two 'instances' with their own statistics, one cell each
    holding the same ``shared`` feature."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(2, 12, 12, 32)) * rng.uniform(0.2, 5.0, size=32) + seed
    feats[:, 0, 0] = shared
    return feats


def test_a_fixed_basis_gives_one_feature_one_colour_across_calls():
    rng = np.random.default_rng(3)
    shared = rng.normal(size=32)
    a, b = _instances(1, shared), _instances(2, shared)
    basis = fit_colour_basis(np.concatenate([a, b]))
    assert basis is not None and basis.components.shape == (32, 3)
    fixed_a, fixed_b = pca_rgb(a, basis), pca_rgb(b, basis)
    np.testing.assert_array_equal(fixed_a[:, 0, 0], fixed_b[:, 0, 0])
    np.testing.assert_array_equal(pca_rgb(a[:1], basis)[0], fixed_a[0])  # batch-independent
    # per-call bases (no basis passed) colour the same feature differently
    assert np.abs(pca_rgb(a)[0, 0, 0].astype(int) - pca_rgb(b)[0, 0, 0]).max() > 20


def test_fitted_basis_range_is_the_2nd_to_98th_percentile_and_keeps_background_black():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(3, 10, 10, 6)) * np.array([5, 3, 2, 0.1, 0.1, 0.1])
    feats[:, :2] = 0
    basis = fit_colour_basis(feats)
    y = basis.project(feats[:, 2:].reshape(-1, 6))
    np.testing.assert_allclose(basis.lo, np.percentile(y, 2, axis=0))
    np.testing.assert_allclose(basis.hi, np.percentile(y, 98, axis=0))
    rgb = pca_rgb(feats, basis)
    assert (rgb[:, :2] == 0).all() and (rgb[:, 2:].reshape(-1, 3).max(axis=0) == 255).all()
    assert fit_colour_basis(np.zeros((1, 4, 4, 6))) is None


def test_a_basis_with_fewer_than_three_axes_colours_those_channels_only():
    feats = np.random.default_rng(5).normal(size=(2, 6, 6, 2))
    rgb = pca_rgb(feats, fit_colour_basis(feats))
    assert (rgb[..., 2] == 0).all() and rgb[..., :2].std() > 10


def test_of_store_reads_the_stored_arrays_or_none():
    class Stored:
        def __init__(self, arrays):
            self.arrays = arrays

        def colour_basis(self):
            return self.arrays

    arrays = (np.zeros(4), np.eye(4)[:, :3], -np.ones(3), np.ones(3))
    basis = ColourBasis.of_store(Stored(arrays))
    assert basis is not None and basis.components.shape == (4, 3)
    np.testing.assert_array_equal(basis.hi, np.ones(3))
    assert ColourBasis.of_store(Stored(None)) is None
