"""FeatureNeRF's own processed data (formats.md section 8) -> :class:`ImportedObject`.

Layout under ``root`` (the ``data/`` folder of the released code; ``root/data`` works too)::

    img/<synset>/<id>/*.png           RGBA, alpha = mask; frame order of the camera file
    camera/<synset>/<id>.json         {"camera_angle_x": rad, "frames": [{"file_path",
                                       "transform_matrix": 4x4}, ...]}
    part_2d_anno/<synset>/<id>.npz    labels (V, H, W) int, 0 = background / unlabelled
    part_3d_anno/<synset>/<id>.npz    pts (N, 3), labels (N,)
    kp_2d_anno/<synset>/<id>.npz      labels: object array of V (K_v, 3) int (x, y, semantic id)
    kp_3d_anno/<synset>/<id>.npz      labels (K, 4) (x, y, z, semantic id), pts (M, 3) candidates
    dino_feat_256/<synset>/<id>.npz   feats (V, 384, 32, 32) float32, zeroed outside the mask

Conversions (as the released loader and eval scripts read these files):

* colour: RGBA composited over black with the loader's float32 arithmetic and truncation;
* cameras: ``transform_matrix`` is an OpenCV camera-to-world
  (:func:`renderers.conventions.official_camera_to_c2w`), the world ShapeNet v1's axes (option
  ``frame``); ``K`` from ``camera_angle_x`` at the imported size, principal point at the centre;
* part labels ``L`` -> ``L - 1`` (0 = background / unlabelled -> -1), 2D and 3D;
* 2D keypoints: the labels are integer pixels (the eval indexes ``map[y, x]``): ``kp2d = (x +
  0.5, y + 0.5)`` (the pixel centre), visible (how the authors filtered visibility is unknown:
  listed = visible); keypoints a view does not list are invisible, at the projection of their
  3D position; slot = semantic id;
* ``kp_3d_anno`` ``pts`` -> ``kp_candidates`` (the official 3D keypoint candidates).

Label files are optional per object (the released loader keeps only annotated objects for
evaluation); depth does not exist in this layout.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from renderers.cameras import project
from renderers.categories import resolve_category
from renderers.conventions import (
    K_from_camera_angle_x,
    official_camera_to_c2w,
    world_frame,
    world_to_project_points,
)
from renderers.importers import (
    SPLITS,
    ImportedObject,
    ImportFormatError,
    area_downsample,
    composite_over_black,
    downsample_factor,
    nearest_downsample,
    read_png_rgba,
    slot_keypoints,
)

IMG, CAMERA = "img", "camera"
PART_2D, PART_3D, KP_2D, KP_3D = "part_2d_anno", "part_3d_anno", "kp_2d_anno", "kp_3d_anno"
FEATURES = "dino_feat_256"
SPLIT_DIRS = ("splits", "../assets/splits", "assets/splits")  # where a <synset>.json may sit
EXPORT_INFO = "fnerf_export.json"  # names written by cache/export_official.py (optional)
#: dropped by the released FeatureNeRFDataset ("remove invalid obj ids")
INVALID_IDS = frozenset({"f9c1d7748c15499c6f2bd1c4e9adb41"})
NEAR, FAR = 0.8, 1.8
DEFAULT_FRAME = "shapenet-v1"
_MAX_LABEL = 32767


def data_root(root: str | Path) -> Path:
    """The folder holding ``img/`` and ``camera/`` (``root`` or ``root/data``)."""
    root = Path(root)
    for cand in (root, root / "data"):
        if (cand / IMG).is_dir() and (cand / CAMERA).is_dir():
            return cand
    raise ImportFormatError(
        f"--root {root}: no img/ and camera/ folders there (nor in {root / 'data'}); pass the "
        "folder of FeatureNeRF's processed data (img/, camera/, part_2d_anno/, ...)")


def synset_of(category: str) -> str:
    return resolve_category(category).synset


def object_paths(root: Path, synset: str, oid: str, features: str = FEATURES) -> dict[str, Path]:
    """Every file of one object in the layout (they need not exist)."""
    return {
        IMG: root / IMG / synset / oid,
        CAMERA: root / CAMERA / synset / f"{oid}.json",
        **{k: root / k / synset / f"{oid}.npz" for k in (PART_2D, PART_3D, KP_2D, KP_3D)},
        "features": root / features / synset / f"{oid}.npz",
    }


def split_file_near(root: Path, synset: str) -> Path | None:
    """A ``<synset>.json`` split file shipped beside the data (``splits/``, an export's), or
    the released repo's ``assets/splits/`` next to ``data/``."""
    for d in SPLIT_DIRS:
        path = (root / d / f"{synset}.json").resolve()
        if path.is_file():
            return path
    return None


def read_split_json(path: Path) -> dict[str, str]:
    """{object id: split} of a FeatureNeRF split json (the first split listing an id wins)."""
    try:
        data = json.loads(Path(path).read_text())
        out: dict[str, str] = {}
        for split in SPLITS:
            for oid in data.get(split, []):
                out.setdefault(str(oid), split)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ImportFormatError(f"cannot read split file {path} ({exc}); expected a FeatureNeRF "
                                "<synset>.json with train/val/test id lists") from None
    return out


def list_objects(root: str | Path, category: str) -> list[tuple[str, str]]:
    """(object id, split) of every object folder under ``img/<synset>/`` (sorted ids).

    Splits come from a ``<synset>.json`` beside the data (:func:`split_file_near`), else from
    the project's deterministic hash split (``renderers.shapenet.hash_split``); the import
    stage's ``--split FILE`` overrides both."""
    from renderers.shapenet import hash_split

    r, synset = data_root(root), synset_of(category)
    folder = r / IMG / synset
    if not folder.is_dir():
        have = sorted(p.name for p in (r / IMG).iterdir() if p.is_dir())
        raise ImportFormatError(f"{folder}: no {category} ({synset}) objects in this data (it "
                                f"has {', '.join(have) or 'no synset folders'})")
    near = split_file_near(r, synset)
    known = read_split_json(near) if near else {}
    ids = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in INVALID_IDS)
    return [(oid, known.get(oid) or hash_split(oid)) for oid in ids]


# ------------------------------------------------------------------------------ file readers


def read_camera(path: Path) -> tuple[float, list[tuple[str, np.ndarray]]]:
    """``camera_angle_x`` and the frames ``[(file_path, (4, 4) float64 matrix)]`` of a camera
    file; a missing file or a wrong shape is an ImportFormatError naming it."""
    fix = "re-extract it from the processed data (or leave the object out with --on-error skip)"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ImportFormatError(f"{path}: camera file is missing; {fix}") from None
    except (OSError, ValueError) as exc:
        raise ImportFormatError(f"{path}: not a readable camera json ({exc}); {fix}") from None
    if not isinstance(data, dict) or "camera_angle_x" not in data or "frames" not in data:
        raise ImportFormatError(f"{path}: expected keys camera_angle_x and frames (a NeRF-style "
                                f"transforms json); {fix}")
    try:
        angle = float(data["camera_angle_x"])
    except (TypeError, ValueError):
        raise ImportFormatError(f"{path}: camera_angle_x {data['camera_angle_x']!r} is not a "
                                "number") from None
    if not 0.0 < angle < np.pi:
        raise ImportFormatError(f"{path}: camera_angle_x {angle} is not a field of view in "
                                "radians (0, pi)")
    frames = data["frames"]
    if not isinstance(frames, list) or not frames:
        raise ImportFormatError(f"{path}: frames must be a non-empty list; {fix}")
    out = []
    for v, frame in enumerate(frames):
        try:
            m = np.asarray(frame["transform_matrix"], dtype=np.float64)
            name = str(frame["file_path"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ImportFormatError(f"{path}: frames[{v}] needs file_path and a numeric "
                                    f"transform_matrix ({type(exc).__name__}: {exc})") from None
        if m.size != 16:
            raise ImportFormatError(
                f"{path}: frames[{v}].transform_matrix has shape {m.shape}; expected a 4x4 "
                f"camera-to-world matrix (16 numbers); {fix}")
        m = m.reshape(4, 4)
        if not np.isfinite(m).all() or not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
            raise ImportFormatError(f"{path}: frames[{v}].transform_matrix is not a rigid 4x4 "
                                    "(non-finite values or last row not [0, 0, 0, 1])")
        r = m[:3, :3]
        if np.abs(r.T @ r - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:
            raise ImportFormatError(f"{path}: frames[{v}].transform_matrix's rotation is not "
                                    "orthonormal and right-handed (scaled or mirrored camera)")
        out.append((name, m))
    return angle, out


def npz_header(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} of an .npz without reading its data (npy headers only)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = reader(f)
                out[info.filename[:-4]] = (tuple(shape), dtype)
    except FileNotFoundError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ImportFormatError(f"{path}: not a readable .npz ({exc}); re-extract it") from None
    return out


def load_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of an .npz; missing keys or an unreadable file name the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ImportFormatError(f"{path}: lacks {', '.join(missing)} (has "
                                        f"{', '.join(z.files) or 'nothing'}); see formats.md "
                                        "section 8 for the keys of each folder")
            return {k: z[k] for k in keys}
    except ImportFormatError:
        raise
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ImportFormatError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc}); "
                                "re-extract it") from None


#: what an object array of arrays needs from a pickle; anything else is refused
_PICKLE_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
                   "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar"), ("numpy", "ndarray"),
                   ("numpy", "dtype")}


def load_object_array(path: Path, key: str) -> np.ndarray:
    """``key`` of an .npz that holds an object array (``kp_2d_anno`` labels), unpickled with
    only numpy's array constructors allowed: a pickle naming any other callable is refused
    instead of run (``np.load(allow_pickle=True)`` would run it)."""
    import importlib
    import pickle

    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core")
                                         else "numpy.core.multiarray")

    class ArraysOnly(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) not in _PICKLE_ALLOWED:
                raise pickle.UnpicklingError(f"{module}.{name}")
            return getattr(np if module == "numpy" else multiarray, name)

    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, _, dtype = reader(f)
            if dtype.kind != "O":
                return load_npz(path, [key])[key]
            value = ArraysOnly(f, encoding="latin1").load()
    except KeyError:
        raise ImportFormatError(f"{path}: lacks {key}; see formats.md section 8 for the keys "
                                "of each folder") from None
    except pickle.UnpicklingError as exc:
        raise ImportFormatError(f"{path}: {key} is a pickle that calls {exc}, not an array of "
                                "arrays; refusing to load it (it could run code)") from None
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ImportFormatError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc}); "
                                "re-extract it") from None
    value = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    return value.reshape(shape) if value.size == int(np.prod(shape)) else value


def _integral(path: Path, key: str, value: np.ndarray, lo: int = 0) -> np.ndarray:
    """``value`` as int64 if every entry is a whole number >= ``lo`` (else an error)."""
    value = np.asarray(value)
    if value.dtype == object or not (np.issubdtype(value.dtype, np.integer)
                                     or np.issubdtype(value.dtype, np.floating)):
        raise ImportFormatError(f"{path}: {key} has dtype {value.dtype}; expected integers")
    as_int = np.round(value).astype(np.int64) if value.dtype.kind == "f" else value.astype(
        np.int64)
    if value.dtype.kind == "f" and not np.array_equal(as_int, value):
        raise ImportFormatError(f"{path}: {key} holds non-integer values; expected integer "
                                "labels / ids")
    if as_int.size and (as_int.min() < lo or as_int.max() > _MAX_LABEL):
        raise ImportFormatError(f"{path}: {key} has values outside [{lo}, {_MAX_LABEL}] "
                                f"(min {as_int.min()}, max {as_int.max()})")
    return as_int


def kp2d_views(path: Path, labels: np.ndarray, n_views: int) -> list[np.ndarray]:
    """``kp_2d_anno`` labels -> one (K_v, 3) int64 array (x, y, id) per view."""
    if labels.dtype == object:
        views = list(labels.reshape(-1))
    elif labels.ndim == 3 and labels.shape[-1] == 3:  # every view lists the same count
        views = list(labels)
    else:
        raise ImportFormatError(f"{path}: labels has shape {labels.shape} {labels.dtype}; "
                                "expected an object array of one (K_v, 3) (x, y, id) array per "
                                "view")
    if len(views) != n_views:
        raise ImportFormatError(f"{path}: labels lists {len(views)} views, the camera file "
                                f"{n_views}; they must match view for view")
    out = []
    for v, rows in enumerate(views):
        rows = np.asarray(rows)
        if rows.size == 0:
            out.append(np.zeros((0, 3), np.int64))
            continue
        if rows.ndim != 2 or rows.shape[1] != 3:
            raise ImportFormatError(f"{path}: view {v} has keypoints of shape {rows.shape}; "
                                    "expected (K, 3) = (x, y, semantic id)")
        out.append(_integral(path, f"labels[{v}]", rows))
    return out


def _features_folder(features: str) -> str:
    if "/" in features or features in ("", ".", ".."):
        raise ImportFormatError(f"features folder {features!r}: give a folder name such as "
                                f"{FEATURES} or diff_feat_512")
    return features


# --------------------------------------------------------------------------------- objects


def read_object(root: str | Path, category: str, object_id: str, split: str,
                size: int | None = None, frame: str = DEFAULT_FRAME) -> ImportedObject:
    """Read one object (see the module docstring for every conversion).

    Args:
        size: square size of the imported views (None: the 2D label resolution, else the PNGs').
            PNGs larger than that are area-downsampled by a whole factor (as the released
            loader does), labels at a larger resolution taken at the new pixel centres.
        frame: the data's world axes (:data:`renderers.conventions.WORLD_FRAMES`).
    """
    r, synset = data_root(root), synset_of(category)
    world_frame(frame)
    p = object_paths(r, synset, object_id)
    who = f"{category} object {object_id}"
    angle, frames = read_camera(p[CAMERA])
    n_views = len(frames)
    images = []
    for v, (name, _) in enumerate(frames):
        path = p[IMG] / name
        if not path.is_file():
            for alt in (p[IMG] / (name + ".png"), p[IMG] / Path(name).name):
                if alt.is_file():
                    path = alt
                    break
        if not path.is_file():
            raise ImportFormatError(
                f"{path}: image file is missing (frame {v} of {p[CAMERA]}); re-extract "
                f"{p[IMG]} from the processed data, or leave the object out with --on-error skip")
        images.append(read_png_rgba(path, f"frame {v}"))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ImportFormatError(f"{p[IMG]}: its images differ in size ({sorted(shapes)}); every "
                                "view of an object must have one size")
    pngs = sorted(p[IMG].glob("*.png"))
    if len(pngs) != n_views:
        raise ImportFormatError(f"{p[IMG]}: holds {len(pngs)} PNGs but {p[CAMERA]} lists "
                                f"{n_views} frames (the released loader asserts they match); "
                                "remove the extra files or re-extract the object")
    rgb, alpha = composite_over_black(np.stack(images))
    native = images[0].shape[0]
    part_labels = None
    if p[PART_2D].is_file():
        part_labels = _integral(p[PART_2D], "labels", load_npz(p[PART_2D], ["labels"])["labels"])
        if part_labels.ndim != 3 or len(part_labels) != n_views or \
                part_labels.shape[1] != part_labels.shape[2]:
            raise ImportFormatError(f"{p[PART_2D]}: labels has shape {part_labels.shape}; "
                                    f"expected ({n_views}, H, H), one square map per view")
    label_res = None if part_labels is None else int(part_labels.shape[1])
    target = int(size or label_res or native)
    factor = downsample_factor(who, images[0].shape[:2], target)
    rgb, alpha = area_downsample(rgb, factor), area_downsample(alpha, factor)
    K = np.repeat(K_from_camera_angle_x(angle, target, target)[None], n_views, 0)
    c2w = official_camera_to_c2w(np.stack([m for _, m in frames]), frame)
    obj = ImportedObject(object_id, split, rgb, alpha, K.astype(np.float32),
                         c2w.astype(np.float32),
                         meta={"source": "official", "frame": frame, "camera_angle_x": angle,
                               "native_size": native, "near": NEAR, "far": FAR,
                               "files": [k for k in (PART_2D, PART_3D, KP_2D, KP_3D)
                                         if p[k].is_file()]})
    if part_labels is not None:
        lf = downsample_factor(f"{p[PART_2D]}", part_labels.shape[1:], target)
        obj.part = (nearest_downsample(part_labels, lf) - 1).astype(np.int16)
    _read_keypoints(obj, p, frame, target, label_res or native)
    if p[PART_3D].is_file():
        arrays = load_npz(p[PART_3D], ["pts", "labels"])
        pts, labels = np.asarray(arrays["pts"]), arrays["labels"]
        if pts.ndim != 2 or pts.shape[1] != 3 or np.shape(labels) != (len(pts),):
            raise ImportFormatError(f"{p[PART_3D]}: pts {pts.shape} and labels "
                                    f"{np.shape(labels)}; expected (N, 3) and (N,)")
        obj.points = world_to_project_points(pts, frame).astype(np.float32)
        obj.point_part = (_integral(p[PART_3D], "labels", labels) - 1).astype(np.int16)
    info = _export_info(r).get(synset, {})
    for key in ("part_names", "keypoint_names"):
        if info.get(key):
            obj.meta[key] = list(info[key])
    return obj.validate()


def _read_keypoints(obj: ImportedObject, p: dict[str, Path], frame: str, target: int,
                    label_res: int) -> None:
    """kp3d / kp_id / kp_candidates from kp_3d_anno, kp2d / kp_visible from kp_2d_anno."""
    n_views = obj.n_views
    xyz3 = ids3 = None
    if p[KP_3D].is_file():
        arrays = load_npz(p[KP_3D], ["labels"] + (["pts"] if "pts" in _keys(p[KP_3D]) else []))
        labels = np.asarray(arrays["labels"])
        if labels.ndim != 2 or labels.shape[1] != 4:
            raise ImportFormatError(f"{p[KP_3D]}: labels has shape {labels.shape}; expected "
                                    "(K, 4) = (x, y, z, semantic id)")
        ids3 = _integral(p[KP_3D], "labels[:, 3]", labels[:, 3])
        xyz3 = world_to_project_points(labels[:, :3].astype(np.float64), frame)
        if "pts" in arrays:
            pts = np.asarray(arrays["pts"])
            if pts.ndim != 2 or pts.shape[1] != 3:
                raise ImportFormatError(f"{p[KP_3D]}: pts has shape {pts.shape}; expected (M, 3)")
            obj.kp_candidates = world_to_project_points(pts, frame).astype(np.float32)
    views2 = None
    if p[KP_2D].is_file():
        views2 = kp2d_views(p[KP_2D], load_object_array(p[KP_2D], "labels"), n_views)
    if ids3 is None and views2 is None:
        return
    all_ids = [ids3] if ids3 is not None else []
    all_ids += [rows[:, 2] for rows in views2 or []]
    n_slots = int(max((int(a.max()) + 1 for a in all_ids if a.size), default=0))
    kp3d, kp_id, dup = slot_keypoints(ids3 if ids3 is not None else np.zeros(0, np.int64),
                                      xyz3 if xyz3 is not None else np.zeros((0, 3)), n_slots)
    if views2 is not None:
        for rows in views2:
            kp_id[np.unique(rows[:, 2])] = np.unique(rows[:, 2])
    kp2d = np.zeros((n_views, n_slots, 2), np.float32)
    visible = np.zeros((n_views, n_slots), bool)
    has3 = np.zeros(n_slots, bool)
    if ids3 is not None:
        has3[np.unique(ids3)] = True
        for v in range(n_views):
            uv, _ = project(kp3d[has3].astype(np.float64), obj.K[v].astype(np.float64),
                            obj.c2w[v].astype(np.float64))
            kp2d[v, has3] = uv
    gap = []
    scale = target / label_res
    for v, rows in enumerate(views2 or []):
        if not len(rows):
            continue
        x, y, i = rows[:, 0], rows[:, 1], rows[:, 2]
        if x.max() >= label_res or y.max() >= label_res:
            raise ImportFormatError(
                f"{p[KP_2D]}: view {v} has a keypoint at pixel ({x.max()}, {y.max()}) outside "
                f"the {label_res}x{label_res} labels; are these labels at another resolution?")
        uv = (np.stack([x, y], axis=1) + 0.5) * scale
        keep = np.unique(i, return_index=True)[1]  # first row of each id
        if ids3 is not None:
            with_3d = has3[i[keep]]
            gap += list(np.linalg.norm(uv[keep][with_3d] - kp2d[v, i[keep][with_3d]], axis=1))
        kp2d[v, i[keep]] = uv[keep]
        visible[v, i[keep]] = True
    obj.kp3d, obj.kp_id = kp3d, kp_id
    if views2 is not None or ids3 is not None:
        obj.kp2d, obj.kp_visible = kp2d.astype(np.float32), visible
    if dup:
        obj.meta["kp3d_duplicate_ids_dropped"] = dup
    if gap:  # how far the 2D labels sit from the projected 3D keypoints (a frame check)
        obj.meta["kp2d_vs_projected_kp3d_px"] = {"median": float(np.median(gap)),
                                                 "max": float(np.max(gap))}


def _keys(path: Path) -> set[str]:
    try:
        return set(npz_header(path))
    except FileNotFoundError:
        return set()


_INFO_CACHE: dict[str, dict] = {}


def _export_info(root: Path) -> dict[str, Any]:
    """{synset: {part_names, keypoint_names}} from an export's ``fnerf_export.json``."""
    path = root / EXPORT_INFO
    key = str(path)
    if key not in _INFO_CACHE:
        try:
            _INFO_CACHE[key] = json.loads(path.read_text()).get("categories", {})
        except (OSError, ValueError, AttributeError):
            _INFO_CACHE[key] = {}
    return _INFO_CACHE[key]


def iter_objects(root: str | Path, category: str, split: str | None = None, *,
                 objects: Sequence[tuple[str, str]] | None = None, size: int | None = None,
                 frame: str = DEFAULT_FRAME) -> Iterator[ImportedObject]:
    """Yield the objects of ``root`` one at a time (``objects``: these (id, split), in order;
    otherwise every object of ``split``, None = all). See :func:`read_object`."""
    if objects is None:
        objects = [(o, s) for o, s in list_objects(root, category) if split in (None, s)]
    for oid, s in objects:
        yield read_object(root, category, oid, s, size=size, frame=frame)


def scan_layout(root: str | Path, category: str, objects: Sequence[tuple[str, str]],
                size: int | None = None, frame: str = DEFAULT_FRAME) -> dict[str, int]:
    """Store sizes from the files' headers (no image decoding): views, image size, keypoint
    slots (largest semantic id + 1), part points and keypoint candidates (largest count).

    Objects whose files are unreadable are left to the import itself (it names the problem);
    differing view counts or image sizes are an error naming two objects."""
    from PIL import Image

    r, synset = data_root(root), synset_of(category)
    world_frame(frame)
    views: dict[int, str] = {}
    sizes: dict[int, str] = {}
    slots = points = candidates = 0
    for oid, _ in objects:
        p = object_paths(r, synset, oid)
        try:
            _, frames = read_camera(p[CAMERA])
            views.setdefault(len(frames), oid)
            label_res = None
            if p[PART_2D].is_file():
                label_res = int(npz_header(p[PART_2D])["labels"][0][1])
            first = p[IMG] / frames[0][0]
            native = None
            if first.is_file():
                with Image.open(first) as im:
                    native = im.size[1]
            target = size or label_res or native
            if target:
                sizes.setdefault(int(target), oid)
            if p[KP_3D].is_file():
                labels = load_npz(p[KP_3D], ["labels"])["labels"]
                if labels.ndim == 2 and labels.shape[1] == 4 and len(labels):
                    slots = max(slots, int(np.max(labels[:, 3])) + 1)
                candidates = max(candidates, npz_header(p[KP_3D]).get("pts", ((0,),))[0][0])
            if p[KP_2D].is_file():
                for rows in kp2d_views(p[KP_2D], load_object_array(p[KP_2D], "labels"),
                                       len(frames)):
                    if len(rows):
                        slots = max(slots, int(rows[:, 2].max()) + 1)
            if p[PART_3D].is_file():
                points = max(points, npz_header(p[PART_3D])["pts"][0][0])
        except (ImportFormatError, FileNotFoundError, KeyError, IndexError):
            continue  # read_object reports it, for this object only
    if len(views) > 1:
        (a, oa), (b, ob) = sorted(views.items())[:2]
        raise ImportFormatError(f"objects {oa} and {ob} have {a} and {b} views; a render store "
                                "needs one view count (leave some objects out with --objects "
                                "or a --split file)")
    if len(sizes) > 1:
        (a, oa), (b, ob) = sorted(sizes.items())[:2]
        raise ImportFormatError(f"objects {oa} and {ob} come at {a} and {b} px; pass --size "
                                f"{min(a, b)} to import every object at one size")
    named = _export_info(r).get(synset, {}).get("keypoint_names") or []
    out = {"n_keypoint_slots": max(slots, len(named)), "n_points": points,
           "n_kp_candidates": candidates}
    if views:
        out["n_views"] = next(iter(views))
    if sizes:
        out["image_size"] = next(iter(sizes))
    return out


# ------------------------------------------------------------------------------- features


def read_features(root: str | Path, category: str, object_id: str, *,
                  features: str = FEATURES) -> np.ndarray:
    """(V, C, h, w) float32 ``feats`` of one object from ``<features>/<synset>/<id>.npz``."""
    r, synset = data_root(root), synset_of(category)
    path = object_paths(r, synset, object_id, _features_folder(features))["features"]
    if not path.is_file():
        raise ImportFormatError(f"{path}: no features file for {object_id} (the processed data "
                                "ships them for the train and test splits); re-extract "
                                f"{features}/{synset}/ or import without --features-out")
    feats = load_npz(path, ["feats"])["feats"]
    if feats.dtype == object:
        raise ImportFormatError(f"{path}: feats is a per-view dict (sparse target views); only "
                                "dense (V, C, h, w) features can be imported")
    if feats.ndim != 4 or not np.issubdtype(feats.dtype, np.floating):
        raise ImportFormatError(f"{path}: feats has shape {feats.shape} {feats.dtype}; expected "
                                "(V, C, h, w) float32, e.g. (50, 384, 32, 32) for dino_feat_256")
    return np.asarray(feats, dtype=np.float32)


def feature_identity(root: str | Path, category: str, dim: int, grid: tuple[int, int], *,
                     features: str = FEATURES) -> dict[str, Any]:
    """Teacher identity of the authors' cached features (a feature store's ``identity``)."""
    folder = _features_folder(features)
    dino = folder.startswith("dino")
    return {
        "name": "official-dino-cache" if dino else f"official-{folder}-cache",
        "source": "FeatureNeRF processed data",
        "root": str(data_root(root).resolve()),
        "folder": folder,
        "layout": f"{folder}/<synset>/<id>.npz feats (V,{dim},{grid[0]},{grid[1]}) float32",
        "model": "DINO ViT-S/8 (dino_deitsmall8_pretrain.pth), block 9 keys, 256 px input"
        if dino else "unknown (not in the released code)",
        "dim": int(dim),
        "grid": [int(grid[0]), int(grid[1])],
        "background": "zeroed outside the mask by the authors",
        "stored_dtype": "float16",
    }
