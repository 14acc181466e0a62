"""Control descriptors: how much of a correspondence score needs no learned semantics at all.

Every control is a :class:`~pipeline.evaluation.features.FeatureSource` and is matched exactly as
the methods are (L2-normalised, cosine nearest neighbour), so its score sits beside theirs:

* ``untrained_internal``: the student network as initialised (step 0, ``runs/<name>/init.ckpt``),
  internal feature; the encoder keeps its pretrained weights. What architecture + pretrained
  encoder give before any NeRF training.
* ``coord_depth``: the surface point from the student's *own rendered depth* (no ground truth),
  expressed in the input camera's orientation about the object centre (``R_w2c @ x``, the frame
  the MLP itself sees). 3D points: the point itself in that frame. Pure geometry.
* ``pixel_xy``: the pixel's normalised image position; ``pixel_bbox_xy``: its position relative
  to the 2D bounding box of the view's silhouette (alpha > 0; the GT foreground already gives
  every method its candidate pixels). 3D points: the position of their projection into the
  input view.
  Cross-instance pairs of the official protocol share the view and the objects are canonically
  posed, so pixel position alone scores high there; across views it cannot help.

Positions ``p`` (centred, about unit range) become ``(s * p, 1)`` (:func:`position_descriptor`),
so that cosine similarity ranks candidates almost as Euclidean distance does (for ``s = 0.5`` the
rays span +-14 degrees); a raw 2-vector would be reduced to its angle by the normalisation.
"""

from __future__ import annotations

import numpy as np

from cache.render_store import RenderStore
from pipeline.evaluation.features import NerfRenderer, project_into_view, upsample

CONTROL_NAMES = ("untrained_internal", "coord_depth", "pixel_xy", "pixel_bbox_xy")
POSITION_SCALE = 0.5


def position_descriptor(p: np.ndarray, scale: float = POSITION_SCALE) -> np.ndarray:
    """(..., k) centred positions -> (..., k + 1) float32 ``(scale * p, 1)``."""
    p = np.asarray(p, np.float32)
    return np.concatenate([scale * p, np.ones((*p.shape[:-1], 1), np.float32)], axis=-1)


def pixel_grid(h: int, w: int) -> np.ndarray:
    """(h, w, 2) pixel-centre coordinates ``(x, y)`` (centres at +0.5)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    return np.stack([xs, ys], axis=-1)


def normalised_xy(uv: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(..., 2) pixel coordinates -> image position in [-0.5, 0.5] (centre 0)."""
    h, w = hw
    return np.asarray(uv, np.float32) / np.array([w, h], np.float32) - 0.5


def bbox_xy(uv: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """(..., 2) pixel coordinates -> position relative to the bbox of ``fg`` (H, W) bool, in
    [-0.5, 0.5] inside the box (the whole image when ``fg`` is empty)."""
    rows, cols = np.nonzero(fg)
    if len(rows) == 0:
        return normalised_xy(uv, fg.shape)
    lo = np.array([cols.min(), rows.min()], np.float32)
    hi = np.array([cols.max() + 1, rows.max() + 1], np.float32)
    return (np.asarray(uv, np.float32) - lo) / np.maximum(hi - lo, 1.0) - 0.5


def rotate_to_camera(xyz: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """(N, 3) object-frame points -> ``R_w2c @ x`` (N, 3): the input camera's orientation about
    the object centre (no translation)."""
    R_w2c = np.asarray(c2w, np.float64)[:3, :3].T
    return (np.asarray(xyz, np.float64) @ R_w2c.T).astype(np.float32)


class PixelPositionSource:
    """``pixel_xy`` / ``pixel_bbox_xy`` (module doc).

    Args:
        store: the render store. relative_to_bbox: ``pixel_bbox_xy`` when True.
    """

    kind = "control"

    def __init__(self, store: RenderStore, relative_to_bbox: bool = False):
        self.store, self.relative = store, relative_to_bbox
        self.name = "pixel_bbox_xy" if relative_to_bbox else "pixel_xy"

    def _fg(self, obj: int, view: int) -> np.ndarray:
        return self.store.read("alpha", (obj, view)) > 0

    def _position(self, uv: np.ndarray, obj: int, view: int) -> np.ndarray:
        size = self.store.image_size
        if self.relative:
            return bbox_xy(uv, self._fg(obj, view))
        return normalised_xy(uv, (size, size))

    def map_2d(self, obj: int, input_view: int, view: int) -> np.ndarray:
        size = self.store.image_size
        return position_descriptor(self._position(pixel_grid(size, size), obj, view))

    def at_points(self, obj: int, input_view: int, xyz: np.ndarray) -> np.ndarray:
        uv = project_into_view(self.store, obj, input_view, xyz)
        return position_descriptor(self._position(uv[0].numpy(), obj, input_view))


class RenderedCoordinateSource:
    """``coord_depth`` (module doc): geometry from a NeRF's own rendered depth.

    Args:
        renderer: the student's :class:`NerfRenderer` (its renders are shared with the
            student's own feature source through the renderer's cache).
    """

    kind = "control"
    name = "coord_depth"

    def __init__(self, renderer: NerfRenderer):
        self.renderer = renderer

    def map_2d(self, obj: int, input_view: int, view: int) -> np.ndarray:
        import torch

        from pipeline.evaluation.features import scaled_intrinsics
        from train.rays import pixel_rays

        r = self.renderer.render(obj, input_view, view)
        store, h = self.renderer.store, self.renderer.eval_size
        K = scaled_intrinsics(store.read("K", (obj, view)), store.image_size, h)
        uv = torch.from_numpy(pixel_grid(h, h).reshape(1, -1, 2))
        origins, dirs = pixel_rays(torch.from_numpy(K).float()[None],
                                   torch.from_numpy(store.read("c2w", (obj, view))).float()[None],
                                   uv)
        # rendered depth = expected distance along the unit ray (0 where nothing is rendered)
        xyz = (origins + dirs * torch.from_numpy(r["depth"]).reshape(1, -1, 1))[0].numpy()
        desc = position_descriptor(rotate_to_camera(xyz, store.read("c2w", (obj, input_view))))
        return upsample(desc.reshape(h, h, -1), (store.image_size, store.image_size))

    def at_points(self, obj: int, input_view: int, xyz: np.ndarray) -> np.ndarray:
        c2w_in = self.renderer.store.read("c2w", (obj, input_view))
        return position_descriptor(rotate_to_camera(xyz, c2w_in))
