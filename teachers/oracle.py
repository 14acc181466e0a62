"""Oracle teacher: ground truth per cell, a diagnostic upper bound for distillation.

Channels: ``[part distribution (n_parts) * part_weight | object-frame xyz (3) * coord_weight]``.

* Surface coordinates: every pixel with depth > 0 is back-projected with its view's K and c2w
  (OpenCV, pixel centre ``(u + 0.5, v + 0.5)``, z-depth): ``x_cam = z K^-1 [u+0.5, v+0.5, 1]``,
  ``x_obj = R x_cam + t``.
* Part labels (``part >= 0``) become one-hot vectors.
* Pooling to the ``h x w`` grid (image size must be a multiple of the grid):
  - ``"area"`` (default): mean over the cell's valid pixels (coordinates: depth > 0; parts:
    label >= 0), so a cell's part channels sum to 1 whenever it holds a labelled pixel and its
    coordinate is the mean surface point of the cell;
  - ``"nearest"``: the single pixel ``floor((i + 0.5) * H / h)`` nearest the cell centre.
  Cells without valid pixels are 0; then the shared alpha rule zeroes background cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from teachers.base import Teacher, TeacherError, TeacherInput


def backproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """(H, W) z-depth, (3, 3) K, (4, 4) OpenCV c2w -> (H, W, 3) object-frame points (float64)."""
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    rays = pix @ np.linalg.inv(np.asarray(K, np.float64)).T  # z component is 1
    cam = rays * depth[..., None].astype(np.float64)
    c2w = np.asarray(c2w, np.float64)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def pool_cells(values: np.ndarray, valid: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Mean of (H, W, K) ``values`` over each cell's ``valid`` (H, W) pixels -> (h, w, K)."""
    hh, ww, k = values.shape
    gh, gw = grid
    sh, sw = hh // gh, ww // gw
    vals = np.where(valid[..., None], values, 0.0).reshape(gh, sh, gw, sw, k).sum(axis=(1, 3))
    count = valid.reshape(gh, sh, gw, sw).sum(axis=(1, 3))[..., None]
    return np.divide(vals, count, out=np.zeros_like(vals), where=count > 0)


def sample_centres(values: np.ndarray, valid: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The pixel nearest each cell centre of (H, W, K) ``values`` (0 where invalid)."""
    hh, ww = valid.shape
    rows = np.floor((np.arange(grid[0]) + 0.5) * hh / grid[0]).astype(np.int64)
    cols = np.floor((np.arange(grid[1]) + 0.5) * ww / grid[1]).astype(np.int64)
    out = values[rows[:, None], cols[None, :]]
    return np.where(valid[rows[:, None], cols[None, :]][..., None], out, 0.0)


class OracleTeacher(Teacher):
    """Ground-truth part one-hot + surface coordinates at the feature grid.

    Args:
        n_parts: number of part labels (labels must lie in [0, n_parts)).
        grid: (h, w) output grid.
        pooling: "area" or "nearest" (module docstring).
        part_weight, coord_weight: scales of the two channel groups.
        use_parts, use_coords: which groups to emit (at least one).
        zero_bg: zero background cells with the shared alpha rule.
    """

    name = "oracle"
    version = "1"

    def __init__(
        self,
        n_parts: int = 8,
        grid: tuple[int, int] | list[int] = (32, 32),
        pooling: str = "area",
        part_weight: float = 1.0,
        coord_weight: float = 1.0,
        use_parts: bool = True,
        use_coords: bool = True,
        zero_bg: bool = True,
    ) -> None:
        if pooling not in ("area", "nearest"):
            raise TeacherError(f"pooling must be 'area' or 'nearest', got {pooling!r}")
        if not (use_parts or use_coords):
            raise TeacherError("the oracle needs use_parts or use_coords")
        if use_parts and n_parts < 1:
            raise TeacherError(f"n_parts must be >= 1, got {n_parts}")
        self.n_parts = int(n_parts)
        self._grid = (int(grid[0]), int(grid[1]))
        self.pooling = pooling
        self.part_weight, self.coord_weight = float(part_weight), float(coord_weight)
        self.use_parts, self.use_coords = bool(use_parts), bool(use_coords)
        self.zero_bg = zero_bg

    @property
    def feature_dim(self) -> int:
        return (self.n_parts if self.use_parts else 0) + (3 if self.use_coords else 0)

    @property
    def grid(self) -> tuple[int, int]:
        return self._grid

    def identity(self) -> dict[str, Any]:
        ident = self._base_identity()
        ident.update(
            n_parts=self.n_parts if self.use_parts else 0,
            use_coords=self.use_coords,
            pooling=self.pooling,
            part_weight=self.part_weight,
            coord_weight=self.coord_weight,
            coords="object frame, OpenCV pixel centres +0.5, z-depth",
            weights="none",
            weights_sha256="none",
        )
        return ident

    def _check(self, batch: TeacherInput) -> None:
        need = (["part"] if self.use_parts else []) + (
            ["depth", "K", "c2w"] if self.use_coords else []
        )
        missing = [n for n in need if getattr(batch, n) is None]
        if missing:
            raise TeacherError(f"the oracle teacher needs ground truth {missing} in TeacherInput")
        hh, ww = batch.image_size
        if self.pooling == "area" and (hh % self._grid[0] or ww % self._grid[1]):
            raise TeacherError(f"area pooling needs the image {hh}x{ww} to divide by {self._grid}")
        if self.use_parts and np.max(batch.part, initial=-1) >= self.n_parts:
            raise TeacherError(
                f"part label {int(np.max(batch.part))} >= n_parts {self.n_parts}: raise n_parts"
            )

    def _one(self, batch: TeacherInput, b: int) -> np.ndarray:
        pool = pool_cells if self.pooling == "area" else sample_centres
        groups = []
        if self.use_parts:
            part = np.asarray(batch.part[b]).astype(np.int64)
            onehot = np.eye(self.n_parts, dtype=np.float64)[np.maximum(part, 0)]
            groups.append(self.part_weight * pool(onehot, part >= 0, self._grid))
        if self.use_coords:
            depth = np.asarray(batch.depth[b], np.float64)
            pts = backproject(depth, batch.K[b], batch.c2w[b])
            groups.append(self.coord_weight * pool(pts, depth > 0, self._grid))
        return np.concatenate(groups, axis=-1)

    def _features(self, batch: TeacherInput) -> np.ndarray:
        self._check(batch)
        return np.stack([self._one(batch, b) for b in range(batch.batch_size)]).astype(np.float32)
