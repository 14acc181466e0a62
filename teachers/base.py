"""The teacher interface: a 2D model that maps a batch of images to dense feature maps.

A teacher is identified by its :meth:`Teacher.identity` dict (plain JSON data). The feature store
keys its caches on that dict, so every option that changes the features must appear in it.

Background rule (shared by every teacher, :func:`zero_background`): the alpha mask is sampled
at the feature grid with *nearest* sampling exactly like ``torch.nn.functional.interpolate(
mode="nearest")`` in the official FeatureNeRF script: cell ``(i, j)`` of an ``h x w`` grid reads
the pixel ``(floor(i * H / h), floor(j * W / w))``, i.e. the top-left pixel of its cell. Cells
whose sampled alpha is 0 get all-zero features.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class TeacherError(RuntimeError):
    """A user-facing teacher problem (missing weights, wrong layout, missing inputs...)."""


@dataclass
class TeacherInput:
    """One batch of views of one category.

    Attributes:
        rgb: (B, H, W, 3) uint8, colour composited over the render background.
        alpha: (B, H, W) uint8 coverage, 0 = background.
        category: category name, used by text-conditioned teachers (e.g. "chair").
        part: optional (B, H, W) int16 part label per pixel, -1 = background / unlabelled.
        depth: optional (B, H, W) float32 camera z-depth, 0 where empty.
        K: optional (B, 3, 3) intrinsics in pixels (OpenCV, pixel centres at +0.5).
        c2w: optional (B, 4, 4) OpenCV camera-to-world (world = object frame).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    category: str
    part: np.ndarray | None = None
    depth: np.ndarray | None = None
    K: np.ndarray | None = None
    c2w: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def batch_size(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the input images."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])

    def validate(self) -> None:
        """Raise :class:`TeacherError` on wrong shapes or dtypes."""
        rgb, alpha = np.asarray(self.rgb), np.asarray(self.alpha)
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise TeacherError(f"rgb must be uint8 (B, H, W, 3), got {rgb.dtype} {rgb.shape}")
        b, h, w = rgb.shape[:3]
        if alpha.shape != (b, h, w) or alpha.dtype != np.uint8:
            raise TeacherError(
                f"alpha must be uint8 {(b, h, w)} like rgb, got {alpha.dtype} {alpha.shape}"
            )
        extras = {"part": (b, h, w), "depth": (b, h, w), "K": (b, 3, 3), "c2w": (b, 4, 4)}
        for name, shape in extras.items():
            value = getattr(self, name)
            if value is not None and np.shape(value) != shape:
                raise TeacherError(f"{name} must have shape {shape}, got {np.shape(value)}")

    def select(self, index: slice | np.ndarray) -> TeacherInput:
        """The sub-batch ``index`` (a slice or index array over B)."""

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.asarray(a)[index]

        return TeacherInput(
            rgb=self.rgb[index],
            alpha=self.alpha[index],
            category=self.category,
            part=take(self.part),
            depth=take(self.depth),
            K=take(self.K),
            c2w=take(self.c2w),
        )


def alpha_to_grid(alpha: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(B, H, W) alpha -> (B, h, w) bool foreground at the feature grid (rule: module docstring)."""
    alpha = np.asarray(alpha)
    hh, ww = alpha.shape[-2:]
    gh, gw = grid
    rows = np.minimum(np.floor(np.arange(gh) * (hh / gh)).astype(np.int64), hh - 1)
    cols = np.minimum(np.floor(np.arange(gw) * (ww / gw)).astype(np.int64), ww - 1)
    return alpha[..., rows[:, None], cols[None, :]] > 0


def zero_background(feat: np.ndarray, alpha: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Zero the features of background cells, in place; returns ``feat``.

    Args:
        feat: (B, h, w, C) features with ``(h, w) == grid``.
        alpha: (B, H, W) uint8 alpha of the input images.
        grid: (h, w) feature grid.
    """
    if tuple(feat.shape[1:3]) != tuple(grid):
        raise TeacherError(f"features have grid {feat.shape[1:3]}, expected {tuple(grid)}")
    feat[~alpha_to_grid(alpha, grid)] = 0
    return feat


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (memoised per path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def hub_cache_sha256(repo: str, filenames: tuple[str, ...] = HUB_WEIGHT_FILES) -> str:
    """sha256 of the first of ``filenames`` cached locally for hub ``repo``, or "unverified"
    (nothing cached, or no huggingface_hub)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        for fname in filenames:
            found = try_to_load_from_cache(repo, fname)
            if isinstance(found, str) and os.path.isfile(found):
                return sha256_file(found)
    except Exception:  # any cache/layout problem means the weights cannot be verified
        pass
    return "unverified"


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when available else "cpu"; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """ "auto" -> "fp16" on CUDA, "fp32" elsewhere (bf16 autocast is ~5x slower on this CPU)."""
    if dtype == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if dtype not in ("fp32", "fp16", "bf16"):
        raise TeacherError(f"dtype must be one of auto, fp32, fp16, bf16; got {dtype!r}")
    return dtype


def forward_in_batches(rgb: np.ndarray, batch_size: int, run: Callable[[np.ndarray], Any]
                       ) -> np.ndarray:
    """``run`` over ``rgb`` (B, H, W, 3) in slices of at most ``batch_size`` images; each call
    returns a (b, h, w, C) tensor, concatenated to a (B, h, w, C) numpy array."""
    chunks = [run(rgb[start : start + batch_size]).cpu().numpy()
              for start in range(0, len(rgb), batch_size)]
    return np.concatenate(chunks, axis=0)


class Teacher(ABC):
    """A 2D teacher: ``teacher(batch) -> (B, h, w, C) float32`` feature maps.

    Subclasses set ``name`` and implement :attr:`feature_dim`, :attr:`grid`, :meth:`identity`
    and :meth:`_features`. ``__call__`` validates the input, runs ``_features`` and zeroes the
    background with :func:`zero_background`.
    """

    name: str = "teacher"
    #: implementation version: bump whenever a code change alters the features
    version: str = "1"
    zero_bg: bool = True

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """C, the number of channels."""

    @property
    @abstractmethod
    def grid(self) -> tuple[int, int]:
        """(h, w) of the feature maps."""

    #: where the teacher computes; teachers with a model set it from their ``device`` option
    _device: str = "cpu"

    @property
    def device(self) -> str:
        """Where the teacher computes ("cpu", "cuda", ...)."""
        return self._device

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Plain JSON-able dict that changes whenever the features would change."""

    @abstractmethod
    def _features(self, batch: TeacherInput) -> np.ndarray:
        """(B, h, w, C) float32 features before background zeroing."""

    def _base_identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "grid": list(self.grid),
            "feature_dim": int(self.feature_dim),
            "zero_background": self.zero_bg,
            "background_rule": "alpha nearest (top-left pixel of each cell) == 0 -> 0",
        }

    def __call__(self, batch: TeacherInput) -> np.ndarray:
        batch.validate()
        feat = np.ascontiguousarray(self._features(batch), dtype=np.float32)
        expected = (batch.batch_size, *self.grid, self.feature_dim)
        if feat.shape != expected:
            raise TeacherError(f"{self.name} produced {feat.shape}, expected {expected}")
        if self.zero_bg:
            zero_background(feat, batch.alpha, self.grid)
        return feat

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(grid={self.grid}, C={self.feature_dim}, device={self.device})"
