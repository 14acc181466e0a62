import numpy as np
import pytest

from renderers.cameras import (
    CameraRig,
    backproject_depth,
    fixed_eval_poses,
    intrinsics,
    look_at_c2w,
    pixel_rays,
    pixel_rays_at,
    project,
    random_hemisphere_poses,
)


def test_look_at_is_orthonormal_opencv_and_points_at_origin():
    c2w = look_at_c2w(np.array([0.3, 0.8, -1.0]))
    R = c2w[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    forward = R[:, 2]
    np.testing.assert_allclose(forward, -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]), atol=1e-12)
    # image "down" (y) has a negative world-up component: +Y world is up on screen
    assert R[1, 1] < 0


def test_project_round_trip_with_depth():
    rng = np.random.default_rng(0)
    K = intrinsics(128, 50.0)
    c2w = random_hemisphere_poses(CameraRig(), 3)[7]
    pts = rng.uniform(-0.3, 0.3, (200, 3))
    uv, z = project(pts, K, c2w)
    assert (z > 0).all()
    # rebuild from (uv, z) through the ray helper convention: x_cam = K^-1 [u, v, 1] * z
    cam = np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(K).T * z[:, None]
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    np.testing.assert_allclose(world, pts, atol=1e-10)


def test_pixel_rays_at_are_the_rows_of_the_full_image_rays():
    K = intrinsics(24, 50.0)
    c2w = look_at_c2w(np.array([0.3, 0.9, -1.1]))
    origins, dirs = pixel_rays(K, c2w, 24, 24)
    index = np.random.default_rng(0).choice(24 * 24, 77, replace=False)
    o_at, d_at = pixel_rays_at(K, c2w, 24, index)
    np.testing.assert_array_equal(o_at, origins[index])
    np.testing.assert_allclose(d_at, dirs[index], rtol=0, atol=1e-15)
    # a non-square image: rows are ``width`` long
    _, d_wide = pixel_rays(K, c2w, 2, 5)
    _, d_row = pixel_rays_at(K, c2w, 5, np.array([7]))  # v = 1, u = 2
    np.testing.assert_allclose(d_row[0], d_wide[7], atol=1e-15)
    uv, _ = project(d_row + c2w[:3, 3], K, c2w)
    np.testing.assert_allclose(uv[0], [2.5, 1.5], atol=1e-9)


def test_pixel_rays_pass_through_pixel_centres():
    K = intrinsics(16, 60.0)
    c2w = look_at_c2w(np.array([0.0, 0.5, -1.3]))
    origins, dirs = pixel_rays(K, c2w, 16, 16)
    pts = origins + dirs * 1.7
    uv, z = project(pts, K, c2w)
    v, u = np.divmod(np.arange(256), 16)
    np.testing.assert_allclose(uv, np.c_[u + 0.5, v + 0.5], atol=1e-9)
    np.testing.assert_allclose(z, 1.7, atol=1e-9)  # dirs have unit camera-z


def test_backproject_constant_depth_plane():
    K = intrinsics(8, 40.0)
    c2w = np.eye(4)
    depth = np.full((8, 8), 2.0, np.float32)
    depth[0, 0] = 0
    pts = backproject_depth(depth, K, c2w)
    assert len(pts) == 63
    np.testing.assert_allclose(pts[:, 2], 2.0)


def test_hemisphere_poses_above_ground_and_look_at_object():
    rig = CameraRig()
    for seed in range(5):
        poses = random_hemisphere_poses(rig, seed)
        assert poses.shape == (rig.n_views, 4, 4)
        eyes = poses[:, :3, 3]
        assert (eyes[:, 1] > 0).all()
        np.testing.assert_allclose(np.linalg.norm(eyes, axis=1), rig.distance)
        forward = poses[:, :3, 2]
        cos = np.einsum("ij,ij->i", forward, -eyes / rig.distance)
        np.testing.assert_allclose(cos, 1.0, atol=1e-12)
        # the object's centre projects to the image centre
        K = intrinsics(rig.image_size, rig.fov_deg)
        uv = np.stack([project(np.zeros((1, 3)), K, p)[0][0] for p in poses])
        np.testing.assert_allclose(uv, rig.image_size / 2, atol=1e-9)
    assert not np.allclose(random_hemisphere_poses(rig, 0), random_hemisphere_poses(rig, 1))
    np.testing.assert_array_equal(random_hemisphere_poses(rig, 4), random_hemisphere_poses(rig, 4))


def test_fixed_eval_poses_identical_and_spread():
    rig = CameraRig()
    a, b = fixed_eval_poses(rig), fixed_eval_poses(rig)
    np.testing.assert_array_equal(a, b)
    eyes = a[:, :3, 3]
    assert (eyes[:, 1] > 0).all()
    az = np.degrees(np.arctan2(eyes[:, 0], -eyes[:, 2])) % 360
    assert np.histogram(az, bins=4, range=(0, 360))[0].min() >= 8  # all sides covered
