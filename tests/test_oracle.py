"""OracleTeacher: exact surface coordinates on a synthetic plane, part distributions, errors."""

import numpy as np
import pytest

from teachers.base import TeacherError, TeacherInput
from teachers.oracle import OracleTeacher

F, C, Z = 100.0, 64.0, 2.0
ANG = np.deg2rad(30.0)
C2W = np.array(
    [
        [np.cos(ANG), 0.0, np.sin(ANG), 0.3],
        [0.0, 1.0, 0.0, -0.2],
        [-np.sin(ANG), 0.0, np.cos(ANG), 1.5],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _plane_scene() -> TeacherInput:
    """A fronto-parallel plane at z = 2 covering rows 32..95, cols 16..111 of a 128 px view."""
    depth = np.zeros((1, 128, 128), np.float32)
    depth[:, 32:96, 16:112] = Z
    alpha = (depth > 0).astype(np.uint8) * 255
    part = np.full((1, 128, 128), -1, np.int16)
    part[:, 32:96, 16:66] = 0
    part[:, 32:96, 66:112] = 2
    part[:, 32:34, 100:112] = -1  # unlabelled foreground pixels: half of cells (8, 25..27)
    part[:, 92:96, 108:112] = -1  # all of cell (23, 27)
    K = np.array([[[F, 0, C], [0, F, C], [0, 0, 1]]], np.float32)
    rgb = np.zeros((1, 128, 128, 3), np.uint8)
    return TeacherInput(rgb, alpha, "chair", part=part, depth=depth, K=K, c2w=C2W[None])


def _world(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Object-frame point of the plane seen at continuous pixel coordinates (u, v)."""
    cam = np.stack([(u - C) / F * Z, (v - C) / F * Z, np.full_like(u, Z)], axis=-1)
    return cam @ C2W[:3, :3].T + C2W[:3, 3]


def test_area_pooling_exact_coordinates_and_parts() -> None:
    t = OracleTeacher(n_parts=3)
    feat = t(_plane_scene())[0]
    assert feat.shape == (32, 32, 6) and t.feature_dim == 6
    i, j = np.meshgrid(np.arange(8, 24), np.arange(4, 28), indexing="ij")
    expected = _world(4.0 * j + 2.0, 4.0 * i + 2.0)  # cell centre = mean of its pixel centres
    np.testing.assert_allclose(feat[8:24, 4:28, 3:], expected, atol=1e-5)

    parts = feat[8:24, 4:28, :3].copy()
    np.testing.assert_allclose(parts[15, 23], 0.0)  # no labelled pixel, coordinates still set
    parts[15, 23, 0] = 1.0
    np.testing.assert_allclose(parts.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(feat[10, 5, :3], [1, 0, 0])
    np.testing.assert_allclose(feat[10, 20, :3], [0, 0, 1])
    np.testing.assert_allclose(feat[10, 16, :3], [0.5, 0, 0.5])  # pixels 64, 65 | 66, 67
    np.testing.assert_allclose(feat[8, 26, :3], [0, 0, 1])  # partly unlabelled cell
    fg = np.zeros((32, 32), bool)
    fg[8:24, 4:28] = True
    assert np.all(feat[~fg] == 0)


def test_nearest_pooling_and_weights() -> None:
    t = OracleTeacher(n_parts=3, pooling="nearest", coord_weight=2.0, part_weight=0.5)
    feat = t(_plane_scene())[0]
    i, j = np.meshgrid(np.arange(8, 24), np.arange(4, 28), indexing="ij")
    expected = _world(4.0 * j + 2.5, 4.0 * i + 2.5)  # pixel 4 i + 2, centre at + 0.5
    np.testing.assert_allclose(feat[8:24, 4:28, 3:], 2.0 * expected, atol=1e-5)
    np.testing.assert_allclose(feat[10, 16, :3], [0, 0, 0.5])  # pixel 66 -> part 2
    only_xyz = OracleTeacher(use_parts=False)
    assert only_xyz.feature_dim == 3 and only_xyz.identity()["n_parts"] == 0


def test_missing_extras_and_bad_labels() -> None:
    scene = _plane_scene()
    bare = TeacherInput(scene.rgb, scene.alpha, "chair")
    with pytest.raises(TeacherError, match="part"):
        OracleTeacher()(bare)
    with pytest.raises(TeacherError, match="depth"):
        OracleTeacher(use_parts=False)(TeacherInput(scene.rgb, scene.alpha, "c", part=scene.part))
    with pytest.raises(TeacherError, match="n_parts"):
        OracleTeacher(n_parts=2)(scene)
    with pytest.raises(TeacherError, match="shape"):
        TeacherInput(scene.rgb, scene.alpha, "c", depth=scene.depth[0])
