"""Feature colourings shared by every stage's report.

A PCA-to-RGB colouring is only comparable across images when they share one basis. Pass the
category's fixed basis (:meth:`cache.feature_store.FeatureStore.colour_basis`, via
:meth:`ColourBasis.of_store`) to colour teacher-space features the same way in every instance
and stage; for another feature space (a student's internal features), fit one basis with
:func:`fit_colour_basis` on everything a report shows. Without a basis, the images of one
call share a basis fitted on their own foreground cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cache.feature_store import Principal, foreground_rows, principal_components


@dataclass(frozen=True)
class ColourBasis:
    """A fixed colouring: ``mean`` (C,), ``components`` (C, k<=3) and optionally the value
    range ``lo``/``hi`` (k,) mapped to 0..255 (None: the 2nd/98th percentile of each call)."""

    mean: np.ndarray
    components: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    @classmethod
    def of_store(cls, store: Any) -> ColourBasis | None:
        """A feature store's stored category basis; None for a store without one."""
        arrays = store.colour_basis()
        return None if arrays is None else cls(*arrays)

    def project(self, rows: np.ndarray) -> np.ndarray:
        """(M, C) -> (M, k) coordinates along the basis' axes."""
        return (np.asarray(rows, np.float64) - self.mean) @ self.components


def colour_basis_of(principal: Principal, rows: np.ndarray) -> ColourBasis:
    """The top (up to 3) axes of ``principal``, with lo / hi = the 2nd / 98th percentiles of
    the sample ``rows`` (M, C) projected onto them."""
    k = min(3, principal.axes.shape[1])
    basis = ColourBasis(principal.mean, principal.axes[:, :k])
    y = basis.project(rows)
    return ColourBasis(basis.mean, basis.components, np.percentile(y, 2, axis=0),
                       np.percentile(y, 98, axis=0))


def fit_colour_basis(feats: np.ndarray) -> ColourBasis | None:
    """A fixed basis from the foreground (not all-zero) cells of ``feats`` (..., C): their top
    3 principal axes (:func:`cache.feature_store.principal_components`, one BLAS thread) and
    value range; None with 3 or fewer foreground cells."""
    rows = foreground_rows(np.asarray(feats)).astype(np.float64)
    if len(rows) <= 3:
        return None
    return colour_basis_of(principal_components(rows), rows)


def pca_rgb(feats: np.ndarray, basis: ColourBasis | None = None) -> np.ndarray:
    """(B, h, w, C) -> (B, h, w, 3) uint8 PCA-to-RGB; all-zero (background) cells stay black.

    Args:
        feats: (B, h, w, C) features.
        basis: a fixed :class:`ColourBasis`; None fits one on the foreground cells of
            ``feats`` (:func:`fit_colour_basis`).
    """
    flat = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
    fg = np.abs(flat).sum(axis=1) > 0
    out = np.zeros((len(flat), 3))
    if basis is None:
        basis = fit_colour_basis(feats)
    if basis is not None and fg.any():
        k = min(3, basis.components.shape[1])
        y = basis.project(flat[fg])[:, :k]
        lo = np.percentile(y, 2, axis=0) if basis.lo is None else basis.lo[:k]
        hi = np.percentile(y, 98, axis=0) if basis.hi is None else basis.hi[:k]
        out[np.flatnonzero(fg)[:, None], np.arange(k)] = np.clip(
            (y - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
    return (out.reshape(*feats.shape[:-1], 3) * 255).astype(np.uint8)
