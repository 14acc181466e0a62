"""The feature store: ``data/features/<teacher>/<category>.zarr`` (docs/contracts.md, section 2).

``feat`` float16 (N, V, h, w, C): one chunk per (object, view), one shard per object. Attrs hold
the teacher identity dict and the fingerprint of the render store it was computed from; a store
whose identity or source fingerprint differs is stale and is never reused silently. Per-object
``done`` flags make interrupted runs resumable; each object's ``feat`` digest is written before
its flag and checked by :meth:`FeatureStore.verify` (:mod:`cache.integrity`). The source render
store's settings (attrs ``render_config``) and per-object digests (``render_digests`` (N, 32))
let a stale message say what changed. Optional PCA keeps D < C channels and stores the basis
(``pca_mean`` (C,), ``pca_components`` (C, D)) beside the data, with ``pca_variances`` (C,): the
fit sample's variance along each teacher-space principal axis.

The category's report colouring is stored too, fitted once at distill time on the foreground
cells of a sample of train-object views, in the stored feature space: ``colour_mean`` (D,),
``colour_components`` (D, k<=3), ``colour_lo`` / ``colour_hi`` (k,) (2nd / 98th percentiles of
the projected sample) and ``colour_variances`` (D,) (that sample's spectrum). These store-level
arrays are derived from ``feat`` and are not part of the fingerprint; a store written without
them (an older one) opens as before and :meth:`FeatureStore.colour_basis` returns None.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from cache import integrity
from cache.zarr_io import (
    StaleStoreError,
    StoreError,
    create_group_atomically,
    create_object_array,
    describe_changes,
    exists,
    half_made,
    missing_note,
    open_group,
    read_checked,
    short_hash,
    store_present,
    whole_shard_writes,
    write_objects,
)

FORMAT_VERSION = 2  # 2: feat digests, zstd checksums, done_objects, render digests
CONTENT_ARRAYS = ("feat",)
COLOUR_BASIS_ARRAYS = ("colour_mean", "colour_components", "colour_lo", "colour_hi")
#: the widths whose share of variance kept a report gives (capped below the channel count)
VARIANCE_DIMS = (3, 8, 16, 32, 64, 128)


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
        render_digests: np.ndarray | None = None,
    ) -> FeatureStoreWriter:
        """Open for writing. ``attrs`` needs ``identity``, ``render_fingerprint``, ``pca_dim``
        (and, for precise stale messages, ``render_config``); ``render_digests`` (N, 32) are the
        source render store's per-object digests."""
        path = str(path)
        key = store_key(attrs["identity"], attrs["render_fingerprint"], attrs.get("pca_dim"))
        if store_present(path) and not overwrite:  # a half-made (URL) store is rebuilt
            group = open_group(path, mode="r+")
            found = group.attrs.get("store_key")
            if found == key:
                return cls(path)
            if if_stale != "overwrite":
                raise StoreError(
                    f"{path}: feature store is stale ("
                    f"{stale_reason(group, attrs, render_digests)}); re-run with --if-stale "
                    "overwrite to recompute it"
                )

        def build(group: zarr.Group) -> None:
            create_object_array(group, "feat", n_objects, (n_views, *grid, dim), "float16", 0.0)
            create_object_array(group, integrity.DIGESTS, n_objects, (1, 32), "uint8", 0,
                                per_view=False)
            create_object_array(group, integrity.DONE, n_objects, (), "uint8", 0,
                                per_view=False)
            if render_digests is not None:
                group.create_array("render_digests", data=np.asarray(render_digests, np.uint8))
            group.attrs.update({**attrs, "store_key": key, "format_version": FORMAT_VERSION,
                                "complete": False, "content_arrays": list(CONTENT_ARRAYS)})

        create_group_atomically(path, build)
        return cls(path)

    def set_pca(self, mean: np.ndarray, components: np.ndarray,
                variances: np.ndarray | None = None) -> None:
        """Store the PCA basis: mean (C,), components (C, D) and, when given, the fit sample's
        variance along each principal axis (C,), decreasing."""
        arrays = {"pca_variances": variances, "pca_mean": mean, "pca_components": components}
        self._write_arrays({k: v for k, v in arrays.items() if v is not None})

    def set_colour_basis(self, mean: np.ndarray, components: np.ndarray, lo: np.ndarray,
                         hi: np.ndarray, variances: np.ndarray) -> None:
        """Store the category's report colouring in the stored feature space: mean (D,),
        components (D, k), lo / hi (k,), and the fit sample's spectrum ``variances`` (D,).
        The basis arrays come last, so a write cut short reads back as no basis."""
        self._write_arrays({"colour_variances": variances, **dict(zip(
            COLOUR_BASIS_ARRAYS, (mean, components, lo, hi), strict=True))})

    def _write_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Write derived float32 arrays, each with its sha256 in ``attrs["derived_digests"]``
        (:func:`read_derived` checks them on every read)."""
        digests = dict(self.group.attrs.get(DERIVED_DIGESTS, {}))
        for name, value in arrays.items():
            value = np.asarray(value, np.float32)
            self.group.create_array(name, data=value, overwrite=True)
            digests[name] = integrity.array_digest(value).tobytes().hex()
            self.group.attrs[DERIVED_DIGESTS] = digests

    def pca(self) -> tuple[np.ndarray, np.ndarray] | None:
        return read_pca(self.group, self.path)

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
        if np.array_equal(views, np.arange(arr.shape[1])):  # a whole object: one shard put
            write_objects({"feat": arr}, index, {"feat": feat.astype(np.float16)})
            return
        with whole_shard_writes():
            if len(views) and (np.diff(views) == 1).all():
                arr[index, int(views[0]) : int(views[-1]) + 1] = feat.astype(np.float16)
            else:
                for k, v in enumerate(views):
                    arr[index, int(v)] = feat[k].astype(np.float16)

    def mark_done(self, index: int, feat: np.ndarray | None = None) -> None:
        """Write the digest of object ``index`` (its whole (V, h, w, D) ``feat`` as written, or
        read back from the store when not given), then its done flag."""
        if feat is None:
            feat = self.group["feat"][index]
        feat = np.asarray(feat, np.float16)
        integrity.mark_object_done(
            self.group, index, integrity.object_digests({"feat": feat}, ("feat",)))

    def check_written(self, index: int) -> None:
        """Read-after-write of object ``index``: its shard re-read against the digest just
        written; StoreError (naming the object and the fix) if it does not decode or match."""
        problems = self.damaged([index])
        if problems:
            raise StoreError(integrity.describe(problems, self.path, "distill-cache"))

    def damaged(self, indices: list[int]) -> list[integrity.Problem]:
        """Problems of the done objects ``indices`` (re-read against their digests)."""
        ids = self.group.attrs.get("object_ids") or [str(i) for i in range(len(self.done_mask()))]
        return [p for i in indices for p in integrity.check_object(
            self.group, self.path, i, ids[i], CONTENT_ARRAYS, CONTENT_ARRAYS)]

    def reset(self, indices: list[int]) -> None:
        """Clear the done flags of ``indices`` so this run recomputes them."""
        integrity.reset_objects(self.group, indices)

    def finalize(self, expected: list[int], extra_attrs: dict) -> bool:
        """Mark complete when every expected object is done; returns completeness."""
        done = self.done_mask()
        complete = bool(all(done[i] for i in expected))
        self.group.attrs.update({
            **extra_attrs, "complete": complete, "expected_objects": list(map(int, expected)),
            "done_objects": np.flatnonzero(done).tolist(),
            "fingerprint": integrity.fingerprint_of(self.group, self.group.attrs["store_key"])})
        return complete


def stale_reason(group: zarr.Group, wanted: dict, render_digests: np.ndarray | None) -> str:
    """What changed between a store and the wanted teacher / renders / PCA, by name and value."""
    found = dict(group.attrs)
    if found.get("identity") != wanted.get("identity"):
        changes = describe_changes(found.get("identity", {}), wanted.get("identity", {}))
        return "another teacher configuration: " + ", ".join(changes)
    if found.get("render_fingerprint") != wanted.get("render_fingerprint"):
        changes = describe_changes(found.get("render_config") or {},
                                   wanted.get("render_config") or {})
        if changes:
            return "the renders were made with other settings: " + ", ".join(changes)
        if render_digests is not None and "render_digests" in group:
            old, ids = group["render_digests"][:], wanted.get("object_ids") or []
            if old.shape == render_digests.shape:
                changed = [ids[i] if i < len(ids) else str(i)
                           for i in np.flatnonzero((old != render_digests).any(axis=1))]
                if changed:
                    shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
                    return (f"the renders of {len(changed)} object(s) changed since "
                            f"(same settings): {shown}")
        return "the render store changed since (same settings; other objects or content)"
    return f"another PCA setting: pca_dim: {found.get('pca_dim')} -> {wanted.get('pca_dim')}"


class FeatureStore:
    """Read access; checks completeness, its done flags and (optionally) freshness against the
    render store it is used with. Call :meth:`verify` on the objects a stage will use."""

    def __init__(self, path: str | Path, render_fingerprint: str | None = None,
                 identity: dict | None = None, renders: Any = None):
        """``renders``: the RenderStore it is used with (its fingerprint, settings and object
        digests give a precise stale message; it replaces ``render_fingerprint``)."""
        self.path = str(path)
        if not exists(self.path) or half_made(self.path):
            raise StoreError(f"{self.path}: no feature store here{missing_note(self.path)}; run "
                             "`fnerf-pipeline distill-cache` first")
        self.group = open_group(self.path)
        for name in ("feat", integrity.DIGESTS, integrity.DONE):
            if name not in self.group:
                raise StoreError(
                    f"{self.path}: feature store lacks array {name!r} (an older format or a "
                    "damaged store); re-run distill-cache with --overwrite"
                )
        self.attrs: dict[str, Any] = dict(self.group.attrs)
        self.verify_s = 0.0  # seconds spent in verify()
        if self.attrs.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.path}: feature store format {self.attrs.get('format_version')} is not "
                f"this version's {FORMAT_VERSION}; re-run distill-cache with --overwrite")
        if not self.attrs.get("complete"):
            raise StoreError(
                f"{self.path}: feature store is incomplete; re-run distill-cache to resume it"
            )
        self._check_flags()
        if renders is not None:
            render_fingerprint = renders.fingerprint
        if (
            render_fingerprint is not None
            and self.attrs.get("render_fingerprint") != render_fingerprint
        ):
            wanted = {"identity": self.attrs.get("identity"),
                      "render_fingerprint": render_fingerprint,
                      "render_config": renders.attrs.get("config") if renders else None,
                      "object_ids": renders.object_ids if renders else None}
            digests = renders.object_digests() if renders is not None else None
            raise StaleStoreError(
                f"{self.path}: feature store is stale ({stale_reason(self.group, wanted, digests)}"
                "); re-run `fnerf-pipeline distill-cache --if-stale overwrite`"
            )
        if identity is not None and self.attrs.get("identity") != identity:
            raise StaleStoreError(
                f"{self.path}: feature store is stale ("
                f"{stale_reason(self.group, {**self.attrs, 'identity': identity}, None)})"
            )

    def _check_flags(self) -> None:
        ids = self.attrs.get("object_ids") or [str(i) for i in range(self.group["done"].shape[0])]
        problems = integrity.check_done_flags(self.group, ids)
        missing = sorted(set(self.attrs.get("expected_objects", [])) - set(
            np.flatnonzero(self.group[integrity.DONE][:]).tolist()))
        problems += [integrity.Problem(i, ids[i], "done", "expected but not done")
                     for i in missing if all(p.index != i for p in problems)]
        if problems:
            raise StoreError(integrity.describe(problems, self.path, "distill-cache"))
        if integrity.fingerprint_of(self.group, self.attrs.get("store_key")) != \
                self.attrs.get("fingerprint"):
            raise StoreError(f"{self.path}: the stored digests do not match the store's "
                             f"fingerprint; run `fnerf-pipeline verify {self.path}`")

    def verify(self, indices: list[int], rerun: str = "distill-cache") -> None:
        """Re-read ``feat`` of objects ``indices`` against their digests (StoreError if bad);
        an object that is not done is an error too."""
        t0 = time.perf_counter()
        done = self.group[integrity.DONE][:].astype(bool)
        ids = self.attrs.get("object_ids") or [str(i) for i in range(len(done))]
        problems = [integrity.Problem(i, ids[i], "done", "not computed in this store")
                    for i in indices if not done[i]]
        problems += [p for i in indices if done[i] for p in integrity.check_object(
            self.group, self.path, i, ids[i], CONTENT_ARRAYS, CONTENT_ARRAYS)]
        self.verify_s += time.perf_counter() - t0
        if problems:
            raise StoreError(integrity.describe(problems, self.path, rerun))

    @property
    def fingerprint(self) -> str:
        return str(self.attrs.get("fingerprint"))

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
        return read_checked(self.feat, index, self.path, "feat", rerun="distill-cache",
                            object_ids=self.attrs.get("object_ids"))

    def read_views(self, index: int, views: np.ndarray) -> np.ndarray:
        """(V', h, w, D) features of several views of one object, in the given order.

        One read per run of consecutive views (a slice), then stacked: zarr's ``oindex`` on the
        sharded array costs several times as much as single-view reads."""
        runs: list[list[int]] = []
        for v in (int(v) for v in views):
            if runs and v == runs[-1][1]:
                runs[-1][1] += 1
            else:
                runs.append([v, v + 1])
        parts = [read_checked(self.feat, (index, slice(a, b)), self.path, "feat",
                              rerun="distill-cache", object_ids=self.attrs.get("object_ids"))
                 for a, b in runs or [[0, 0]]]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def pca(self) -> tuple[np.ndarray, np.ndarray] | None:
        return read_pca(self.group, self.path)

    def colour_basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The category's fixed report colouring, fitted once on train objects at distill time:
        mean (D,), components (D, 3), lo (3,), hi (3,) in the stored feature space; None for
        a store written without one."""
        return read_colour_basis(self.group, self.path)

    def variance_kept(self) -> dict[str, float]:
        """Share of the train sample's foreground variance kept per width
        (:func:`store_variance_kept`); empty for a store that records no spectrum."""
        return store_variance_kept(self.group)


#: attrs key: sha256 (hex) of each derived array (PCA basis, colour basis, spectra), which are
#: fitted from ``feat`` and so outside the per-object digests and the fingerprint
DERIVED_DIGESTS = "derived_digests"
DERIVED_ARRAYS = ("pca_mean", "pca_components", "pca_variances", *COLOUR_BASIS_ARRAYS,
                  "colour_variances")


def read_derived(group: zarr.Group, name: str, path: str = "") -> np.ndarray:
    """A derived array of a feature store, checked against its recorded sha256 (StoreError
    when it differs or none was recorded)."""
    value = read_checked(group[name], slice(None), path or str(group.store), name,
                         rerun="distill-cache")
    recorded = dict(group.attrs.get(DERIVED_DIGESTS, {})).get(name)
    if recorded != integrity.array_digest(np.asarray(value, np.float32)).tobytes().hex():
        why = "records no digest for it" if recorded is None else "does not match its digest"
        raise StoreError(f"{path or group.store}: feature store array {name!r} {why}; re-run "
                         "`fnerf-pipeline distill-cache --if-stale overwrite`")
    return value


def derived_problems(group: zarr.Group, path: str) -> list[str]:
    """One line per derived array of the store that is missing its digest or differs from it
    (for ``fnerf-pipeline verify``)."""
    problems = []
    for name in DERIVED_ARRAYS:
        if name in group:
            try:
                read_derived(group, name, path)
            except StoreError as exc:
                problems.append(str(exc).split("; re-run")[0].removeprefix(f"{path}: "))
    return problems


def read_pca(group: zarr.Group, path: str = "") -> tuple[np.ndarray, np.ndarray] | None:
    """``pca_mean`` (C,) and ``pca_components`` (C, D) of a ``--pca`` store (verified);
    None for a full-width store."""
    if "pca_components" not in group:
        return None
    return read_derived(group, "pca_mean", path), read_derived(group, "pca_components", path)


def read_colour_basis(
    group: zarr.Group, path: str = "",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``colour_mean`` (D,), ``colour_components`` (D, k), ``colour_lo`` / ``colour_hi`` (k,)
    of a feature store group (verified); None when any is absent."""
    if any(name not in group for name in COLOUR_BASIS_ARRAYS):
        return None
    return tuple(read_derived(group, n, path) for n in COLOUR_BASIS_ARRAYS)  # type: ignore[return-value]


def read_variances(group: zarr.Group, path: str = "") -> np.ndarray | None:
    """The foreground variance along each teacher-space principal axis (C,), decreasing, of
    the train sample: ``pca_variances`` for a PCA store, else ``colour_variances`` (stored
    space = teacher space); None when not recorded (an older store). Verified."""
    name = "pca_variances" if "pca_components" in group else "colour_variances"
    return read_derived(group, name, path) if name in group else None


def store_variance_kept(group: zarr.Group) -> dict[str, float]:
    """:func:`variance_kept` of a feature store group's spectrum (:func:`read_variances`),
    with its ``--pca`` width among the D; empty when it records none."""
    variances = read_variances(group)
    if variances is None:
        return {}
    pca_dim = group.attrs.get("pca_dim")
    return variance_kept(variances, [pca_dim] if pca_dim else [])


@dataclass(frozen=True)
class Principal:
    """Principal axes of a sample: ``mean`` (C,), ``axes`` (C, C) (columns by decreasing
    variance, sign fixed) and ``variances`` (C,) along them (decreasing, >= 0)."""

    mean: np.ndarray
    axes: np.ndarray
    variances: np.ndarray


def principal_components(x: np.ndarray) -> Principal:
    """All principal axes of the rows of ``x`` (M, C), with their variances.

    Each axis is signed so that its largest-magnitude loading is positive (the subspace of an
    SVD, with a fixed sign). Computed from the C x C covariance with ``eigh`` on one BLAS
    thread: an M x C SVD with default OpenBLAS threading took 41 s for (80k, 384) on a busy
    2-core machine; this takes ~0.5 s and gives the same bytes on any core count.
    """
    from threadpoolctl import threadpool_limits

    x = np.asarray(x)
    mean = x.mean(axis=0, dtype=np.float64)
    cov = np.zeros((x.shape[1], x.shape[1]))
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, len(x), 8192):  # float64 copies of 8192 rows at a time
            centred = x[start : start + 8192].astype(np.float64) - mean
            cov += centred.T @ centred
        vals, vecs = np.linalg.eigh(cov)  # eigenvalues ascending
    axes = vecs[:, ::-1]
    sign = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    variances = np.clip(vals[::-1], 0.0, None) / max(len(x) - 1, 1)
    return Principal(mean, axes * np.where(sign == 0, 1.0, sign), variances)


def principal_axes(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (C,) and the top ``dim`` principal axes (C, dim) of the rows of ``x`` (M, C)
    (:func:`principal_components`)."""
    p = principal_components(x)
    return p.mean, p.axes[:, :dim]


def foreground_rows(features: np.ndarray) -> np.ndarray:
    """(..., C) -> (M, C): the cells that are not all-zero (zeroed background dropped)."""
    flat = features.reshape(-1, features.shape[-1])
    return flat[np.abs(flat).sum(axis=1) > 0]


def fit_principal(features: np.ndarray, dim: int) -> Principal:
    """:func:`principal_components` of the foreground rows of ``features`` (M, C); a
    StoreError when there are fewer than ``dim`` of them."""
    x = foreground_rows(features)
    if len(x) < dim:
        raise StoreError(
            f"PCA to {dim} channels needs at least {dim} foreground samples, got {len(x)}"
        )
    return principal_components(x)


def fit_pca(features: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA basis of foreground features (:func:`fit_principal`).

    Args:
        features: (M, C) samples; all-zero rows (zeroed background) are ignored.
    Returns:
        mean (C,), components (C, D) with orthonormal columns, by decreasing variance.
    """
    p = fit_principal(features, dim)
    return p.mean.astype(np.float32), p.axes[:, :dim].astype(np.float32)


def variance_kept(variances: np.ndarray, extra_dims: Sequence[int] = ()) -> dict[str, float]:
    """Share of the total variance in the top D axes, for D in :data:`VARIANCE_DIMS` and
    ``extra_dims`` below the channel count C, then ``"full"`` (= 1.0).

    Args:
        variances: (C,) decreasing spectrum (:attr:`Principal.variances`).
    Returns:
        ``{"d3": ..., "d8": ..., "full": 1.0}`` in increasing D.
    """
    cumulative = np.cumsum(np.asarray(variances, np.float64))
    total = cumulative[-1] if len(cumulative) and cumulative[-1] > 0 else 1.0
    dims = sorted({int(d) for d in (*VARIANCE_DIMS, *extra_dims) if 0 < d < len(cumulative)})
    return {**{f"d{d}": float(cumulative[d - 1] / total) for d in dims}, "full": 1.0}


def apply_pca(feat: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(..., C) -> (..., D); cells that were all-zero (background) stay zero."""
    out = (feat - mean) @ components
    out[np.abs(feat).sum(axis=-1) == 0] = 0
    return out.astype(np.float32)
