"""The unit every shape source produces and every renderer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh


class AssetError(RuntimeError):
    """A shape could not be loaded or built; the message names the object and what to do."""


@dataclass
class ShapeAsset:
    """One object, in the ShapeNetCore v2 normalized frame (+Y up, -Z front, unit bbox diagonal).

    Attributes:
        object_id: opaque id (ShapeNet model id, or ``proc-<category>-<seed>``).
        category: category name, e.g. ``"chair"``.
        mesh: triangle mesh; its ``visual`` carries colours (per-face/vertex) or a UV texture.
        face_part: (F,) int16 part label per face of ``mesh``; -1 = unlabelled.
        part_names: names indexed by part label.
        keypoints: (P, 3) float32 semantic keypoints on the surface (object frame).
        keypoint_ids: (P,) int32 semantic ids, stable across instances of a category.
        seed: the seed the asset was drawn from (procedural) or 0.
        meta: free-form provenance (source path, generator style choices, ...), JSON-serialisable.
    """

    object_id: str
    category: str
    mesh: trimesh.Trimesh
    face_part: np.ndarray
    part_names: list[str]
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    keypoint_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    seed: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.face_part = np.asarray(self.face_part, dtype=np.int16)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, 3)
        self.keypoint_ids = np.asarray(self.keypoint_ids, dtype=np.int32).reshape(-1)
        if len(self.face_part) != len(self.mesh.faces):
            raise AssetError(
                f"{self.category}/{self.object_id}: {len(self.face_part)} face labels for "
                f"{len(self.mesh.faces)} faces; the part annotation does not match the mesh"
            )
        if len(self.keypoints) != len(self.keypoint_ids):
            raise AssetError(
                f"{self.category}/{self.object_id}: keypoints and ids differ in length"
            )


MIN_SURFACE_AREA = 1e-8
"""Smallest total surface area accepted, in the unit-diagonal frame (real shapes are ~0.3-2)."""
DIAGONAL_TOLERANCE = 1e-3
"""Largest accepted ``|bbox diagonal - 1|`` after a source's normalisation."""
FIX_HINT = "fix or remove the model, or re-run with --on-error skip"


def validate_asset(asset: ShapeAsset) -> None:
    """Reject shapes that cannot give a meaningful render, before rendering them.

    Every source's output passes through here (``run_job``): the mesh must have faces and finite
    vertices, a bbox diagonal of 1 within :data:`DIAGONAL_TOLERANCE` (the object-frame
    normalisation) and a total surface area of at least :data:`MIN_SURFACE_AREA`.

    Raises:
        AssetError: naming ``category/object_id``, the problem and what to do.
    """
    name = f"{asset.category}/{asset.object_id}"
    mesh = asset.mesh
    if len(mesh.faces) == 0:
        raise AssetError(f"{name}: the mesh has no faces; {FIX_HINT}")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if not np.isfinite(vertices).all():
        raise AssetError(f"{name}: the mesh has non-finite (NaN/inf) vertex coordinates; "
                         f"{FIX_HINT}")
    diag = float(np.linalg.norm(np.ptp(vertices, axis=0)))
    if diag == 0.0:
        raise AssetError(f"{name}: all {len(vertices)} vertices coincide (a single-point mesh, "
                         f"bbox diagonal 0), so it cannot be normalised; {FIX_HINT}")
    if abs(diag - 1.0) > DIAGONAL_TOLERANCE:
        raise AssetError(f"{name}: bbox diagonal is {diag:.6g} after normalisation, expected 1 "
                         f"(+-{DIAGONAL_TOLERANCE:g}); the model is not in the unit-diagonal "
                         f"object frame; {FIX_HINT}")
    area = float(trimesh.triangles.area(vertices[mesh.faces]).sum())
    if not area >= MIN_SURFACE_AREA:
        raise AssetError(f"{name}: total surface area is {area:.3g} (< {MIN_SURFACE_AREA:g}): "
                         f"every face is degenerate (zero-area, e.g. collinear vertices); "
                         f"{FIX_HINT}")
