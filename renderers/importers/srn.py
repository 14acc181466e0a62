"""SRN renders (pixelNeRF's ``srn_cars`` / ``srn_chairs``) -> ``ImportedObject``.

Layout (``shared/reference/formats.md`` 7.1)::

    <root>/<prefix>_{train,val,test}/<id>/intrinsics.txt
    <root>/<prefix>_{train,val,test}/<id>/rgb/000000.png ...    128x128, white background
    <root>/<prefix>_{train,val,test}/<id>/pose/000000.txt ...   16 floats: 4x4 OpenCV cam2world
    <root>/chairs_train/chairs_2.0_train/<id>/...               extra level (public chair train set)

``root`` is the folder holding the ``<prefix>_<split>`` folders, pixelNeRF's ``<dir>/<prefix>``
path (``<dir>/cars`` for ``<dir>/cars_train`` ...) or one ``<prefix>_<split>`` folder. The prefix
is the category name or its plural (``car`` -> ``cars_*``); splits are the folder names.

Conventions.
* ``intrinsics.txt``: line 1 ``f cx cy 0.``, line 4 ``H W``, optional line 5 the
  ``world2cam_poses`` flag (1: the pose files are world-to-camera and are inverted here, unless
  that puts every camera at one point; ``meta["poses"]`` says how they were read). K is
  ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]`` in the project's pixel convention (the renderer's
  principal point is the image centre, 64 at 128 px = pixel edges at integers; pixelNeRF itself
  casts rays through integer pixel indices, half a pixel off). K is rescaled when the images are
  not ``H x W`` (as SRN's own ``parse_intrinsics``).
* Poses are OpenCV camera-to-world already; only the world axes change. The SRN world is z-up
  [formats.md 0/7.1, I]: ``x_srn = x2, y_srn = -z2, z_srn = y2``, so the object frame is
  ``p_obj = s * R_SRN_TO_OBJECT @ p_srn`` with ``R = [[1,0,0],[0,0,1],[0,-1,0]]``
  (``renderers.conventions.ZUP_TO_PROJECT``; option ``frame`` picks another named frame).
* Scale: SRN objects have their largest bbox side 1 [I], not the project's unit bbox diagonal,
  and the cameras sit at ~1.3 (cars) or ~2.0 (chairs) with pixelNeRF's near/far 0.8/1.8 and
  1.25/2.75. ``world_scale=1.0`` keeps SRN units; ``world_scale="rig"`` scales the world so the
  mean camera distance is 1.3 (the project rig), near/far scale with it. ``meta["camera"]``
  records distance, near/far and ``fits_project_near_far`` (the project's 0.8/1.8 brackets them).
* Alpha (approximate: SRN stores no masks): 255 where a pixel is not pure white (any channel
  < 255), else 0; white object pixels read as background and edges are binary. pixelNeRF's rule
  is stricter (every channel < 255). Background pixels are set to black (the project's rgb is
  over black); a PNG with a non-constant alpha channel uses that channel instead.

The helpers in the second half (image reading, resizing, frames, camera summary, building the
``ImportedObject``) are shared with :mod:`renderers.importers.dvr` and
:mod:`renderers.importers.nerf_synthetic`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from renderers.conventions import ZUP_TO_PROJECT, world_frame
from renderers.importers import ImportedObject, ImportFormatError, composite_over_black

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PROJECT_DISTANCE = 1.3
PROJECT_NEAR, PROJECT_FAR = 0.8, 1.8
CV_CONVENTION = "opencv c2w, pixel centres +0.5"
R_SRN_TO_OBJECT = ZUP_TO_PROJECT[:3, :3]  # renderers.conventions: x = x_s, y = z_s, z = -y_s
SRN_NEAR_FAR = {"chair": (1.25, 2.75), "default": (0.8, 1.8)}  # pixelNeRF SRNDataset
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
WorldScale = float | str


# ----------------------------------------------------------------------------------- layout


def _prefixes(category: str) -> list[str]:
    c = category.strip().lower()
    return [c] if c.endswith("s") else [c + "s", c]


def _object_parent(split_dir: Path, prefix: str, split: str) -> Path:
    """The folder whose children are object folders (descends ``chairs_2.0_train`` & co)."""
    if any((d / "intrinsics.txt").is_file() for d in split_dir.iterdir() if d.is_dir()):
        return split_dir
    named = split_dir / f"{prefix}_2.0_{split}"
    nested = [named] if named.is_dir() else sorted(d for d in split_dir.iterdir() if d.is_dir())
    for d in nested:
        if any((o / "intrinsics.txt").is_file() for o in d.iterdir() if o.is_dir()):
            return d
    return split_dir


def split_dirs(root: str | Path, category: str) -> dict[str, Path]:
    """{split: folder holding that split's object folders} for an SRN dataset.

    Raises:
        ImportFormatError: naming ``root`` and the ``<prefix>_<split>`` folders looked for.
    """
    root = Path(root).expanduser()
    m = re.match(r"^(.+)_(train|val|test)$", root.name)
    if m and root.is_dir() and m.group(1) in _prefixes(category) + [category]:
        return {m.group(2): _object_parent(root, m.group(1), m.group(2))}
    bases = [(root, p) for p in _prefixes(category)] + [(root.parent, root.name)]
    for base, prefix in bases:
        found = {s: base / f"{prefix}_{s}" for s in SPLITS if (base / f"{prefix}_{s}").is_dir()}
        if found:
            return {s: _object_parent(d, prefix, s) for s, d in found.items()}
    if m and root.is_dir():
        return {m.group(2): _object_parent(root, m.group(1), m.group(2))}
    seen = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    want = ", ".join(f"{p}_{{train,val,test}}" for p in _prefixes(category))
    raise ImportFormatError(f"SRN root {root}: no {want} folder (found: "
                            f"{', '.join(seen) or 'nothing'}); pass the folder holding "
                            "cars_train/... (or pixelNeRF's <dir>/cars)")


def list_objects(root: str | Path, category: str) -> list[tuple[str, str]]:
    """(object id, split) of every object folder with an ``intrinsics.txt``, by split then id."""
    out = []
    for split, parent in sorted(split_dirs(root, category).items(),
                                key=lambda kv: SPLITS.index(kv[0])):
        out += [(d.name, split) for d in sorted(parent.iterdir())
                if d.is_dir() and (d / "intrinsics.txt").is_file()]
    return out


def read_intrinsics(path: str | Path) -> dict[str, Any]:
    """Parse ``intrinsics.txt`` (4 or 5 lines) -> ``{f, cx, cy, height, width, world2cam}``."""
    path = Path(path)
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if len(lines) < 4 or len(lines[0]) < 3 or len(lines[3]) < 2:
            raise ValueError(f"{len(lines)} lines")
        f, cx, cy = (float(t) for t in lines[0][:3])
        height, width = (int(round(float(t))) for t in lines[3][:2])
        world2cam = len(lines) > 4 and bool(int(float(lines[4][0])))
    except ValueError as exc:
        raise ImportFormatError(f"{path}: not an SRN intrinsics file ({exc}); expected "
                                "'f cx cy 0.', two more lines, 'H W' and an optional world2cam "
                                "flag") from None
    if not (f > 0 and height > 0 and width > 0):
        raise ImportFormatError(f"{path}: focal {f} and size {height}x{width} must be positive")
    return {"f": f, "cx": cx, "cy": cy, "height": height, "width": width,
            "world2cam": world2cam}


def read_pose(path: str | Path) -> np.ndarray:
    """(4, 4) float64 matrix from an SRN pose file (16 numbers, any whitespace)."""
    path = Path(path)
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except OSError as exc:
        raise ImportFormatError(f"cannot read pose file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ImportFormatError(f"pose file {path}: non-numeric value ({exc})") from None
    if values.size != 16:
        raise ImportFormatError(f"pose file {path}: {values.size} numbers, expected 16 (a "
                                "row-major 4x4 camera-to-world matrix on one line)")
    return check_rigid(values.reshape(4, 4), str(path))


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


def _spread(c2w: np.ndarray) -> float:
    """Spread (norm of the per-axis std) of the camera centres of (V,4,4) c2w."""
    return float(np.linalg.norm(c2w[:, :3, 3].std(axis=0)))


def _orient_poses(poses: np.ndarray, world2cam: bool) -> tuple[np.ndarray, str]:
    """Camera-to-world poses and how they were read: as written, or inverted when the
    ``world2cam`` flag says so, unless that reading puts every camera at one point (what
    cameras looking at the object give when read the wrong way round: their world-to-camera
    translation is ``(0, 0, distance)`` in every view). pixelNeRF ignores the flag."""
    inverted = np.linalg.inv(poses)
    first, other = (inverted, poses) if world2cam else (poses, inverted)
    if len(poses) > 1 and _spread(first) < 1e-3 * _spread(other):
        return other, ("read as camera-to-world despite the world2cam flag (inverted, every "
                       "camera would sit at one point)" if world2cam else
                       "inverted: the files hold world-to-camera poses (as written, every "
                       "camera would sit at one point)")
    return first, "inverted (world2cam flag)" if world2cam else "camera-to-world as written"


def _view_files(obj_dir: Path) -> tuple[list[Path], list[Path]]:
    rgb_dir, pose_dir = obj_dir / "rgb", obj_dir / "pose"
    for d in (rgb_dir, pose_dir):
        if not d.is_dir():
            raise ImportFormatError(f"SRN object {obj_dir}: no {d.name}/ folder")
    images = {p.stem: p for p in sorted(rgb_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    poses = {p.stem: p for p in sorted(pose_dir.iterdir()) if p.suffix == ".txt"}
    if not poses:
        raise ImportFormatError(f"SRN object {obj_dir}: pose/ holds no .txt files")
    for stem in poses:
        if stem not in images:
            raise ImportFormatError(f"SRN object {obj_dir}: missing image rgb/{stem}.png for "
                                    f"pose/{stem}.txt; re-extract the object or leave it out")
    for stem in images:
        if stem not in poses:
            raise ImportFormatError(f"SRN object {obj_dir}: missing pose/{stem}.txt for image "
                                    f"rgb/{images[stem].name}")
    stems = sorted(poses)
    return [images[s] for s in stems], [poses[s] for s in stems]


# -------------------------------------------------------------------------------- importing


def _find_object(dirs: dict[str, Path], object_id: str, prefer: str | None, root: str | Path
                 ) -> tuple[Path, str]:
    """(object folder, the split folder it is in); ``prefer``'s folder is searched first."""
    order = ([prefer] if prefer in dirs else []) + [s for s in SPLITS if s in dirs and s != prefer]
    for s in order:
        if (dirs[s] / object_id / "intrinsics.txt").is_file():
            return dirs[s] / object_id, s
    raise ImportFormatError(f"SRN: no object folder {object_id!r} with an intrinsics.txt in "
                            f"{', '.join(str(dirs[s]) for s in order)} (root {root})")


def load_object(
    root: str | Path,
    category: str,
    object_id: str,
    split: str | None = None,
    size: int | None = None,
    *,
    world_scale: WorldScale = 1.0,
    views: int | None = None,
    frame: str = "z-up",
) -> ImportedObject:
    """Import one SRN object folder.

    Args:
        root, category: as :func:`list_objects`.
        object_id: the object folder name. split: the split to give it (None: its folder's).
        size: resize every view to ``size x size`` (K rescaled); None keeps the source size.
        world_scale: a factor on SRN units, or ``"rig"`` (mean camera distance -> 1.3).
        views: keep this many views, evenly spaced over the sorted files (None: all).
        frame: the SRN world's axes, a :data:`renderers.conventions.WORLD_FRAMES` name.

    Returns:
        ImportedObject with rgb (V,H,W,3), alpha (V,H,W), K (V,3,3), c2w (V,4,4); no depth,
        parts or keypoints; ``meta["near"]``/``["far"]`` in object units.
    """
    obj_dir, folder_split = _find_object(split_dirs(root, category), object_id, split, root)
    intr = read_intrinsics(obj_dir / "intrinsics.txt")
    image_paths, pose_paths = _view_files(obj_dir)
    keep = view_subset(len(image_paths), views, str(obj_dir))
    image_paths, pose_paths = [image_paths[i] for i in keep], [pose_paths[i] for i in keep]
    c2w_src = np.stack([read_pose(p) for p in pose_paths])
    c2w_src, pose_note = _orient_poses(c2w_src, intr["world2cam"])
    rgbs, alphas, methods = [], [], set()
    for p in image_paths:
        rgba, has_alpha = read_image(p)
        if has_alpha:
            a = rgba[..., 3]
            rgbs.append(over_black(rgba[..., :3], a, None))
            methods.add("png alpha channel")
        else:
            a = np.where((rgba[..., :3] < 255).any(axis=-1), 255, 0).astype(np.uint8)
            rgbs.append(over_black(rgba[..., :3], a, (255, 255, 255)))
            methods.add("approximate: 255 where not pure white (any channel < 255), else 0")
        alphas.append(a)
    rgb, alpha = stack_views(rgbs, alphas, image_paths)
    h, w = rgb.shape[1:3]
    sx, sy = w / intr["width"], h / intr["height"]
    k = np.array([[intr["f"] * sx, 0.0, intr["cx"] * sx], [0.0, intr["f"] * sy, intr["cy"] * sy],
                  [0.0, 0.0, 1.0]])
    K = np.broadcast_to(k, (len(rgb), 3, 3)).copy()
    is_chair = "chair" in (obj_dir.parent.name + obj_dir.parent.parent.name + category).lower()
    near_far = SRN_NEAR_FAR["chair" if is_chair else "default"]
    scale = resolve_scale(world_scale, c2w_src)
    rotation = frame_rotation(frame)
    c2w, m = to_object_frame(c2w_src, rotation, scale)
    meta: dict[str, Any] = {
        "format": "srn",
        "source": str(obj_dir),
        "source_split": folder_split,
        "views": [p.name for p in image_paths],
        "intrinsics": intr,
        "poses": pose_note,
        "frame": {"source_axes": "SRN world: +Z up, bbox-centred [formats.md 7.1, I]"
                  if frame == "z-up" else f"{frame} (the frame option)",
                  "name": frame, "R_source_to_object": rotation.tolist(), "scale": scale,
                  "centre_source": [0.0, 0.0, 0.0]},
        "object_from_source": m.tolist(),
        "object_scale": f"largest bbox side ~{scale:.4g} (SRN: 1 [I]); not the project's unit "
                        "bbox diagonal",
        "alpha": "; ".join(sorted(methods)),
        "background_source": [255, 255, 255],
    }
    rgb, alpha, K, meta["resize"] = resize_views(rgb, alpha, K, size)
    near, far = near_far[0] * scale, near_far[1] * scale
    meta["camera"] = camera_summary(c2w, K, rgb.shape[2], (near, far),
                                    "pixelNeRF SRNDataset (chairs 1.25/2.75, others 0.8/1.8)")
    meta["warnings"] = empty_view_warnings(alpha, meta["views"])
    return make_imported(object_id, split or folder_split, rgb, alpha, K, c2w, meta)


def iter_objects(
    root: str | Path,
    category: str,
    split: str | None = None,
    object_ids: Sequence[str] | None = None,
    size: int | None = None,
    *,
    objects: Sequence[tuple[str, str]] | None = None,
    world_scale: WorldScale = 1.0,
    views: int | None = None,
    frame: str = "z-up",
) -> Iterator[ImportedObject]:
    """Yield objects one at a time: ``objects`` [(id, split)] in that order with those splits,
    else those of :func:`list_objects` (of ``split``; only ``object_ids`` if given)."""
    todo = select(lambda: list_objects(root, category), split, object_ids, objects,
                  f"SRN root {root}")
    for oid, s in todo:
        yield load_object(root, category, oid, s, size, world_scale=world_scale, views=views,
                          frame=frame)


def scan_layout(root: str | Path, category: str, objects: Sequence[tuple[str, str]],
                size: int | None = None, *, world_scale: WorldScale = 1.0,
                views: int | None = None, frame: str = "z-up") -> dict[str, int]:
    """The store layout (``n_views``, ``image_size``, zero keypoint slots / points / candidates)
    from the file lists and ``intrinsics.txt`` (no image decoded).

    Raises:
        ImportFormatError: if the objects have different view counts (SRN test objects have
            251 views, train 50: pass ``views``) or non-square images without ``size``.
    """
    dirs = split_dirs(root, category)
    counts: dict[int, str] = {}
    hw = None
    for oid, s in objects:
        obj_dir, _ = _find_object(dirs, oid, s, root)
        n = len(_view_files(obj_dir)[0])
        counts.setdefault(len(view_subset(n, views, str(obj_dir))), oid)
        if hw is None:
            intr = read_intrinsics(obj_dir / "intrinsics.txt")
            hw = (intr["height"], intr["width"])
    return layout_from(counts, hw, size, "--option views=N")


# ------------------------------------------------------------- shared helpers (srn/dvr/nerf)


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


def read_image(path: str | Path) -> tuple[np.ndarray, bool]:
    """(H, W, 4) uint8 RGBA of an image file and whether it has a non-constant alpha channel."""
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"missing image {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = np.clip(arr / (257.0 if arr.max() > 255 else 1.0), 0, 255).astype(np.uint8)
                im = Image.fromarray(arr)
            rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
            has_alpha = "A" in im.getbands() or "transparency" in im.info
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImportFormatError(f"cannot decode image {path}: {exc}") from None
    a = rgba[..., 3]
    return rgba, bool(has_alpha and a.min() != a.max())


def read_mask(path: str | Path) -> np.ndarray:
    """(H, W) uint8 mask image: its first channel (the alpha of an RGBA image whose colour is
    all black); 0/1 masks are scaled to 0/255."""
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"missing mask {path}")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGBA") if im.mode not in ("L", "I;16", "I") else im)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImportFormatError(f"cannot decode mask {path}: {exc}") from None
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
