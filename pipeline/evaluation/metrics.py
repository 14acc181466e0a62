"""Evaluation metrics (pure numpy) under two named protocols: ``official`` and ``project``.

``official`` reproduces the per-pair logic of the released FeatureNeRF scripts
(``eval/eval_2d_task.py``, ``eval/eval_nv_2d_task.py``, ``eval/eval_3d_task.py``);
``project`` keeps this project's refinements. Both are computed from the same feature maps.

Common to both protocols:

* Matching: features are L2-normalised (``x / max(|x|, 1e-6)``) and matched by the argmax of
  cosine similarity (nearest neighbour, no mutual check).
* Ties: the FIRST index wins, as ``np.argmax`` / ``torch.argmax`` on exact scores. Scores are
  float64 cosines and every key within :data:`TIE_TOL` of the row maximum counts as tied, so
  rounding can never let a later index win an exact tie (a float32 matmul can). The float32
  product is only a pre-filter (see :func:`nearest_neighbours`).
* 2D keypoints: a keypoint counts if its semantic id exists in both objects and it is visible
  in both views (3D: id in both objects). Keypoints are quantised to their pixel (the official
  annotations are integer pixels); the error is the distance between pixel centres. PCK uses
  strict ``error < threshold``, per pair over its counted keypoints.
* Parts: IoU per label present in both GT label sets (label -1 = background / unlabelled,
  never in the label list), computed over the scored target elements; the pair score is the
  mean of those IoUs.
* Aggregation: mean over pairs (each pair weighs the same), see :func:`mean_over_pairs`.

``official`` (the released scripts):

* Foreground = GT part map != background (ours: ``part >= 0``). No alpha fallback: a view
  without part labels has no foreground.
* A source keypoint reads the feature at its own pixel, even on a background pixel.
* 3D parts: every surface point is a candidate and every target point is scored (an unlabelled
  point predicted as label L counts against L's union); only label -1 is left out of the list.
* 3D keypoint candidates: the annotation's candidate points (``kp_3d_anno`` ``pts``); the caller
  passes them (the evaluate tasks use all surface samples when the store has no candidate array
  and record which set was used).
* Where the released code raises, the pair is **dropped** with a reason (checked in the
  released order): 2D "empty source foreground" (part argmax over no source pixel), "empty
  target foreground" (keypoint argmax over no target pixel), then "no shared keypoint id"
  (``torch.cat`` of an empty list); 3D "no source points", "no candidate points", then "no
  shared keypoint id". A pair without a shared part label gets a NaN mIoU in the released code
  (``np.mean([])``) and thereby a NaN mean over pairs; here its part score is dropped with the
  reason "no shared part label" and the released NaN-propagating mean is reported beside the
  mean over the scored pairs (see ``tasks.TaskResult.summary``).

``project`` refinements (names used in reports, :data:`PROJECT_REFINEMENTS`):

* ``snap_source_keypoints``: a source keypoint on a background pixel (silhouette edge) reads
  the feature of the nearest source foreground pixel.
* ``alpha_foreground_fallback``: a view without part labels uses ``alpha > 0`` as foreground.
* ``labelled_points_only``: 3D parts use labelled points only, as candidates and as scored
  points.
* ``surface_candidates``: 3D keypoints are matched against the target's surface samples.
* ``partial_scores``: a pair keeps the scores it can compute; what it cannot score is dropped
  with a reason per metric (``kp_dropped`` / ``part_dropped``); only an empty target foreground
  drops a 2D pair as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

PCK_2D_THRESHOLDS: tuple[float, ...] = (2.5, 5.0, 7.5, 10.0)  # pixels at 128x128
PCK_3D_THRESHOLDS: tuple[float, ...] = (0.025, 0.05, 0.075, 0.1)  # object units

Protocol = Literal["official", "project"]
PROTOCOLS: tuple[Protocol, ...] = ("official", "project")
PROJECT_REFINEMENTS: dict[str, str] = {
    "snap_source_keypoints": "a source keypoint on a background pixel reads the nearest source "
                             "foreground pixel (official: its own pixel)",
    "alpha_foreground_fallback": "a view without part labels uses alpha > 0 as foreground "
                                 "(official: no foreground)",
    "labelled_points_only": "3D parts: unlabelled points are neither candidates nor scored "
                            "(official: all points, only label -1 left out of the label list)",
    "surface_candidates": "3D keypoints are matched against the target's surface samples "
                          "(official: the annotation's candidate points)",
    "partial_scores": "a pair keeps the scores it can compute (official: the released script "
                      "raises and the pair is dropped)",
}
TIE_TOL = 1e-10  # float64 cosines within this of the row maximum are ties (first index wins)

# drop reasons
EMPTY_SOURCE_FG = "empty source foreground"
EMPTY_TARGET_FG = "empty target foreground"
NO_SHARED_KP = "no shared keypoint id"
NO_SHARED_PART = "no shared part label"
NO_SOURCE_POINTS = "no source points"
NO_CANDIDATES = "no candidate points"
NO_LABELLED_SOURCE = "no labelled source points"
NO_LABELLED_TARGET = "no labelled target points"


def check_protocol(protocol: str) -> Protocol:
    """``protocol`` if it is one of :data:`PROTOCOLS`, else ValueError."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return protocol  # type: ignore[return-value]


def l2_normalize(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(..., C) -> (..., C) float64 ``x / max(|x|, eps)`` (as the official normalisation)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def first_argmax(scores: np.ndarray, tol: float = TIE_TOL) -> np.ndarray:
    """(M, N) scores -> (M,) int64: the first column within ``tol`` of each row's maximum."""
    best = scores.max(axis=1, keepdims=True)
    return np.argmax(scores >= best - tol, axis=1).astype(np.int64)


def nearest_neighbours(
    query: np.ndarray, keys: np.ndarray, chunk: int | None = None, tol: float = TIE_TOL
) -> np.ndarray:
    """Cosine nearest neighbour of each query row among the key rows, first index on ties.

    The result equals :func:`first_argmax` of the float64 cosines. A float32 product finds, per
    row, the keys within ``2 E + tol`` of its maximum, where ``E = (C + 4) 2^-24`` bounds the
    float32 rounding of a dot product of unit vectors; only those are rescored in float64.

    Args:
        query: (M, C). keys: (N, C), N >= 1. chunk: query rows per product (default: about
            2^22 scores per chunk). tol: tie tolerance on the float64 cosines.

    Returns:
        (M,) int64 indices into ``keys``.
    """
    if len(keys) == 0:
        raise ValueError("nearest_neighbours: no keys to match against")
    q, k = l2_normalize(query), l2_normalize(keys)
    q32, k32 = q.astype(np.float32), k.astype(np.float32)
    slack = 2.0 * (q.shape[-1] + 4) * 2.0**-24 + tol
    chunk = chunk or max(1, 2**22 // len(k))
    out = np.empty(len(q), np.int64)
    for s in range(0, len(q), chunk):
        s32 = q32[s : s + chunk] @ k32.T
        near = s32 >= s32.max(axis=1, keepdims=True) - slack
        out[s : s + chunk] = np.argmax(near, axis=1)
        for r in np.flatnonzero(near.sum(axis=1) > 1):
            idx = np.flatnonzero(near[r])
            out[s + r] = idx[first_argmax((k[idx] @ q[s + r])[None], tol)[0]]
    return out


def foreground(
    part: np.ndarray | None, alpha: np.ndarray | None = None, protocol: str = "project"
) -> np.ndarray:
    """(H, W) bool foreground of a view.

    ``official``: ``part >= 0`` (the released rule: GT part label != background).
    ``project``: the same when the map has labels, else ``alpha > 0``.
    """
    if check_protocol(protocol) == "official":
        if part is None:
            raise ValueError("foreground: the official rule needs the part map")
        return np.asarray(part) >= 0
    if part is not None and (np.asarray(part) >= 0).any():
        return np.asarray(part) >= 0
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
    """(P, 2) int ``(col, row)`` pixels -> the nearest ``fg`` pixel for those outside ``fg``
    (first in row-major order on distance ties).

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

    @classmethod
    def empty(cls, n: int, dim: int, n_thresholds: int) -> KeypointTransfer:
        """Nothing scored: (n, dim) NaN predictions, (n,) NaN errors, (T,) NaN PCK."""
        return cls(np.full((n, dim), np.nan), np.full(n, np.nan), np.full(n_thresholds, np.nan))


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
            nearest foreground pixel (``project``); None = the keypoint's own pixel
            (``official``).
    """
    res = KeypointTransfer.empty(len(src_uv), 2, len(thresholds))
    idx = np.flatnonzero(counted)
    if len(idx) and trg_fg.any():
        hw = src_map.shape[:2]
        sp = keypoint_pixels(src_uv[idx], hw)
        if src_fg is not None:
            sp = snap_to_foreground(sp, src_fg)
        rows, cols = np.nonzero(trg_fg)
        nn = nearest_neighbours(src_map[sp[:, 1], sp[:, 0]], trg_map[rows, cols])
        res.pred[idx] = np.stack([cols[nn], rows[nn]], axis=1) + 0.5
        gt = keypoint_pixels(trg_uv[idx], hw) + 0.5
        res.errors[idx] = np.linalg.norm(res.pred[idx] - gt, axis=1)
        res.pck = pck(res.errors, thresholds)
    return res


def transfer_labels(
    src_feat: np.ndarray, src_labels: np.ndarray, trg_feat: np.ndarray
) -> np.ndarray:
    """Each target row takes the label of its nearest source row.

    Args:
        src_feat: (Ns, C), src_labels: (Ns,), trg_feat: (Nt, C).

    Returns:
        (Nt,) labels (same dtype as ``src_labels``).
    """
    if len(trg_feat) == 0:
        return np.asarray(src_labels)[:0]
    return np.asarray(src_labels)[nearest_neighbours(trg_feat, src_feat)]


def part_ious(
    pred: np.ndarray, trg_labels: np.ndarray, src_labels: np.ndarray
) -> dict[int, float]:
    """IoU per label present in both GT label sets (label -1 = unlabelled, never in the list).

    Args:
        pred: (M,) predicted labels of the scored target elements (pixels or points).
        trg_labels: (M,) their GT labels. src_labels: (Ns,) the source GT labels.

    Returns:
        {label: IoU} over the M target elements, labels ascending.
    """
    shared = sorted((set(np.unique(src_labels).tolist()) & set(np.unique(trg_labels).tolist()))
                    - {-1})
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
    res = KeypointTransfer.empty(len(trg_kp), 3, len(thresholds))
    idx = np.flatnonzero(counted)
    if len(idx) and len(cand_xyz):
        res.pred[idx] = cand_xyz[nearest_neighbours(src_kp_feat[idx], cand_feat)]
        res.errors[idx] = np.linalg.norm(res.pred[idx] - trg_kp[idx], axis=1)
        res.pck = pck(res.errors, thresholds)
    return res


def part_transfer_3d(
    src_feat: np.ndarray,
    src_labels: np.ndarray,
    trg_feat: np.ndarray,
    trg_labels: np.ndarray,
    protocol: str = "project",
) -> PartTransfer:
    """3D part transfer.

    ``official``: all points are candidates and scored (label -1 only left out of the label
    list); ``project``: labelled points only.

    Args:
        src_feat: (Ns, C), src_labels: (Ns,), trg_feat: (Nt, C), trg_labels: (Nt,).

    Returns:
        PartTransfer with ``pred`` (Nt,) (``project``: -1 at unlabelled target points).
    """
    pred = np.full(len(trg_labels), -1, np.int64)
    if check_protocol(protocol) == "official":
        s_ok, t_ok = np.ones(len(src_labels), bool), np.ones(len(trg_labels), bool)
    else:
        s_ok, t_ok = src_labels >= 0, trg_labels >= 0
    if not (s_ok.any() and t_ok.any()):
        return PartTransfer(pred, {}, float("nan"))
    pred[t_ok] = transfer_labels(src_feat[s_ok], src_labels[s_ok], trg_feat[t_ok])
    ious = part_ious(pred[t_ok], trg_labels[t_ok], src_labels[s_ok])
    return PartTransfer(pred, ious, mean_iou(ious))


@dataclass
class PairResult:
    """One pair under one protocol.

    Attributes:
        protocol: "official" | "project".
        kp, part: the transfers (all NaN when dropped).
        dropped: None, or why the pair has no score at all (official: where the released
            script raises).
        kp_dropped, part_dropped: None, or why a kept pair has no keypoint / part score.
    """

    protocol: str
    kp: KeypointTransfer
    part: PartTransfer
    dropped: str | None = None
    kp_dropped: str | None = None
    part_dropped: str | None = None


def _finish(protocol: str, kp: KeypointTransfer, part: PartTransfer, dropped: str | None,
            kp_reason: str | None, part_reason: str | None) -> PairResult:
    """PairResult with the per-metric reasons of a kept pair (NaN score without a reason: the
    given one, or 'no shared part label' for an unshared part set)."""
    if dropped is not None:
        return PairResult(protocol, kp, part, dropped)
    kp_dropped = (kp_reason or NO_SHARED_KP) if kp.n_counted == 0 else None
    part_dropped = (part_reason or NO_SHARED_PART) if np.isnan(part.miou) else None
    return PairResult(protocol, kp, part, None, kp_dropped, part_dropped)


def _or_zeros(alpha: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    """``alpha``, or an empty (H, W) coverage when there is none."""
    return np.zeros(like.shape, np.uint8) if alpha is None else alpha


def pair_2d_protocols(
    src_map: np.ndarray,
    trg_map: np.ndarray,
    src_part: np.ndarray,
    trg_part: np.ndarray,
    src_uv: np.ndarray,
    trg_uv: np.ndarray,
    counted: np.ndarray,
    protocols: Sequence[str] = PROTOCOLS,
    thresholds: Sequence[float] = PCK_2D_THRESHOLDS,
    src_alpha: np.ndarray | None = None,
    trg_alpha: np.ndarray | None = None,
) -> dict[str, PairResult]:
    """2D keypoint + part transfer of one pair under each protocol (shared work is reused:
    when both protocols have the same foregrounds and query pixels they share the matching).

    Args:
        src_map, trg_map: (H, W, C) feature maps at image resolution.
        src_part, trg_part: (H, W) int GT part labels (-1 = background / unlabelled).
        src_uv, trg_uv: (P, 2) continuous keypoints ``(x, y)``. counted: (P,) bool.
        protocols: subset of :data:`PROTOCOLS`. thresholds: PCK thresholds in pixels.
        src_alpha, trg_alpha: (H, W) coverage for the ``project`` alpha fallback (None: no
            fallback, an unlabelled view has no foreground).

    Returns:
        {protocol: PairResult}; ``part.pred`` is (H, W), -1 outside the target foreground.
    """
    out: dict[str, PairResult] = {}
    memo: list[tuple[tuple[np.ndarray, ...], object]] = []

    def once(key: tuple[np.ndarray, ...], fn):  # reuse a result computed on equal inputs
        for k, v in memo:
            if len(k) == len(key) and all(np.array_equal(a, b) for a, b in zip(k, key,
                                                                                strict=True)):
                return v
        v = fn()
        memo.append((key, v))
        return v

    for protocol in protocols:
        official = check_protocol(protocol) == "official"
        src_fg = foreground(src_part, _or_zeros(src_alpha, src_part), protocol)
        trg_fg = foreground(trg_part, _or_zeros(trg_alpha, trg_part), protocol)
        dropped = None
        if official and not src_fg.any():
            dropped = EMPTY_SOURCE_FG
        elif not trg_fg.any():
            dropped = EMPTY_TARGET_FG
        elif official and not counted.any():
            dropped = NO_SHARED_KP
        if dropped is not None:
            out[protocol] = PairResult(
                protocol, KeypointTransfer.empty(len(src_uv), 2, len(thresholds)),
                PartTransfer(np.full(trg_part.shape, -1, np.int64), {}, float("nan")), dropped)
            continue
        snap = None if official else src_fg
        query = keypoint_pixels(src_uv[counted], src_map.shape[:2])
        if snap is not None:
            query = snap_to_foreground(query, snap)
        kp = once(("kp", query, trg_fg), lambda snap=snap, trg_fg=trg_fg: keypoint_transfer_2d(
            src_map, trg_map, src_uv, trg_uv, counted, trg_fg, thresholds, src_fg=snap))
        part = once(("part", src_fg, trg_fg), lambda s=src_fg, t=trg_fg: part_transfer_2d(
            src_map, trg_map, src_part, trg_part, s, t))
        out[protocol] = _finish(protocol, kp, part, None, None,
                                None if src_fg.any() else EMPTY_SOURCE_FG)
    return out


def pair_2d(*args, protocol: str, **kwargs) -> PairResult:
    """:func:`pair_2d_protocols` for one protocol (same positional arguments)."""
    return pair_2d_protocols(*args, protocols=(protocol,), **kwargs)[protocol]


def pair_3d(
    src_feat: np.ndarray,
    src_labels: np.ndarray,
    trg_feat: np.ndarray,
    trg_labels: np.ndarray,
    src_kp_feat: np.ndarray,
    cand_feat: np.ndarray,
    cand_xyz: np.ndarray,
    trg_kp: np.ndarray,
    counted: np.ndarray,
    protocol: str,
    thresholds: Sequence[float] = PCK_3D_THRESHOLDS,
) -> PairResult:
    """3D keypoint + part transfer of one pair under one protocol.

    Args:
        src_feat, src_labels: (Ns, C), (Ns,) features and labels of the source surface points.
        trg_feat, trg_labels: (Nt, C), (Nt,) the same for the target.
        src_kp_feat: (P, C) features at the source's 3D keypoints.
        cand_feat, cand_xyz: (S, C), (S, 3) the target's keypoint candidates for ``protocol``.
        trg_kp: (P, 3) target GT keypoints. counted: (P,) bool. thresholds: object units.

    Returns:
        PairResult; ``part.pred`` is (Nt,).
    """
    official = check_protocol(protocol) == "official"
    dropped = None
    if official:
        if len(src_feat) == 0:
            dropped = NO_SOURCE_POINTS
        elif len(cand_xyz) == 0:
            dropped = NO_CANDIDATES
        elif not counted.any():
            dropped = NO_SHARED_KP
    if dropped is not None:
        return PairResult(protocol, KeypointTransfer.empty(len(trg_kp), 3, len(thresholds)),
                          PartTransfer(np.full(len(trg_labels), -1, np.int64), {},
                                       float("nan")), dropped)
    kp = keypoint_transfer_3d(src_kp_feat, cand_feat, cand_xyz, trg_kp, counted, thresholds)
    part = part_transfer_3d(src_feat, src_labels, trg_feat, trg_labels, protocol)
    kp_reason = NO_CANDIDATES if len(cand_xyz) == 0 else None
    part_reason = None
    if not official and not (src_labels >= 0).any():
        part_reason = NO_LABELLED_SOURCE
    elif not official and not (trg_labels >= 0).any():
        part_reason = NO_LABELLED_TARGET
    return _finish(protocol, kp, part, None, kp_reason, part_reason)


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


def released_mean(values: Sequence[float] | np.ndarray) -> float | np.ndarray:
    """The released scripts' average over pairs: plain ``np.mean`` (axis 0), so one NaN pair
    makes the mean NaN; NaN for no pair.

    Args:
        values: (N,) or (N, T) per-pair scores.
    """
    a = np.asarray(values, np.float64)
    if len(a) == 0:
        return float("nan") if a.ndim <= 1 else np.full(a.shape[1:], np.nan)
    m = a.mean(axis=0)
    return float(m) if a.ndim == 1 else m
