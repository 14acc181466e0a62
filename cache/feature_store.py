"""The feature store: ``data/features/<teacher>/<category>.zarr`` (docs/contracts.md, section 2).

``feat`` float16 (N, V, h, w, C): one chunk per (object, view), one shard per object. Attrs hold
the teacher identity dict and the fingerprint of the render store it was computed from; a store
whose identity or source fingerprint differs is stale and is never reused silently. Per-object
``done`` flags make interrupted runs resumable. Optional PCA keeps D < C channels and stores the
basis (``pca_mean`` (C,), ``pca_components`` (C, D)) beside the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from cache.zarr_io import StoreError, create_object_array, open_group, read_checked, short_hash

FORMAT_VERSION = 1


def store_key(identity: dict, render_fingerprint: str, pca_dim: int | None) -> str:
    """What makes a feature store valid: teacher identity, source renders and PCA setting."""
    return short_hash({"identity": identity, "render": render_fingerprint, "pca": pca_dim})


class FeatureStoreWriter:
    """Creates, resumes or refuses (stale) a feature store, then writes per-view chunks."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_group(self.path, mode="r+")

    @classmethod
    def create_or_resume(
        cls,
        path: str | Path,
        n_objects: int,
        n_views: int,
        grid: tuple[int, int],
        dim: int,
        attrs: dict,
        if_stale: str = "fail",
        overwrite: bool = False,
    ) -> FeatureStoreWriter:
        """Open for writing. ``attrs`` needs ``identity``, ``render_fingerprint``, ``pca_dim``."""
        path = str(path)
        key = store_key(attrs["identity"], attrs["render_fingerprint"], attrs.get("pca_dim"))
        if Path(path).exists() and any(Path(path).iterdir()) and not overwrite:
            group = open_group(path, mode="r+")
            found = group.attrs.get("store_key")
            if found == key:
                return cls(path)
            if if_stale != "overwrite":
                raise StoreError(
                    f"{path}: feature store is stale (computed with "
                    f"{_stale_reason(dict(group.attrs), attrs)}); re-run with --if-stale "
                    "overwrite to recompute it"
                )
        group = zarr.open_group(path, mode="w", zarr_format=3)
        create_object_array(group, "feat", n_objects, (n_views, *grid, dim), "float16", 0.0)
        create_object_array(group, "done", n_objects, (), "uint8", 0, per_view=False)
        group.attrs.update(
            {**attrs, "store_key": key, "format_version": FORMAT_VERSION, "complete": False}
        )
        return cls(path)

    def set_pca(self, mean: np.ndarray, components: np.ndarray) -> None:
        """Store the PCA basis: mean (C,), components (C, D)."""
        for name, value in (("pca_mean", mean), ("pca_components", components)):
            self.group.create_array(name, data=np.asarray(value, np.float32), overwrite=True)

    def pca(self) -> tuple[np.ndarray, np.ndarray] | None:
        if "pca_components" not in self.group:
            return None
        return self.group["pca_mean"][:], self.group["pca_components"][:]

    def done_mask(self) -> np.ndarray:
        return self.group["done"][:].astype(bool)

    def write_views(self, index: int, views: np.ndarray, feat: np.ndarray) -> None:
        """Write feat (len(views), h, w, D) of object ``index`` (chunk-aligned, float16)."""
        arr = self.group["feat"]
        if feat.shape[1:] != arr.shape[2:]:
            raise StoreError(
                f"{self.path}: features of shape {feat.shape[1:]} do not fit the "
                f"store's {arr.shape[2:]}"
            )
        views = np.asarray(views)
        if len(views) and (np.diff(views) == 1).all():
            arr[index, int(views[0]) : int(views[-1]) + 1] = feat.astype(np.float16)
        else:
            for k, v in enumerate(views):
                arr[index, int(v)] = feat[k].astype(np.float16)

    def mark_done(self, index: int) -> None:
        self.group["done"][index] = 1

    def finalize(self, expected: list[int], extra_attrs: dict) -> bool:
        """Mark complete when every expected object is done; returns completeness."""
        done = self.done_mask()
        complete = bool(all(done[i] for i in expected))
        self.group.attrs.update({**extra_attrs, "complete": complete})
        return complete


def _stale_reason(found: dict, wanted: dict) -> str:
    if found.get("render_fingerprint") != wanted.get("render_fingerprint"):
        return "other renders: the render store changed since"
    if found.get("identity") != wanted.get("identity"):
        diff = sorted(
            k
            for k in set(found.get("identity", {})) | set(wanted["identity"])
            if found.get("identity", {}).get(k) != wanted["identity"].get(k)
        )
        return f"another teacher configuration: {', '.join(diff)} differ"
    return f"another PCA setting ({found.get('pca_dim')} vs {wanted.get('pca_dim')})"


class FeatureStore:
    """Read access; checks completeness and (optionally) freshness against a render store."""

    def __init__(
        self, path: str | Path, render_fingerprint: str | None = None, identity: dict | None = None
    ):
        self.path = str(path)
        if not Path(self.path).exists():
            raise StoreError(
                f"{self.path}: no feature store here; run `fnerf-pipeline distill-cache` first"
            )
        self.group = open_group(self.path)
        for name in ("feat", "done"):
            if name not in self.group:
                raise StoreError(
                    f"{self.path}: feature store lacks array {name!r}; delete it "
                    "and re-run distill-cache"
                )
        self.attrs: dict[str, Any] = dict(self.group.attrs)
        if not self.attrs.get("complete"):
            raise StoreError(
                f"{self.path}: feature store is incomplete; re-run distill-cache to resume it"
            )
        if (
            render_fingerprint is not None
            and self.attrs.get("render_fingerprint") != render_fingerprint
        ):
            raise StoreError(
                f"{self.path}: feature store is stale: it was computed from other "
                "renders; re-run `fnerf-pipeline distill-cache --if-stale overwrite`"
            )
        if identity is not None and self.attrs.get("identity") != identity:
            raise StoreError(
                f"{self.path}: feature store is stale: "
                f"{_stale_reason(self.attrs, {'identity': identity})}"
            )

    @property
    def feat(self) -> zarr.Array:
        if not hasattr(self, "_feat"):
            self._feat = self.group["feat"]
        return self._feat

    @property
    def dim(self) -> int:
        return int(self.feat.shape[-1])

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.feat.shape[2]), int(self.feat.shape[3])

    def read(self, index: Any) -> np.ndarray:
        return read_checked(self.feat, index, self.path, "feat", rerun="distill-cache")

    def read_views(self, index: int, views: np.ndarray) -> np.ndarray:
        """(V', h, w, D) features of several views of one object in one call."""
        return read_checked(self.feat, (index, [int(v) for v in views]), self.path, "feat",
                            orthogonal=True, rerun="distill-cache")

    def pca(self) -> tuple[np.ndarray, np.ndarray] | None:
        if "pca_components" not in self.group:
            return None
        return self.group["pca_mean"][:], self.group["pca_components"][:]


def fit_pca(features: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA basis of foreground features.

    Args:
        features: (M, C) samples; all-zero rows (zeroed background) are ignored.
    Returns:
        mean (C,), components (C, D) with orthonormal columns, by decreasing variance.
    """
    x = features[np.abs(features).sum(axis=1) > 0].astype(np.float64)
    if len(x) < dim:
        raise StoreError(
            f"PCA to {dim} channels needs at least {dim} foreground samples, got {len(x)}"
        )
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:dim].T.astype(np.float32)


def apply_pca(feat: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(..., C) -> (..., D); cells that were all-zero (background) stay zero."""
    out = (feat - mean) @ components
    out[np.abs(feat).sum(axis=-1) == 0] = 0
    return out.astype(np.float32)
