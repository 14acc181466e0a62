"""renderers.conventions: each source's own projection formula (written here from
formats.md sections 0, 7 and 8) and our K / c2w through renderers.cameras.project give the same
pixels."""

from __future__ import annotations

import numpy as np
import pytest

from renderers.cameras import project
from renderers.conventions import (
    GL_CV_FLIP,
    V1_TO_PROJECT,
    WORLD_FRAMES,
    ZUP_TO_PROJECT,
    K_from_camera_angle_x,
    camera_angle_x_from_K,
    dvr_to_K_c2w,
    mean_camera_up,
    nerf_synthetic_to_c2w,
    official_camera_to_c2w,
    opencv_to_opengl_c2w,
    opengl_to_opencv_c2w,
    project_c2w_to_official,
    project_to_world_points,
    srn_intrinsics_to_K,
    srn_pose_to_c2w,
    world_to_project_points,
)

RNG = np.random.default_rng(5)


def camera_looking_at_origin(rng, up: np.ndarray, opengl: bool) -> np.ndarray:
    """A c2w at distance ~1.5 looking at the origin (OpenGL: looks along -z, y up)."""
    eye = rng.normal(size=3)
    eye = 1.5 * eye / np.linalg.norm(eye)
    fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    m = np.eye(4)
    if opengl:
        m[:3, 0], m[:3, 1], m[:3, 2] = right, -down, -fwd
    else:
        m[:3, 0], m[:3, 1], m[:3, 2] = right, down, fwd
    m[:3, 3] = eye
    return m


def points_near_origin(n: int = 20) -> np.ndarray:
    return RNG.uniform(-0.3, 0.3, (n, 3))


def test_world_frames_match_the_documented_matrices():
    from renderers.shapenet import V1_TO_V2

    np.testing.assert_array_equal(V1_TO_PROJECT, V1_TO_V2)
    front_v1 = np.array([[1.0, 0, 0]])  # v1 front +X -> v2 front -Z
    np.testing.assert_allclose(world_to_project_points(front_v1, "shapenet-v1"), [[0, 0, -1]])
    p2 = RNG.normal(size=(5, 3))  # SRN: x_srn = x2, y_srn = -z2, z_srn = y2
    srn = np.stack([p2[:, 0], -p2[:, 2], p2[:, 1]], axis=1)
    np.testing.assert_allclose(world_to_project_points(srn, "z-up"), p2, atol=1e-12)
    for name, m in WORLD_FRAMES.items():  # signed permutations: float32 there and back exact
        assert set(np.abs(m[:3, :3]).ravel()) <= {0.0, 1.0}, name
        p = RNG.normal(size=(50, 3)).astype(np.float32)
        back = project_to_world_points(world_to_project_points(p, name).astype(np.float32), name)
        np.testing.assert_array_equal(back.astype(np.float32), p)
    np.testing.assert_array_equal(ZUP_TO_PROJECT @ np.array([0, 0, 1, 0]), [0, 1, 0, 0])
    with pytest.raises(ValueError, match="unknown world frame 'y-up'; choose one of"):
        world_to_project_points(p2, "y-up")


def test_camera_angle_x_and_K():
    K = K_from_camera_angle_x(np.deg2rad(51.98), 128, 128)
    assert K[0, 0] == pytest.approx(131.25, abs=0.05) and K[0, 0] == K[1, 1]
    np.testing.assert_array_equal(K[:2, 2], [64, 64])
    K = K_from_camera_angle_x(0.7, 200, 100)
    np.testing.assert_allclose(K[:2, 2], [100, 50])
    assert camera_angle_x_from_K(K, 200) == pytest.approx(0.7, rel=1e-14)
    f32 = np.float32(K[0, 0])  # float32 focal -> angle -> float32 focal: the same bits
    K32 = K_from_camera_angle_x(camera_angle_x_from_K(np.diag([f32, f32, 1]), 200), 200, 100)
    assert np.float32(K32[0, 0]) == f32
    with pytest.raises(ValueError, match="not an angle"):
        K_from_camera_angle_x(40.0, 128, 128)


@pytest.mark.parametrize("width,height", [(128, 128), (200, 100)])
def test_nerf_synthetic_round_trip(width, height):
    """NeRF / Blender: OpenGL camera (looks along -z, y up), z-up world, focal from
    camera_angle_x; pixel u = f x / (-z) + W/2, v = -f y / (-z) + H/2."""
    angle = 0.69
    f = 0.5 * width / np.tan(0.5 * angle)
    for _ in range(5):
        T = camera_looking_at_origin(RNG, np.array([0.0, 0, 1]), opengl=True)  # Blender z-up
        X = points_near_origin()
        cam = (np.linalg.inv(T) @ np.c_[X, np.ones(len(X))].T).T
        uv_src = np.stack([f * cam[:, 0] / -cam[:, 2] + width / 2,
                           -f * cam[:, 1] / -cam[:, 2] + height / 2], axis=1)
        K = K_from_camera_angle_x(angle, width, height)
        uv, z = project(world_to_project_points(X, "z-up"), K, nerf_synthetic_to_c2w(T))
        np.testing.assert_allclose(uv, uv_src, atol=1e-9)
        assert (z > 0).all()
        uv_same_world, _ = project(X, K, opengl_to_opencv_c2w(T))  # no world change
        np.testing.assert_allclose(uv_same_world, uv_src, atol=1e-9)
        np.testing.assert_allclose(opencv_to_opengl_c2w(opengl_to_opencv_c2w(T)), T)


def test_srn_round_trip_with_pixel_nerfs_rays():
    """SRN: pose = OpenCV c2w (z-up world); pixel-nerf makes its OpenGL pose with
    ``@ diag(1,-1,-1,1)`` and casts direction ((u - cx) / f, -(v - cy) / f, -1)."""
    K, hw = srn_intrinsics_to_K("131.250000 64.000000 64.000000 0.\n0. 0. 0.\n1.\n128 128\n")
    assert hw == (128, 128)
    np.testing.assert_allclose(K, [[131.25, 0, 64], [0, 131.25, 64], [0, 0, 1]])
    K5, _ = srn_intrinsics_to_K("131.25 64 64 0.\n0. 0. 0.\n1.\n128 128\n0\n")
    np.testing.assert_array_equal(K5, K)
    f, cx, cy = 131.25, 64.0, 64.0
    for _ in range(5):
        pose = camera_looking_at_origin(RNG, np.array([0.0, 0, 1]), opengl=False)
        gl = pose @ np.diag([1.0, -1, -1, 1])
        uv_src = RNG.uniform(0, 128, (20, 2))
        d_cam = np.stack([(uv_src[:, 0] - cx) / f, -(uv_src[:, 1] - cy) / f,
                          -np.ones(len(uv_src))], axis=1)
        X = gl[:3, 3] + RNG.uniform(0.8, 1.8, (20, 1)) * (d_cam @ gl[:3, :3].T)
        uv, z = project(world_to_project_points(X, "z-up"), K, srn_pose_to_c2w(pose))
        np.testing.assert_allclose(uv, uv_src, atol=1e-8)
        assert (z > 0).all()
        flat = srn_pose_to_c2w(pose.reshape(16))  # one line of 16 floats
        np.testing.assert_allclose(flat, srn_pose_to_c2w(pose))
    K64, hw = srn_intrinsics_to_K("131.25 64 64 0.\n0 0 0\n1\n128 128\n", image_size=64)
    assert hw == (64, 64) and K64[0, 0] == pytest.approx(65.625) and K64[0, 2] == 32
    with pytest.raises(ValueError, match="expected 4 or 5 lines"):
        srn_intrinsics_to_K("131.25 64 64 0.\n128 128\n")


def test_dvr_round_trip():
    """DVR: p = camera_mat . world_mat . X, image units in [-1, 1] with (-1, -1) the top-left
    corner; pixel u = (x_ndc + 1) W / 2."""
    W = H = 64
    for _ in range(5):
        c2w = camera_looking_at_origin(RNG, np.array([0.0, 1, 0]), opengl=False)
        world_mat = np.linalg.inv(c2w)[:3]  # 3x4 world -> camera
        fn = RNG.uniform(1.5, 2.5)
        camera_mat = np.array([[fn, 0, 0.03, 0], [0, fn, -0.02, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        X = points_near_origin()
        p = (camera_mat @ np.r_[world_mat, [[0, 0, 0, 1]]] @ np.c_[X, np.ones(len(X))].T).T
        ndc = p[:, :2] / p[:, 2:3]
        uv_src = (ndc + 1) * np.array([W, H]) / 2
        K, c = dvr_to_K_c2w(world_mat, camera_mat, W, H)
        uv, _ = project(X, K, c)
        np.testing.assert_allclose(uv, uv_src, atol=1e-9)
        np.testing.assert_allclose(c, c2w, atol=1e-12)
        assert K[0, 0] == pytest.approx(fn * W / 2)  # pixel-nerf's focal


def test_official_round_trip_with_the_eval_scripts_projection():
    """FeatureNeRF eval_3d_task.py project_points: pose = T @ diag(1,-1,-1,1) (the loader),
    wld2opencv = diag(1,-1,-1,1) @ inv(pose), u = f x / z + W/2, then .long()."""
    W = H = 128
    angle = 0.9072
    f = W / (2 * np.tan(angle / 2))  # fov_to_focal_length
    intr = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    for _ in range(5):
        T = camera_looking_at_origin(RNG, np.array([0.0, 1, 0]), opengl=False)  # v1 world
        X = points_near_origin()
        pose = T @ GL_CV_FLIP
        w2cv = GL_CV_FLIP @ np.linalg.inv(pose)
        cam = (w2cv @ np.c_[X, np.ones(len(X))].T).T[:, :3]
        uv_src = ((cam / cam[:, 2:3]) @ intr.T)[:, :2]
        K = K_from_camera_angle_x(angle, W, H)
        c2w = official_camera_to_c2w(T)
        uv, z = project(world_to_project_points(X, "shapenet-v1"), K, c2w)
        np.testing.assert_allclose(uv, uv_src, atol=1e-9)
        assert (z > 0).all()
        inside = (uv_src >= 0).all(1) & (uv_src < W).all(1)
        np.testing.assert_array_equal(np.floor(uv[inside]), uv_src[inside].astype(np.int64))
        np.testing.assert_allclose(opencv_to_opengl_c2w(T), pose)  # the loader's pose
        np.testing.assert_allclose(project_c2w_to_official(c2w), T, atol=1e-12)
        same, _ = project(X, K, official_camera_to_c2w(T, "shapenet-v2"))
        np.testing.assert_allclose(same, uv_src, atol=1e-9)


def test_mean_camera_up():
    cams = np.stack([camera_looking_at_origin(RNG, np.array([0.0, 1, 0]), opengl=False)
                     for _ in range(20)])
    assert mean_camera_up(cams)[1] > 0.5
    zup = np.stack([camera_looking_at_origin(RNG, np.array([0.0, 0, 1]), opengl=False)
                    for _ in range(20)])
    assert mean_camera_up(zup)[2] > 0.5
    assert mean_camera_up(ZUP_TO_PROJECT @ zup)[1] > 0.5
