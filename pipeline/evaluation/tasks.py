"""The evaluation tasks: per-pair loops over feature sources, aggregated over pairs.

* :func:`run_2d_task`: keypoint and part transfer between two rendered feature maps
  (cross-instance: each object encoded from its own image at the pair's view; cross-view:
  official ``cross_view_input="source"`` encodes the source image once and renders the source
  view and the novel target view from it, ``"own"`` encodes each view from its own image).
* :func:`run_3d_task`: the same on 3D points (cross-instance pairs, each object encoded from
  its image at the pair's view): keypoints against the target's surface samples, parts over
  labelled surface samples.
* :func:`run_nvs`: PSNR / SSIM (/ LPIPS if available offline) of novel views rendered from one
  input view, on black background, at the render resolution (GT area-downsampled).

Each task keeps per-pair rows (written as ``pairs_<task>.json``) and the pictures of the
``n_visual`` worst pairs of the first (primary) method.
"""

from __future__ import annotations

import heapq
import importlib.util
import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.render_store import RenderStore
from pipeline.evaluation import metrics as M
from pipeline.evaluation.features import FeatureSource, NerfRenderer, TeacherSource
from pipeline.evaluation.pairs import CrossInstancePair, CrossViewPair

Progress = Callable[[str], None]


@dataclass
class TaskResult:
    """One task for several methods.

    Attributes:
        task: "cross_view" | "cross_instance" | "3d".
        methods: method names, primary first. thresholds: nominal PCK thresholds (keys).
        rows: per pair and method: ``pair``, ``method``, ``pck`` (T,), ``miou``, ``n_kp``,
            ``ious``.
        visuals: pictures of the worst pairs (see :class:`WorstPairs`), worst first.
    """

    task: str
    methods: list[str]
    thresholds: tuple[float, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    visuals: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per method: ``pck`` (T,) mean over pairs, ``miou``, and the scored pair counts."""
        out = {}
        for m in self.methods:
            rows = [r for r in self.rows if r["method"] == m]
            pcks = np.array([r["pck"] for r in rows], np.float64).reshape(-1, len(self.thresholds))
            pck, n_kp = M.mean_over_pairs(pcks)
            miou, n_part = M.mean_over_pairs([r["miou"] for r in rows])
            out[m] = {"pck": np.atleast_1d(pck).tolist(), "miou": miou,
                      "n_pairs_kp": n_kp, "n_pairs_part": n_part}
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


def record_method(res: TaskResult, visual: dict[str, Any], pair: Any, method: str, kp: Any,
                  part: Any, pred_part: np.ndarray) -> float:
    """Add one method's keypoint + part transfer of a pair to ``res`` and the pair's picture
    data; returns its :func:`pair_score`."""
    res.rows.append({"pair": asdict(pair), "method": method, "pck": kp.pck.tolist(),
                     "miou": part.miou, "n_kp": kp.n_counted, "ious": part.ious,
                     "errors": kp.errors.tolist()})
    visual["methods"][method] = {"pred_kp": kp.pred, "pred_part": pred_part, "pck": kp.pck,
                                 "miou": part.miou}
    return pair_score(kp.pck, part.miou)


def scaled_thresholds(image_size: int, thresholds: Sequence[float] = M.PCK_2D_THRESHOLDS,
                      reference: int = 128) -> tuple[float, ...]:
    """Pixel thresholds defined at ``reference`` px, scaled to ``image_size`` px."""
    return tuple(t * image_size / reference for t in thresholds)


@dataclass
class ViewGT:
    """GT of one (object, view) for the 2D tasks."""

    rgb: np.ndarray
    part: np.ndarray
    fg: np.ndarray
    kp2d: np.ndarray
    visible: np.ndarray
    kp_id: np.ndarray

    @classmethod
    def read(cls, store: RenderStore, obj: int, view: int) -> ViewGT:
        part = store.read("part", (obj, view))
        return cls(store.read("rgb", (obj, view)), part,
                   M.foreground(part, store.read("alpha", (obj, view))),
                   store.read("kp2d", (obj, view)), store.read("kp_visible", (obj, view)),
                   store.read("kp_id", obj))


def _views_of(task: str, pair: Any, cross_view_input: str) -> tuple[tuple[int, int, int], ...]:
    """((src obj, src input view, src view), (trg obj, trg input view, trg view))."""
    if isinstance(pair, CrossInstancePair):
        return (pair.src, pair.view, pair.view), (pair.trg, pair.view, pair.view)
    if cross_view_input == "source":
        return (pair.obj, pair.src_view, pair.src_view), (pair.obj, pair.src_view, pair.trg_view)
    if cross_view_input == "own":
        return (pair.obj, pair.src_view, pair.src_view), (pair.obj, pair.trg_view, pair.trg_view)
    raise ValueError(f"cross_view_input must be 'source' or 'own', got {cross_view_input!r}")


def run_2d_task(
    task: str,
    pairs: Sequence[CrossViewPair | CrossInstancePair],
    store: RenderStore,
    sources: Sequence[FeatureSource],
    thresholds_px: Sequence[float],
    nominal: Sequence[float] = M.PCK_2D_THRESHOLDS,
    cross_view_input: str = "source",
    n_visual: int = 3,
    progress: Progress | None = None,
) -> TaskResult:
    """2D keypoint + part transfer for every pair and source.

    Args:
        task: "cross_view" or "cross_instance" (label only; the pair type decides the views).
        thresholds_px: PCK thresholds in pixels at the store's resolution; ``nominal`` are the
            128-px values used as keys.
    """
    res = TaskResult(task, [s.name for s in sources], tuple(nominal))
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
            kp = M.keypoint_transfer_2d(smap, tmap, src.kp2d, trg.kp2d, counted, trg.fg,
                                        thresholds_px, src_fg=src.fg)
            part = M.part_transfer_2d(smap, tmap, src.part, trg.part, src.fg, trg.fg)
            score = record_method(res, visual, pair, source.name, kp, part,
                                  part.pred.astype(np.int8))
            if k == 0:
                primary = score
        visual["score"] = primary
        worst.push(primary, visual)
        if progress:
            progress(f"{task} pair {i + 1}/{len(pairs)}")
    res.visuals = worst.items()
    return res


def run_3d_task(
    pairs: Sequence[CrossInstancePair],
    store: RenderStore,
    sources: Sequence[FeatureSource],
    thresholds: Sequence[float] = M.PCK_3D_THRESHOLDS,
    n_visual: int = 3,
    progress: Progress | None = None,
) -> TaskResult:
    """3D keypoint + part transfer over cross-instance pairs (points queried directly)."""
    res = TaskResult("3d", [s.name for s in sources], tuple(thresholds))
    worst = WorstPairs(n_visual)
    for i, pair in enumerate(pairs):
        data = {}
        for role, obj in (("src", pair.src), ("trg", pair.trg)):
            data[role] = {k: store.read(k, obj) for k in ("points", "point_part", "kp3d", "kp_id")}
        counted = M.counted_keypoints(data["src"]["kp_id"], data["trg"]["kp_id"])
        n_pts = {r: len(d["points"]) for r, d in data.items()}
        visual: dict[str, Any] = {"pair": asdict(pair), "data": data, "counted": counted,
                                  "methods": {}}
        primary = float("nan")
        for k, source in enumerate(sources):
            feats = {}
            for role, obj in (("src", pair.src), ("trg", pair.trg)):
                d = data[role]
                xyz = np.concatenate([d["points"], d["kp3d"]]).astype(np.float32)
                feats[role] = source.at_points(obj, pair.view, xyz)
            s, t = feats["src"], feats["trg"]
            kp = M.keypoint_transfer_3d(s[n_pts["src"]:], t[: n_pts["trg"]],
                                        data["trg"]["points"], data["trg"]["kp3d"], counted,
                                        thresholds)
            part = M.part_transfer_3d(s[: n_pts["src"]], data["src"]["point_part"],
                                      t[: n_pts["trg"]], data["trg"]["point_part"])
            score = record_method(res, visual, pair, source.name, kp, part, part.pred)
            if k == 0:
                primary = score
        visual["score"] = primary
        worst.push(primary, visual)
        if progress:
            progress(f"3d pair {i + 1}/{len(pairs)}")
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
    feature (joint over the object's views, background = opacity < 0.5 zeroed), plus the
    teacher's maps of the GT views when ``teacher`` is given.
    """
    from pipeline.distill_stage import pca_rgb

    res = NvsResult(list(renderers))
    score_lpips, reason = lpips_scorer(lpips_device)
    if score_lpips is None:
        res.skipped["lpips"] = reason
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
            visual["methods"][name] = {"rgb": rgbs, "pca": list(pca_rgb(np.stack(internals))),
                                       "psnr": [r["psnr"] for r in res.rows[-len(views):]]}
        if teacher is not None:
            visual["teacher_pca"] = list(pca_rgb(np.stack([teacher.raw(obj, v) for v in views])))
        res.visuals.append(visual)
        if progress:
            progress(f"nvs object {obj}")
    return res
