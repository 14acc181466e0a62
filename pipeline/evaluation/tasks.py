"""The evaluation tasks: per-pair loops over feature sources, aggregated over pairs.

* :func:`run_2d_task`: keypoint and part transfer between two rendered feature maps
  (cross-instance: each object encoded from its own image at the pair's view; cross-view:
  official ``cross_view_input="source"`` encodes the source image once and renders the source
  view and the novel target view from it, ``"own"`` encodes each view from its own image).
* :func:`run_3d_task`: the same on 3D points (cross-instance pairs, each object encoded from
  its image at the pair's view): keypoints against the target's candidate points, parts over
  the surface samples (which points: see the protocols in :mod:`pipeline.evaluation.metrics`).
* :func:`run_nvs`: PSNR / SSIM (/ LPIPS if available offline) of novel views rendered from one
  input view, on black background, at the render resolution (GT area-downsampled).

Every pair is scored from the same feature maps under each metric protocol (``official``:
the released scripts' per-pair logic; ``project``: the refinements; primary first). Each task
keeps per-pair rows, one per (pair, method, protocol), with the drop reasons (written as
``pairs_<task>.json``), and the pictures of the ``n_visual`` worst pairs of the first (primary)
method under the primary protocol.
"""

from __future__ import annotations

import heapq
import importlib.util
import itertools
from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.render_store import RenderStore
from pipeline.evaluation import metrics as M
from pipeline.evaluation.features import FeatureSource, NerfRenderer, TeacherSource
from pipeline.evaluation.pairs import CrossInstancePair, CrossInstanceViewPair, CrossViewPair

#: progress(label, done, total): called after each unit of work of a task
Progress = Callable[[str, int, int], None]
#: optional render-store array (N, K, 3) of annotation keypoint candidates (official 3D kp)
KP_CANDIDATES = "kp_candidates"
#: default protocols of the task functions, primary first (see ``run_2d_task``)
TASK_PROTOCOLS: tuple[str, ...] = ("project", "official")


@dataclass
class TaskResult:
    """One task for several methods under one or more metric protocols.

    Attributes:
        task: "cross_view" | "cross_instance" | "3d" | ...
        methods: method names, primary first. thresholds: nominal PCK thresholds (keys).
        rows: per pair, method and protocol: ``pair``, ``method``, ``protocol``, ``dropped``
            (None or the reason the pair has no score), ``kp_dropped`` / ``part_dropped`` (None
            or why a kept pair has no keypoint / part score), ``pck`` (T,), ``miou``, ``n_kp``,
            ``ious``, ``errors`` (P,).
        visuals: pictures of the worst pairs (see :class:`WorstPairs`), worst first, scored
            under the primary protocol.
        protocols: the protocols computed, primary first (see :mod:`metrics`).
        info: task notes, e.g. ``kp3d_candidates``: {protocol: the candidate point set used}.
    """

    task: str
    methods: list[str]
    thresholds: tuple[float, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    visuals: list[dict[str, Any]] = field(default_factory=list)
    protocols: tuple[str, ...] = M.PROTOCOLS
    info: dict[str, Any] = field(default_factory=dict)

    def protocol_summary(self, protocol: str, method: str) -> dict[str, Any]:
        """Scores of one method under one protocol (rows without ``protocol`` count as the
        primary's).

        Returns:
            ``pck`` (T,) and ``miou``: means over the pairs with that score; ``n_pairs`` (rows),
            ``n_pairs_kp`` / ``n_pairs_part`` (scored pairs), ``n_dropped`` and ``dropped``
            {reason: n} (whole pairs), ``dropped_kp`` / ``dropped_part`` {reason: n} (kept
            pairs without that score). ``official`` adds ``miou_released``: the released
            scripts' plain mean over the kept pairs (NaN as soon as one pair has no shared
            part label).
        """
        rows = [r for r in self.rows if r["method"] == method
                and r.get("protocol", self.protocols[0]) == protocol]
        pcks = np.array([r["pck"] for r in rows], np.float64).reshape(-1, len(self.thresholds))
        pck, n_kp = M.mean_over_pairs(pcks)
        miou, n_part = M.mean_over_pairs([r["miou"] for r in rows])

        def counts(key: str) -> dict[str, int]:
            return dict(Counter(r[key] for r in rows if r.get(key)))

        out = {"pck": np.atleast_1d(pck).tolist(), "miou": miou, "n_pairs": len(rows),
               "n_pairs_kp": n_kp, "n_pairs_part": n_part, "dropped": counts("dropped"),
               "dropped_kp": counts("kp_dropped"), "dropped_part": counts("part_dropped")}
        out["n_dropped"] = sum(out["dropped"].values())
        if protocol == "official":
            out["miou_released"] = M.released_mean(
                [r["miou"] for r in rows if not r.get("dropped")])
        return out

    def summary(self, protocol: str | None = None) -> dict[str, dict[str, Any]]:
        """Per method: :meth:`protocol_summary` under ``protocol`` (default: the primary, the
        first of ``protocols``) plus ``protocol`` (its name) and ``by_protocol`` ({protocol:
        :meth:`protocol_summary`} for every computed protocol)."""
        protocol = protocol or self.protocols[0]
        out = {}
        for m in self.methods:
            by = {p: self.protocol_summary(p, m) for p in self.protocols}
            main = by[protocol] if protocol in by else self.protocol_summary(protocol, m)
            out[m] = {**main, "protocol": protocol, "by_protocol": by}
        return out


class WorstPairs:
    """Keeps the ``k`` items with the lowest score (NaN scores rank after every number)."""

    def __init__(self, k: int):
        self.k, self._heap, self._count = k, [], itertools.count()

    def push(self, score: float, item: Any) -> None:
        if self.k <= 0:
            return
        key = -(np.inf if np.isnan(score) else score)  # max-heap on score via negation
        entry = (key, next(self._count), item)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif key > self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[Any]:
        """Worst first."""
        return [e[2] for e in sorted(self._heap, key=lambda e: (-e[0], e[1]))]


def pair_score(pck: np.ndarray, miou: float) -> float:
    """Score used to rank pairs for the pictures: mean of PCK at the 2nd threshold and mIoU."""
    vals = [v for v in (pck[1] if len(pck) > 1 else np.nan, miou) if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def record_method(res: TaskResult, visual: dict[str, Any], pair: Any, method: str,
                  results: dict[str, M.PairResult]) -> float:
    """Add one method's keypoint + part transfer of a pair under each protocol to ``res`` (one
    row per protocol) and the primary protocol's to the pair's picture data; returns the
    primary's :func:`pair_score`."""
    for protocol in res.protocols:
        r = results[protocol]
        res.rows.append({"pair": asdict(pair), "method": method, "protocol": protocol,
                         "dropped": r.dropped, "kp_dropped": r.kp_dropped,
                         "part_dropped": r.part_dropped, "pck": r.kp.pck.tolist(),
                         "miou": r.part.miou, "n_kp": r.kp.n_counted, "ious": r.part.ious,
                         "errors": r.kp.errors.tolist()})
    r = results[res.protocols[0]]
    pred_part = r.part.pred.astype(np.int8) if r.part.pred.ndim == 2 else r.part.pred
    visual["methods"][method] = {"pred_kp": r.kp.pred, "pred_part": pred_part, "pck": r.kp.pck,
                                 "miou": r.part.miou, "dropped": r.dropped}
    return pair_score(r.kp.pck, r.part.miou)


def scaled_thresholds(image_size: int, thresholds: Sequence[float] = M.PCK_2D_THRESHOLDS,
                      reference: int = 128) -> tuple[float, ...]:
    """Pixel thresholds defined at ``reference`` px, scaled to ``image_size`` px."""
    return tuple(t * image_size / reference for t in thresholds)


@dataclass
class ViewGT:
    """GT of one (object, view) for the 2D tasks (``fg``: the project foreground, for the
    pictures; the metrics derive each protocol's own from ``part`` and ``alpha``)."""

    rgb: np.ndarray
    part: np.ndarray
    fg: np.ndarray
    kp2d: np.ndarray
    visible: np.ndarray
    kp_id: np.ndarray
    alpha: np.ndarray | None = None

    @classmethod
    def read(cls, store: RenderStore, obj: int, view: int) -> ViewGT:
        part, alpha = store.read("part", (obj, view)), store.read("alpha", (obj, view))
        return cls(store.read("rgb", (obj, view)), part, M.foreground(part, alpha),
                   store.read("kp2d", (obj, view)), store.read("kp_visible", (obj, view)),
                   store.read("kp_id", obj), alpha)


def _views_of(task: str, pair: Any, cross_view_input: str) -> tuple[tuple[int, int, int], ...]:
    """((src obj, src input view, src view), (trg obj, trg input view, trg view))."""
    if isinstance(pair, CrossInstancePair):
        return (pair.src, pair.view, pair.view), (pair.trg, pair.view, pair.view)
    if isinstance(pair, CrossInstanceViewPair):  # each object encoded from its own view
        return ((pair.src, pair.src_view, pair.src_view),
                (pair.trg, pair.trg_view, pair.trg_view))
    if cross_view_input == "source":
        return (pair.obj, pair.src_view, pair.src_view), (pair.obj, pair.src_view, pair.trg_view)
    if cross_view_input == "own":
        return (pair.obj, pair.src_view, pair.src_view), (pair.obj, pair.trg_view, pair.trg_view)
    raise ValueError(f"cross_view_input must be 'source' or 'own', got {cross_view_input!r}")


def run_2d_task(
    task: str,
    pairs: Sequence[CrossViewPair | CrossInstancePair | CrossInstanceViewPair],
    store: RenderStore,
    sources: Sequence[FeatureSource],
    thresholds_px: Sequence[float],
    nominal: Sequence[float] = M.PCK_2D_THRESHOLDS,
    cross_view_input: str = "source",
    n_visual: int = 3,
    progress: Progress | None = None,
    protocols: Sequence[str] = TASK_PROTOCOLS,
) -> TaskResult:
    """2D keypoint + part transfer for every pair and source.

    Args:
        task: "cross_view" or "cross_instance" (label only; the pair type decides the views).
        thresholds_px: PCK thresholds in pixels at the store's resolution; ``nominal`` are the
            128-px values used as keys.
        protocols: metric protocols computed from the same maps, primary first (the default
            :data:`TASK_PROTOCOLS` keeps ``summary()`` on the project numbers it always gave;
            the evaluate stage passes its configured order, official first by default).
    """
    res = TaskResult(task, [s.name for s in sources], tuple(nominal),
                     protocols=tuple(M.check_protocol(p) for p in protocols))
    worst = WorstPairs(n_visual)
    for i, pair in enumerate(pairs):
        (so, si, sv), (to, ti, tv) = _views_of(task, pair, cross_view_input)
        src, trg = ViewGT.read(store, so, sv), ViewGT.read(store, to, tv)
        counted = M.counted_keypoints(src.kp_id, trg.kp_id, src.visible, trg.visible)
        visual: dict[str, Any] = {"pair": asdict(pair), "src": src, "trg": trg,
                                  "counted": counted, "methods": {}}
        primary = float("nan")
        for k, source in enumerate(sources):
            smap = source.map_2d(so, si, sv)
            tmap = source.map_2d(to, ti, tv)
            results = M.pair_2d_protocols(smap, tmap, src.part, trg.part, src.kp2d, trg.kp2d,
                                          counted, res.protocols, thresholds_px, src.alpha,
                                          trg.alpha)
            score = record_method(res, visual, pair, source.name, results)
            if k == 0:
                primary = score
        visual["score"] = primary
        worst.push(primary, visual)
        if progress:
            progress(f"{task} pairs", i + 1, len(pairs))
    res.visuals = worst.items()
    return res


def kp3d_candidate_set(protocol: str, available: Container[str]) -> str:
    """The render-store array with the target's 3D keypoint candidates under ``protocol``:
    ``official`` the annotation's candidate points (:data:`KP_CANDIDATES`) when ``available``
    (the store's array names) has them, otherwise, and for ``project``, ``"points"``."""
    if M.check_protocol(protocol) == "official" and KP_CANDIDATES in available:
        return KP_CANDIDATES
    return "points"


def run_3d_task(
    pairs: Sequence[CrossInstancePair],
    store: RenderStore,
    sources: Sequence[FeatureSource],
    thresholds: Sequence[float] = M.PCK_3D_THRESHOLDS,
    n_visual: int = 3,
    progress: Progress | None = None,
    protocols: Sequence[str] = TASK_PROTOCOLS,
) -> TaskResult:
    """3D keypoint + part transfer over cross-instance pairs (points queried directly).

    Keypoint candidates: ``project`` the target's surface samples (``points``); ``official``
    the annotation's candidate points (store array :data:`KP_CANDIDATES`) when the store has
    them, else all surface samples; ``res.info["kp3d_candidates"]`` records the set used.
    """
    res = TaskResult("3d", [s.name for s in sources], tuple(thresholds),
                     protocols=tuple(M.check_protocol(p) for p in protocols))
    cand_key = {p: kp3d_candidate_set(p, store.group) for p in res.protocols}
    official_set = cand_key.get("official", "points")
    res.info["kp3d_candidates"] = {
        p: k if k != "points" else ("points (all surface samples"
                                    + ("; the store has no annotation candidate array)"
                                       if p == "official" else ")"))
        for p, k in cand_key.items()}
    worst = WorstPairs(n_visual)
    for i, pair in enumerate(pairs):
        data = {}
        for role, obj in (("src", pair.src), ("trg", pair.trg)):
            data[role] = {k: store.read(k, obj) for k in ("points", "point_part", "kp3d", "kp_id")}
        if official_set != "points":
            data["trg"][official_set] = store.read(official_set, pair.trg)
        counted = M.counted_keypoints(data["src"]["kp_id"], data["trg"]["kp_id"])
        n_pts = {r: len(d["points"]) for r, d in data.items()}
        visual: dict[str, Any] = {"pair": asdict(pair), "data": data, "counted": counted,
                                  "methods": {}}
        primary = float("nan")
        for k, source in enumerate(sources):
            feats = {}
            for role, obj in (("src", pair.src), ("trg", pair.trg)):
                d = data[role]
                extra = [d[official_set]] if role == "trg" and official_set != "points" else []
                xyz = np.concatenate([d["points"], d["kp3d"], *extra]).astype(np.float32)
                feats[role] = source.at_points(obj, pair.view, xyz)
            s, t = feats["src"], feats["trg"]
            ns, nt, nk = n_pts["src"], n_pts["trg"], len(data["trg"]["kp3d"])
            cands = {"points": (t[:nt], data["trg"]["points"])}
            if official_set != "points":
                cands[official_set] = (t[nt + nk:], data["trg"][official_set])
            results = {p: M.pair_3d(s[:ns], data["src"]["point_part"], t[:nt],
                                    data["trg"]["point_part"], s[ns:], *cands[cand_key[p]],
                                    data["trg"]["kp3d"], counted, p, thresholds)
                       for p in res.protocols}
            score = record_method(res, visual, pair, source.name, results)
            if k == 0:
                primary = score
        visual["score"] = primary
        worst.push(primary, visual)
        if progress:
            progress("3d pairs", i + 1, len(pairs))
    res.visuals = worst.items()
    return res


def lpips_scorer(device: str | torch.device = "cpu") -> tuple[Callable | None, str]:
    """LPIPS (AlexNet) if the ``lpips`` package and the AlexNet weights are available offline.

    Returns:
        (score(pred, gt) -> float for (H, W, 3) images in [0, 1], "") or (None, reason).
    """
    if importlib.util.find_spec("lpips") is None:
        return None, "the lpips package is not installed (pip install lpips)"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not weights.exists():
        return None, f"AlexNet weights are not cached at {weights} (no download offline)"
    try:
        import lpips

        net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    except Exception as exc:  # broken install or weights: skip with the reason
        return None, f"lpips failed to load: {type(exc).__name__}: {exc}"

    def score(pred: np.ndarray, gt: np.ndarray) -> float:
        def t(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(x, np.float32)).permute(2, 0, 1)[None] * 2 - 1

        with torch.no_grad():
            return float(net(t(pred).to(device), t(gt).to(device)).item())

    return score, ""


def downsample(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) float -> (size, size, C) by area averaging (identity if equal)."""
    if img.shape[0] == size:
        return img
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32)).permute(2, 0, 1)[None]
    return torch.nn.functional.adaptive_avg_pool2d(t, size)[0].permute(1, 2, 0).numpy()


@dataclass
class NvsResult:
    """NVS scores per method (``rows``: object, input_view, view, method, psnr, ssim, lpips),
    skipped metrics with reasons, and pictures per object."""

    methods: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    visuals: list[dict[str, Any]] = field(default_factory=list)
    colour_bases: dict[str, str] = field(default_factory=dict)  # method / teacher -> its basis

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for m in self.methods:
            rows = [r for r in self.rows if r["method"] == m]
            out[m] = {k: M.mean_over_pairs([r[k] for r in rows if r.get(k) is not None])[0]
                      for k in ("psnr", "ssim", "lpips")}
            out[m]["n_images"] = len(rows)
        return out


def nvs_views(n_views_store: int, input_view: int, n: int) -> list[int]:
    """``n`` target views spread evenly over the store's views, the input view excluded."""
    others = [v for v in range(n_views_store) if v != input_view]
    if n >= len(others):
        return others
    return [others[int(i)] for i in np.linspace(0, len(others) - 1, n).round().astype(int)]


def run_nvs(
    renderers: dict[str, NerfRenderer],
    store: RenderStore,
    objects: Sequence[int],
    input_view: int,
    views: Sequence[int],
    teacher: TeacherSource | None = None,
    lpips_device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> NvsResult:
    """Render ``views`` of each object from its ``input_view`` image with every renderer.

    Pictures per object: GT row, then per method RGB and a PCA colouring of the internal
    feature (background = opacity < 0.5 zeroed; one basis per method, fitted on all the views
    of all ``objects``, so colours compare across objects), plus the teacher's maps of the GT
    views when ``teacher`` is given (the store's category basis; without one, a basis fitted
    on all the teacher maps shown). ``NvsResult.colour_bases`` says which.
    """

    res = NvsResult(list(renderers))
    score_lpips, reason = lpips_scorer(lpips_device)
    if score_lpips is None:
        res.skipped["lpips"] = reason
    total, done = len(objects) * len(renderers) * len(views), 0
    features: dict[str, list[np.ndarray]] = {}  # method / "teacher" -> per object (V, h, w, C)
    for obj in objects:
        gts = {v: store.read("rgb", (obj, v)).astype(np.float32) / 255.0 for v in views}
        visual: dict[str, Any] = {"object": obj, "input_view": input_view, "views": list(views),
                                  "input": store.read("rgb", (obj, input_view)),
                                  "gt": [store.read("rgb", (obj, v)) for v in views],
                                  "methods": {}}
        for name, renderer in renderers.items():
            rgbs, internals = [], []
            for v in views:
                r = renderer.render(obj, input_view, v, full=True)
                gt = downsample(gts[v], renderer.eval_size)
                pred = np.clip(r["rgb"], 0.0, 1.0)
                row = {"object": obj, "input_view": input_view, "view": v, "method": name,
                       "psnr": M.psnr(pred, gt), "ssim": M.ssim(pred, gt),
                       "lpips": score_lpips(pred, gt) if score_lpips else None}
                res.rows.append(row)
                rgbs.append((pred * 255).round().astype(np.uint8))
                internals.append(np.where(r["opacity"][..., None] >= 0.5, r["internal"], 0.0))
                done += 1
                if progress:
                    progress("nvs views", done, total)
            features.setdefault(name, []).append(np.stack(internals))
            visual["methods"][name] = {"rgb": rgbs,
                                       "psnr": [r["psnr"] for r in res.rows[-len(views):]]}
        if teacher is not None:
            features.setdefault("teacher", []).append(
                np.stack([teacher.raw(obj, v) for v in views]))
        res.visuals.append(visual)
    colour_nvs(res, features, teacher)
    return res


def colour_nvs(res: NvsResult, features: dict[str, list[np.ndarray]],
               teacher: TeacherSource | None) -> None:
    """Fill ``res.visuals``' PCA colourings from ``features`` (method or ``"teacher"`` -> one
    (V, h, w, C) stack per visual): one basis per method over all its shown views; the
    teacher's in the store's category basis when it has one. Records each in ``colour_bases``."""
    from pipeline.reports.features import ColourBasis, fit_colour_basis, pca_rgb

    stored = ColourBasis.of_store(teacher.features) if teacher is not None else None
    for name, stacks in features.items():
        use_stored = name == "teacher" and stored is not None
        basis = stored if use_stored else fit_colour_basis(np.stack(stacks))
        res.colour_bases[name] = ("the feature store's category basis (fitted on train "
                                  "objects at distill time)" if use_stored else
                                  "one basis fitted on all the views shown for it")
        for visual, stack in zip(res.visuals, stacks, strict=True):
            colours = list(pca_rgb(stack, basis))
            if name == "teacher":
                visual["teacher_pca"] = colours
            else:
                visual["methods"][name]["pca"] = colours
