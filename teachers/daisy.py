"""DAISY teacher: hand-crafted dense descriptors that need no download (CI default teacher).

Per image: RGB uint8 -> [0, 1] (resized to ``input_size`` with antialiased bilinear if needed)
-> ``skimage.feature.daisy`` on the grayscale image (or on each of R, G, B with
``channels="rgb"``), evaluated at the centre of every cell of an ``h x w`` grid (cell side
``step = input_size / h`` px; the image is reflect-padded so that descriptor centres sit at
pixel ``step * i + step // 2``) -> per-histogram L2 ("daisy" normalisation) -> square-root
(power 0.5) -> L2 over the whole descriptor. Optionally a colour descriptor (mean CIE-Lab per
cell, scaled to about [-1, 1] and multiplied by ``color_weight``) is appended. Background cells
are zeroed by the shared rule (:func:`teachers.base.zero_background`).

``C = n_channels * (rings * histograms + 1) * orientations + (3 if color else 0)``; the
defaults give ``(2 * 6 + 1) * 8 + 3 = 107``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from teachers.base import Teacher, TeacherError, TeacherInput

COLOR_SCALE = np.array([1 / 100.0, 1 / 110.0, 1 / 110.0], dtype=np.float32)  # Lab -> ~[-1, 1]


def cell_means(img: np.ndarray, step: int) -> np.ndarray:
    """(S, S, K) -> (S/step, S/step, K) mean over each step x step cell."""
    s0, s1, k = img.shape
    return img.reshape(s0 // step, step, s1 // step, step, k).mean(axis=(1, 3))


def daisy_grid(
    gray: np.ndarray, step: int, radius: int, rings: int, histograms: int, orientations: int
) -> np.ndarray:
    """(S, S) float image -> (S/step, S/step, D) DAISY at cell centres, per-histogram L2."""
    from skimage.feature import daisy

    off = step // 2
    pad = ((radius - off, radius + off), (radius - off, radius + off))
    padded = np.pad(gray, pad, mode="reflect")
    desc = daisy(
        padded,
        step=step,
        radius=radius,
        rings=rings,
        histograms=histograms,
        orientations=orientations,
        normalization="daisy",
    )
    n0, n1 = gray.shape[0] // step, gray.shape[1] // step
    return desc[:n0, :n1]


class DaisyTeacher(Teacher):
    """Dense DAISY (+ colour) descriptors on a regular grid.

    Args:
        input_size: square side the images are resized to (default 128 = render size).
        grid: (h, w) cells; ``input_size`` must be a multiple of both (default 32x32).
        radius, rings, histograms, orientations: DAISY geometry (pixels at ``input_size``).
        channels: "gray" or "rgb" (one DAISY per colour channel, concatenated).
        color: "lab", "rgb" or "none": the per-cell mean colour appended.
        color_weight: scale of the colour part relative to the unit-norm DAISY part.
        zero_bg: zero background cells.
    """

    name = "daisy"
    version = "1"

    def __init__(
        self,
        input_size: int = 128,
        grid: tuple[int, int] | list[int] = (32, 32),
        radius: int = 12,
        rings: int = 2,
        histograms: int = 6,
        orientations: int = 8,
        channels: str = "gray",
        color: str = "lab",
        color_weight: float = 0.5,
        zero_bg: bool = True,
    ) -> None:
        self.input_size = int(input_size)
        self._grid = (int(grid[0]), int(grid[1]))
        if self._grid[0] != self._grid[1] or self.input_size % self._grid[0]:
            raise TeacherError(
                f"grid {tuple(grid)} must be square and divide input_size {input_size}"
            )
        self.step = self.input_size // self._grid[0]
        if radius < self.step // 2:
            raise TeacherError(f"radius {radius} must be >= half the cell size {self.step // 2}")
        if channels not in ("gray", "rgb"):
            raise TeacherError(f"channels must be 'gray' or 'rgb', got {channels!r}")
        if color not in ("lab", "rgb", "none"):
            raise TeacherError(f"color must be 'lab', 'rgb' or 'none', got {color!r}")
        self.radius, self.rings = int(radius), int(rings)
        self.histograms, self.orientations = int(histograms), int(orientations)
        self.channels, self.color, self.color_weight = channels, color, float(color_weight)
        self.zero_bg = zero_bg
        per = (self.rings * self.histograms + 1) * self.orientations
        self._dim = per * (3 if channels == "rgb" else 1) + (0 if color == "none" else 3)

    @property
    def feature_dim(self) -> int:
        return self._dim

    @property
    def grid(self) -> tuple[int, int]:
        return self._grid

    def identity(self) -> dict[str, Any]:
        ident = self._base_identity()
        ident.update(
            input_size=self.input_size,
            resize="bilinear-antialias",
            stride=self.step,
            radius=self.radius,
            rings=self.rings,
            histograms=self.histograms,
            orientations=self.orientations,
            channels=self.channels,
            color=self.color,
            color_weight=self.color_weight,
            normalization="daisy per-histogram L2, sqrt, L2",
            weights="none",
            weights_sha256="none",
        )
        return ident

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (S, S, 3) float32 in [0, 1]."""
        img = rgb.astype(np.float32) / 255.0
        if img.shape[:2] == (self.input_size, self.input_size):
            return img
        from skimage.transform import resize

        size = (self.input_size, self.input_size, 3)
        return resize(img, size, order=1, anti_aliasing=True).astype(np.float32)

    def describe(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, C) float32 descriptor (no background zeroing)."""
        img = self._resize(rgb)
        if self.channels == "gray":
            planes = [img @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)]
        else:
            planes = [img[..., c] for c in range(3)]
        geo = (self.step, self.radius, self.rings, self.histograms, self.orientations)
        desc = np.concatenate([daisy_grid(p, *geo) for p in planes], axis=-1)
        desc = np.sqrt(np.maximum(desc, 0.0))
        desc /= np.linalg.norm(desc, axis=-1, keepdims=True) + 1e-8
        if self.color != "none":
            if self.color == "lab":
                from skimage.color import rgb2lab

                col = cell_means(rgb2lab(img).astype(np.float32), self.step) * COLOR_SCALE
            else:
                col = cell_means(img, self.step)
            desc = np.concatenate([desc, self.color_weight * col], axis=-1)
        return desc.astype(np.float32)

    def _features(self, batch: TeacherInput) -> np.ndarray:
        return np.stack([self.describe(im) for im in batch.rgb])
