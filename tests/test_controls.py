"""Controls: pixel position and rendered-depth geometry descriptors, matched as the methods are."""

import numpy as np
import pytest

from cache.render_store import RenderStore
from pipeline.evaluation.controls import (
    PixelPositionSource,
    RenderedCoordinateSource,
    bbox_xy,
    normalised_xy,
    pixel_grid,
    position_descriptor,
    rotate_to_camera,
)
from pipeline.evaluation.metrics import nearest_neighbours


def test_position_descriptor_ranks_like_euclidean_distance():
    rng = np.random.default_rng(0)
    keys = rng.uniform(-0.5, 0.5, (400, 2))
    query = rng.uniform(-0.5, 0.5, (200, 2))
    nn = nearest_neighbours(position_descriptor(query), position_descriptor(keys))
    d = np.linalg.norm(query[:, None] - keys[None], axis=-1)
    # the chosen key is (nearly) the Euclidean nearest one
    excess = d[np.arange(len(query)), nn] - d.min(axis=1)
    assert np.quantile(excess, 0.95) < 0.02
    # a raw 2-vector keeps only its angle under cosine matching: far worse
    raw = nearest_neighbours(query, keys)
    assert (d[np.arange(len(query)), raw] - d.min(axis=1)).mean() > 10 * excess.mean()


def test_bbox_xy_maps_the_box_to_unit_range():
    fg = np.zeros((10, 20), bool)
    fg[2:6, 4:14] = True
    uv = np.array([[4.0, 2.0], [14.0, 6.0], [9.0, 4.0]])
    np.testing.assert_allclose(bbox_xy(uv, fg), [[-0.5, -0.5], [0.5, 0.5], [0.0, 0.0]])
    np.testing.assert_allclose(bbox_xy(uv, np.zeros_like(fg)), normalised_xy(uv, (10, 20)))


def test_rotate_to_camera_is_rotation_about_the_object_centre():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = q, [0.3, -1.2, 0.5]
    x = rng.normal(size=(5, 3))
    w2c = np.linalg.inv(c2w)
    cam = x @ w2c[:3, :3].T + w2c[:3, 3]
    origin_cam = w2c[:3, 3]
    np.testing.assert_allclose(rotate_to_camera(x, c2w), cam - origin_cam, atol=1e-5)


def test_pixel_sources_on_a_real_store(tiny_stores):
    store = RenderStore(str(tiny_stores[0]))
    obj = store.valid_indices("test")[0]
    xy = PixelPositionSource(store)
    m = xy.map_2d(obj, 0, 1)
    size = store.image_size
    assert m.shape == (size, size, 3)
    np.testing.assert_allclose(m[..., :2] / 0.5, normalised_xy(pixel_grid(size, size),
                                                                (size, size)), atol=1e-6)
    # every pixel's nearest neighbour in the same map is itself
    flat = m.reshape(-1, 3)
    assert (nearest_neighbours(flat[::7], flat) == np.arange(0, len(flat), 7)).all()
    box = PixelPositionSource(store, relative_to_bbox=True)
    assert box.name == "pixel_bbox_xy" and box.map_2d(obj, 0, 1).shape == (size, size, 3)
    # 3D: a point takes the position of its projection into the input view
    pts = store.read("points", obj)[:10]
    assert xy.at_points(obj, 0, pts).shape == (10, 3)


class _FakeRenderer:
    """Renders the GT depth (as distance along the ray) of the store: the coordinate control
    must then give the GT surface points in the input camera's orientation."""

    def __init__(self, store: RenderStore):
        self.store, self.eval_size = store, store.image_size

    def render(self, obj, input_view, view):
        import torch

        from train.rays import pixel_rays

        z = self.store.read("depth", (obj, view))
        K = torch.from_numpy(self.store.read("K", (obj, view))).float()[None]
        c2w = torch.from_numpy(self.store.read("c2w", (obj, view))).float()[None]
        uv = torch.from_numpy(pixel_grid(*z.shape).reshape(1, -1, 2))
        _, dirs = pixel_rays(K, c2w, uv)
        cos = (dirs[0] @ c2w[0, :3, 2]).numpy().reshape(z.shape)
        return {"depth": (z / cos).astype(np.float32)}


def test_coordinate_control_recovers_surface_points(tiny_stores):
    store = RenderStore(str(tiny_stores[0]))
    obj = store.valid_indices("test")[0]
    src = RenderedCoordinateSource(_FakeRenderer(store))
    view, input_view = 2, 0
    m = src.map_2d(obj, input_view, view)
    fg = store.read("depth", (obj, view)) > 0
    c2w_in = store.read("c2w", (obj, input_view))
    xyz_cam = m[fg][:, :3] / 0.5
    xyz = xyz_cam @ np.asarray(c2w_in, np.float64)[:3, :3].T  # back to the object frame
    # GT surface points lie within the object's unit-diagonal box
    assert np.abs(xyz).max() < 0.75
    pts = store.read("points", obj)
    d = np.linalg.norm(xyz[:, None] - pts[None], axis=-1).min(axis=1)
    assert np.median(d) < 0.03
    np.testing.assert_allclose(src.at_points(obj, input_view, pts)[:, :3] / 0.5,
                               rotate_to_camera(pts, c2w_in), atol=1e-5)


@pytest.mark.parametrize("scale", [0.25, 0.5])
def test_descriptor_has_constant_last_channel(scale):
    d = position_descriptor(np.zeros((3, 2)), scale)
    np.testing.assert_array_equal(d[:, -1], 1.0)
