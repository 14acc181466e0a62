"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), pixel centres at +0.5.

``K`` is (3, 3) in pixels; ``c2w`` is (4, 4) camera-to-world. World = object frame (+Y up).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

WORLD_UP = np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class CameraRig:
    """How views are placed: distance to the origin, field of view and elevation range (degrees).

    The defaults frame a unit-diagonal object like SRN / FeatureNeRF (focal 131.25 px at 128 px,
    radius 1.3, so near/far 0.8/1.8 bracket the object).
    """

    image_size: int = 128
    fov_deg: float = 51.98
    distance: float = 1.3
    min_elevation_deg: float = 5.0
    max_elevation_deg: float = 75.0
    n_views: int = 50

    def to_dict(self) -> dict:
        return asdict(self)


def intrinsics(image_size: int, fov_deg: float) -> np.ndarray:
    """(3, 3) K for a square image with horizontal field of view ``fov_deg``."""
    f = 0.5 * image_size / np.tan(0.5 * np.deg2rad(fov_deg))
    c = 0.5 * image_size
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=np.float64)


def look_at_c2w(eye: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) OpenCV camera-to-world for a camera at ``eye`` (3,) looking at ``target`` (3,)."""
    eye = np.asarray(eye, dtype=np.float64)
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, WORLD_UP)  # image x = right when world +Y is up on screen
    if np.linalg.norm(x) < 1e-8:
        x = np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def spherical_eye(
    azimuth_deg: np.ndarray, elevation_deg: np.ndarray, distance: float
) -> np.ndarray:
    """(N, 3) camera centres; azimuth 0 looks at the object's front (camera on -Z), elevation up."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    return distance * np.stack(
        [np.sin(az) * np.cos(el), np.sin(el), -np.cos(az) * np.cos(el)], axis=-1
    )


def random_hemisphere_poses(rig: CameraRig, seed: int) -> np.ndarray:
    """(V, 4, 4) c2w drawn uniformly on the upper-hemisphere band of ``rig`` (area-uniform)."""
    rng = np.random.default_rng(seed)
    s_lo, s_hi = np.sin(np.deg2rad([rig.min_elevation_deg, rig.max_elevation_deg]))
    elevation = np.rad2deg(np.arcsin(rng.uniform(s_lo, s_hi, rig.n_views)))
    azimuth = rng.uniform(0.0, 360.0, rig.n_views)
    eyes = spherical_eye(azimuth, elevation, rig.distance)
    return np.stack([look_at_c2w(e) for e in eyes])


def fixed_eval_poses(rig: CameraRig) -> np.ndarray:
    """(V, 4, 4) c2w on a deterministic Fibonacci spiral over the same band; identical for all."""
    i = np.arange(rig.n_views) + 0.5
    s_lo, s_hi = np.sin(np.deg2rad([rig.min_elevation_deg, rig.max_elevation_deg]))
    elevation = np.rad2deg(np.arcsin(s_lo + (s_hi - s_lo) * i / rig.n_views))
    azimuth = np.mod(i * 137.50776405003785, 360.0)
    eyes = spherical_eye(azimuth, elevation, rig.distance)
    return np.stack([look_at_c2w(e) for e in eyes])


def project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points.

    Args:
        points: (N, 3) world points. K: (3, 3). c2w: (4, 4).
    Returns:
        uv: (N, 2) continuous pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)).
        z: (N,) depth along the optical axis (camera z).
    """
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    uvw = cam @ np.asarray(K).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, z


def pixel_rays(
    K: np.ndarray, c2w: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rays through every pixel centre of a height x width image: :func:`pixel_rays_at` over
    all pixels.

    Returns:
        origins: (H*W, 3), directions: (H*W, 3) with unit camera-z component (so hit distance
        along the ray equals z-depth), row-major over (v, u).
    """
    return pixel_rays_at(K, c2w, width, np.arange(height * width))


def pixel_rays_at(
    K: np.ndarray, c2w: np.ndarray, width: int, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rays through the centres of the pixels at row-major indices ``index`` (n,) of an image
    ``width`` pixels wide.

    Returns:
        origins: (n, 3), directions: (n, 3) with unit camera-z component.
    """
    v, u = np.divmod(np.asarray(index), width)
    pix = np.stack([u + 0.5, v + 0.5, np.ones(len(u))], axis=-1)
    dirs = (pix @ np.linalg.inv(K).T) @ c2w[:3, :3].T  # camera-z component == 1
    return np.broadcast_to(c2w[:3, 3], dirs.shape).copy(), dirs


def backproject_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """(H, W) z-depth -> (M, 3) world points of the pixels with depth > 0 (row-major order)."""
    h, w = depth.shape
    origins, dirs = pixel_rays(K, c2w, h, w)
    d = depth.reshape(-1)
    keep = d > 0
    return origins[keep] + dirs[keep] * d[keep, None]
