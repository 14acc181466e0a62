"""The evaluate report: ``reports/evaluate/<run>/index.html`` (self-contained, no JS/CDN).

The headline statistics first (per metric and task every method's mean with a 95%
object-level bootstrap interval, the claims student vs teacher_2d / pixelNeRF / best control
with verdicts, score definitions), then pictures (PCK curves, the worst pairs of each task,
novel views with feature PCA maps, a part texture swap), then the tables against the
baselines, then settings and timings.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from cache.render_store import RenderStore
from pipeline.evaluation.tasks import NvsResult, TaskResult
from pipeline.reports.html import HtmlReport, colorize_labels, draw_points, legend_html, palette

TASK_TITLES = {
    "cross_instance": "2D cross-instance (keypoints and parts)",
    "cross_view": "2D cross-view (keypoints and parts)",
    "cross_instance_views": "2D cross-instance across views (keypoints and parts; pixel "
                            "position cannot help)",
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


PAIR_SCORE_NOTE = ("Pair score = the mean of the pair's PCK@5 and part mIoU for the first "
                   "method (how the pictured pairs are ranked, worst first). Markers: "
                   "keypoints, one colour per keypoint and the same colour in source and "
                   "target; a line joins each transferred keypoint to its ground truth. Part "
                   "colours: the part legend above; black = background.")


def pair_title(pair: dict[str, Any], object_ids: list[str], category: str) -> str:
    """``chair 1a2b -> chair 3c4d, view 45`` for a pair's fields (cross-view: one object)."""
    if "obj" in pair:
        return (f"{category} {object_ids[pair['obj']]}: view {pair['src_view']} -> view "
                f"{pair['trg_view']}")
    views = (f"view {pair['view']}" if "view" in pair
             else f"view {pair['src_view']} -> view {pair['trg_view']}")
    return f"{category} {object_ids[pair['src']]} -> {category} {object_ids[pair['trg']]}, {views}"


def add_2d_pair(report: HtmlReport, visual: dict[str, Any], n_parts: int, title: str) -> None:
    """Source with its keypoints, the target per method with predictions (lines to GT) and the
    part maps (GT source, GT target, transferred per method)."""
    src, trg, counted = visual["src"], visual["trg"], visual["counted"]
    size = src.rgb.shape[0]
    s = _scale(size)
    colors = _kp_colors(len(counted))
    idx = np.flatnonzero(counted & np.isfinite(
        np.stack([m["pred_kp"][:, 0] for m in visual["methods"].values()])).all(axis=0))
    report.paragraph(f"{title}: pair score {_fmt(visual['score'])} "
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
                n_parts: int, title: str) -> None:
    """Target points projected into the pair's view: GT labels, transferred labels per method,
    and predicted keypoints with lines to the GT ones."""
    p = visual["pair"]
    trg = visual["data"]["trg"]
    K, c2w = store.read("K", (p["trg"], p["view"])), store.read("c2w", (p["trg"], p["view"]))
    rgb = store.read("rgb", (p["trg"], p["view"]))
    s = _scale(rgb.shape[0])
    uv = _project(trg["points"], K, c2w)
    pal = palette(max(n_parts, 1))
    report.paragraph(f"{title}: pair score {_fmt(visual['score'])}")

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
    if nvs.colour_bases:
        report.paragraph("PCA colours (the same basis in every object below): " + "; ".join(
            f"{'teacher PCA' if k == 'teacher' else k + ' internal PCA'}: {v}"
            for k, v in nvs.colour_bases.items()) + ".")
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


PROTOCOL_NOTE = (
    "Protocols: 'official' reproduces the released FeatureNeRF scripts pair by pair (source "
    "keypoints read their own pixel, foreground = labelled pixels only, 3D parts over all "
    "points, first index on ties); where the released code would raise, the pair is dropped "
    "with the reason. 'project' keeps this project's refinements (keypoints snapped to the "
    "foreground, alpha foreground for unlabelled views, labelled 3D points only). Both are "
    "scored from the same feature maps. Means are over the pairs with that score; 'released "
    "mean' is the released scripts' plain mean, NaN once a pair shares no part label."
)


def _miou_cell(q: dict[str, Any]) -> str:
    """mIoU, plus the released scripts' mean when it differs (official only)."""
    text = _fmt(q["miou"])
    rel = q.get("miou_released")
    if rel is not None and _fmt(rel) != text:
        text += f" (released mean: {_fmt(rel)})"
    return text


def _drops_cell(q: dict[str, Any]) -> str:
    """Drop counts by reason: whole pairs, then kept pairs without a keypoint / part score."""
    parts = [f"{scope}{reason}: {n}" for scope, key in (("", "dropped"), ("kp: ", "dropped_kp"),
                                                         ("part: ", "dropped_part"))
             for reason, n in q.get(key, {}).items()]
    return "; ".join(parts) or "none"


def write_evaluate_report(
    path: str | Path,
    cfg: Any,
    store: RenderStore,
    metrics: dict[str, Any],
    results: dict[str, TaskResult],
    nvs: NvsResult | None,
    summary: dict[str, Any],
    swap: dict[str, Any] | None = None,
    headline: list[dict[str, Any]] | None = None,
) -> None:
    """Write index.html (see module doc); ``headline`` (stats.headline_table per protocol)
    goes first, before any picture."""
    from pipeline.reports.editing import swap_panel

    n_parts = len(store.attrs.get("part_names", [])) or 8
    report = HtmlReport(f"Evaluate report: {cfg.category} / {Path(cfg.report_dir).name}")
    for line in summary.get("stale", []):  # evaluated with --allow-stale: say so first
        report.paragraph(f"STALE INPUT (evaluated with --allow-stale): {line}", css="bad")
    for table in headline or []:
        report.raw(headline_html(table))
    methods = ", ".join(f"{m['name']} ({m['kind']})" for m in summary["methods"])
    report.paragraph(f"Methods: {methods}. Pairs: {summary['pairs']}.")
    for name, reason in summary["skipped"].items():
        report.paragraph(f"Skipped {name}: {reason}", css="bad")
    for note in summary["notes"]:
        report.paragraph(f"Note: {note}", css="bad")
    part_names = list(store.attrs.get("part_names", [])) or [str(i) for i in range(n_parts)]
    report.raw(legend_html(part_names, palette(max(n_parts, 1))[: len(part_names)],
                           "part colours (all pictures below)"))
    curves = pck_curves(results, cfg.category)
    if curves is not None:
        report.heading("PCK vs threshold")
        report.image(curves)
    for task, res in results.items():
        if not res.visuals:
            continue
        report.heading(f"{TASK_TITLES[task]}: worst pairs of {res.methods[0]} first")
        report.paragraph(PAIR_SCORE_NOTE)
        for visual in res.visuals:
            title = pair_title(visual["pair"], store.object_ids, cfg.category)
            if task == "3d":
                add_3d_pair(report, visual, store, n_parts, title)
            else:
                add_2d_pair(report, visual, n_parts, title)
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
        rows = [[m, p + (" (primary)" if p == res.protocols[0] else ""),
                 *[_fmt(v) for v in q["pck"]], _miou_cell(q), q["n_pairs_kp"],
                 q["n_pairs_part"], _drops_cell(q)]
                for m, s in res.summary().items() for p, q in s["by_protocol"].items()]
        report.paragraph(TASK_TITLES.get(task, task))
        report.table(["method", "protocol", *[f"PCK{t}" for t in th], "mIoU", "pairs (kp)",
                      "pairs (part)", "not scored (reason: pairs)"], rows)
    report.paragraph(PROTOCOL_NOTE)
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


# --- headline statistics (pipeline/evaluation/stats.py) -----------------------------------

HEADLINE_TASKS = {
    "cross_instance_views": "2D cross-instance across views (headline: pixel position cannot "
                            "help)",
    "cross_instance": "2D cross-instance, same view",
    "cross_view": "2D cross-view, same object",
    "3d": "3D cross-instance (surface points)",
}
_CONTROL_STYLE = ' style="background:#f4f4fb"'
SCORE_DEFINITIONS = (
    "kp PCK@5 / PCK@10 (2D): the fraction of counted keypoints (visible in both images) whose "
    "transferred position (nearest-neighbour feature match into the target's foreground) lies "
    "within 5 / 10 px of the ground truth at 128x128 (thresholds scale with the image size). "
    "3D: the same on surface points, within 0.05 / 0.1 object units. "
    "part mIoU: the mean over parts of the intersection over union between the part labels "
    "transferred from the source and the target's ground truth (foreground pixels, or surface "
    "points in 3D). "
    "Controls (grouped on the right): untrained_internal = the same network at step 0; "
    "coord_depth = the surface point from the model's own rendered depth in the input camera's "
    "frame; pixel_xy = normalised image xy; pixel_bbox_xy = xy relative to the object's 2D "
    "bounding box. A method that does not beat the best control has not shown semantic "
    "correspondence. "
    "Every number is the mean over pairs with a 95% object-level bootstrap interval [lo, hi]: "
    "objects (not pairs) are resampled with replacement, because pairs sharing an object are "
    "correlated. A claim 'A > B' is stated only when the interval of the paired difference "
    "A - B (on the pairs where both are scored) excludes 0; otherwise it reads 'not resolved at "
    "N pairs': the data cannot tell A from B, which is not the same as A = B."
)


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _estimate_cell(est: dict[str, Any] | None, control: bool) -> str:
    style = _CONTROL_STYLE if control else ""
    if est is None:
        return f"<td{style}>&mdash;</td>"
    few = est.get("few")
    mark = " &dagger;" if few else ""
    dropped = f", {est['n_dropped']} dropped" if est.get("n_dropped") else ""
    note = (f"<div class=\"cap\">{est['n_pairs']} pairs, {est['n_objects']} obj"
            f"{html.escape(dropped)}</div>")
    cls = ' class="bad"' if few else ""
    text = f"{_num(est['mean'])} [{_num(est['ci_lo'])}, {_num(est['ci_hi'])}]"
    return f"<td{style}><span{cls}>{html.escape(text)}{mark}</span>{note}</td>"


def _metric_table(table: dict[str, Any], metric: str) -> str:
    cells = table["metrics"].get(metric, {})
    controls = set(table["controls"])
    main = [m for m in table["methods"] if m not in controls]
    ctrl = [m for m in table["methods"] if m in controls]
    esc = html.escape
    head1 = '<tr><th class="l" rowspan="2">task</th>'
    if main:
        head1 += f'<th colspan="{len(main)}">methods</th>'
    if ctrl:
        head1 += f'<th colspan="{len(ctrl)}"{_CONTROL_STYLE}>controls</th>'
    head2 = "<tr>" + "".join(f"<th>{esc(m)}</th>" for m in main) + "".join(
        f"<th{_CONTROL_STYLE}>{esc(m)}</th>" for m in ctrl) + "</tr>"
    body = ""
    for task in table["tasks"]:
        cell = cells.get(task)
        if cell is None:
            continue
        unit = "" if cell["threshold"] is None else (
            f" (@{cell['threshold']:g} {'object units' if task == '3d' else 'px at 128'})")
        body += (f'<tr><td class="l">{esc(HEADLINE_TASKS.get(task, task) + unit)}</td>'
                 + "".join(_estimate_cell(cell["methods"].get(m), False) for m in main)
                 + "".join(_estimate_cell(cell["methods"].get(m), True) for m in ctrl)
                 + "</tr>")
    return f"<table>{head1}</tr>{head2}{body}</table>"


def _claims_table(table: dict[str, Any]) -> str:
    esc = html.escape
    rows = ""
    for task in table["tasks"]:
        for metric, cells in table["metrics"].items():
            cell = cells.get(task)
            for c in (cell or {}).get("claims", []):
                vs = f"best control ({c['b']})" if c["kind"] == "best_control" else c["b"]
                resolved = not c["verdict"].startswith("not resolved")
                color = ("#070" if ">" in c["verdict"] else "#b00") if resolved else "#777"
                mark = " &dagger;" if c["few"] else ""
                diff = f"{_num(c['mean'])} [{_num(c['ci_lo'])}, {_num(c['ci_hi'])}]"
                rows += (f'<tr><td class="l">{esc(HEADLINE_TASKS.get(task, task))}</td>'
                         f'<td class="l">{esc(metric)}</td>'
                         f'<td class="l">{esc(c["a"])} &minus; {esc(vs)}</td>'
                         f"<td>{esc(diff)}{mark}</td><td>{c['n_pairs']}</td>"
                         f"<td>{c['n_objects']}</td><td class=\"l\" style=\"color:{color}\">"
                         f"<b>{esc(c['verdict'])}</b></td></tr>")
    if not rows:
        return "<p>No claims: the headline method (student_internal) or every baseline is " \
               "absent.</p>"
    head = ("<tr><th class=\"l\">task</th><th class=\"l\">metric</th><th class=\"l\">"
            "difference</th><th>mean [95% CI]</th><th>pairs</th><th>objects</th>"
            "<th class=\"l\">verdict</th></tr>")
    return f"<table>{head}{rows}</table>"


def _few_cells(table: dict[str, Any]) -> list[str]:
    out = []
    for metric, cells in table["metrics"].items():
        for task, cell in cells.items():
            for m, est in cell["methods"].items():
                if est["few"]:
                    out.append(f"{task} / {metric} / {m} ({est['n_pairs']} pairs, "
                               f"{est['n_objects']} objects)")
            for c in cell["claims"]:
                if c["few"]:
                    out.append(f"{task} / {metric} / {c['a']} - {c['b']} ({c['n_pairs']} "
                               f"pairs, {c['n_objects']} objects)")
    return out


def headline_html(table: dict[str, Any]) -> str:
    """HTML fragment (no JS/CDN) of a :func:`pipeline.evaluation.stats.headline_table`: the
    few-pairs warning, one table per metric (rows = tasks, columns = methods then controls,
    "mean [lo, hi]"), the claims with verdicts, and the score definitions."""
    rep = HtmlReport("")
    proto = f" (protocol: {table['protocol']})" if table.get("protocol") else ""
    rep.heading(f"Headline: student vs its 2D teacher, pixelNeRF and controls{proto}")
    few = _few_cells(table)
    if few:
        shown = "; ".join(few[:12]) + (f"; and {len(few) - 12} more" if len(few) > 12 else "")
        rep.raw('<p class="bad" style="border:2px solid #b00;padding:6px"><b>Warning:</b> '
                + html.escape(f"{len(few)} numbers rest on fewer than {table['min_pairs']} "
                              f"pairs or fewer than {table['min_objects']} objects (marked "
                              f"\u2020); their intervals are unreliable and no claim should "
                              f"rest on them: {shown}.") + "</p>")
    if not table["tasks"]:
        rep.paragraph("No scored pairs.", css="bad")
    for metric in table["metrics"]:
        if not any(table["metrics"][metric].get(t) for t in table["tasks"]):
            continue
        rep.paragraph(f"{metric}: mean [95% object-level bootstrap interval], "
                      f"{table['n_boot']} resamples")
        rep.raw(_metric_table(table, metric))
    rep.paragraph("Claims (paired differences on the pairs where both methods are scored)")
    rep.raw(_claims_table(table))
    rep.paragraph(SCORE_DEFINITIONS)
    return "\n".join(rep.parts)


def headline_markdown(table: dict[str, Any], metrics: tuple[str, ...] | None = None) -> str:
    """The headline table as Markdown (README, console): per metric a task x method table of
    ``mean [lo, hi]``, then the claims with their verdicts."""
    lines = [f"Protocol: {table.get('protocol') or 'single'}; 95% object-level bootstrap, "
             f"{table['n_boot']} resamples."]
    methods = table["methods"]
    for metric in metrics or tuple(table["metrics"]):
        cells = table["metrics"].get(metric, {})
        tasks = [t for t in table["tasks"] if cells.get(t)]
        if not tasks:
            continue
        names = [m + (" (control)" if m in table["controls"] else "") for m in methods]
        lines += ["", f"**{metric}**", "", "| task | pairs / objects | " + " | ".join(names)
                  + " |", "|---" * (len(methods) + 2) + "|"]
        for task in tasks:
            ests = cells[task]["methods"]
            any_est = next(iter(ests.values()))
            row = [_estimate_md(ests.get(m)) for m in methods]
            lines.append(f"| {task} | {any_est['n_pairs']} / {any_est['n_objects']} | "
                         + " | ".join(row) + " |")
    lines += ["", "| metric | task | claim | difference [95% CI] | verdict |",
              "|---|---|---|---|---|"]
    for metric in metrics or tuple(table["metrics"]):
        for task in table["tasks"]:
            for c in table["metrics"].get(metric, {}).get(task, {}).get("claims", []):
                lines.append(f"| {metric} | {task} | {c['a']} - {c['b']} | "
                             f"{_num(c['mean'])} [{_num(c['ci_lo'])}, {_num(c['ci_hi'])}] | "
                             f"{c['verdict']} |")
    return "\n".join(lines)


def _estimate_md(est: dict[str, Any] | None) -> str:
    if not est or est.get("mean") is None:
        return "n/a"
    mark = " †" if est.get("few") else ""
    return f"{est['mean']:.3f} [{_num(est['ci_lo'])}, {_num(est['ci_hi'])}]{mark}"
