"""The import stage's report: ``reports/import/<category>/index.html``.

A contact sheet (RGB | alpha | parts | keypoints, each when present), then which annotations
the source carries, convention checks, notes, counts, features and the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cache.render_store import RenderStore
from pipeline.reports.html import HtmlReport, colorize_labels, draw_points, palette
from renderers.importers import SPLITS

if TYPE_CHECKING:
    from pipeline.import_stage import ImportStageConfig


def write_import_report(cfg: ImportStageConfig, path: Path, metrics: dict,
                        failures: dict[str, str], n_objects: int = 4, n_views: int = 4) -> None:
    """Contact sheet (RGB | alpha | parts | keypoints, each when present), then which
    annotations the source carries, failures and counts."""
    from pipeline.import_stage import ANNOTATIONS  # the stage imports this module

    store = RenderStore(cfg.out, allow_incomplete=True)
    report = HtmlReport(f"Import report: {cfg.category} ({cfg.format} from {cfg.root})")
    present = store.attrs.get("annotations_present") or {}
    annotated = store.attrs.get("annotated_objects") or {}
    if failures:
        report.heading(f"Failures ({len(failures)})")
        report.table(["object", "reason"], [[k, v] for k, v in failures.items()])
    shown = [k for k in ("parts", "keypoints") if present.get(k)]
    report.heading("Contact sheet: RGB | alpha" + "".join(f" | {k}" for k in shown))
    part_names = store.attrs.get("part_names", [])
    kp_colors = palette(max(len(store.attrs.get("keypoint_names", [])), 1), seed=3)
    up2 = np.ones((2, 2, 1), np.uint8)
    for i in store.valid_indices()[:n_objects]:
        for v in np.linspace(0, store.n_views - 1, n_views).astype(int):
            rgb = store.read("rgb", (i, v))
            tiles = [np.kron(rgb, up2), np.kron(np.repeat(store.read("alpha", (i, v))[..., None],
                                                          3, -1), up2)]
            if present.get("parts"):
                tiles.append(np.kron(colorize_labels(store.read("part", (i, v)),
                                                     max(1, len(part_names))), up2))
            if present.get("keypoints"):
                vis = store.read("kp_visible", (i, v))
                ids = store.read("kp_id", i)[vis]
                tiles.append(draw_points(rgb, store.read("kp2d", (i, v))[vis],
                                         kp_colors[np.clip(ids, 0, len(kp_colors) - 1)]))
            report.image(np.concatenate(tiles, axis=1),
                         f"{store.object_ids[i]} ({store.splits[i]}) view {v}")
    report.heading("Annotations the source carries")
    n_done = len(store.valid_indices())
    report.table(["annotation", "present", "objects with it", "stored as"], [
        [k, "yes" if present.get(k) else "NO", f"{len(annotated.get(k, []))} / {n_done}",
         {"depth": "depth", "parts": "part (+ point_part)", "keypoints": "kp3d, kp_id, kp2d, "
          "kp_visible", "points": "points, point_part"}[k]
         + ("" if present.get(k) else " (fill values)")] for k in ANNOTATIONS])
    if not all(present.get(k) for k in ANNOTATIONS):
        report.paragraph("Arrays of absent annotations hold the store's fill values; later "
                         "stages read annotations_present and say so instead of scoring them.")
    checks = metrics.get("checks") or {}
    if checks:
        report.heading("Convention checks")
        report.table(["check", "value"], [[k, str(v)] for k, v in checks.items()])
    if metrics.get("notes"):
        report.heading("Notes")
        for note in metrics["notes"]:
            report.paragraph(note)
    report.heading("Counts and timings")
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items()
                                       if not isinstance(v, dict | list)])
    splits = store.splits
    report.table(["split", "objects"], [[s, splits.count(s)] for s in SPLITS])
    if metrics.get("features"):
        report.heading("Features")
        report.table(["key", "value"], [[k, str(v)] for k, v in metrics["features"].items()])
    report.heading("Store")
    report.table(["key", "value"], [
        ["path", cfg.out], ["views x size", f"{store.n_views} x {store.image_size}"],
        ["source", f"{cfg.format}: {cfg.root}"], ["split", str(cfg.split_file or "source's")],
        ["camera", str(store.attrs.get("camera"))],
        ["fingerprint", str(metrics.get("fingerprint"))]])
    report.write(path)


def write_features_report(cfg: ImportStageConfig, path: Path, features: dict) -> None:
    """``import --features-only``: what the features import made, as one table."""
    report = HtmlReport(f"Imported features: {cfg.category} ({cfg.format} from {cfg.root})")
    report.table(["key", "value"], [[k, str(v)] for k, v in features.items()])
    report.write(path)
