"""NeRF-synthetic (Blender) and nerfstudio ``transforms.json`` captures -> ``ImportedObject``.

One capture folder is one object; a root holding several capture folders is several objects::

    <capture>/transforms_{train,val,test}.json   Blender: camera_angle_x, frames[{file_path
                                                 without extension, transform_matrix}], RGBA PNGs
    <capture>/transforms.json                    nerfstudio / instant-ngp: fl_x, fl_y, cx, cy, w,
                                                 h (global or per frame), camera_model, k1..k4,
                                                 p1, p2, frames[{file_path, transform_matrix,
                                                 mask_path?}] (or camera_angle_x)
    <root>/<capture>/...  or  <root>/{train,val,test}/<capture>/...  [+ <root>/splits.json]

Object splits: ``<root>/splits.json`` ({"train": [names], "val": [...], "test": [...]}), else the
``train``/``val``/``test`` folder holding the capture, else
:func:`renderers.shapenet.hash_split` of the capture name. Every frame of every transforms file
becomes a view (train, val, test frames in that order; ``meta["frame_split"]`` keeps theirs).

Conventions.
* ``transform_matrix`` is an OpenGL camera-to-world (x right, y up, looking along -z); the
  OpenCV c2w is ``c2w_gl @ diag(1, -1, -1, 1)``.
* Intrinsics: ``fx = 0.5 W / tan(0.5 camera_angle_x)`` (``fy`` from ``camera_angle_y``, else
  ``fx``), principal point the image centre ``(W/2, H/2)``; nerfstudio's ``fl_x, fl_y, cx, cy``
  are used as written (COLMAP's pixel convention is the project's: centres at +0.5), rescaled if
  the image is not ``w x h``. ``OPENCV`` distortion (k1..k4 radial, p1/p2 tangential) is removed
  by resampling each image to the same pinhole K; fisheye and equirectangular models are refused.
* Colour: RGBA is straight alpha, composited over black (``rgb * a``) with alpha = A (or the
  frame's ``mask_path``); an image without alpha or mask is opaque (alpha 255).
* Object frame: captures are in arbitrary units and axes. ``up`` (default ``"+z"``, Blender and
  nerfstudio) is turned to +Y and the source's ``-Y`` (Blender's front view) to the project's
  front -Z (``"cameras"`` = the mean camera up vector). With ``normalize="rig"`` (default) the
  centre is the least-squares point nearest to all optical axes and the scale makes the mean
  camera distance 1.3 (the project rig); ``"none"`` keeps the source's origin and units.
  ``meta["object_radius"]`` is the radius about the origin of the masks' visual hull (the frusta'
  intersection without masks), and ``meta["camera"]["near"/"far"]`` =
  ``distance_min - radius`` / ``distance_max + radius``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from renderers.conventions import GL_CV_FLIP
from renderers.importers import (
    IMAGE_SUFFIXES,
    SPLITS,
    ImportedObject,
    ImportFormatError,
    check_rigid,
    finish_object,
    image_hw,
    importer_functions,
    over_black,
    read_image,
    read_mask,
    resize_views,
    stack_views,
    to_object_frame,
    view_subset,
)
from renderers.shapenet import hash_split

log = logging.getLogger(__name__)

BLENDER_FILES = tuple(f"transforms_{s}.json" for s in SPLITS)
NERFSTUDIO_FILE = "transforms.json"
_AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0),
         "+z": (0, 0, 1), "-z": (0, 0, -1)}
_DIST_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "SIMPLE_RADIAL", "RADIAL")
HULL_GRID = 40


# ----------------------------------------------------------------------------------- layout


def is_capture(folder: Path) -> bool:
    """True if ``folder`` holds ``transforms_{train,val,test}.json`` or ``transforms.json``."""
    return any((folder / f).is_file() for f in BLENDER_FILES + (NERFSTUDIO_FILE,))


def _captures(root: Path) -> list[tuple[Path, str | None]]:
    """(capture folder, split folder name or None)."""
    if is_capture(root):
        return [(root, None)]
    out: list[tuple[Path, str | None]] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if is_capture(d):
            out.append((d, None))
        elif d.name in SPLITS:
            out += [(c, d.name) for c in sorted(d.iterdir()) if c.is_dir() and is_capture(c)]
    return out


def _splits_file(root: Path) -> dict[str, str]:
    f = root / "splits.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
        return {str(n): s for s in SPLITS for n in data.get(s, [])}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ImportFormatError(f"cannot read {f} ({exc}); expected {{\"train\": [capture names], "
                                "\"val\": [...], \"test\": [...]}") from None


def _index(root: str | Path) -> dict[str, tuple[Path, str]]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImportFormatError(f"capture root {root} does not exist")
    caps = _captures(root)
    if not caps:
        raise ImportFormatError(f"{root}: no transforms_train.json / transforms.json in it or "
                                "in its sub-folders; pass a capture folder or a folder of "
                                "captures")
    named = _splits_file(root if not is_capture(root) else root.parent)
    out: dict[str, tuple[Path, str]] = {}
    for folder, split_dir in caps:
        name = folder.name
        if name in out:
            raise ImportFormatError(f"two captures are named {name!r} ({out[name][0]}, {folder}); "
                                    "rename one")
        out[name] = (folder, named.get(name) or split_dir or hash_split(name))
    return out


def list_objects(root: str | Path, category: str) -> list[tuple[str, str]]:
    """(capture name, split) of every capture under ``root`` (``category`` is a free label)."""
    objs = [(n, s) for n, (_, s) in _index(root).items()]
    return sorted(objs, key=lambda o: (SPLITS.index(o[1]), o[0]))


# ---------------------------------------------------------------------------------- reading


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ImportFormatError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ImportFormatError(f"{path}: expected a JSON object with 'frames', got "
                                f"{type(data).__name__}")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ImportFormatError(f"{path}: no 'frames' list (or it is empty); expected frames "
                                "[{file_path, transform_matrix}, ...]")
    return data


def _image_path(base: Path, file_path: str, where: str) -> Path:
    p = base / file_path
    if p.is_file():
        return p
    for ext in IMAGE_SUFFIXES + tuple(e.upper() for e in IMAGE_SUFFIXES):
        if p.with_name(p.name + ext).is_file():
            return p.with_name(p.name + ext)
    raise ImportFormatError(f"{where}: missing image {p} (also tried .png/.jpg)")


def _intrinsics(cfg: dict[str, Any], width: int, height: int, where: str
                ) -> tuple[np.ndarray, dict[str, float], str]:
    """(K (3,3) for the actual image size, distortion coefficients, camera model)."""
    model = str(cfg.get("camera_model") or ("OPENCV" if any(cfg.get(k) for k in _DIST_KEYS)
                                            else "PINHOLE")).upper()
    if model not in _PINHOLE_MODELS:
        raise ImportFormatError(f"{where}: camera_model {model} is not supported (pinhole with "
                                "OPENCV radial/tangential distortion only); undistort the "
                                "images first")
    try:
        if "fl_x" in cfg:
            fx = float(cfg["fl_x"])
            fy = float(cfg.get("fl_y", fx))
            w0, h0 = float(cfg.get("w", width)), float(cfg.get("h", height))
            cx, cy = float(cfg.get("cx", w0 / 2)), float(cfg.get("cy", h0 / 2))
        elif "camera_angle_x" in cfg:
            w0, h0 = float(cfg.get("w", width)), float(cfg.get("h", height))
            fx = 0.5 * w0 / np.tan(0.5 * float(cfg["camera_angle_x"]))
            fy = (0.5 * h0 / np.tan(0.5 * float(cfg["camera_angle_y"]))
                  if "camera_angle_y" in cfg else fx)
            cx, cy = w0 / 2, h0 / 2
        else:
            raise ImportFormatError(f"{where}: no camera_angle_x nor fl_x; cannot build K")
        dist = {k: float(cfg.get(k, 0.0)) for k in _DIST_KEYS}
    except (TypeError, ValueError) as exc:
        raise ImportFormatError(f"{where}: bad intrinsics value ({exc})") from None
    if not (fx > 0 and fy > 0 and w0 > 0 and h0 > 0):
        raise ImportFormatError(f"{where}: focal {fx}, {fy} and size {w0}x{h0} must be positive")
    sx, sy = width / w0, height / h0
    K = np.array([[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]])
    return K, dist, model


def undistort(image: np.ndarray, K: np.ndarray, dist: dict[str, float]) -> np.ndarray:
    """Resample (H, W, C) ``image`` taken with OPENCV distortion ``dist`` to the pinhole ``K``
    (bilinear; pixels that map outside the source are 0)."""
    h, w = image.shape[:2]
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (dist["k1"] + r2 * (dist["k2"] + r2 * (dist["k3"] + r2 * dist["k4"])))
    xd = x * radial + 2 * dist["p1"] * x * y + dist["p2"] * (r2 + 2 * x * x)
    yd = y * radial + dist["p1"] * (r2 + 2 * y * y) + 2 * dist["p2"] * x * y
    coords = [yd * K[1, 1] + K[1, 2] - 0.5, xd * K[0, 0] + K[0, 2] - 0.5]
    out = np.stack([ndimage.map_coordinates(image[..., c].astype(np.float32), coords, order=1,
                                            mode="constant", cval=0.0)
                    for c in range(image.shape[2])], axis=-1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _frames(folder: Path) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """Every frame (with its file's global settings merged under it, and its split), the
    format name and the top-level extras."""
    files = [folder / f for f in BLENDER_FILES if (folder / f).is_file()]
    fmt = "nerf_synthetic"
    if not files:
        files, fmt = [folder / NERFSTUDIO_FILE], "nerfstudio"
    frames, extras = [], {}
    for f in files:
        data = _read_json(f)
        split = f.stem.removeprefix("transforms_") if fmt == "nerf_synthetic" else "all"
        glob = {k: v for k, v in data.items() if k != "frames"}
        for k in ("applied_transform", "applied_scale", "aabb_scale", "scale", "offset"):
            if k in glob:
                extras[k] = glob[k]
        for j, fr in enumerate(data["frames"]):
            if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
                raise ImportFormatError(f"{f}: frame {j} lacks file_path or transform_matrix")
            frames.append({**glob, **fr, "_file": f, "_index": j, "_split": split})
    return frames, fmt, extras


# ------------------------------------------------------------------------------ normalising


def up_rotation(up: str, c2w_cv: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """(3,3) R turning the source ``up`` axis to +Y (and a front axis to -Z), and the up vector.

    ``up``: ``"+x" ... "-z"`` or ``"cameras"`` (mean of the OpenCV cameras' up = -y columns).
    The front is the first of source +Y, -Z, +X not parallel to ``up``, so ``"+z"`` gives
    :data:`renderers.conventions.ZUP_TO_PROJECT` (as SRN) and ``"+y"`` the identity.
    """
    if up == "cameras":
        u = -c2w_cv[:, :3, 1].mean(axis=0)
        if np.linalg.norm(u) < 1e-6:
            raise ImportFormatError("up='cameras': the camera up vectors cancel out; pass an axis")
    elif up in _AXES:
        u = np.array(_AXES[up], dtype=np.float64)
    else:
        raise ImportFormatError(f"up must be one of {', '.join(_AXES)} or 'cameras', not {up!r}")
    u = u / np.linalg.norm(u)
    for f in ((0, 1, 0), (0, 0, -1), (1, 0, 0)):
        f = np.array(f, dtype=np.float64)
        f_perp = f - (f @ u) * u
        if np.linalg.norm(f_perp) > 1e-3:
            break
    z = -f_perp / np.linalg.norm(f_perp)
    x = np.cross(u, z)
    return np.stack([x, u, z]) + 0.0, (u + 0.0).tolist()


def axes_centre(c2w_cv: np.ndarray, where: str) -> np.ndarray:
    """(3,) least-squares point nearest to all optical axes (camera +z) of (V,4,4) c2w."""
    o, d = c2w_cv[:, :3, 3], c2w_cv[:, :3, 2]
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    a, b = proj.sum(axis=0), np.einsum("vij,vj->i", proj, o)
    evals = np.linalg.eigvalsh(a)
    if evals[0] < 1e-3 * len(d):
        raise ImportFormatError(f"{where}: the optical axes do not meet (near-parallel cameras, a "
                                "forward-facing capture?); pass normalize='none'")
    c = np.linalg.solve(a, b)
    ahead = np.einsum("vi,vi->v", c - o, d) > 0
    if ahead.mean() < 0.5:
        raise ImportFormatError(f"{where}: the point nearest to the optical axes is behind "
                                f"{int((~ahead).sum())} of {len(d)} cameras: not an object-centric "
                                "capture; pass normalize='none'")
    return c


def hull_radius(alpha: np.ndarray, K: np.ndarray, c2w: np.ndarray, use_masks: bool,
                n: int = HULL_GRID) -> float:
    """Radius about the origin of the visual hull of (V,H,W) ``alpha`` > 0 (or of the frusta'
    intersection when ``use_masks`` is False) on an n^3 grid inside the nearest camera
    distance; 0 if the hull is empty."""
    d = np.linalg.norm(c2w[:, :3, 3], axis=-1)
    half = 0.98 * float(d.min())
    t = (np.arange(n) + 0.5) / n * 2 * half - half
    pts = np.stack(np.meshgrid(t, t, t, indexing="ij"), axis=-1).reshape(-1, 3)
    keep = np.ones(len(pts), bool)
    h, w = alpha.shape[1:]
    for v in range(len(c2w)):
        idx = np.flatnonzero(keep)
        w2c = np.linalg.inv(c2w[v])
        cam = pts[idx] @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (cam @ K[v].T)[:, :2] / z[:, None]
        ok = (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        if use_masks:
            j = np.clip(np.nan_to_num(uv[:, 0]), 0, w - 1).astype(np.int64)
            i = np.clip(np.nan_to_num(uv[:, 1]), 0, h - 1).astype(np.int64)
            ok &= alpha[v, i, j] > 0
        keep[idx[~ok]] = False
    if not keep.any():
        return 0.0
    return float(np.linalg.norm(pts[keep], axis=-1).max() + np.sqrt(3) * half / n)


# -------------------------------------------------------------------------------- importing


def load_object(
    root: str | Path,
    category: str,
    object_id: str,
    split: str | None = None,
    size: int | None = None,
    *,
    up: str = "+z",
    normalize: str = "rig",
    views: int | None = None,
) -> ImportedObject:
    """Import one capture (see the module docstring for the conventions and normalisation).

    Args:
        root: a capture folder or a folder of captures. category: a free label.
        object_id: the capture folder name. split: the split to give it (None: its own).
        size: resize every view to ``size x size`` (K rescaled); None keeps the source size.
        up: the source's up axis (``"+z"``, ``"+y"``, ... or ``"cameras"``).
        normalize: ``"rig"`` (axes centre, mean camera distance 1.3) or ``"none"``.
        views: keep this many frames, evenly spaced over all frames in order (None: all).

    Returns:
        ImportedObject with rgb (V,H,W,3) over black, alpha (V,H,W), K (V,3,3), c2w (V,4,4);
        ``meta["near"]``/``["far"]`` from the visual hull, in object units.
    """
    index = _index(root)
    if object_id not in index:
        raise ImportFormatError(f"no capture {object_id!r} under {root} (found: "
                                f"{', '.join(sorted(index))})")
    folder, own_split = index[object_id]
    frames, fmt, extras = _frames(folder)
    frames = [frames[k] for k in view_subset(len(frames), views, str(folder))]
    rgbs, alphas, Ks, c2w_gl, paths, methods = [], [], [], [], [], set()
    models, dists = set(), []
    for fr in frames:
        where = f"{fr['_file']} frame {fr['_index']}"
        path = _image_path(folder, str(fr["file_path"]), where)
        try:
            m = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ImportFormatError(f"{where}: transform_matrix is not numeric ({exc})") from None
        if m.shape == (3, 4):
            m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
        c2w_gl.append(check_rigid(m, f"{where} transform_matrix"))
        rgba, has_alpha = read_image(path)
        h, w = rgba.shape[:2]
        K, dist, model = _intrinsics(fr, w, h, where)
        models.add(model)
        dists.append(dist)
        mask = None
        if fr.get("mask_path"):
            mask = read_mask(_image_path(folder, str(fr["mask_path"]), where + " mask_path"))
            if mask.shape != (h, w):
                raise ImportFormatError(f"{where}: mask {fr['mask_path']} is {mask.shape[1]}x"
                                        f"{mask.shape[0]}, the image {w}x{h}")
        if any(dist.values()):
            rgba = undistort(rgba, K, dist)
            mask = None if mask is None else undistort(mask[..., None], K, dist)[..., 0]
        if mask is not None:
            a, method = mask, "mask_path"
        elif has_alpha:
            a, method = rgba[..., 3], "png alpha channel"
        else:
            a, method = np.full((h, w), 255, np.uint8), "none: opaque (no alpha channel or mask)"
        rgbs.append(over_black(rgba[..., :3], rgba[..., 3] if has_alpha else a, None))
        alphas.append(a)
        methods.add(method)
        Ks.append(K)
        paths.append(path)
    rgb, alpha = stack_views(rgbs, alphas, paths)
    K = np.stack(Ks)
    c2w_cv = np.stack(c2w_gl) @ GL_CV_FLIP  # conventions.opengl_to_opencv_c2w
    where = str(folder)
    rot, up_vec = up_rotation(up, c2w_cv)
    if normalize == "rig":
        centre = axes_centre(c2w_cv, where)
        scale = 1.3 / float(np.linalg.norm(c2w_cv[:, :3, 3] - centre, axis=-1).mean())
        how = ("rig: centre = least-squares point nearest to the optical axes; scale = 1.3 / "
               "mean camera distance")
    elif normalize == "none":
        centre, scale, how = np.zeros(3), 1.0, "none: source origin and units"
    else:
        raise ImportFormatError(f"normalize must be 'rig' or 'none', not {normalize!r}")
    c2w, m = to_object_frame(c2w_cv, rot, scale, centre)
    meta: dict[str, Any] = {
        "format": fmt,
        "source": where,
        "source_split": own_split,
        "views": [str(p.relative_to(folder)) for p in paths],
        "frame_split": [fr["_split"] for fr in frames],
        "camera_model": sorted(models),
        "distortion": dists[0] if len({tuple(d.values()) for d in dists}) == 1 else "per frame",
        "undistorted": any(any(d.values()) for d in dists),
        "frame": {"up": up, "up_vector_source": up_vec, "R_source_to_object": rot.tolist(),
                  "centre_source": centre.tolist(), "scale": scale, "normalize": how},
        "object_from_source": m.tolist(),
        "alpha": "; ".join(sorted(methods)),
        "background_source": "straight RGBA (composited over black here)",
        "source_extras": extras,
    }
    rgb, alpha, K, meta["resize"] = resize_views(rgb, alpha, K, size)
    use_masks = bool((alpha < 255).any())
    radius = hull_radius(alpha, K, c2w, use_masks)
    d = np.linalg.norm(c2w[:, :3, 3], axis=-1)
    meta["object_radius"] = radius
    meta["object_scale"] = (f"capture units x {scale:.6g}; visual-hull radius {radius:.4g} "
                            f"({'masks' if use_masks else 'frusta only, no masks'})")
    if radius == 0.0:
        meta["warnings"] = ["empty visual hull: the masks do not agree with the cameras"]
    return finish_object(object_id, split or own_split, rgb, alpha, K, c2w, meta, None,
                         (max(float(d.min()) - radius, 1e-3), float(d.max()) + radius),
                         "visual hull: distance_min - radius, distance_max + radius")


def _views_of(root: str | Path, category: str) -> Callable[[str, str], tuple]:
    """The :data:`renderers.importers.ViewLister` of a capture root: the transforms files and
    the first image's header."""
    index = _index(root)

    def per_object(object_id: str, _split: str) -> tuple:
        if object_id not in index:
            raise ImportFormatError(f"no capture {object_id!r} under {root}")
        folder = index[object_id][0]
        frames, _, _ = _frames(folder)
        first = frames[0]
        return len(frames), lambda: image_hw(_image_path(folder, str(first["file_path"]),
                                                         str(first["_file"]))), str(folder)

    return per_object


iter_objects, scan_layout = importer_functions(load_object, list_objects, _views_of,
                                               "capture root")
