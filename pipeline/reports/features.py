"""Feature colourings shared by every stage's report.

A PCA-to-RGB colouring is only comparable across images when they share one basis. Pass the
category's fixed basis (:meth:`cache.feature_store.FeatureStore.colour_basis`) to colour
teacher-space features the same way in every instance and stage; without one, the images of
one call share a basis fitted on their own foreground cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cache.feature_store import principal_axes


@dataclass(frozen=True)
class ColourBasis:
    """A fixed colouring: ``mean`` (C,), ``components`` (C, k<=3) and optionally the value
    range ``lo``/``hi`` (k,) mapped to 0..255 (None: the 2nd/98th percentile of each call)."""

    mean: np.ndarray
    components: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


def pca_rgb(feats: np.ndarray, basis: ColourBasis | None = None) -> np.ndarray:
    """(B, h, w, C) -> (B, h, w, 3) uint8 PCA-to-RGB; all-zero (background) cells stay black.

    Args:
        feats: (B, h, w, C) features.
        basis: a fixed :class:`ColourBasis`; None fits a joint k=3 basis on the foreground
            cells of ``feats`` (covariance ``eigh`` on one BLAS thread,
            :func:`cache.feature_store.principal_axes`).
    """
    flat = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
    fg = np.abs(flat).sum(axis=1) > 0
    out = np.zeros((len(flat), 3))
    if basis is None and fg.sum() > 3:
        basis = ColourBasis(*principal_axes(flat[fg], min(3, flat.shape[1])))
    if basis is not None and fg.any():
        k = min(3, basis.components.shape[1])
        y = (flat[fg] - basis.mean) @ basis.components[:, :k]
        lo = np.percentile(y, 2, axis=0) if basis.lo is None else basis.lo[:k]
        hi = np.percentile(y, 98, axis=0) if basis.hi is None else basis.hi[:k]
        out[np.flatnonzero(fg)[:, None], np.arange(k)] = np.clip(
            (y - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
    return (out.reshape(*feats.shape[:-1], 3) * 255).astype(np.uint8)
