"""The evaluate report: ``reports/evaluate/<run>/index.html`` (self-contained, no JS/CDN).

Pictures first (PCK curves, the worst pairs of each task, novel views with feature PCA maps,
a part texture swap), then the tables against the baselines, then settings and timings.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from cache.render_store import RenderStore
from pipeline.evaluation.tasks import NvsResult, TaskResult
from pipeline.report import HtmlReport, colorize_labels, draw_points, palette

TASK_TITLES = {
    "cross_instance": "2D cross-instance (keypoints and parts)",
    "cross_view": "2D cross-view (keypoints and parts)",
    "3d": "3D cross-instance (keypoints and parts on surface points)",
}


def figure_to_array(fig: Any) -> np.ndarray:
    """A matplotlib figure -> (H, W, 3) uint8 (closes the figure)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def pck_curves(results: dict[str, TaskResult], category: str) -> np.ndarray | None:
    """One panel per task: PCK vs threshold, one line per method."""
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
    for ax, (task, res) in zip(axes[0], results.items(), strict=True):
        for method, s in res.summary().items():
            y = np.array([np.nan if v is None else v for v in s["pck"]], float)
            ax.plot(res.thresholds, y, marker="o", label=method)
        unit = "object units" if task == "3d" else "px at 128x128"
        ax.set(title=f"{category}: {task}", xlabel=f"threshold ({unit})", ylabel="PCK",
               ylim=(-0.02, 1.02), xticks=list(res.thresholds))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure_to_array(fig)


def _scale(size: int) -> int:
    return max(1, 256 // size)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    return f"{v:.3f}"


def _kp_colors(n: int) -> np.ndarray:
    return palette(max(n, 1), seed=3)


def _project(xyz: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N, 2) pixel coordinates (pixel centres +0.5)."""
    w2c = np.linalg.inv(c2w.astype(np.float64))
    cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]
    uvw = cam @ np.asarray(K, np.float64).T
    return uvw[:, :2] / np.where(np.abs(uvw[:, 2:]) < 1e-9, 1e-9, uvw[:, 2:])


def add_2d_pair(report: HtmlReport, visual: dict[str, Any], n_parts: int) -> None:
    """Source with its keypoints, the target per method with predictions (lines to GT) and the
    part maps (GT source, GT target, transferred per method)."""
    src, trg, counted = visual["src"], visual["trg"], visual["counted"]
    size = src.rgb.shape[0]
    s = _scale(size)
    colors = _kp_colors(len(counted))
    idx = np.flatnonzero(counted & np.isfinite(
        np.stack([m["pred_kp"][:, 0] for m in visual["methods"].values()])).all(axis=0))
    report.paragraph(f"pair {visual['pair']}: primary score {_fmt(visual['score'])} "
                     f"({len(idx)} keypoints counted)")
    report.image(draw_points(src.rgb, src.kp2d[idx], colors[idx], s), "source + keypoints")
    for method, m in visual["methods"].items():
        img = draw_points(trg.rgb, m["pred_kp"][idx], colors[idx], s,
                          lines_to=trg.kp2d[idx]) if len(idx) else trg.rgb
        pck = m["pck"][1] if len(m["pck"]) > 1 else np.nan
        report.image(img, f"{method}: PCK@5 {_fmt(pck)}", scale=1 if len(idx) else s)
    report.raw("<br>")
    report.image(colorize_labels(src.part, n_parts), "source parts (GT)", scale=s)
    report.image(colorize_labels(trg.part, n_parts), "target parts (GT)", scale=s)
    for method, m in visual["methods"].items():
        report.image(colorize_labels(m["pred_part"].astype(np.int64), n_parts),
                     f"{method}: mIoU {_fmt(m['miou'])}", scale=s)
    report.raw("<br>")


def add_3d_pair(report: HtmlReport, visual: dict[str, Any], store: RenderStore,
                n_parts: int) -> None:
    """Target points projected into the pair's view: GT labels, transferred labels per method,
    and predicted keypoints with lines to the GT ones."""
    p = visual["pair"]
    trg = visual["data"]["trg"]
    K, c2w = store.read("K", (p["trg"], p["view"])), store.read("c2w", (p["trg"], p["view"]))
    rgb = store.read("rgb", (p["trg"], p["view"]))
    s = _scale(rgb.shape[0])
    uv = _project(trg["points"], K, c2w)
    pal = palette(max(n_parts, 1))
    report.paragraph(f"pair {p}: primary score {_fmt(visual['score'])}")

    def labelled(labels: np.ndarray) -> np.ndarray:
        ok = labels >= 0
        return draw_points(rgb // 3, uv[ok], pal[np.clip(labels[ok], 0, len(pal) - 1)], s, 1)

    report.image(labelled(trg["point_part"]), "target points, GT parts")
    for method, m in visual["methods"].items():
        report.image(labelled(m["pred_part"]), f"{method}: mIoU {_fmt(m['miou'])}")
    idx = np.flatnonzero(visual["counted"] & np.isfinite(
        np.stack([m["pred_kp"][:, 0] for m in visual["methods"].values()])).all(axis=0))
    colors = _kp_colors(len(visual["counted"]))
    for method, m in visual["methods"].items():
        if len(idx):
            pred = _project(m["pred_kp"][idx], K, c2w)
            gt = _project(trg["kp3d"][idx], K, c2w)
            img = draw_points(rgb, pred, colors[idx], s, lines_to=gt)
            pck = m["pck"][1] if len(m["pck"]) > 1 else np.nan
            report.image(img, f"{method}: 3D keypoints, PCK@0.05 {_fmt(pck)}")
    report.raw("<br>")


def _upscale(img: np.ndarray, size: int) -> np.ndarray:
    rep = max(1, size // img.shape[0])
    return np.kron(img, np.ones((rep, rep, 1), np.uint8))


def add_nvs(report: HtmlReport, nvs: NvsResult, store: RenderStore) -> None:
    """Per object: input and GT views; per method RGB and feature PCA; teacher PCA."""
    for vis in nvs.visuals:
        size = store.image_size
        s = _scale(size)
        report.paragraph(f"{store.object_ids[vis['object']]}: input view {vis['input_view']}, "
                         f"novel views {vis['views']}")
        report.image(vis["input"], "input", scale=s)
        for v, gt in zip(vis["views"], vis["gt"], strict=True):
            report.image(gt, f"GT view {v}", scale=s)
        report.raw("<br>")
        for method, m in vis["methods"].items():
            for rgb, p in zip(m["rgb"], m["psnr"], strict=True):
                report.image(_upscale(rgb, size), f"{method} RGB, PSNR {p:.2f}", scale=s)
            report.raw("<br>")
            for v, pca in zip(vis["views"], m["pca"], strict=True):
                report.image(_upscale(pca, size), f"{method} internal PCA, view {v}", scale=s)
            report.raw("<br>")
        if "teacher_pca" in vis:
            for v, pca in zip(vis["views"], vis["teacher_pca"], strict=True):
                report.image(_upscale(pca, size), f"teacher PCA (GT view {v})", scale=s)
            report.raw("<br>")


def write_evaluate_report(
    path: str | Path,
    cfg: Any,
    store: RenderStore,
    metrics: dict[str, Any],
    results: dict[str, TaskResult],
    nvs: NvsResult | None,
    summary: dict[str, Any],
    swap: dict[str, Any] | None = None,
) -> None:
    """Write index.html (see module doc)."""
    from pipeline.editing import swap_panel

    n_parts = len(store.attrs.get("part_names", [])) or 8
    report = HtmlReport(f"Evaluate report: {cfg.category} / {Path(cfg.report_dir).name}")
    methods = ", ".join(f"{m['name']} ({m['kind']})" for m in summary["methods"])
    report.paragraph(f"Methods: {methods}. Pairs: {summary['pairs']}.")
    for name, reason in summary["skipped"].items():
        report.paragraph(f"Skipped {name}: {reason}", css="bad")
    for note in summary["notes"]:
        report.paragraph(f"Note: {note}", css="bad")
    curves = pck_curves(results, cfg.category)
    if curves is not None:
        report.heading("PCK vs threshold")
        report.image(curves)
    for task, res in results.items():
        if not res.visuals:
            continue
        report.heading(f"{TASK_TITLES[task]}: worst pairs of {res.methods[0]} first")
        for visual in res.visuals:
            if task == "3d":
                add_3d_pair(report, visual, store, n_parts)
            else:
                add_2d_pair(report, visual, n_parts)
    if nvs is not None and nvs.visuals:
        report.heading("Novel views from one input image (RGB and internal-feature PCA)")
        add_nvs(report, nvs, store)
    if swap is not None:
        report.heading(f"Part texture swap: {swap.get('caption', '')}")
        scale = _scale(swap["before"].shape[0])
        for img, cap in swap_panel(swap, n_parts):
            report.image(img, cap, scale=scale)
    report.heading("Tables")
    for task, res in results.items():
        th = ["@" + f"{t:g}" for t in res.thresholds]
        rows = [[m, *[_fmt(v) for v in s["pck"]], _fmt(s["miou"]), s["n_pairs_kp"],
                 s["n_pairs_part"]] for m, s in res.summary().items()]
        report.paragraph(TASK_TITLES[task])
        report.table(["method", *[f"PCK{t}" for t in th], "mIoU", "pairs (kp)",
                      "pairs (part)"], rows)
    if nvs is not None:
        report.paragraph("Novel view synthesis (black background, at the render resolution)")
        report.table(["method", "PSNR", "SSIM", "LPIPS", "images"],
                     [[m, _fmt(s["psnr"]), _fmt(s["ssim"]),
                       "skipped" if "lpips" in nvs.skipped else _fmt(s["lpips"]), s["n_images"]]
                      for m, s in nvs.summary().items()])
    report.heading("Settings and timings")
    rows = []
    for name, r in summary["render"].items():
        rows.append([name, r["eval_size"], f"{r['n_coarse']}+{r['n_importance']}+{r['n_depth']}",
                     r.get("maps", 0), _fmt(r.get("s_per_map")), _fmt(r.get("s_per_full_map")),
                     _fmt(r.get("rays_per_s"))])
    report.table(["model", "eval size", "samples", "maps", "s/map", "s/full map", "rays/s"],
                 rows)
    report.table(["task", "seconds"], [[k, float(v)] for k, v in summary["task_seconds"].items()])
    report.table(["metric", "value"], [[k, _fmt(v) if isinstance(v, float) or v is None else v]
                                      for k, v in metrics.items()])
    report.write(path)
