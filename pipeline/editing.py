"""Part texture swap through the feature field (the paper's editing demo,
official ``src/render/nerf_editing.py``), from one input image per object.

1. Render object A at ``view`` from its image at ``view``: colour, opacity, expected depth.
   Foreground = rendered opacity >= ``opacity_threshold``; surface points = ray origin + unit
   direction * expected (opacity-normalised) distance.
2. Segment A: query the internal feature at A's surface points (view direction from A's input
   camera) and give each pixel the label of its nearest labelled reference point in feature
   space (cosine NN): B's ``points`` / ``point_part`` queried from B's image
   (``label_source="b"``: a cross-instance transfer) or A's own (``"a"``).
3. Swap: each pixel of ``part`` takes the colour of its nearest point (feature space) among B's
   points of the same part, the colour being B's radiance field at that point (queried from
   B's image, view direction from B's input camera).

Only pixels inside the part mask change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.render_store import RenderStore
from pipeline.evaluation.features import NerfRenderer, scaled_intrinsics
from pipeline.evaluation.metrics import nearest_neighbours, transfer_labels
from pipeline.reports.editing import write_swap_report


def surface_points(
    renderer: NerfRenderer, obj: int, view: int, depth: np.ndarray
) -> np.ndarray:
    """(h, w) expected distances along unit rays of ``view`` -> (h, w, 3) object-frame points."""
    from train.rays import pixel_rays

    h, w = depth.shape
    K = scaled_intrinsics(renderer.store.read("K", (obj, view)), renderer.image_size, h)
    c2w = renderer.store.read("c2w", (obj, view))
    ys, xs = np.mgrid[0:h, 0:w]
    uv = torch.from_numpy(np.stack([xs, ys], -1).reshape(1, -1, 2) + 0.5).float()
    origins, dirs = pixel_rays(torch.from_numpy(K).float()[None],
                               torch.from_numpy(c2w).float()[None], uv)
    pts = origins[0] + dirs[0] * torch.from_numpy(depth.reshape(-1, 1)).float()
    return pts.numpy().reshape(h, w, 3)


def swap_texture_with(
    renderer: NerfRenderer,
    obj_a: int,
    obj_b: int,
    part: int,
    view: int,
    label_source: str = "b",
    opacity_threshold: float = 0.5,
) -> dict[str, Any]:
    """Part texture swap with an already loaded model (see module doc).

    Args:
        renderer: the student model over the render store (``eval_size`` = output size).
        obj_a, obj_b: store indices of the edited object and the texture donor.
        part: part label to swap. view: the view of both input images and of the output.
        label_source: "b" (B's labelled points) or "a" (A's own labelled points).

    Returns:
        ``before`` / ``after`` (h, w, 3) uint8 renders of A, ``mask`` (h, w) bool (the
        swapped pixels), ``labels`` (h, w) int (-1 = background), ``input_a`` / ``input_b``
        (H, W, 3) uint8 input images, ``part`` and ``n_pixels``.
    """
    store = renderer.store
    if label_source not in ("a", "b"):
        raise ValueError(f"label_source must be 'a' or 'b', got {label_source!r}")
    b_pts, b_lab = store.read("points", obj_b), store.read("point_part", obj_b)
    donor = b_lab == part
    if not donor.any():
        raise ValueError(f"object {store.object_ids[obj_b]} has no surface points of part {part}")
    r = renderer.render(obj_a, view, view, full=True)
    before = np.clip(r["rgb"], 0, 1)
    fg = r["opacity"] >= opacity_threshold
    labels = np.full(fg.shape, -1, np.int64)
    after = before.copy()
    mask = np.zeros(fg.shape, bool)
    if fg.any():
        pts = surface_points(renderer, obj_a, view, r["depth"])[fg]
        feat_a = renderer.query(obj_a, view, pts)["internal"]
        ref_obj = obj_b if label_source == "b" else obj_a
        ref_pts, ref_lab = store.read("points", ref_obj), store.read("point_part", ref_obj)
        ok = ref_lab >= 0
        ref_feat = renderer.query(ref_obj, view, ref_pts)["internal"]
        labels[fg] = transfer_labels(ref_feat[ok], ref_lab[ok], feat_a)
        mask = labels == part
        if mask.any():
            qb = renderer.query(obj_b, view, b_pts)
            sel = mask[fg]
            nn = nearest_neighbours(feat_a[sel], qb["internal"][donor])
            after[mask] = qb["rgb"][donor][nn]
    return {"before": _to_uint8(before), "after": _to_uint8(after), "mask": mask,
            "labels": labels, "input_a": store.read("rgb", (obj_a, view)),
            "input_b": store.read("rgb", (obj_b, view)), "part": part,
            "n_pixels": int(mask.sum())}


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _index(store: RenderStore, obj: int | str) -> int:
    if isinstance(obj, str) and not obj.isdigit():
        if obj not in store.object_ids:
            raise ValueError(f"{store.path}: no object {obj!r}")
        return store.object_ids.index(obj)
    return int(obj)


def _part_label(store: RenderStore, part: int | str) -> int:
    if isinstance(part, str) and not part.lstrip("-").isdigit():
        names = list(store.attrs.get("part_names", []))
        if part not in names:
            raise ValueError(f"unknown part {part!r}; parts: {names}")
        return names.index(part)
    return int(part)


def swap_texture(
    checkpoint: str | Path,
    renders: str | Path,
    obj_a: int | str,
    obj_b: int | str,
    part: int | str,
    view: int,
    label_source: str = "b",
    size: int | None = None,
    device: str = "auto",
    n_coarse: int | None = None,
    n_importance: int | None = None,
    n_depth: int | None = None,
    opacity_threshold: float = 0.5,
    report_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Swap the texture of ``part`` of object A with B's (see module doc).

    Args:
        checkpoint: ``.ckpt`` file or run dir (newest checkpoint).
        renders: render store path. obj_a, obj_b: store index or object id.
        part: part label or name (``part_names`` attr). view: input and output view.
        size: output resolution (None = image size). device: "auto" | "cpu" | "cuda[:i]".
        n_*: sample count overrides (None = the checkpoint's render settings).
        report_dir: if given, write ``index.html`` with the images there.

    Returns:
        The dict of :func:`swap_texture_with`.
    """
    store = RenderStore(renders)
    renderer = NerfRenderer.from_checkpoint(
        checkpoint, store, eval_size=size, device=device, fg_only=False,
        n_coarse=n_coarse, n_importance=n_importance, n_depth=n_depth)
    a, b, lab = _index(store, obj_a), _index(store, obj_b), _part_label(store, part)
    result = swap_texture_with(renderer, a, b, lab, view, label_source, opacity_threshold)
    if report_dir is not None:
        write_swap_report(result, Path(report_dir) / "index.html",
                          f"{store.object_ids[a]} <- {store.object_ids[b]}, part {part}, "
                          f"view {view}", n_labels=len(store.attrs.get("part_names", [])))
    return result
