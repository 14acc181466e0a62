"""Torch camera rays, projection and pixel sampling (OpenCV convention, pixel centres at +0.5).

Conventions (same as :mod:`renderers.cameras` and ``DESIGN.md``):

* camera frame: x right, y down, z forward; ``K`` (3, 3) in pixels; ``c2w`` (4, 4) rigid.
* continuous pixel coordinates ``uv = (u, v) = (x, y)``: pixel ``(row i, col j)`` covers
  ``[j, j+1) x [i, i+1)``, so its centre is ``(j + 0.5, i + 0.5)``. Integer pixel indices are
  returned by the samplers as ``(x, y) = (col, row)``; the caller turns them into centres with
  :func:`pixel_centers` before calling :func:`pixel_rays`.
* ray directions are **unit length** (as in the official FeatureNeRF / pixelNeRF code), so the
  ray parameter ``t`` is a Euclidean distance and ``near``/``far`` (0.8 / 1.8) are distances
  along the ray. :func:`renderers.cameras.pixel_rays` instead returns directions with unit camera-z
  component (``t`` = z-depth); :func:`distance_to_z` / :func:`z_to_distance` convert.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "pixel_centers",
    "pixel_rays",
    "distance_to_z",
    "z_to_distance",
    "project_points",
    "mask_bboxes",
    "sample_pixel_indices",
    "bbox_pixel_sampler",
]


def pixel_centers(idx: Tensor) -> Tensor:
    """Integer pixel indices (..., 2) as ``(x, y)`` -> float pixel-centre coordinates (+0.5)."""
    return idx.to(torch.float32) + 0.5


def pixel_rays(K: Tensor, c2w: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
    """World-space rays through continuous pixel coordinates.

    Args:
        K: (B, 3, 3) intrinsics in pixels.
        c2w: (B, 4, 4) OpenCV camera-to-world.
        uv: (B, R, 2) continuous pixel coordinates ``(x, y)``; pass pixel *centres*
            (integer index + 0.5, see :func:`pixel_centers`) for the ray through a pixel.

    Returns:
        origins: (B, R, 3) camera centres (broadcast per ray).
        dirs: (B, R, 3) unit-length world directions.
    """
    ones = torch.ones_like(uv[..., :1])
    pix = torch.cat([uv, ones], dim=-1)  # (B, R, 3)
    k_inv = torch.linalg.inv(K.to(uv.dtype))  # (B, 3, 3)
    d_cam = pix @ k_inv.transpose(-1, -2)  # (B, R, 3), z component == 1
    rot = c2w[:, :3, :3].to(uv.dtype)
    dirs = d_cam @ rot.transpose(-1, -2)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, :3, 3].to(uv.dtype).expand_as(dirs)
    return origins, dirs


def distance_to_z(t: Tensor, dirs: Tensor, c2w: Tensor) -> Tensor:
    """Distance along unit rays -> z-depth in the camera frame.

    Args:
        t: (B, R, ...) distances along the rays (e.g. rendered expected depth (B, R)).
        dirs: (B, R, 3) unit world directions of the rays.
        c2w: (B, 4, 4) camera-to-world of the camera the rays start from.

    Returns:
        (B, R, ...) z-depth ``t * cos(angle to the optical axis)``.
    """
    cos = (dirs * c2w[:, None, :3, 2]).sum(-1)  # (B, R)
    return t * cos.reshape(cos.shape + (1,) * (t.dim() - cos.dim()))


def z_to_distance(z: Tensor, dirs: Tensor, c2w: Tensor) -> Tensor:
    """Inverse of :func:`distance_to_z`: z-depth (B, R, ...) -> distance along unit rays."""
    cos = (dirs * c2w[:, None, :3, 2]).sum(-1)
    return z / cos.reshape(cos.shape + (1,) * (z.dim() - cos.dim()))


def project_points(xyz: Tensor, K: Tensor, c2w: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Project world points into cameras (inverse of :func:`pixel_rays`).

    Args:
        xyz: (B, N, 3) world points.
        K: (B, 3, 3) intrinsics. c2w: (B, 4, 4) OpenCV camera-to-world.
        eps: |z| below ``eps`` is replaced by ``eps`` (keeping the sign) before the division, so
            points on the camera plane give large but finite coordinates instead of inf/NaN.

    Returns:
        uv: (B, N, 2) continuous pixel coordinates (pixel centres at +0.5).
        z: (B, N) depth along the optical axis (negative behind the camera).
    """
    w2c = torch.linalg.inv(c2w.to(xyz.dtype))
    cam = xyz @ w2c[:, :3, :3].transpose(-1, -2) + w2c[:, None, :3, 3]
    z = cam[..., 2]
    z_safe = torch.where(z.abs() < eps, torch.where(z < 0, -eps, eps), z)
    uvw = cam @ K.to(xyz.dtype).transpose(-1, -2)
    uv = uvw[..., :2] / z_safe[..., None]
    return uv, z


def mask_bboxes(masks: Tensor) -> Tensor:
    """Inclusive pixel bounding boxes of boolean masks.

    Args:
        masks: (B, H, W) bool (or 0/1) foreground masks.

    Returns:
        (B, 4) long ``[x0, y0, x1, y1]`` inclusive; an empty mask gives the whole image.
    """
    b, h, w = masks.shape
    m = masks.bool()
    cols = m.any(dim=1)  # (B, W)
    rows = m.any(dim=2)  # (B, H)
    ar_w = torch.arange(w, device=masks.device)
    ar_h = torch.arange(h, device=masks.device)
    big = max(h, w) + 1
    x0 = torch.where(cols, ar_w, big).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1)
    y0 = torch.where(rows, ar_h, big).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1)
    empty = ~cols.any(dim=1)
    full = torch.tensor([0, 0, w - 1, h - 1], device=masks.device)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    return torch.where(empty[:, None], full, boxes).long()


def sample_pixel_indices(
    n_views: int,
    height: int,
    width: int,
    n_rays: int,
    generator: torch.Generator | None = None,
    bboxes: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform random integer pixel indices, optionally restricted to per-view boxes.

    Args:
        n_views: B, number of views. height, width: image size.
        n_rays: R, pixels per view (with replacement, as pixelNeRF).
        generator: torch RNG (on ``device``); ``None`` uses the global RNG.
        bboxes: optional (B, 4) inclusive ``[x0, y0, x1, y1]`` (see :func:`mask_bboxes`).

    Returns:
        (B, R, 2) long ``(x, y)`` = (column, row) indices.
    """
    if device is None:
        device = bboxes.device if bboxes is not None else "cpu"
    if bboxes is None:
        lo = torch.zeros(n_views, 2, device=device)
        size = torch.tensor([width, height], device=device).expand(n_views, 2).float()
    else:
        lo = bboxes[:, :2].float().to(device)
        size = (bboxes[:, 2:] - bboxes[:, :2] + 1).float().to(device)
    r = torch.rand(n_views, n_rays, 2, generator=generator, device=device)
    idx = (lo[:, None] + torch.floor(r * size[:, None])).long()
    hi = (lo + size - 1).long()
    return torch.minimum(idx, hi[:, None])


def bbox_pixel_sampler(
    masks: Tensor, n_rays: int, use_bbox: bool, generator: torch.Generator | None = None
) -> Tensor:
    """pixelNeRF ray sampler: R pixels per view inside the mask's bounding box, or uniformly.

    The official code samples inside the alpha-mask bbox until ``--no_bbox_step`` (100k steps),
    then over the whole image.

    Args:
        masks: (B, H, W) foreground masks (bool or alpha > 0).
        n_rays: R. use_bbox: restrict to the inclusive mask bbox (empty mask -> whole image).
        generator: torch RNG or ``None``.

    Returns:
        (B, R, 2) long ``(x, y)`` pixel indices; :func:`pixel_centers` gives the ray coordinates.
    """
    b, h, w = masks.shape
    boxes = mask_bboxes(masks) if use_bbox else None
    return sample_pixel_indices(b, h, w, n_rays, generator, boxes, device=masks.device)
