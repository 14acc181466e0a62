"""DVR / NMR renders (``NMR_Dataset``, as read by pixelNeRF's DVRDataset) -> ``ImportedObject``.

Layout (``shared/reference/formats.md`` 7.2)::

    <root>/<synset>/<id>/image/0000.png ... 0023.png     (.png or .jpg)
    <root>/<synset>/<id>/mask/0000.png ...               optional
    <root>/<synset>/<id>/cameras.npz                     world_mat_i, camera_mat_i, scale_mat_i
    <root>/<synset>/softras_{train,val,test}.lst         one model id per line

``root`` is ``NMR_Dataset`` (the synset folder is the category's ShapeNet synset, an 8-digit id,
or a folder named like the category) or the synset folder itself. Splits come from the softras
lists (an id in several lists keeps the first of train, val, test; listed ids without a folder
are skipped with a warning); without lists, every object with a ``cameras.npz`` gets
:func:`renderers.shapenet.hash_split`.

Conventions.
* View ``i`` is the image whose stem is the integer ``i`` (sorted position if the stems are not
  numbers) and uses ``world_mat_i`` (world->camera, 3x4 or 4x4; ``inv(world_mat_inv_i)`` if only
  that is stored), ``scale_mat_i`` (object-centric -> world; identity if absent) and
  ``camera_mat_i``. The projection is ``p = camera_mat @ world_mat @ scale_mat @ X`` with image
  coordinates in [-1, 1], (-1, -1) the top-left image corner and +Z forward (OpenCV-like; DVR's
  FAQ says bottom-left, but pixelNeRF, whose conversion works on this data, treats y as down).
  Pixels: ``u = (x_n + 1) W / 2`` (the image edges at +-1), so
  ``K = [[W/2, 0, W/2], [0, H/2, H/2], [0, 0, 1]] @ camera_mat[:3, :3]``. A similarity
  ``world_mat @ scale_mat = [s R | b]`` becomes the rigid ``[R | b / s]`` (same pixels).
* World axes: DVR's world is y-up and, as the ONet/ShapeNet v1 meshes it was made for, faces +X
  [I], so ``p_obj = s * R_v1->v2 @ p_dvr`` (``renderers.conventions.V1_TO_PROJECT``; option
  ``frame=shapenet-v2`` keeps the axes, or another named frame). Objects lie in
  the unit cube (largest bbox side <= 1, bbox-centred [I]), not the project's unit diagonal; the
  cameras sit at ~2.73 with pixelNeRF's near/far 1.2/4.0, recorded in ``meta["camera"]``.
  ``world_scale="rig"`` scales the world so the mean camera distance is 1.3.
* Alpha: ``mask/`` when present, else a non-constant PNG alpha channel, else (approximate) 255
  where a pixel differs from the median border colour. Colour is made premultiplied over black:
  ``rgb - (1 - a) * bg`` with ``bg`` the median colour of the pixels where the alpha is 0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from renderers.conventions import V1_TO_PROJECT
from renderers.importers import (
    IMAGE_SUFFIXES,
    SPLITS,
    ImportedObject,
    ImportFormatError,
    WorldScale,
    finish_object,
    frame_rotation,
    image_hw,
    importer_functions,
    over_black,
    read_image,
    read_mask,
    resolve_scale,
    stack_views,
    to_object_frame,
    view_subset,
)
from renderers.shapenet import hash_split

log = logging.getLogger(__name__)

DVR_NEAR_FAR = (1.2, 4.0)  # pixelNeRF DVRDataset defaults
R_DVR_TO_OBJECT = V1_TO_PROJECT[:3, :3]  # ShapeNet v1 axes (+X front) -> project [I]
_SYNSET_RE = re.compile(r"^\d{8}$")


def category_dir(root: str | Path, category: str) -> Path:
    """The synset folder of ``category`` under ``root`` (or ``root`` itself if it is one)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImportFormatError(f"DVR root {root} does not exist; pass the NMR_Dataset folder")
    names = [category]
    if not _SYNSET_RE.match(category):
        try:
            from renderers.categories import resolve_category

            names.insert(0, resolve_category(category).synset)
        except KeyError:
            pass
    for name in names:
        if (root / name).is_dir():
            return root / name
    if list(root.glob("softras_*.lst")) or any((d / "cameras.npz").is_file()
                                              for d in root.iterdir() if d.is_dir()):
        return root
    seen = ", ".join(sorted(d.name for d in root.iterdir() if d.is_dir())) or "nothing"
    raise ImportFormatError(f"DVR root {root}: no folder {' or '.join(names)} for category "
                            f"{category!r} (found: {seen}); pass NMR_Dataset or the synset folder")


def _split_lists(cat_dir: Path) -> dict[str, list[str]]:
    lists = {}
    for s in SPLITS:
        f = cat_dir / f"softras_{s}.lst"
        if f.is_file():
            try:
                lists[s] = [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]
            except OSError as exc:
                raise ImportFormatError(f"cannot read split list {f}: {exc.strerror}") from None
    return lists


def list_objects(root: str | Path, category: str) -> list[tuple[str, str]]:
    """(object id, split) from the softras lists (hash split without lists), by split then
    list order."""
    cat_dir = category_dir(root, category)
    present = {d.name for d in cat_dir.iterdir() if (d / "cameras.npz").is_file()}
    lists = _split_lists(cat_dir)
    if not lists:
        return [(o, s) for s in SPLITS for o in sorted(present) if hash_split(o) == s]
    out, seen, missing = [], set(), []
    for s in SPLITS:
        for oid in lists.get(s, []):
            if oid in seen:
                continue
            seen.add(oid)
            if oid in present:
                out.append((oid, s))
            else:
                missing.append(oid)
    if missing:
        log.warning("DVR %s: %d listed object(s) have no folder with cameras.npz (e.g. %s)",
                    cat_dir, len(missing), missing[0])
    return out


def _stem_index(paths: list[Path]) -> dict[int, Path]:
    if all(p.stem.isdigit() for p in paths):
        return {int(p.stem): p for p in paths}
    return dict(enumerate(paths))


def _matrix(cams: dict[str, np.ndarray], key: str, npz: Path) -> np.ndarray:
    m = np.asarray(cams[key], dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise ImportFormatError(f"{npz}: {key} has shape {m.shape} (or non-finite values); "
                                "expected a 3x4 or 4x4 matrix")
    return m


def camera_from_npz(cams: dict[str, np.ndarray], i: int, width: int, height: int, npz: Path
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """View ``i`` -> (K (3,3) pixels, OpenCV c2w (4,4) in DVR's object-centric world, the
    normalised camera_mat (3,3))."""
    if f"world_mat_{i}" in cams:
        w2c = _matrix(cams, f"world_mat_{i}", npz)
    elif f"world_mat_inv_{i}" in cams:
        w2c = np.linalg.inv(_matrix(cams, f"world_mat_inv_{i}", npz))
    else:
        raise ImportFormatError(f"{npz}: no world_mat_{i} for view {i}")
    if f"camera_mat_{i}" not in cams:
        raise ImportFormatError(f"{npz}: no camera_mat_{i} for view {i}")
    cam = np.asarray(cams[f"camera_mat_{i}"], dtype=np.float64)
    if cam.shape == (4, 4):
        if np.abs(cam[:3, 3]).max() > 1e-6 or np.abs(cam[3] - [0, 0, 0, 1]).max() > 1e-6:
            raise ImportFormatError(f"{npz}: camera_mat_{i} is not a pinhole intrinsic (its "
                                    "last column/row must be 0 0 0 1)")
        cam = cam[:3, :3]
    if cam.shape != (3, 3) or abs(cam[2, 2]) < 1e-12 or np.abs(cam[2, :2]).max() > 1e-6:
        raise ImportFormatError(f"{npz}: camera_mat_{i} has shape {cam.shape} or a last row "
                                f"{cam[-1].tolist()}; expected [[fx, s, cx], [0, fy, cy], "
                                "[0, 0, 1]]")
    cam = cam / cam[2, 2]
    scale_mat = _matrix(cams, f"scale_mat_{i}", npz) if f"scale_mat_{i}" in cams else np.eye(4)
    p = w2c @ scale_mat
    a = p[:3, :3]
    det = float(np.linalg.det(a))
    if not det > 0:
        raise ImportFormatError(f"{npz}: world_mat_{i} @ scale_mat_{i} has determinant "
                                f"{det:.4g}; expected a rotation times a positive scale")
    s = det ** (1.0 / 3.0)
    r = a / s
    if np.abs(r @ r.T - np.eye(3)).max() > 1e-3:
        raise ImportFormatError(f"{npz}: world_mat_{i} @ scale_mat_{i} is not a similarity "
                                "(rotation x uniform scale + translation)")
    rigid = np.eye(4)
    rigid[:3, :3], rigid[:3, 3] = r, p[:3, 3] / s
    to_px = np.array([[width / 2, 0.0, width / 2], [0.0, height / 2, height / 2],
                      [0.0, 0.0, 1.0]])
    return to_px @ cam, np.linalg.inv(rigid), cam


def _alpha_and_colour(rgba: np.ndarray, has_alpha: bool, mask: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """(alpha (H,W), colour over black (H,W,3), method)."""
    rgb = rgba[..., :3]
    if has_alpha:
        a = mask if mask is not None else rgba[..., 3]
        return a, over_black(rgb, rgba[..., 3], None), (
            "mask/" if mask is not None else "png alpha channel")
    if mask is not None:
        a, method = mask, "mask/"
    else:
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        bg0 = np.median(border, axis=0)
        a = np.where((np.abs(rgb.astype(np.float32) - bg0) > 0).any(axis=-1), 255, 0)
        a = a.astype(np.uint8)
        method = "approximate: 255 where the pixel differs from the median border colour"
    bg = np.median(rgb[a == 0], axis=0) if (a == 0).any() else np.zeros(3)
    return a, over_black(rgb, a, bg), method


def _view_files(obj_dir: Path, cams: dict[str, np.ndarray], npz: Path
                ) -> tuple[list[int], dict[int, Path], dict[int, Path]]:
    """(camera indices, {i: image}, {i: mask} or {}), every camera with its image (and mask)."""
    img_dir, mask_dir = obj_dir / "image", obj_dir / "mask"
    if not img_dir.is_dir():
        raise ImportFormatError(f"DVR object {obj_dir}: no image/ folder")
    images = _stem_index(sorted(p for p in img_dir.iterdir()
                                if p.suffix.lower() in IMAGE_SUFFIXES))
    masks = _stem_index(sorted(mask_dir.glob("*.png"))) if mask_dir.is_dir() else {}
    views = sorted(int(m.group(1)) for k in cams if (m := re.match(r"^camera_mat_(\d+)$", k)))
    if not views:
        raise ImportFormatError(f"{npz}: no camera_mat_<i> entries")
    digits = len(next(iter(images.values())).stem) if images else 4
    for i in views:
        if i not in images:
            raise ImportFormatError(f"DVR object {obj_dir}: missing image image/{i:0{digits}d}"
                                    f".png (cameras.npz has camera {i}); re-extract it or leave "
                                    "the object out")
        if masks and i not in masks:
            raise ImportFormatError(f"DVR object {obj_dir}: missing mask "
                                    f"mask/{images[i].stem}.png")
    extra = sorted(set(images) - set(views))
    if extra:
        raise ImportFormatError(f"DVR object {obj_dir}: no camera_mat_{extra[0]} in "
                                f"cameras.npz for image/{images[extra[0]].name}")
    return views, images, masks


def _read_npz(npz: Path) -> dict[str, np.ndarray]:
    if not npz.is_file():
        raise ImportFormatError(f"DVR object {npz.parent}: no cameras.npz")
    try:
        with np.load(npz) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise ImportFormatError(f"cannot read {npz}: {exc}") from None


def load_object(
    root: str | Path,
    category: str,
    object_id: str,
    split: str | None = None,
    size: int | None = None,
    *,
    world_scale: WorldScale = 1.0,
    views: int | None = None,
    frame: str = "shapenet-v1",
) -> ImportedObject:
    """Import one DVR/NMR object folder (see the module docstring for the conventions).

    Args:
        root, category: as :func:`list_objects`. object_id: the model folder name.
        split: the split to give it (None: from the softras lists / hash).
        size: resize every view to ``size x size`` (K rescaled); None keeps the source size.
        world_scale: a factor on DVR units, or ``"rig"`` (mean camera distance -> 1.3).
        views: keep this many views, evenly spaced over the cameras (None: all).
        frame: the DVR world's axes, a :data:`renderers.conventions.WORLD_FRAMES` name.

    Returns:
        ImportedObject with rgb (V,H,W,3), alpha (V,H,W), K (V,3,3), c2w (V,4,4); no depth,
        parts or keypoints; ``meta["near"]``/``["far"]`` in object units.
    """
    cat_dir = category_dir(root, category)
    obj_dir = cat_dir / object_id
    npz = obj_dir / "cameras.npz"
    cams = _read_npz(npz)
    lists = _split_lists(cat_dir)
    listed = next((s for s in SPLITS if object_id in lists.get(s, ())), None)
    own_split = listed or hash_split(object_id)
    cam_ids, images, masks = _view_files(obj_dir, cams, npz)
    cam_ids = [cam_ids[k] for k in view_subset(len(cam_ids), views, str(obj_dir))]
    rgbs, alphas, methods = [], [], set()
    for i in cam_ids:
        rgba, has_alpha = read_image(images[i])
        mask = read_mask(masks[i]) if masks else None
        if mask is not None and mask.shape != rgba.shape[:2]:
            raise ImportFormatError(f"mask {masks[i]} is {mask.shape[1]}x{mask.shape[0]}, its "
                                    f"image {images[i]} {rgba.shape[1]}x{rgba.shape[0]}")
        a, colour, method = _alpha_and_colour(rgba, has_alpha, mask)
        rgbs.append(colour)
        alphas.append(a)
        methods.add(method)
    paths = [images[i] for i in cam_ids]
    rgb, alpha = stack_views(rgbs, alphas, paths)
    h, w = rgb.shape[1:3]
    cams_px = [camera_from_npz(cams, i, w, h, npz) for i in cam_ids]
    K = np.stack([c[0] for c in cams_px])
    c2w_src = np.stack([c[1] for c in cams_px])
    scale = resolve_scale(world_scale, c2w_src)
    rotation = frame_rotation(frame)
    c2w, m = to_object_frame(c2w_src, rotation, scale)
    has_scale_mat = any(f"scale_mat_{i}" in cams and not np.allclose(cams[f"scale_mat_{i}"],
                                                                     np.eye(4)) for i in cam_ids)
    split_file = cat_dir / f"softras_{own_split}.lst"
    meta: dict[str, Any] = {
        "format": "dvr",
        "source": str(obj_dir),
        "source_split": own_split,
        "split_source": str(split_file) if listed else "hash",
        "views": [p.name for p in paths],
        "camera_mat_normalised": cams_px[0][2].tolist(),
        "scale_mat": "non-identity (applied)" if has_scale_mat else "identity",
        "frame": {"source_axes": "DVR world: +Y up, +X front (ShapeNet v1 axes) [I]"
                  if frame == "shapenet-v1" else f"{frame} (the frame option)",
                  "name": frame, "R_source_to_object": rotation.tolist(), "scale": scale,
                  "centre_source": [0.0, 0.0, 0.0]},
        "object_from_source": m.tolist(),
        "object_scale": f"inside a cube of side ~{scale:.4g} (DVR: unit cube [I]); not the "
                        "project's unit bbox diagonal",
        "alpha": "; ".join(sorted(methods)),
    }
    return finish_object(object_id, split or own_split, rgb, alpha, K, c2w, meta, size,
                         (DVR_NEAR_FAR[0] * scale, DVR_NEAR_FAR[1] * scale),
                         "pixelNeRF DVRDataset (1.2/4.0)")


def _views_of(root: str | Path, category: str) -> Callable[[str, str], tuple]:
    """The :data:`renderers.importers.ViewLister` of a DVR root: each ``cameras.npz`` and the
    first image's header."""
    cat_dir = category_dir(root, category)

    def per_object(object_id: str, _split: str) -> tuple:
        obj_dir = cat_dir / object_id
        npz = obj_dir / "cameras.npz"
        cam_ids, images, _ = _view_files(obj_dir, _read_npz(npz), npz)
        return len(cam_ids), lambda: image_hw(images[cam_ids[0]]), str(obj_dir)

    return per_object


iter_objects, scan_layout = importer_functions(load_object, list_objects, _views_of, "DVR root")
