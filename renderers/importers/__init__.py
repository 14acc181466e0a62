"""Importers of existing multi-view datasets ("bring your own data") into a render store.

Every source is a module with (see :data:`IMPORTERS`):

* ``list_objects(root, category) -> list[tuple[object_id, split]]``: what ``root`` holds;
* ``iter_objects(root, category, split=None, *, objects=None, size=None, **options)
  -> Iterator[ImportedObject]``: read objects one at a time. ``objects`` is a list of
  ``(object_id, split)`` to read, in that order and with those splits (the import stage passes
  exactly the objects still to do, one per call, and ignores any other it gets back); None
  means every object of ``split`` (None: all). ``size``: the square image size wanted (None:
  native); a source may leave resizing to the stage (:func:`resize_object`). ``options``
  come from ``import --option KEY=VALUE``; declare them as keyword-only parameters (the stage
  checks them against the signature, so a misspelt option is an error naming it).
* optional ``scan_layout(root, category, objects, size=None, **options) -> dict``: the store
  layout before reading the images: any of ``n_views``, ``image_size``, ``n_keypoint_slots``,
  ``n_points``, ``n_kp_candidates`` (the stage otherwise reads the first object for them);
* optional ``read_features(root, category, object_id, **options) -> (V, C, h, w) float32`` and
  ``feature_identity(root, category, dim, grid, **options) -> dict``: cached teacher features
  the source ships (``import --features-out``).

An :class:`ImportedObject` is in the project's conventions (docs/contracts.md): OpenCV cameras
with pixel centres at +0.5, world = ShapeNet v2 axes (+Y up, -Z front); per-source conversions
live in :mod:`renderers.conventions`. Keypoints use the store's slot layout: slot ``p`` holds
semantic id ``p`` (``kp_id[p] == p``) or nothing (``kp_id[p] == -1``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from renderers.asset import AssetError

#: format name -> "module:function" of its ``iter_objects`` (list_objects & co. sit beside it)
IMPORTERS: dict[str, str] = {
    "official": "renderers.importers.official:iter_objects",
    "srn": "renderers.importers.srn:iter_objects",
    "dvr": "renderers.importers.dvr:iter_objects",
    "nerf-synthetic": "renderers.importers.nerf_synthetic:iter_objects",
}
SPLITS = ("train", "val", "test")


class ImportFormatError(AssetError):
    """Input data that does not follow its format; the message names the file or object, the
    array and what to do."""


# name -> (dtype, shape pattern, required); pattern letters: V views, H, W image, P keypoint
# slots, S points, M keypoint candidates; ints are literal sizes
_SPEC: dict[str, tuple[str, tuple[str | int, ...], bool]] = {
    "rgb": ("uint8", ("V", "H", "W", 3), True),
    "alpha": ("uint8", ("V", "H", "W"), True),
    "K": ("float32", ("V", 3, 3), True),
    "c2w": ("float32", ("V", 4, 4), True),
    "depth": ("float32", ("V", "H", "W"), False),
    "part": ("int16", ("V", "H", "W"), False),
    "kp3d": ("float32", ("P", 3), False),
    "kp_id": ("int32", ("P",), False),
    "kp2d": ("float32", ("V", "P", 2), False),
    "kp_visible": ("bool", ("V", "P"), False),
    "points": ("float32", ("S", 3), False),
    "point_part": ("int16", ("S",), False),
    "kp_candidates": ("float32", ("M", 3), False),
}
_TOGETHER = (("kp3d", "kp_id"), ("kp2d", "kp_visible"), ("points", "point_part"))


@dataclass
class ImportedObject:
    """One object of an imported dataset, in the project's conventions.

    Attributes:
        object_id, split: id (unique in the store) and ``train`` | ``val`` | ``test``.
        rgb: (V, H, W, 3) uint8 colour composited over black. alpha: (V, H, W) uint8 coverage.
        K: (V, 3, 3) float32 OpenCV intrinsics in pixels (pixel centres at +0.5).
        c2w: (V, 4, 4) float32 OpenCV camera-to-world in the project frame.
        depth: (V, H, W) float32 z-depth (0 = empty) or None.
        part: (V, H, W) int16 part labels, -1 = background / unlabelled, or None.
        kp3d, kp_id: (P, 3) float32, (P,) int32 slot layout (``kp_id[p]`` is p or -1) or None.
        kp2d, kp_visible: (V, P, 2) float32 continuous pixel coords, (V, P) bool, or None.
        points, point_part: (S, 3) float32 surface points, (S,) int16 labels (-1 unlabelled).
        kp_candidates: (M, 3) float32 3D keypoint candidate points (FeatureNeRF's
            ``kp_3d_anno`` ``pts``) or None.
        meta: free-form (source files, conventions, notes; JSON-serialisable). Keys the stage
            reads: ``part_names``, ``keypoint_names``, ``near``, ``far``.
    """

    object_id: str
    split: str
    rgb: np.ndarray
    alpha: np.ndarray
    K: np.ndarray
    c2w: np.ndarray
    depth: np.ndarray | None = None
    part: np.ndarray | None = None
    kp3d: np.ndarray | None = None
    kp_id: np.ndarray | None = None
    kp2d: np.ndarray | None = None
    kp_visible: np.ndarray | None = None
    points: np.ndarray | None = None
    point_part: np.ndarray | None = None
    kp_candidates: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_views(self) -> int:
        return int(np.shape(self.rgb)[0])

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(np.shape(self.rgb)[1]), int(np.shape(self.rgb)[2])

    @property
    def n_keypoint_slots(self) -> int:
        for name in ("kp_id", "kp3d"):
            value = getattr(self, name)
            if value is not None:
                return int(np.shape(value)[0])
        return 0 if self.kp2d is None else int(np.shape(self.kp2d)[1])

    def annotations(self) -> dict[str, bool]:
        """Which annotations this object carries (the store's ``annotations_present`` keys)."""
        return {
            "depth": self.depth is not None,
            "parts": self.part is not None and bool((np.asarray(self.part) >= 0).any()),
            "keypoints": self.kp_id is not None and bool((np.asarray(self.kp_id) >= 0).any()),
            "points": self.points is not None and len(self.points) > 0,
        }

    def validate(self) -> ImportedObject:
        """Check every array's dtype and shape (and the basic invariants); returns self.

        Raises:
            ImportFormatError naming the object, the array, what was found and what is expected.
        """
        who = f"imported object {self.object_id!r}"
        if not isinstance(self.object_id, str) or not self.object_id:
            raise ImportFormatError(f"{who}: object_id must be a non-empty string")
        if self.split not in SPLITS:
            raise ImportFormatError(f"{who}: split {self.split!r} is not one of {SPLITS}")
        sizes: dict[str, int] = {}
        for f in fields(self):
            if f.name not in _SPEC:
                continue
            dtype, pattern, required = _SPEC[f.name]
            value = getattr(self, f.name)
            if value is None:
                if required:
                    raise ImportFormatError(f"{who}: array {f.name} is missing")
                continue
            expected = "(" + ", ".join(map(str, pattern)) + f") {dtype}"
            if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype) \
                    or value.ndim != len(pattern):
                got = (f"{value.shape} {value.dtype}" if isinstance(value, np.ndarray)
                       else type(value).__name__)
                raise ImportFormatError(f"{who}: array {f.name} is {got}; expected {expected}")
            for axis, (want, n) in enumerate(zip(pattern, value.shape, strict=True)):
                if isinstance(want, int):
                    ok = n == want
                else:
                    ok = sizes.setdefault(want, n) == n
                if not ok:
                    raise ImportFormatError(
                        f"{who}: array {f.name} has shape {value.shape}; expected {expected} "
                        f"with {_describe(sizes)} (axis {axis} is {n})")
        for group in _TOGETHER:
            given = [getattr(self, n) is not None for n in group]
            if any(given) and not all(given):
                raise ImportFormatError(f"{who}: arrays {' and '.join(group)} go together; "
                                        f"{group[given.index(False)]} is missing")
        if self.kp2d is not None and self.kp_id is None:
            raise ImportFormatError(f"{who}: kp2d needs kp_id (which slots hold a keypoint)")
        if sizes.get("V", 0) < 1 or min(sizes.get("H", 1), sizes.get("W", 1)) < 1:
            raise ImportFormatError(f"{who}: no views (rgb is {self.rgb.shape})")
        for name in ("K", "c2w", "kp3d", "kp2d", "points", "depth", "kp_candidates"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value).all():
                raise ImportFormatError(f"{who}: array {name} has non-finite values")
        if not np.allclose(self.c2w[:, 3], [0, 0, 0, 1], atol=1e-6):
            raise ImportFormatError(f"{who}: c2w's last rows are not [0, 0, 0, 1]")
        rot = self.c2w[:, :3, :3].astype(np.float64)
        err = np.abs(rot.transpose(0, 2, 1) @ rot - np.eye(3)).max()
        if err > 1e-3 or (np.linalg.det(rot) < 0).any():
            raise ImportFormatError(f"{who}: c2w rotations are not proper rotations (|R^T R - I| "
                                    f"= {err:.2g}); the cameras must be rigid, right-handed")
        if not np.allclose(self.K[:, 2], [0, 0, 1], atol=1e-6) or (self.K[:, 0, 0] <= 0).any():
            raise ImportFormatError(f"{who}: K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
                                    "with fx > 0")
        if self.kp_id is not None:
            slots = np.arange(len(self.kp_id))
            if not ((self.kp_id == slots) | (self.kp_id == -1)).all():
                raise ImportFormatError(f"{who}: kp_id must be the slot layout (kp_id[p] is p or "
                                        f"-1), got {self.kp_id.tolist()}")
        for name in ("part", "point_part"):
            value = getattr(self, name)
            if value is not None and value.size and value.min() < -1:
                raise ImportFormatError(f"{who}: {name} has labels < -1 (use -1 for "
                                        "background / unlabelled)")
        if self.depth is not None and (self.depth < 0).any():
            raise ImportFormatError(f"{who}: depth has negative values (0 means empty)")
        return self


def _describe(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items()) or "no sizes yet"


@dataclass(frozen=True)
class Source:
    """A loaded importer: its functions (optional ones None)."""

    name: str
    module: ModuleType
    iter_objects: Callable[..., Iterator[ImportedObject]]
    list_objects: Callable[..., list[tuple[str, str]]]
    scan_layout: Callable[..., dict[str, int]] | None
    read_features: Callable[..., np.ndarray] | None
    feature_identity: Callable[..., dict] | None


def load_source(name: str) -> Source:
    """The importer registered as ``name`` (imported now, so a missing module is one error)."""
    if name not in IMPORTERS:
        raise ImportFormatError(f"--format {name}: unknown format; choose one of "
                                f"{', '.join(IMPORTERS)}")
    module_name, func = IMPORTERS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ImportFormatError(
                f"--format {name}: its importer {module_name} is not in this checkout "
                f"(renderers/importers/{module_name.rsplit('.', 1)[-1]}.py is missing); "
                "update the checkout or choose another --format") from None
        raise ImportFormatError(f"--format {name}: importer {module_name} needs a package that "
                                f"is not installed ({exc.name}); pip install it") from None
    missing = [f for f in (func, "list_objects") if not callable(getattr(module, f, None))]
    if missing:
        raise ImportFormatError(f"--format {name}: {module_name} lacks {', '.join(missing)} "
                                "(see renderers/importers/__init__.py for the protocol)")

    def optional(attr: str) -> Any:
        value = getattr(module, attr, None)
        return value if callable(value) else None

    return Source(name, module, getattr(module, func), module.list_objects,
                  optional("scan_layout"), optional("read_features"),
                  optional("feature_identity"))


# ----------------------------------------------------------------------------- image helpers


def read_png_rgba(path: str | Path, what: str = "") -> np.ndarray:
    """(H, W, 4) uint8 of an 8-bit PNG with an alpha channel (palette / LA images are
    converted); a missing, unreadable or alpha-less file is an ImportFormatError naming it."""
    from PIL import Image, UnidentifiedImageError

    where = f"{path}{f' ({what})' if what else ''}"
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            has_alpha = mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            if not has_alpha:
                raise ImportFormatError(
                    f"{where}: a {mode} image without an alpha channel; this format stores "
                    "RGBA PNGs whose alpha is the object mask - re-export it with alpha")
            if mode in ("I;16", "I;16B", "I", "F"):
                raise ImportFormatError(f"{where}: {mode} pixels; expected an 8-bit RGBA PNG")
            arr = np.asarray(img.convert("RGBA"))
    except FileNotFoundError:
        raise ImportFormatError(f"{where}: image file is missing; re-extract it from the "
                                "dataset archive (or leave the object out with --on-error "
                                "skip)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImportFormatError(f"{where}: not a readable PNG ({type(exc).__name__}: {exc}); "
                                "re-extract it from the dataset archive") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def composite_over_black(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 4) uint8 RGBA -> ((..., 3) uint8 colour over black, (...) uint8 alpha).

    The same float32 arithmetic and truncation as FeatureNeRFDataset ``rgba2rgb`` with a black
    background (``uint8(r * (a / 255) + (1 - a) * 0)``), so imported pixels are the ones the
    released code trains on."""
    a = np.asarray(rgba[..., 3], dtype=np.float32) / np.float32(255.0)
    rgb = rgba[..., :3] * a[..., None] + (np.float32(1.0) - a[..., None]) * np.float32(0.0)
    return np.asarray(rgb, dtype=np.uint8), np.ascontiguousarray(rgba[..., 3])


def area_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """(V, H, W[, C]) -> (V, H/f, W/f[, C]) mean over f x f blocks (area resampling, as torch's
    ``interpolate(mode="area")`` for integer factors), rounded back to the input dtype."""
    if factor == 1:
        return image
    v, h, w = image.shape[:3]
    blocks = image.reshape(v, h // factor, factor, w // factor, factor, *image.shape[3:])
    mean = blocks.astype(np.float64).mean(axis=(2, 4))
    if np.issubdtype(image.dtype, np.integer):
        mean = np.round(mean)
    return mean.astype(image.dtype)


def nearest_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """(V, H, W) -> (V, H/f, W/f): the value at each new pixel centre (labels, depth)."""
    if factor == 1:
        return image
    off = factor // 2
    return np.ascontiguousarray(image[:, off::factor, off::factor])


def downsample_factor(who: str, hw: tuple[int, int], size: int) -> int:
    """The integer factor from ``hw`` images to ``size`` (square, downsampling only)."""
    h, w = hw
    if h != w:
        raise ImportFormatError(f"{who}: images are {w}x{h}; a render store holds square views - "
                                "crop or pad them to a square first")
    if h == size:
        return 1
    if h < size or h % size:
        raise ImportFormatError(f"{who}: images are {w}x{h}; --size {size} needs a whole "
                                f"downsampling factor (e.g. --size {h // max(1, h // size)})")
    return h // size


def resize_object(obj: ImportedObject, size: int) -> ImportedObject:
    """``obj`` at ``size`` x ``size``: colour and alpha area-downsampled by a whole factor,
    depth and part labels taken at the new pixel centres, ``K`` and ``kp2d`` scaled."""
    native = obj.image_hw
    factor = downsample_factor(f"imported object {obj.object_id!r}", native, size)
    if factor == 1:
        return obj
    s = np.diag([1.0 / factor, 1.0 / factor, 1.0]).astype(np.float32)
    obj.rgb = area_downsample(obj.rgb, factor)
    obj.alpha = area_downsample(obj.alpha, factor)
    obj.K = (s @ obj.K).astype(np.float32)
    if obj.depth is not None:
        obj.depth = nearest_downsample(obj.depth, factor)
    if obj.part is not None:
        obj.part = nearest_downsample(obj.part, factor)
    if obj.kp2d is not None:
        obj.kp2d = (obj.kp2d / np.float32(factor)).astype(np.float32)
    obj.meta = {**obj.meta, "resized_from": list(native)}
    return obj


def slot_keypoints(ids: np.ndarray, xyz: np.ndarray, n_slots: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """Keypoints given as (K,) semantic ids + (K, D) values -> slot layout.

    Returns:
        values (P, D) float32 (slot p holds id p, zeros elsewhere), kp_id (P,) int32 (p or -1)
        and the number of duplicate ids dropped (the first one is kept).
    """
    ids = np.asarray(ids).astype(np.int64).reshape(-1)
    p = int(n_slots if n_slots is not None else (ids.max() + 1 if ids.size else 0))
    values = np.zeros((p, np.shape(xyz)[-1]), np.float32)
    kp_id = np.full(p, -1, np.int32)
    dropped = 0
    for k, i in enumerate(ids):
        if kp_id[i] >= 0:
            dropped += 1
            continue
        kp_id[i], values[i] = i, xyz[k]
    return values, kp_id, dropped


__all__ = [
    "IMPORTERS", "ImportFormatError", "ImportedObject", "Source", "area_downsample",
    "composite_over_black", "downsample_factor", "load_source", "nearest_downsample",
    "read_png_rgba", "resize_object", "slot_keypoints",
]
