"""Exact geometric passes by ray casting with trimesh + embreex (no GL needed).

Used for keypoint visibility, for the pyrender backend's depth and part passes, and as the
GL-free `raycast` backend (Lambertian shading from face normals).
"""

from __future__ import annotations

import numpy as np
import trimesh

from renderers.asset import ShapeAsset
from renderers.base import RenderedViews
from renderers.cameras import pixel_rays_at


def ray_intersector(mesh: trimesh.Trimesh):
    """Return the fastest available ray intersector for ``mesh`` (embree when installed)."""
    try:
        from trimesh.ray.ray_pyembree import RayMeshIntersector

        return RayMeshIntersector(mesh)
    except Exception:  # embreex missing: pure-python backend, ~600x slower
        return trimesh.ray.ray_triangle.RayMeshIntersector(mesh)


def cast_view(
    intersector,
    mesh: trimesh.Trimesh,
    K: np.ndarray,
    c2w: np.ndarray,
    size: int,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cast one ray per pixel centre (only where the (H, W) bool ``mask`` is set, if given).

    Returns:
        tri: (H, W) int64 index of the first face hit, -1 for background (or masked out).
        depth: (H, W) float32 z-depth of the hit, 0 for background.
    """
    pixels = (np.arange(size * size) if mask is None
              else np.flatnonzero(np.asarray(mask, bool).reshape(-1)))
    tri_at, depth_at = cast_pixels(intersector, face_planes(mesh), K, c2w, size, pixels)
    tri = np.full(size * size, -1, np.int64)
    depth = np.zeros(size * size, np.float32)
    tri[pixels], depth[pixels] = tri_at, depth_at
    return tri.reshape(size, size), depth.reshape(size, size)


def face_planes(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """(F, 3) unit normals and (F, 3) first vertices of ``mesh``'s faces: each face's plane."""
    return np.asarray(mesh.face_normals), np.asarray(mesh.vertices)[np.asarray(mesh.faces)[:, 0]]


def plane_depth(planes: tuple[np.ndarray, np.ndarray], tri: np.ndarray, origins: np.ndarray,
                dirs: np.ndarray) -> np.ndarray:
    """(n,) float64 exact distance along each ray (n, 3) to the plane of the face it hit ``tri``
    (n,): the z-depth where ``dirs`` have a unit camera-z component; inf/nan for a ray in the
    plane."""
    normals, p0 = planes[0][tri], planes[1][tri]
    num = np.einsum("ij,ij->i", p0 - origins, normals)
    den = np.einsum("ij,ij->i", dirs, normals)
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


def cast_pixels(intersector, planes: tuple[np.ndarray, np.ndarray], K: np.ndarray,
                c2w: np.ndarray, size: int, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cast_view` at the row-major pixel indices ``pixels`` (n,) only, without full-image
    arrays; ``planes`` from :func:`face_planes` (made once per mesh).

    Returns:
        tri: (n,) int64 first face hit, -1 for a miss.
        depth: (n,) float32 z-depth of the hit (the same values as :func:`cast_view`), 0 for
        a miss.
    """
    origins, dirs = pixel_rays_at(K, c2w, size, pixels)
    if not len(pixels):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    tri = np.asarray(intersector.intersects_first(origins, dirs), np.int64)
    hit = tri >= 0
    depth = np.zeros(len(pixels), np.float64)
    depth[hit] = plane_depth(planes, tri[hit], origins[hit], dirs[hit])
    return tri, depth.astype(np.float32)


def first_hit_distance(intersector, origins: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N,) distance to the first surface along the segment origin->target, inf if none."""
    dirs = targets - origins
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    locations, index_ray, _ = intersector.intersects_location(origins, dirs, multiple_hits=False)
    dist = np.full(len(origins), np.inf)
    if len(index_ray):
        dist[index_ray] = np.linalg.norm(locations - origins[index_ray], axis=-1)
    return dist


def face_colors_rgb(mesh: trimesh.Trimesh) -> np.ndarray:
    """(F, 3) float colours in [0, 1] per face (texture sampled at the face UV centroid)."""
    visual = mesh.visual
    if visual.kind == "texture":
        try:
            visual = visual.to_color()
        except Exception:
            return np.full((len(mesh.faces), 3), 0.7)
    if visual.kind == "face":
        return np.asarray(visual.face_colors[:, :3], np.float64) / 255.0
    if visual.kind == "vertex":
        vc = np.asarray(visual.vertex_colors[:, :3], np.float64) / 255.0
        return vc[mesh.faces].mean(axis=1)
    return np.full((len(mesh.faces), 3), 0.7)


class RaycastRenderer:
    """GL-free backend: exact depth/labels, Lambertian shading from a head light + ambient."""

    name = "raycast"

    def version(self) -> str:
        return f"raycast (trimesh {trimesh.__version__}, embree={trimesh.ray.has_embree})"

    def render(self, asset: ShapeAsset, K: np.ndarray, c2w: np.ndarray, size: int) -> RenderedViews:
        mesh = asset.mesh
        intersector = ray_intersector(mesh)
        colors = face_colors_rgb(mesh)
        n_views = len(c2w)
        rgb = np.zeros((n_views, size, size, 3), np.uint8)
        alpha = np.zeros((n_views, size, size), np.uint8)
        depth = np.zeros((n_views, size, size), np.float32)
        part = np.full((n_views, size, size), -1, np.int16)
        for v in range(n_views):
            tri, depth[v] = cast_view(intersector, mesh, K, c2w[v], size)
            hit = tri >= 0
            view_dir = c2w[v][:3, 2]
            lambert = np.abs(mesh.face_normals[tri[hit]] @ view_dir)
            shade = (0.35 + 0.65 * lambert)[:, None] * colors[tri[hit]]
            rgb[v][hit] = np.clip(shade * 255.0 + 0.5, 0, 255).astype(np.uint8)
            alpha[v][hit] = 255
            part[v][hit] = asset.face_part[tri[hit]]
        return RenderedViews(rgb=rgb, alpha=alpha, depth=depth, part=part)
