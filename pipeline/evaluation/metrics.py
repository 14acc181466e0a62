"""Evaluation metrics (pure numpy), following the official FeatureNeRF eval scripts.

* Matching: features are L2-normalised (eps 1e-6) and matched by argmax of cosine similarity
  (nearest neighbour, no mutual check, ties -> lowest index).
* 2D keypoints: a source keypoint takes the feature of its pixel; its nearest neighbour among the
  target's foreground pixels is the prediction. Keypoints are quantised to their pixel (the
  official annotations are integer pixels), so the error is the distance between pixel centres;
  a perfect match has error 0. A keypoint counts only if its semantic id exists in both objects
  and it is visible in both views. PCK uses strict ``error < threshold``. A visible keypoint on a
  silhouette edge (e.g. a seat corner) can fall on a background pixel centre; it then takes the
  feature of the nearest source foreground pixel (our choice: the official annotations are
  object pixels by construction).
* 2D parts: every target foreground pixel takes the label of its nearest source foreground
  pixel; IoU over target foreground pixels for each label present in both GT maps; the pair
  score is the mean of those IoUs.
* 3D: the same on point sets (keypoints against the target's surface samples, thresholds in
  object units; parts over labelled surface samples).
* Aggregation: per pair, then the mean over pairs that have a score (NaN = nothing to score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PCK_2D_THRESHOLDS: tuple[float, ...] = (2.5, 5.0, 7.5, 10.0)  # pixels at 128x128
PCK_3D_THRESHOLDS: tuple[float, ...] = (0.025, 0.05, 0.075, 0.1)  # object units


def l2_normalize(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(..., C) -> (..., C) float32 unit vectors (``x / max(|x|, eps)``, as F.normalize)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def nearest_neighbours(query: np.ndarray, keys: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Cosine nearest neighbour of each query row among the key rows.

    Args:
        query: (M, C). keys: (N, C), N >= 1. chunk: query rows per matrix product.

    Returns:
        (M,) int64 indices into ``keys``.
    """
    if len(keys) == 0:
        raise ValueError("nearest_neighbours: no keys to match against")
    q, k = l2_normalize(query), l2_normalize(keys)
    out = np.empty(len(q), np.int64)
    for s in range(0, len(q), chunk):
        out[s : s + chunk] = np.argmax(q[s : s + chunk] @ k.T, axis=1)
    return out


def foreground(part: np.ndarray | None, alpha: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool: ``part >= 0`` when the map has labels (official), else ``alpha > 0``."""
    if part is not None and (part >= 0).any():
        return part >= 0
    if alpha is None:
        raise ValueError("foreground: no part labels and no alpha")
    return np.asarray(alpha) > 0


def keypoint_pixels(uv: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(P, 2) continuous ``(x, y)`` (pixel centres at +0.5) -> (P, 2) int ``(col, row)``."""
    h, w = hw
    ij = np.floor(np.asarray(uv, np.float64)).astype(np.int64)
    return np.stack([np.clip(ij[:, 0], 0, w - 1), np.clip(ij[:, 1], 0, h - 1)], axis=1)


def counted_keypoints(
    src_id: np.ndarray,
    trg_id: np.ndarray,
    src_visible: np.ndarray | None = None,
    trg_visible: np.ndarray | None = None,
) -> np.ndarray:
    """(P,) bool: slot present in both objects (``kp_id >= 0``) and visible in both views
    (visibility ignored when None, as for 3D)."""
    ok = (np.asarray(src_id) >= 0) & (np.asarray(trg_id) >= 0)
    if src_visible is not None:
        ok &= np.asarray(src_visible, bool)
    if trg_visible is not None:
        ok &= np.asarray(trg_visible, bool)
    return ok


def pck(errors: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(P,) errors (NaN = not counted) -> (T,) fraction with ``error < t``; NaN if none counted."""
    e = np.asarray(errors, np.float64)
    e = e[~np.isnan(e)]
    if len(e) == 0:
        return np.full(len(thresholds), np.nan)
    return np.array([(e < t).mean() for t in thresholds])


def snap_to_foreground(px: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """(P, 2) int ``(col, row)`` pixels -> the nearest ``fg`` pixel for those outside ``fg``.

    Args:
        px: (P, 2) pixel indices. fg: (H, W) bool (unchanged pixels if it is empty).
    """
    px = np.array(px, np.int64)
    out = ~fg[px[:, 1], px[:, 0]]
    if out.any() and fg.any():
        rows, cols = np.nonzero(fg)
        d = (cols[None] - px[out, :1]) ** 2 + (rows[None] - px[out, 1:]) ** 2
        k = np.argmin(d, axis=1)
        px[out] = np.stack([cols[k], rows[k]], axis=1)
    return px


@dataclass
class KeypointTransfer:
    """One pair's keypoint transfer.

    Attributes:
        pred: (P, 2) predicted pixel centres (2D) or (P, 3) points (3D); NaN where not counted.
        errors: (P,) distance to the target GT, NaN where not counted.
        pck: (T,) per threshold (NaN if no keypoint counted).
    """

    pred: np.ndarray
    errors: np.ndarray
    pck: np.ndarray

    @property
    def n_counted(self) -> int:
        return int((~np.isnan(self.errors)).sum())


def keypoint_transfer_2d(
    src_map: np.ndarray,
    trg_map: np.ndarray,
    src_uv: np.ndarray,
    trg_uv: np.ndarray,
    counted: np.ndarray,
    trg_fg: np.ndarray,
    thresholds: Sequence[float] = PCK_2D_THRESHOLDS,
    src_fg: np.ndarray | None = None,
) -> KeypointTransfer:
    """2D keypoint transfer of one pair.

    Args:
        src_map, trg_map: (H, W, C) feature maps at image resolution.
        src_uv, trg_uv: (P, 2) continuous GT keypoints ``(x, y)`` in each view.
        counted: (P,) bool, see :func:`counted_keypoints`.
        trg_fg: (H, W) bool target foreground (the NN candidates).
        thresholds: PCK thresholds in pixels.
        src_fg: (H, W) bool source foreground: source keypoint pixels outside it read the
            nearest foreground pixel (see module doc); None = the keypoint's own pixel.
    """
    p = len(src_uv)
    pred = np.full((p, 2), np.nan)
    errors = np.full(p, np.nan)
    idx = np.flatnonzero(counted)
    if len(idx) and trg_fg.any():
        hw = src_map.shape[:2]
        sp = keypoint_pixels(src_uv[idx], hw)
        if src_fg is not None:
            sp = snap_to_foreground(sp, src_fg)
        query = src_map[sp[:, 1], sp[:, 0]]
        rows, cols = np.nonzero(trg_fg)
        nn = nearest_neighbours(query, trg_map[rows, cols])
        pred[idx] = np.stack([cols[nn], rows[nn]], axis=1) + 0.5
        gt = keypoint_pixels(trg_uv[idx], hw) + 0.5
        errors[idx] = np.linalg.norm(pred[idx] - gt, axis=1)
    return KeypointTransfer(pred, errors, pck(errors, thresholds))


def transfer_labels(
    src_feat: np.ndarray, src_labels: np.ndarray, trg_feat: np.ndarray
) -> np.ndarray:
    """Each target row takes the label of its nearest source row.

    Args:
        src_feat: (Ns, C), src_labels: (Ns,), trg_feat: (Nt, C).

    Returns:
        (Nt,) labels (same dtype as ``src_labels``).
    """
    return np.asarray(src_labels)[nearest_neighbours(trg_feat, src_feat)]


def part_ious(
    pred: np.ndarray, trg_labels: np.ndarray, src_labels: np.ndarray
) -> dict[int, float]:
    """IoU per label present in both GT label sets (label -1 = unlabelled, never scored).

    Args:
        pred: (M,) predicted labels of the target elements (foreground pixels or points).
        trg_labels: (M,) their GT labels. src_labels: (Ns,) the source GT labels.

    Returns:
        {label: IoU} over the M target elements.
    """
    shared = sorted((set(np.unique(src_labels)) & set(np.unique(trg_labels))) - {-1})
    out = {}
    for lab in shared:
        p, g = pred == lab, trg_labels == lab
        out[int(lab)] = float((p & g).sum() / (p | g).sum())
    return out


def mean_iou(ious: dict[int, float]) -> float:
    """Mean of the per-label IoUs; NaN when no label is shared."""
    return float(np.mean(list(ious.values()))) if ious else float("nan")


@dataclass
class PartTransfer:
    """One pair's part transfer: ``pred`` labels (H, W) (-1 outside the target foreground) or
    (T,) per point, ``ious`` per shared label, ``miou`` their mean (NaN: nothing shared)."""

    pred: np.ndarray
    ious: dict[int, float]
    miou: float


def part_transfer_2d(
    src_map: np.ndarray,
    trg_map: np.ndarray,
    src_part: np.ndarray,
    trg_part: np.ndarray,
    src_fg: np.ndarray,
    trg_fg: np.ndarray,
) -> PartTransfer:
    """2D part label transfer of one pair.

    Args:
        src_map, trg_map: (H, W, C) feature maps. src_part, trg_part: (H, W) GT labels (-1 bg).
        src_fg, trg_fg: (H, W) bool foregrounds (candidates and scored pixels).
    """
    pred = np.full(trg_part.shape, -1, np.int64)
    if not (src_fg.any() and trg_fg.any()):
        return PartTransfer(pred, {}, float("nan"))
    pred[trg_fg] = transfer_labels(src_map[src_fg], src_part[src_fg], trg_map[trg_fg])
    ious = part_ious(pred[trg_fg], trg_part[trg_fg], src_part[src_fg])
    return PartTransfer(pred, ious, mean_iou(ious))


def keypoint_transfer_3d(
    src_kp_feat: np.ndarray,
    cand_feat: np.ndarray,
    cand_xyz: np.ndarray,
    trg_kp: np.ndarray,
    counted: np.ndarray,
    thresholds: Sequence[float] = PCK_3D_THRESHOLDS,
) -> KeypointTransfer:
    """3D keypoint transfer of one pair.

    Args:
        src_kp_feat: (P, C) features at the source's 3D keypoints.
        cand_feat: (S, C) features at the target's candidate points. cand_xyz: (S, 3).
        trg_kp: (P, 3) target GT keypoints (slot = semantic id). counted: (P,) bool.
        thresholds: in object units.
    """
    p = len(trg_kp)
    pred = np.full((p, 3), np.nan)
    errors = np.full(p, np.nan)
    idx = np.flatnonzero(counted)
    if len(idx) and len(cand_xyz):
        pred[idx] = cand_xyz[nearest_neighbours(src_kp_feat[idx], cand_feat)]
        errors[idx] = np.linalg.norm(pred[idx] - trg_kp[idx], axis=1)
    return KeypointTransfer(pred, errors, pck(errors, thresholds))


def part_transfer_3d(
    src_feat: np.ndarray, src_labels: np.ndarray, trg_feat: np.ndarray, trg_labels: np.ndarray
) -> PartTransfer:
    """3D part transfer over labelled points (label -1 points are neither candidates nor scored).

    Args:
        src_feat: (Ns, C), src_labels: (Ns,), trg_feat: (Nt, C), trg_labels: (Nt,).

    Returns:
        PartTransfer with ``pred`` (Nt,) (-1 at unlabelled target points).
    """
    pred = np.full(len(trg_labels), -1, np.int64)
    s_ok, t_ok = src_labels >= 0, trg_labels >= 0
    if not (s_ok.any() and t_ok.any()):
        return PartTransfer(pred, {}, float("nan"))
    pred[t_ok] = transfer_labels(src_feat[s_ok], src_labels[s_ok], trg_feat[t_ok])
    ious = part_ious(pred[t_ok], trg_labels[t_ok], src_labels[s_ok])
    return PartTransfer(pred, ious, mean_iou(ious))


def psnr(pred: np.ndarray, gt: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB of (H, W, 3) images in [0, data_range] (inf for identical images)."""
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(gt, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def ssim(pred: np.ndarray, gt: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM of (H, W, 3) images (skimage ``structural_similarity``, 7x7 window, channel_axis)."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            np.asarray(gt, np.float64),
            np.asarray(pred, np.float64),
            channel_axis=-1,
            data_range=data_range,
        )
    )


def mean_over_pairs(values: Sequence[float] | np.ndarray) -> tuple[float | np.ndarray, int]:
    """Mean over pairs of per-pair scores (NaN = pair not scored).

    Args:
        values: (N,) or (N, T) per-pair scores.

    Returns:
        (mean, number of scored pairs): mean is a float for (N,) input and (T,) per column for
        (N, T) input (NaN where nothing is scored); the count is that of rows with any score.
    """
    a = np.asarray(values, np.float64)
    if a.ndim == 1:
        a = a[:, None]
        squeeze = True
    else:
        squeeze = False
    ok = ~np.isnan(a)
    n = int(ok.any(axis=1).sum()) if a.size else 0
    counts = ok.sum(axis=0)
    sums = np.where(ok, a, 0.0).sum(axis=0)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    if squeeze:
        return (float(mean[0]) if len(mean) else float("nan")), n
    return mean, n
