"""Torch rays / projection agree with the numpy camera helpers (renderers.cameras)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from renderers import cameras
from train.rays import (
    bbox_pixel_sampler,
    distance_to_z,
    mask_bboxes,
    pixel_centers,
    pixel_rays,
    project_points,
    sample_pixel_indices,
    z_to_distance,
)


def _rig(n: int = 3, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    K = cameras.intrinsics(size, 51.98)
    az, el = np.array([10.0, 130.0, 250.0])[:n], np.array([20.0, 45.0, 70.0])[:n]
    eyes = cameras.spherical_eye(az, el, 1.3)
    c2w = np.stack([cameras.look_at_c2w(e) for e in eyes])
    return np.broadcast_to(K, (n, 3, 3)).copy(), c2w


def _grid_uv(h: int, w: int) -> torch.Tensor:
    """(H*W, 2) pixel-centre coords, row-major over (v, u) like cameras.pixel_rays."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return pixel_centers(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1))


def test_pixel_rays_match_numpy_up_to_normalisation():
    K, c2w = _rig(size=16)
    uv = _grid_uv(16, 16).double()[None].expand(3, -1, -1)
    o, d = pixel_rays(torch.from_numpy(K), torch.from_numpy(c2w), uv)
    assert o.shape == d.shape == (3, 256, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(3, 256, dtype=torch.float64))
    for b in range(3):
        o_np, d_np = cameras.pixel_rays(K[b], c2w[b], 16, 16)
        d_np = d_np / np.linalg.norm(d_np, axis=-1, keepdims=True)
        np.testing.assert_allclose(o[b].numpy(), o_np, atol=1e-12)
        np.testing.assert_allclose(d[b].numpy(), d_np, atol=1e-12)


def test_centre_pixel_ray_is_the_optical_axis():
    K, c2w = _rig(size=16)
    uv = torch.full((3, 1, 2), 8.0, dtype=torch.float64)  # image centre (cx = W/2)
    _, d = pixel_rays(torch.from_numpy(K), torch.from_numpy(c2w), uv)
    torch.testing.assert_close(d[:, 0], torch.from_numpy(c2w[:, :3, 2]))


def test_project_round_trip_and_depth_conversion():
    K, c2w = _rig(size=128)
    Kt, ct = torch.from_numpy(K), torch.from_numpy(c2w)
    g = torch.Generator().manual_seed(0)
    uv = torch.rand(3, 50, 2, generator=g, dtype=torch.float64) * 128
    o, d = pixel_rays(Kt, ct, uv)
    t = 0.8 + torch.rand(3, 50, generator=g, dtype=torch.float64)
    pts = o + t[..., None] * d
    uv2, z = project_points(pts, Kt, ct)
    torch.testing.assert_close(uv2, uv)
    torch.testing.assert_close(z, distance_to_z(t, d, ct))
    torch.testing.assert_close(z_to_distance(z, d, ct), t)
    # numpy projection agrees, and numpy backprojection of z-depth hits the same point
    for b in range(3):
        uv_np, z_np = cameras.project(pts[b].numpy(), K[b], c2w[b])
        np.testing.assert_allclose(uv_np, uv2[b].numpy(), atol=1e-9)
        np.testing.assert_allclose(z_np, z[b].numpy(), atol=1e-12)
    # depth along the ray vs z-depth differ off-axis (the conversion is not a no-op)
    assert (t - z).abs().max() > 1e-3


def test_project_points_is_finite_on_camera_plane():
    K, c2w = _rig(n=1)
    on_plane = torch.from_numpy(c2w[:, :3, 3] + c2w[:, :3, 0])[:, None]  # z == 0
    uv, z = project_points(on_plane, torch.from_numpy(K), torch.from_numpy(c2w))
    assert torch.isfinite(uv).all() and z.abs().item() < 1e-9


def test_mask_bboxes_and_empty_mask():
    m = torch.zeros(2, 10, 12, dtype=torch.bool)
    m[0, 2:5, 3:9] = True
    m[0, 7, 4] = True
    boxes = mask_bboxes(m)
    assert boxes.tolist() == [[3, 2, 8, 7], [0, 0, 11, 9]]


def test_bbox_sampler_stays_in_box_and_is_reproducible():
    m = torch.zeros(2, 32, 32, dtype=torch.bool)
    m[0, 10:14, 20:30] = True
    m[1, 0:3, 0:2] = True
    idx = bbox_pixel_sampler(m, 500, True, torch.Generator().manual_seed(1))
    assert idx.shape == (2, 500, 2) and idx.dtype == torch.long
    x, y = idx[..., 0], idx[..., 1]
    assert x[0].min() == 20 and x[0].max() == 29 and y[0].min() == 10 and y[0].max() == 13
    assert x[1].max() == 1 and y[1].max() == 2 and x[1].min() == 0 and y[1].min() == 0
    again = bbox_pixel_sampler(m, 500, True, torch.Generator().manual_seed(1))
    assert torch.equal(idx, again)
    other = bbox_pixel_sampler(m, 500, True, torch.Generator().manual_seed(2))
    assert not torch.equal(idx, other)


def test_uniform_sampler_covers_image():
    m = torch.zeros(1, 8, 6, dtype=torch.bool)
    m[0, 3, 3] = True
    idx = bbox_pixel_sampler(m, 4000, False, torch.Generator().manual_seed(0))
    assert idx[..., 0].min() == 0 and idx[..., 0].max() == 5
    assert idx[..., 1].min() == 0 and idx[..., 1].max() == 7
    counts = torch.bincount(idx[0, :, 1] * 6 + idx[0, :, 0], minlength=48)
    assert counts.min() > 40  # every pixel hit (~83 expected)


@pytest.mark.parametrize("use_bbox", [True, False])
def test_sampler_shapes(use_bbox):
    idx = sample_pixel_indices(
        3, 5, 7, 11, None, mask_bboxes(torch.ones(3, 5, 7)) if use_bbox else None
    )
    assert idx.shape == (3, 11, 2)
    assert (idx[..., 0] < 7).all() and (idx[..., 1] < 5).all() and (idx >= 0).all()
