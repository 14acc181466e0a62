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

A source read one object folder at a time gets both functions from
:func:`importer_functions` (its ``load_object`` ends in :func:`finish_object`), as the srn,
dvr and nerf-synthetic importers do.

An :class:`ImportedObject` is in the project's conventions (docs/contracts.md): OpenCV cameras
with pixel centres at +0.5, world = ShapeNet v2 axes (+Y up, -Z front); per-source conversions
live in :mod:`renderers.conventions`. Keypoints use the store's slot layout: slot ``p`` holds
semantic id ``p`` (``kp_id[p] == p``) or nothing (``kp_id[p] == -1``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from renderers.asset import AssetError
from renderers.conventions import world_frame

#: format name -> "module:function" of its ``iter_objects`` (list_objects & co. sit beside it)
IMPORTERS: dict[str, str] = {
    "official": "renderers.importers.official:iter_objects",
    "srn": "renderers.importers.srn:iter_objects",
    "dvr": "renderers.importers.dvr:iter_objects",
    "nerf-synthetic": "renderers.importers.nerf_synthetic:iter_objects",
}
SPLITS = ("train", "val", "test")
PROJECT_DISTANCE = 1.3  # the project rig's camera distance (world_scale="rig")
PROJECT_NEAR, PROJECT_FAR = 0.8, 1.8
CV_CONVENTION = "opencv c2w, pixel centres +0.5"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
WorldScale = float | str


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
    from PIL import UnidentifiedImageError

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


# ------------------------------------------------- shared helpers of the srn / dvr / nerf sources


def select(available: Callable[[], list[tuple[str, str]]], split: str | None,
           object_ids: Sequence[str] | None, objects: Sequence[tuple[str, str]] | None,
           where: str) -> list[tuple[str, str]]:
    """What to read: ``objects`` as given (a missing one fails when it is loaded, naming it),
    else ``available()`` filtered by split and ``object_ids`` (unknown ids raise
    ImportFormatError naming them)."""
    if split not in (None, "all") and split not in SPLITS:
        raise ImportFormatError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if objects is not None:  # the stage's protocol: one object per call, no listing
        return [(str(o), str(s)) for o, s in objects]
    out = [(o, s) for o, s in available() if split in (None, "all") or s == split]
    if object_ids is not None:
        wanted = [str(i) for i in object_ids]
        missing = sorted(set(wanted) - {o for o, _ in out})
        if missing:
            raise ImportFormatError(f"{where}: no object(s) {', '.join(missing)}"
                                    + (f" in split {split}" if split else ""))
        keep = set(wanted)
        out = [(o, s) for o, s in out if o in keep]
    return out


def view_subset(n: int, views: int | None, where: str) -> np.ndarray:
    """Indices of ``views`` views evenly spaced over ``n`` (all when None or equal)."""
    if views is None or int(views) == n:
        return np.arange(n)
    views = int(views)
    if not 1 <= views <= n:
        raise ImportFormatError(f"{where}: {n} views, cannot take views={views}")
    return np.unique(np.round(np.linspace(0, n - 1, views)).astype(np.int64))


def layout_from(counts: dict[int, str], hw: tuple[int, int] | None, size: int | None,
                hint: str) -> dict[str, int]:
    """scan_layout's result from {view count: an object having it} and the first image size
    (``image_size`` only for square images or a given ``size``; no keypoints, points or
    candidates in these formats)."""
    if len(counts) > 1:
        desc = ", ".join(f"{n} ({o})" for n, o in sorted(counts.items()))
        raise ImportFormatError(f"the objects have different view counts: {desc}; a store "
                                f"holds one count: pass {hint} (evenly spaced views)")
    out = {"n_keypoint_slots": 0, "n_points": 0, "n_kp_candidates": 0}  # none in these formats
    if counts:
        out["n_views"] = next(iter(counts))
    if size is not None:
        out["image_size"] = int(size)
    elif hw is not None and hw[0] == hw[1]:
        out["image_size"] = int(hw[0])
    return out


def _decode(path: str | Path, what: str, convert: Callable[[Image.Image], Any]) -> Any:
    """``convert(image)`` of an image file; a missing or undecodable file is an
    ImportFormatError naming it (``what``: "image", "mask")."""
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"missing {what} {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return convert(im)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImportFormatError(f"cannot decode {what} {path}: {exc}") from None


def _rgba_of(im: Image.Image) -> tuple[np.ndarray, bool]:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(arr / (257.0 if arr.max() > 255 else 1.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
    return rgba, "A" in im.getbands() or "transparency" in im.info


def read_image(path: str | Path) -> tuple[np.ndarray, bool]:
    """(H, W, 4) uint8 RGBA of an image file and whether it has a non-constant alpha channel."""
    rgba, has_alpha = _decode(path, "image", _rgba_of)
    a = rgba[..., 3]
    return rgba, bool(has_alpha and a.min() != a.max())


def read_mask(path: str | Path) -> np.ndarray:
    """(H, W) uint8 mask image: its first channel (the alpha of an RGBA image whose colour is
    all black); 0/1 masks are scaled to 0/255."""
    arr = _decode(path, "mask", lambda im: np.asarray(
        im.convert("RGBA") if im.mode not in ("L", "I;16", "I") else im))
    if arr.ndim == 3:
        arr = arr[..., 3] if arr[..., :3].max() == 0 else arr[..., 0]
    arr = np.asarray(arr, dtype=np.float64)
    if arr.max() > 255:
        arr = arr / 257.0
    elif arr.max() == 1:
        arr = arr * 255.0
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def over_black(rgb: np.ndarray, alpha: np.ndarray,
               background: Sequence[float] | None) -> np.ndarray:
    """(H, W, 3) uint8 colour premultiplied over black.

    ``background`` None: ``rgb`` is straight (unassociated) colour, result ``rgb * a``.
    Otherwise ``rgb`` was composited over ``background`` (3,) and the result is
    ``rgb - (1 - a) * background`` (exact for a correct alpha; binary alphas zero the background).
    """
    if background is None:  # FeatureNeRF's rgba2rgb arithmetic (truncation), as the stage's
        return composite_over_black(np.concatenate([rgb, alpha[..., None]], axis=-1))[0]
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) - (1.0 - a) * np.asarray(background, np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def stack_views(rgbs: list[np.ndarray], alphas: list[np.ndarray],
                paths: Sequence[Path | str]) -> tuple[np.ndarray, np.ndarray]:
    """(V,H,W,3), (V,H,W) stacks; views of another size raise ImportFormatError naming the file."""
    shape = rgbs[0].shape
    for r, p in zip(rgbs, paths, strict=True):
        if r.shape != shape:
            raise ImportFormatError(f"image {p} is {r.shape[1]}x{r.shape[0]}, the object's "
                                    f"first view {paths[0]} is {shape[1]}x{shape[0]}; all views "
                                    "must share a size")
    return np.stack(rgbs), np.stack(alphas)


def resize_views(rgb: np.ndarray, alpha: np.ndarray, K: np.ndarray, size: int | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict | None]:
    """Resize (V,H,W,3) premultiplied rgb and (V,H,W) alpha to ``size x size``; K (V,3,3) rows
    0/1 scale by size/W and size/H (exact with pixel edges at integers). Box filter down,
    bilinear up. Returns (rgb, alpha, K, resize meta or None)."""
    h, w = rgb.shape[1:3]
    if size is None or (h, w) == (size, size):
        return rgb, alpha, K.astype(np.float64), None
    if size <= 0:
        raise ImportFormatError(f"size must be positive, not {size}")
    method = Image.Resampling.BOX if size <= min(h, w) else Image.Resampling.BILINEAR
    out_rgb = np.stack([np.asarray(Image.fromarray(v).resize((size, size), method)) for v in rgb])
    out_a = np.stack([np.asarray(Image.fromarray(v).resize((size, size), method)) for v in alpha])
    sx, sy = size / w, size / h
    K = np.asarray(K, np.float64) * np.array([[sx], [sy], [1.0]])
    info = {"from": [h, w], "to": [size, size], "sx": sx, "sy": sy,
            "filter": "box" if method == Image.Resampling.BOX else "bilinear",
            "aspect_changed": bool(abs(sx - sy) > 1e-9)}
    return out_rgb, out_a, K, info


def resolve_scale(world_scale: WorldScale, c2w_src: np.ndarray,
                  centre: np.ndarray | None = None) -> float:
    """A numeric world scale; ``"rig"`` = 1.3 / mean camera distance to ``centre``."""
    if isinstance(world_scale, str) and world_scale != "rig":
        try:
            world_scale = float(world_scale)
        except ValueError:
            raise ImportFormatError(f"world_scale must be a number or 'rig', not "
                                    f"{world_scale!r}") from None
    if world_scale == "rig":
        c = np.zeros(3) if centre is None else centre
        d = float(np.linalg.norm(c2w_src[:, :3, 3] - c, axis=-1).mean())
        if not d > 0:
            raise ImportFormatError("world_scale='rig': every camera sits at the object centre")
        return PROJECT_DISTANCE / d
    s = float(world_scale)
    if not (np.isfinite(s) and s > 0):
        raise ImportFormatError(f"world_scale must be positive, not {world_scale!r}")
    return s


def frame_rotation(frame: str) -> np.ndarray:
    """(3, 3) rotation of a named world frame (``renderers.conventions.world_frame``)."""
    try:
        return np.asarray(world_frame(str(frame)), np.float64)[:3, :3]
    except ValueError as exc:
        raise ImportFormatError(str(exc)) from None


def to_object_frame(c2w_src: np.ndarray, rotation: np.ndarray, scale: float,
                    centre: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map (V,4,4) OpenCV c2w from a source world to the object frame
    ``p_obj = scale * R @ (p_src - centre)``; returns (rigid c2w (V,4,4), 4x4 object_from_source).
    The camera frame (and so K) is unchanged: pixels project identically."""
    c = np.zeros(3) if centre is None else np.asarray(centre, np.float64)
    r = np.asarray(rotation, np.float64)
    out = np.tile(np.eye(4), (len(c2w_src), 1, 1))
    out[:, :3, :3] = r @ c2w_src[:, :3, :3]
    out[:, :3, 3] = scale * (c2w_src[:, :3, 3] - c) @ r.T
    m = np.eye(4)
    m[:3, :3] = scale * r
    m[:3, 3] = -scale * r @ c
    return out, m


def camera_summary(c2w: np.ndarray, K: np.ndarray, width: int, near_far: tuple[float, float],
                   near_far_source: str) -> dict[str, Any]:
    """``meta["camera"]``: camera distance to the origin, mean horizontal fov, near/far (object
    units), whether the project's 0.8/1.8 brackets them, and the convention."""
    d = np.linalg.norm(c2w[:, :3, 3], axis=-1)
    fov = np.rad2deg(np.arctan2(K[:, 0, 2], K[:, 0, 0])
                     + np.arctan2(width - K[:, 0, 2], K[:, 0, 0]))
    near, far = float(near_far[0]), float(near_far[1])
    return {
        "distance": float(d.mean()), "distance_min": float(d.min()),
        "distance_max": float(d.max()), "fov_deg": float(fov.mean()),
        "near": near, "far": far, "near_far_source": near_far_source,
        "fits_project_near_far": bool(near >= PROJECT_NEAR - 1e-6 and far <= PROJECT_FAR + 1e-6),
        "convention": CV_CONVENTION,
    }


def empty_view_warnings(alpha: np.ndarray, views: Sequence[str]) -> list[str]:
    """One warning per view whose alpha is all zero."""
    empty = np.flatnonzero(alpha.reshape(len(alpha), -1).max(axis=1) == 0)
    return [f"view {views[i]}: no foreground pixel" for i in empty]


def make_imported(object_id: str, split: str, rgb: np.ndarray, alpha: np.ndarray, K: np.ndarray,
                  c2w: np.ndarray, meta: dict) -> ImportedObject:
    """Build and validate the ``ImportedObject`` (store dtypes; no depth, parts, keypoints).
    ``meta["near"]``/``["far"]`` (read by the import stage) mirror ``meta["camera"]``."""
    meta = {**meta, "near": meta["camera"]["near"], "far": meta["camera"]["far"]}
    return ImportedObject(
        object_id=str(object_id), split=split,
        rgb=np.ascontiguousarray(rgb, dtype=np.uint8),
        alpha=np.ascontiguousarray(alpha, dtype=np.uint8),
        K=np.asarray(K, dtype=np.float32), c2w=np.asarray(c2w, dtype=np.float32),
        depth=None, part=None, kp3d=None, kp_id=None, kp2d=None, kp_visible=None,
        points=None, point_part=None, meta=meta,
    ).validate()


def check_rigid(m: np.ndarray, what: str) -> np.ndarray:
    """``m`` (4, 4) if it is a finite rigid transform, else ImportFormatError naming ``what``."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (4, 4):
        raise ImportFormatError(f"{what}: shape {m.shape}, expected a 4x4 camera matrix")
    if not np.isfinite(m).all():
        raise ImportFormatError(f"{what}: non-finite values in the camera matrix")
    if np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-4:
        raise ImportFormatError(f"{what}: last row {m[3].tolist()} is not [0, 0, 0, 1]")
    r = m[:3, :3]
    if np.abs(r @ r.T - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:
        raise ImportFormatError(f"{what}: the 3x3 block is not a rotation (det "
                                f"{np.linalg.det(r):.4g}); expected a rigid camera-to-world")
    return m


#: per-object view lister of a source: ``(object_id, split) -> (view count, a reader of the
#: first image's (height, width), the object's location for messages)``
ViewLister = Callable[[str, str], tuple[int, Callable[[], tuple[int, int]], str]]


def importer_functions(load_object: Callable[..., ImportedObject],
                       list_objects: Callable[..., list[tuple[str, str]]],
                       views_of: Callable[[str | Path, str], ViewLister], where: str
                       ) -> tuple[Callable[..., Iterator[ImportedObject]], Callable[..., dict]]:
    """``(iter_objects, scan_layout)`` of a source (the protocol above) from its loader
    ``load_object(root, category, object_id, split, size, **options)``, its ``list_objects``
    and ``views_of(root, category)`` (a :data:`ViewLister`). Both functions declare
    ``load_object``'s keyword-only options in their signature (the stage checks ``--option``
    keys against it); ``where`` names the root in messages (e.g. ``"SRN root"``)."""
    options = [p for p in inspect.signature(load_object).parameters.values()
               if p.kind is p.KEYWORD_ONLY]

    def iter_objects(root: str | Path, category: str, split: str | None = None,
                     object_ids: Sequence[str] | None = None, size: int | None = None, *,
                     objects: Sequence[tuple[str, str]] | None = None, **opts: Any
                     ) -> Iterator[ImportedObject]:
        """Yield objects one at a time: ``objects`` [(id, split)] in that order with those
        splits, else those of ``list_objects`` (of ``split``; only ``object_ids`` if given)."""
        todo = select(lambda: list_objects(root, category), split, object_ids, objects,
                      f"{where} {root}")
        for oid, s in todo:
            yield load_object(root, category, oid, s, size, **opts)

    def scan_layout(root: str | Path, category: str, objects: Sequence[tuple[str, str]],
                    size: int | None = None, *, views: int | None = None, **opts: Any
                    ) -> dict[str, int]:
        """The store layout (``n_views``, ``image_size``, zero keypoint slots / points /
        candidates) from the file lists and the first image's header (no image decoded).

        Raises:
            ImportFormatError: if the objects have different view counts (SRN test objects
                have 251 views, train 50: pass ``views``).
        """
        per_object = views_of(root, category)
        counts: dict[int, str] = {}
        hw = None
        for oid, s in objects:
            n, read_hw, at = per_object(oid, s)
            counts.setdefault(len(view_subset(n, views, at)), oid)
            if hw is None:
                hw = read_hw()
        return layout_from(counts, hw, size, "--option views=N")

    names = {p.name for p in options}
    for fn in (iter_objects, scan_layout):
        sig = inspect.signature(fn)
        fixed = [p for p in sig.parameters.values()
                 if p.kind is not p.VAR_KEYWORD and p.name not in names]
        fn.__signature__ = sig.replace(parameters=fixed + options)  # type: ignore[attr-defined]
    return iter_objects, scan_layout


def image_hw(path: str | Path) -> tuple[int, int]:
    """(height, width) from an image file's header."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError) as exc:
        raise ImportFormatError(f"cannot read image {path}: {exc}") from None


def finish_object(object_id: str, split: str, rgb: np.ndarray, alpha: np.ndarray, K: np.ndarray,
                  c2w: np.ndarray, meta: dict, size: int | None, near_far: tuple[float, float],
                  near_far_source: str) -> ImportedObject:
    """The common tail of the srn / dvr / nerf-synthetic loaders: views resized to ``size``
    (``meta["resize"]``, unless the loader resized them already), ``meta["camera"]``
    (:func:`camera_summary` with ``near_far`` in object units and where they come from),
    empty-view warnings before the loader's own, then the validated :func:`make_imported`."""
    rgb, alpha, K, resized = resize_views(rgb, alpha, K, size)
    meta["resize"] = meta.get("resize") or resized
    meta["camera"] = camera_summary(c2w, K, rgb.shape[2], near_far, near_far_source)
    meta["warnings"] = empty_view_warnings(alpha, meta["views"]) + meta.get("warnings", [])
    return make_imported(object_id, split, rgb, alpha, K, c2w, meta)


__all__ = [
    "IMAGE_SUFFIXES", "IMPORTERS", "SPLITS", "ImportFormatError", "ImportedObject", "Source",
    "ViewLister", "WorldScale", "area_downsample", "camera_summary", "check_rigid",
    "composite_over_black", "downsample_factor", "empty_view_warnings", "finish_object",
    "frame_rotation", "image_hw", "importer_functions", "layout_from", "load_source",
    "make_imported", "nearest_downsample", "over_black", "read_image", "read_mask",
    "read_png_rgba", "resize_object", "resize_views", "resolve_scale", "select",
    "slot_keypoints", "stack_views", "to_object_frame", "view_subset",
]
