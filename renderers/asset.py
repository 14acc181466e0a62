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
