"""The render stage's report: ``reports/render/<category>/index.html``.

A contact sheet (RGB | depth | part labels | keypoints) for a few objects and views, then the
annotation alignment per model, counts and timings, and the store.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cache.render_store import RenderStore
from pipeline.reports.html import (
    HtmlReport,
    colorize_depth,
    colorize_labels,
    depth_legend_html,
    draw_points,
    legend_html,
    palette,
    png_data_uri,
)

if TYPE_CHECKING:
    from pipeline.render_stage import RenderStageConfig


def write_render_report(
    cfg: RenderStageConfig,
    path: Path,
    metrics: dict,
    failures: dict[str, str],
    n_objects: int = 4,
    n_views: int = 4,
) -> None:
    """Contact sheet (RGB, depth, parts, keypoints) for a few objects and views, then tables.

    Rows are encoded at the render size and shown at 2x by the browser (nearest): encoding
    2x-upscaled PNGs was most of the report's time (0.45 of 0.69 s for 16 rows).
    """
    report = HtmlReport(f"Render report: {cfg.category} ({cfg.source}, {cfg.renderer})")
    store = RenderStore(cfg.out, allow_incomplete=True)
    splits = store.splits
    done = store.valid_indices()
    counts = ", ".join(f"{splits.count(s)} {s}" for s in ("train", "val", "test"))
    report.paragraph(f"{len(done)} of {store.n_objects} objects rendered ({counts}), "
                     f"{store.n_views} views at {store.image_size}x{store.image_size}; "
                     f"{len(failures)} failed; {metrics.get('views_per_s', 0):.1f} views/s.",
                     css="bad" if failures or len(done) < store.n_objects else "")
    if failures:
        report.heading(f"Failures ({len(failures)})")
        report.table(["object", "reason"], [[k, v] for k, v in failures.items()])
    part_names = store.attrs.get("part_names", [])
    kp_names = store.attrs.get("keypoint_names", [])
    kp_colors = palette(max(len(kp_names), 1), seed=3)
    picks = done[:n_objects]
    report.heading(f"Contact sheet: RGB | depth | part labels | keypoints (visible): {len(picks)} "
                   f"of {len(done)} objects, {n_views} of {store.n_views} views each")
    report.raw(depth_legend_html())
    if part_names:
        report.raw(legend_html(list(part_names), palette(max(len(part_names), 1)),
                               "part colours (black = background or unlabelled)"))
    if kp_names:
        report.raw(legend_html(list(kp_names), kp_colors, "keypoint markers"))
    for i in picks:
        views = np.linspace(0, store.n_views - 1, n_views).astype(int)
        for v in views:
            rgb = store.read("rgb", (i, v))
            depth = store.read("depth", (i, v))
            part = store.read("part", (i, v))
            vis = store.read("kp_visible", (i, v))
            uv = store.read("kp2d", (i, v))[vis]
            ids = store.read("kp_id", i)[vis]
            row = np.concatenate(
                [
                    rgb,
                    colorize_depth(depth),
                    colorize_labels(part, len(part_names)),
                    draw_points(rgb, uv, kp_colors[np.clip(ids, 0, len(kp_colors) - 1)],
                                scale=1, radius=2),
                ],
                axis=1,
            )
            caption = html.escape(f"{store.object_ids[i]} ({store.splits[i]}) view {v}")
            report.raw(f'<div class="fig"><img src="{png_data_uri(row)}" '
                       f'width="{2 * row.shape[1]}" height="{2 * row.shape[0]}">'
                       f'<div class="cap">{caption}</div></div>')
    alignment = store.attrs.get("alignment") or {}
    if alignment:
        report.heading("Annotation alignment per model (chamfer in unit-diagonal units)")
        rows = []
        for oid, sets in alignment.items():
            for name, v in sets.items():
                if isinstance(v, dict):
                    rows.append([oid, name, v["chamfer"], str(v["candidate"]), str(v["mirrored"])])
                else:
                    rows.append([oid, name, "", str(v), ""])
        report.table(["object", "set", "chamfer", "transform", "mirrored"], rows)
    report.heading("Counts and timings")
    rows = [[k, v] for k, v in metrics.items() if not isinstance(v, dict)]
    rows += [[f"time share: {k}", v] for k, v in metrics.get("time_share", {}).items()]
    report.table(["metric", "value"], rows)
    report.table(["split", "objects"], [[s, splits.count(s)] for s in ("train", "val", "test")])
    report.heading("Store")
    report.table(
        ["key", "value"],
        [
            ["path", cfg.out],
            ["arrays", ", ".join(sorted(store.group.array_keys()))],
            ["views x size", f"{store.n_views} x {store.image_size}"],
            ["renderer", str(store.attrs.get("renderer"))],
            ["camera", str(store.attrs.get("camera"))],
            ["keypoints", ", ".join(kp_names)],
            ["fingerprint", str(metrics.get("fingerprint"))],
        ],
    )
    report.write(path)
