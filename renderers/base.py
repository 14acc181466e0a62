"""The renderer interface shared by every backend (pyrender, raycast, blender)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from renderers.asset import ShapeAsset


class RendererUnavailable(RuntimeError):
    """The backend cannot run on this machine; the message says how to enable it."""


@dataclass
class RenderedViews:
    """Per-view image passes of one object.

    Attributes:
        rgb: (V, H, W, 3) uint8, shaded colour composited over ``background`` (black by default).
        alpha: (V, H, W) uint8 coverage (anti-aliased where the backend supports it).
        depth: (V, H, W) float32 z-depth in the camera frame, 0 where no surface is hit (exact).
        part: (V, H, W) int16 part label of the surface hit at the pixel centre, -1 for
            background or unlabelled faces (exact, never blended).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray
    part: np.ndarray


class Renderer(Protocol):
    """A backend turns one asset and a set of OpenCV cameras into image passes."""

    name: str

    def version(self) -> str:
        """Backend name and library version, recorded in the render store."""
        ...

    def render(self, asset: ShapeAsset, K: np.ndarray, c2w: np.ndarray, size: int) -> RenderedViews:
        """Render ``asset`` with intrinsics K (3, 3) from c2w (V, 4, 4) at ``size`` x ``size``."""
        ...
