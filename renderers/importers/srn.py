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

The helpers shared with :mod:`renderers.importers.dvr` and
:mod:`renderers.importers.nerf_synthetic` (image reading, resizing, frames, camera summary, the
``iter_objects`` / ``scan_layout`` pair, building the ``ImportedObject``) live in
:mod:`renderers.importers`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from renderers.conventions import ZUP_TO_PROJECT
from renderers.importers import (
    IMAGE_SUFFIXES,
    SPLITS,
    ImportedObject,
    ImportFormatError,
    WorldScale,
    check_rigid,
    finish_object,
    frame_rotation,
    importer_functions,
    over_black,
    read_image,
    resolve_scale,
    stack_views,
    to_object_frame,
    view_subset,
)

log = logging.getLogger(__name__)

R_SRN_TO_OBJECT = ZUP_TO_PROJECT[:3, :3]  # renderers.conventions: x = x_s, y = z_s, z = -y_s
SRN_NEAR_FAR = {"chair": (1.25, 2.75), "default": (0.8, 1.8)}  # pixelNeRF SRNDataset


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
    return finish_object(object_id, split or folder_split, rgb, alpha, K, c2w, meta, size,
                         (near_far[0] * scale, near_far[1] * scale),
                         "pixelNeRF SRNDataset (chairs 1.25/2.75, others 0.8/1.8)")


def _views_of(root: str | Path, category: str) -> Callable[[str, str], tuple]:
    """The :data:`renderers.importers.ViewLister` of an SRN root: view files and
    ``intrinsics.txt`` (no image decoded)."""
    dirs = split_dirs(root, category)

    def per_object(object_id: str, split: str) -> tuple:
        obj_dir, _ = _find_object(dirs, object_id, split, root)

        def hw() -> tuple[int, int]:
            intr = read_intrinsics(obj_dir / "intrinsics.txt")
            return intr["height"], intr["width"]

        return len(_view_files(obj_dir)[0]), hw, str(obj_dir)

    return per_object


iter_objects, scan_layout = importer_functions(load_object, list_objects, _views_of, "SRN root")
