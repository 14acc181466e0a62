"""The distill-cache stage's report: ``reports/distill-cache/<teacher>/<category>/index.html``.

Opens with the variance the stored width keeps (``--pca D``), then input views beside a PCA
colouring of their features in the category's fixed basis (stored with the feature store,
fitted once on train objects, so one part has one colour in every instance and stage), the
share of foreground variance kept per width D, the statistics and the teacher identity.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore
from pipeline.reports.html import HtmlReport, png_data_uri
from pipeline.reports.features import ColourBasis, pca_rgb

if TYPE_CHECKING:
    from pipeline.distill_stage import DistillStageConfig

BASIS_NOTE = {
    True: "Colours: the category's fixed basis stored with the feature store (top 3 principal "
          "axes of the foreground features of train-object views, fitted once at distill time),"
          " so one part has one colour in every instance and in every stage's report.",
    False: "Colours: this store has no stored category basis (an older store); the views below "
           "share one basis fitted on their own foreground cells.",
}


def pca_headline(store: FeatureStore) -> str | None:
    """``PCA to D of C channels keeps X % ...`` for a ``--pca`` store with a recorded
    spectrum, else None."""
    dim, kept = store.attrs.get("pca_dim"), store.variance_kept()
    if not dim or f"d{dim}" not in kept:
        return None
    return (f"PCA to {dim} of {store.attrs.get('teacher_dim')} teacher channels keeps "
            f"{kept[f'd{dim}']:.1%} of the foreground feature variance (train-object sample).")


def add_views(report: HtmlReport, store: FeatureStore, renders: RenderStore,
              basis: ColourBasis | None, n_objects: int = 4, n_views: int = 4) -> None:
    """Per object, ``n_views`` input views beside the colouring of their features."""
    size = renders.image_size
    views = np.linspace(0, renders.n_views - 1, n_views).astype(int)
    for i in renders.valid_indices()[:n_objects]:
        feats = np.stack([store.read((i, int(v))) for v in views]).astype(np.float32)
        colours = pca_rgb(feats, basis)
        for k, v in enumerate(views):
            rep = size // colours.shape[1]
            up = np.kron(colours[k], np.ones((rep, rep, 1), np.uint8))
            pad = np.zeros((size, size, 3), np.uint8)
            pad[: up.shape[0], : up.shape[1]] = up[:size, :size]
            img = np.concatenate([renders.read("rgb", (i, int(v))), pad], axis=1)
            # encoded at 1x, shown at 2x (nearest): a 2x PNG took 4x the encoding time
            caption = html.escape(f"{renders.object_ids[i]} view {v}")
            report.raw(f'<div class="fig"><img src="{png_data_uri(img)}" width='
                       f'"{2 * img.shape[1]}" height="{2 * img.shape[0]}"><div class="cap">'
                       f'{caption}</div></div>')


def write_distill_report(
    cfg: DistillStageConfig,
    metrics: dict,
    failures: dict,
    store: FeatureStore | None,
    renders: RenderStore,
) -> None:
    """Input views beside a PCA colouring of their features, then variance kept, statistics
    and identity."""
    report = HtmlReport(f"Distill-cache report: {cfg.label} on {cfg.category}")
    headline = pca_headline(store) if store is not None else None
    if headline:
        report.paragraph(headline)
    if failures:
        report.heading(f"Failures ({len(failures)})")
        report.table(["object", "reason"], [[k, v] for k, v in failures.items()])
    if store is not None:
        basis = ColourBasis.of_store(store)
        report.heading("Input views and a PCA-to-RGB colouring of their teacher features")
        report.paragraph(BASIS_NOTE[basis is not None])
        add_views(report, store, renders, basis)
        rows = [[k.removeprefix("d"), v] for k, v in store.variance_kept().items()]
        if rows:
            report.heading("Share of foreground variance kept by the top D principal axes")
            report.paragraph("Teacher-space spectrum of the train-object sample the bases are "
                             "fitted on (D = full: every teacher channel).")
            report.table(["D", "variance kept"], rows)
    report.heading("Statistics")
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items()])
    if store is not None:
        report.heading("Teacher identity (the cache key)")
        report.table(["key", "value"], [[k, str(v)] for k, v in store.attrs["identity"].items()])
        report.paragraph(f"render store fingerprint: {store.attrs['render_fingerprint']}")
    report.write(Path(cfg.report_dir) / "index.html")
