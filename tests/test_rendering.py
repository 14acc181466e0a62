"""Analytic checks of the volume-rendering functions."""

from __future__ import annotations

import math

import torch

from train.rendering import (
    composite,
    compositing_weights,
    depth_jitter_samples,
    expected_depth,
    importance_samples,
    opacity,
    stratified_samples,
)

D64 = torch.float64


def _slab(sigma: float, a: float, b: float, near: float, far: float, n: int):
    """Dense uniform grid with constant density on [a, b) (a, b on grid points)."""
    t = torch.linspace(near, far, n + 1, dtype=D64)[:-1]  # left interval ends, last = far - dt
    s = torch.where((t >= a - 1e-12) & (t < b - 1e-12), sigma, 0.0)
    return t, s


def test_constant_density_slab_opacity_and_depth():
    near, far, n = 0.8, 1.8, 10000
    a, b, s = 1.1, 1.4, 7.0
    t, sig = _slab(s, a, b, near, far, n)
    w = compositing_weights(sig, t, far)
    L = b - a
    assert math.isclose(opacity(w).item(), 1 - math.exp(-s * L), rel_tol=1e-9)
    # continuous closed form: int_0^L (a+u) s exp(-s u) du
    closed = a * (1 - math.exp(-s * L)) + (1 - math.exp(-s * L) * (1 + s * L)) / s
    dt = (far - near) / n
    assert abs(expected_depth(w, t).item() - closed) < dt  # left-end samples: O(dt) bias
    # exact discrete form: geometric series with q = exp(-s dt)
    q = math.exp(-s * dt)
    k = torch.arange(round(L / dt), dtype=D64)
    discrete = ((1 - q) * q**k * (a + k * dt)).sum().item()
    assert math.isclose(expected_depth(w, t).item(), discrete, rel_tol=1e-9)
    norm = expected_depth(w, t, normalize=True).item()
    assert math.isclose(norm, discrete / (1 - math.exp(-s * L)), rel_tol=1e-9)


def test_whole_range_constant_density_uses_far_for_last_interval():
    t = torch.tensor([[0.8, 1.0, 1.5, 1.7]], dtype=D64)
    sig = torch.full_like(t, 2.0)
    w = compositing_weights(sig, t, 1.8)
    assert math.isclose(opacity(w).item(), 1 - math.exp(-2.0 * 1.0), rel_tol=1e-12)
    # only the last sample dense: its interval is far - t_last = 0.1
    sig = torch.tensor([[0.0, 0.0, 0.0, 3.0]], dtype=D64)
    w = compositing_weights(sig, t, torch.tensor([1.8], dtype=D64))
    assert math.isclose(w[0, -1].item(), 1 - math.exp(-0.3), rel_tol=1e-12)


def test_single_opaque_sample():
    t = torch.linspace(0.8, 1.8, 64, dtype=D64).expand(2, 3, 64)
    sig = torch.zeros(2, 3, 64, dtype=D64)
    sig[..., 20] = 1e6
    sig[..., 40] = 5.0  # behind the opaque one: invisible
    w = compositing_weights(sig, t, 1.8)
    onehot = torch.zeros_like(w)
    onehot[..., 20] = 1.0
    torch.testing.assert_close(w, onehot)
    vals = torch.randn(2, 3, 64, 7, dtype=D64)
    torch.testing.assert_close(composite(w, vals), vals[..., 20, :])
    torch.testing.assert_close(expected_depth(w, t), t[..., 20])
    torch.testing.assert_close(opacity(w), torch.ones(2, 3, dtype=D64))


def test_empty_space_is_black_and_negative_density_is_clamped():
    t = torch.linspace(0.8, 1.8, 16).expand(4, 16)
    w = compositing_weights(-torch.ones(4, 16), t, 1.8)
    assert torch.equal(w, torch.zeros(4, 16))
    assert torch.equal(composite(w, torch.rand(4, 16, 384)), torch.zeros(4, 384))


def test_composite_any_channel_count_matches_loop():
    w = torch.rand(3, 5, 10)
    for c in (1, 3, 384, 512):
        v = torch.randn(3, 5, 10, c)
        ref = sum(w[..., i, None] * v[..., i, :] for i in range(10))
        torch.testing.assert_close(composite(w, v), ref)


def test_stratified_sorted_in_range_one_per_bin():
    near = torch.full((4, 100), 0.8)
    far = torch.full((4, 100), 1.8)
    t = stratified_samples(near, far, 64, True, torch.Generator().manual_seed(0))
    assert t.shape == (4, 100, 64)
    assert (t >= 0.8).all() and (t <= 1.8).all()
    assert (t[..., 1:] >= t[..., :-1]).all()
    bins = torch.floor((t - 0.8) / (1.0 / 64) + 1e-6).clamp(max=63)
    assert torch.equal(bins, torch.arange(64.0).expand_as(bins))
    assert t.std(dim=(0, 1)).min() > 1e-3  # actually jittered
    mid = stratified_samples(near, far, 64, False)
    torch.testing.assert_close(mid[0, 0], 0.8 + (torch.arange(64) + 0.5) / 64)
    t2 = stratified_samples(near, 1.8, 64, True, torch.Generator().manual_seed(0))
    assert torch.equal(t, t2)


def test_importance_samples_concentrate_on_weights():
    near, far = 0.8, 1.8
    t = stratified_samples(torch.full((200,), near), torch.full((200,), far), 64, False)
    w = torch.zeros(200, 64)
    w[:, 30] = 0.9  # bin [0.8 + 30/64, 0.8 + 31/64)
    new = importance_samples(t, w, 16, True, torch.Generator().manual_seed(0), near, far)
    assert new.shape == (200, 16)
    assert (new[..., 1:] >= new[..., :-1]).all()
    assert (new >= near).all() and (new <= far).all()
    lo, hi = near + 30 / 64, near + 31 / 64
    inside = ((new >= lo - 1e-6) & (new <= hi + 1e-6)).float().mean()
    assert inside > 0.95
    # uniform weights -> roughly uniform samples over [near, far]
    uni = importance_samples(
        t, torch.ones(200, 64), 16, True, torch.Generator().manual_seed(1), near, far
    )
    assert abs(uni.mean().item() - 1.3) < 0.02
    assert uni.min() < 0.85 and uni.max() > 1.75
    det = importance_samples(t, w, 16, False, None, near, far)
    assert torch.equal(det, importance_samples(t, w, 16, False, None, near, far))


def test_importance_samples_two_peaks_split_mass():
    t = torch.linspace(0.0, 1.0, 11)[:-1] + 0.05  # bins [k/10, (k+1)/10)
    w = torch.zeros(10)
    w[2], w[7] = 1.0, 3.0
    new = importance_samples(
        t[None], w[None], 4000, True, torch.Generator().manual_seed(0), 0.0, 1.0
    )[0]
    frac_hi = ((new >= 0.7) & (new < 0.8)).float().mean().item()
    frac_lo = ((new >= 0.2) & (new < 0.3)).float().mean().item()
    assert abs(frac_hi - 0.75) < 0.03 and abs(frac_lo - 0.25) < 0.03


def test_depth_jitter_samples():
    depth = torch.tensor([1.3, 0.0, 1.795])
    s = depth_jitter_samples(depth, 0.8, 1.8, 4000, 0.01, True, torch.Generator().manual_seed(0))
    assert s.shape == (3, 4000)
    assert (s >= 0.8).all() and (s <= 1.8).all()
    assert abs(s[0].mean().item() - 1.3) < 1e-3 and abs(s[0].std().item() - 0.01) < 1e-3
    assert torch.equal(s[1], torch.full((4000,), 0.8))  # empty ray: depth 0 -> near
    assert (s[2] == 1.8).float().mean() > 0.2  # clamped at far
    det = depth_jitter_samples(depth, 0.8, 1.8, 16, 0.01, False)
    torch.testing.assert_close(det[0].mean(), torch.tensor(1.3))
    assert (det[0, 1:] > det[0, :-1]).all()
    assert 0.005 < det[0].std().item() < 0.012


def test_importance_inverse_cdf_is_continuous():
    """Uniform weights over strata: the inverse CDF is the identity map of u onto [near, far]."""
    t = stratified_samples(torch.full((3,), 0.8), torch.full((3,), 1.8), 64, False)
    new = importance_samples(t, torch.ones(3, 64), 10, False, None, 0.8, 1.8)
    torch.testing.assert_close(new, (0.8 + (torch.arange(10) + 0.5) / 10).expand(3, 10))
    # a single bin with all the mass: u is mapped linearly inside that bin
    w = torch.zeros(1, 4)
    w[0, 1] = 1.0
    t4 = torch.tensor([[0.125, 0.375, 0.625, 0.875]])
    one = importance_samples(t4, w, 4, False, None, 0.0, 1.0, eps=0.0)
    torch.testing.assert_close(one, 0.25 + 0.25 * (torch.arange(4.0) + 0.5)[None] / 4)
