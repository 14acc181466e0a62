"""Write render (and feature) stores in FeatureNeRF's processed-data layout (formats.md sec. 8).

``export_official(render_store, out_dir, feature_store=None, objects=None)`` writes, per object,
exactly the files the released ``FeatureNeRFDataset`` and ``eval/*.py`` read (see
:mod:`renderers.importers.official` for the layout), plus ``splits/<synset>.json`` (the
exported objects' train/val/test lists, ``valid_flags_for_test`` and evaluation pairs: the
store's official pairs when it was imported with an official split file, else seeded ones)
and ``fnerf_export.json`` (where the data came from, part/keypoint names, what was not
exported). ``renderers.importers.official`` reads the result back.

What the layout cannot hold (so it does not round-trip): depth; float16 features are written
as float32 (exact); colour is stored un-premultiplied in an RGBA PNG, chosen so that the
released loader's ``uint8(r * a / 255)`` gives back the stored colour wherever that colour is
reachable (``rgb_inexact_pixels`` counts the others: colour under alpha 0, or brighter than its
alpha allows); 2D keypoints become integer pixels (``floor(kp2d)``) and only visible ones are
listed; the principal point must be the image centre and ``fx == fy`` for every view of an
object; part / point labels ``l`` are written as ``l + 1`` (0 = background / unlabelled).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.atomic import atomic_write_bytes
from cache.render_store import CONTENT_ARRAYS, RenderStore
from cache.zarr_io import StoreError
from renderers.conventions import (
    camera_angle_x_from_K,
    project_c2w_to_official,
    project_to_world_points,
    world_frame,
)
from renderers.importers import composite_over_black
from renderers.importers.official import (
    CAMERA,
    EXPORT_INFO,
    FEATURES,
    IMG,
    KP_2D,
    KP_3D,
    PART_2D,
    PART_3D,
)

EXPORT_VERSION = 1


class ExportError(StoreError):
    """A store that the official layout cannot represent; names the object and the reason."""


@dataclass
class ExportResult:
    """What :func:`export_official` wrote."""

    out_dir: str
    objects: list[str]
    files: int = 0
    rgb_inexact_pixels: int = 0
    annotations: dict[str, int] = field(default_factory=dict)  # objects written per file kind
    not_exported: list[str] = field(default_factory=list)
    pairs: str = ""


_LUT: np.ndarray | None = None


def unpremultiply_lut() -> tuple[np.ndarray, np.ndarray]:
    """(256, 256) uint8 tables indexed [alpha, colour]: the PNG colour to store, and whether
    the released loader's compositing gives the colour back exactly."""
    global _LUT
    if _LUT is None:
        grid = np.zeros((256, 256, 4), np.uint8)  # [alpha, stored value]
        grid[..., :3] = np.arange(256, dtype=np.uint8)[None, :, None]
        grid[..., 3] = np.arange(256, dtype=np.uint8)[:, None]
        back = composite_over_black(grid)[0][..., 0].astype(np.int64)  # (alpha, stored)
        lut = np.zeros((256, 256), np.uint8)
        for a in range(256):
            # the loader's result is nondecreasing in the stored value: first exact hit, else
            # the closest
            err = np.abs(back[a][None, :] - np.arange(256)[:, None])  # (colour, stored)
            lut[a] = err.argmin(axis=1)
        exact = back[np.arange(256)[:, None], lut] == np.arange(256)[None, :]
        _LUT = np.stack([lut, exact.astype(np.uint8)])
    return _LUT[0], _LUT[1].astype(bool)


def rgba_for(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, int]:
    """(..., 3) colour over black + (...) alpha -> ((..., 4) RGBA to store, inexact pixels)."""
    lut, exact = unpremultiply_lut()
    a = alpha[..., None].astype(np.intp)
    stored = lut[a, rgb]
    bad = int((~exact[a, rgb]).any(axis=-1).sum())
    return np.concatenate([stored, alpha[..., None]], axis=-1), bad


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def camera_json(who: str, K: np.ndarray, c2w: np.ndarray, size: int, frame: str) -> dict:
    """The camera file of one object: one ``camera_angle_x`` and per-view matrices."""
    K = np.asarray(K, np.float64)
    fx, fy, cx, cy, skew = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 0, 1]
    problems = []
    if not np.allclose(fx, fy, rtol=1e-6, atol=0):
        problems.append(f"fx != fy (up to {np.abs(fx - fy).max():.3g} px)")
    if not (np.allclose(cx, size / 2, atol=1e-4) and np.allclose(cy, size / 2, atol=1e-4)):
        problems.append(f"principal point {K[0, :2, 2].tolist()} is not the image centre")
    if np.abs(skew).max() > 1e-6:
        problems.append("skewed pixels")
    if not np.allclose(fx, fx[0], rtol=1e-6, atol=0):
        problems.append("the focal length differs between views")
    if problems:
        raise ExportError(f"{who}: the official layout stores one camera_angle_x per object "
                          f"and a centred principal point; this object has {'; '.join(problems)}")
    angle = camera_angle_x_from_K(K[0], size)
    world = project_c2w_to_official(np.asarray(c2w, np.float64), frame).astype(np.float32)
    return {"camera_angle_x": angle,
            "frames": [{"file_path": f"{v:03d}.png",
                        "transform_matrix": [[float(x) for x in row] for row in world[v]]}
                       for v in range(len(world))]}


def kp2d_labels(kp2d: np.ndarray, visible: np.ndarray, kp_id: np.ndarray, size: int
                ) -> np.ndarray:
    """Object array of V (K_v, 3) int64 (x, y, id): the pixel of each visible keypoint."""
    out = np.empty(len(kp2d), dtype=object)
    for v in range(len(kp2d)):
        keep = visible[v] & (kp_id >= 0)
        xy = np.clip(np.floor(kp2d[v, keep]).astype(np.int64), 0, size - 1)
        out[v] = np.concatenate([xy, kp_id[keep].astype(np.int64)[:, None]], axis=1)
    return out


def _pairs(store: RenderStore, chosen: list[int], n_pairs: int, seed: int
           ) -> tuple[dict[str, list], str]:
    """Evaluation pairs over the exported test objects, as the official json spells them."""
    ids = [store.object_ids[i] for i in chosen]
    test = [k for k, i in enumerate(chosen) if store.splits[i] == "test"]
    split_file = (store.attrs.get("config") or {}).get("split_file")
    if split_file and Path(split_file).is_file():
        data = json.loads(Path(split_file).read_text())
        keep = {ids[k] for k in test}
        inst = [p for p in data.get("cross_inst_pairs", []) if {p["src"], p["trg"]} <= keep]
        view = [p for p in data.get("cross_view_pairs", []) if p["model_id"] in keep]
        if inst or view:
            return {"cross_inst_pairs": inst[:n_pairs], "cross_view_pairs": view[:n_pairs]}, \
                f"official pairs of {split_file} among the exported objects"
    if len(test) < 2:
        return {"cross_inst_pairs": [], "cross_view_pairs": []}, \
            "no pairs (fewer than 2 test objects)"
    from pipeline.evaluation.pairs import make_pairs

    pairs = make_pairs(ids, test, store.n_views, n_pairs, seed)
    return {"cross_inst_pairs": [{"src": ids[p.src], "trg": ids[p.trg], "view": p.view}
                                 for p in pairs.cross_instance],
            "cross_view_pairs": [{"model_id": ids[p.obj], "src_view": p.src_view,
                                  "trg_view": p.trg_view} for p in pairs.cross_view]}, \
        f"{len(pairs.cross_instance)} seeded pairs (seed {seed})"


def export_official(render_store: str | Path, out_dir: str | Path,
                    feature_store: str | Path | None = None,
                    objects: list[str] | None = None, *, frame: str = "shapenet-v1",
                    features_folder: str = FEATURES, n_pairs: int = 1000,
                    seed: int = 0) -> ExportResult:
    """Write the objects of ``render_store`` (default: every done one) to ``out_dir``.

    Args:
        feature_store: optional feature store of the same renders; ``feat`` (V, h, w, C) is
            written as ``<features_folder>/<synset>/<id>.npz`` ``feats`` (V, C, h, w) float32.
        objects: object ids to export (default all done objects).
        frame: world axes to write (the inverse of the importer's ``frame`` option).

    Every array is read through its digest first; an object the layout cannot hold (see the
    module docstring) is an ExportError naming it.
    """
    from cache.feature_store import FeatureStore

    world_frame(frame)
    store = RenderStore(render_store)
    feats = FeatureStore(feature_store, renders=store) if feature_store else None
    valid = store.valid_indices()
    if objects:
        where = {o: i for i, o in enumerate(store.object_ids)}
        unknown = [o for o in objects if o not in where]
        if unknown:
            raise ExportError(f"--objects: {', '.join(unknown[:5])} not in {render_store} (it "
                              f"has {', '.join(store.object_ids[:3])}, ...)")
        not_done = [o for o in objects if where[o] not in valid]
        if not_done:
            raise ExportError(f"--objects: {', '.join(not_done[:5])} are not done in "
                              f"{render_store}; re-run its stage first")
        chosen = [where[o] for o in objects]
    else:
        chosen = valid
    if not chosen:
        raise ExportError(f"{render_store}: no done objects to export")
    if feats is not None:
        feats.verify(chosen)
    out = Path(out_dir)
    synset = str(store.attrs.get("synset"))
    size = store.image_size
    g = store.group
    counts = {"point_count": g["point_count"] if "point_count" in g else None,
              "kp_candidates": g["kp_candidates"] if "kp_candidates" in g else None,
              "kp_candidate_count": g["kp_candidate_count"] if "kp_candidate_count" in g
              else None}
    annotated = store.attrs.get("annotated_objects")
    result = ExportResult(str(out), [store.object_ids[i] for i in chosen],
                          annotations={k: 0 for k in (PART_2D, PART_3D, KP_2D, KP_3D, "feats")})
    present = store.attrs.get("annotations_present") or {}
    # arrays the layout has no place for (depth only where the store has real depth)
    result.not_exported = (["depth"] if present.get("depth", True) else []) + ["seed"]
    for i in chosen:
        oid = store.object_ids[i]
        who = f"{render_store}: object {oid}"
        a = store.read_object(i, CONTENT_ARRAYS)
        cam = camera_json(who, a["K"], a["c2w"], size, frame)
        img_dir = out / IMG / synset / oid
        for v in range(store.n_views):
            rgba, bad = rgba_for(a["rgb"][v], a["alpha"][v])
            result.rgb_inexact_pixels += bad
            atomic_write_bytes(img_dir / f"{v:03d}.png", _png(rgba))
        names = {f"{v:03d}.png" for v in range(store.n_views)}
        for old in img_dir.glob("*.png"):  # a previous export's extra views
            if old.name not in names:
                old.unlink()
        atomic_write_bytes(out / CAMERA / synset / f"{oid}.json",
                           (json.dumps(cam) + "\n").encode())
        result.files += store.n_views + 1
        if (a["part"] >= 0).any():
            atomic_write_bytes(out / PART_2D / synset / f"{oid}.npz",
                               _npz(labels=(a["part"].astype(np.int64) + 1)))
            result.annotations[PART_2D] += 1
        n_pts = int(counts["point_count"][i]) if counts["point_count"] is not None \
            else len(a["points"])
        has_points = (i in annotated["points"]) if annotated else n_pts > 0
        pts = project_to_world_points(a["points"][:n_pts], frame).astype(np.float32)
        if has_points and n_pts:
            atomic_write_bytes(out / PART_3D / synset / f"{oid}.npz", _npz(
                pts=pts, labels=a["point_part"][:n_pts].astype(np.int64) + 1))
            result.annotations[PART_3D] += 1
        if (a["kp_id"] >= 0).any():
            keep = a["kp_id"] >= 0
            xyz = project_to_world_points(a["kp3d"][keep], frame)
            labels3 = np.concatenate([xyz, a["kp_id"][keep][:, None]], axis=1).astype(
                np.float32)
            if counts["kp_candidates"] is not None:
                m = int(counts["kp_candidate_count"][i])
                cand = project_to_world_points(
                    store.read("kp_candidates", i)[:m], frame).astype(np.float32)
            else:
                cand = pts
            atomic_write_bytes(out / KP_3D / synset / f"{oid}.npz",
                               _npz(labels=labels3, pts=cand))
            atomic_write_bytes(out / KP_2D / synset / f"{oid}.npz", _npz(
                labels=kp2d_labels(a["kp2d"], a["kp_visible"], a["kp_id"], size)))
            result.annotations[KP_3D] += 1
            result.annotations[KP_2D] += 1
        if feats is not None:
            f = feats.read(i).astype(np.float32).transpose(0, 3, 1, 2)
            atomic_write_bytes(out / features_folder / synset / f"{oid}.npz",
                               _npz(feats=np.ascontiguousarray(f)))
            result.annotations["feats"] += 1
    split = {s: [store.object_ids[i] for i in chosen if store.splits[i] == s]
             for s in ("train", "val", "test")}
    flags = store.attrs.get("valid_for_test") or {}
    split["valid_flags_for_test"] = {o: bool(flags.get(o, True)) for o in split["test"]}
    pairs, result.pairs = _pairs(store, chosen, n_pairs, seed)
    split.update(pairs)
    atomic_write_bytes(out / "splits" / f"{synset}.json", (json.dumps(split) + "\n").encode())
    info: dict[str, Any] = {
        "format": "FeatureNeRF processed data, written by fnerf-pipeline export",
        "version": EXPORT_VERSION, "render_store": str(render_store),
        "render_fingerprint": store.fingerprint, "feature_store": str(feature_store or ""),
        "feature_identity": feats.attrs.get("identity") if feats else None,
        "frame": frame, "features_folder": features_folder if feats else None,
        "categories": {synset: {"part_names": list(store.attrs.get("part_names", [])),
                                "keypoint_names": list(store.attrs.get("keypoint_names", []))}},
        "not_exported": result.not_exported, "rgb_inexact_pixels": result.rgb_inexact_pixels,
        "pairs": result.pairs, "objects": result.objects,
    }
    atomic_write_bytes(out / EXPORT_INFO, (json.dumps(info, indent=1) + "\n").encode())
    result.files += sum(result.annotations.values()) + 2
    return result
