"""The feature-cache toolkit behind ``fnerf-pipeline cache``: list, inspect, clean and export the
render and feature stores under some roots (local folders or an fsspec URL prefix).

Stores are found by their Zarr attrs (render stores carry ``config_key``, feature stores
``store_key``; :func:`cache.verify.store_kind`), never by their names. A feature store is

* ``fresh`` when its ``render_fingerprint`` is the current fingerprint of the render store its
  ``render_store`` attr names (a relative path is resolved against each folder above the
  feature store, then against the working directory: :func:`resolve_render_store`);
* ``stale`` when that render store now has another fingerprint (the reason names what changed,
  as the stages' own stale messages do);
* ``orphaned`` when that render store is gone (or is not a render store);
* ``pending`` when the render store is incomplete with the same settings (a repair or resume in
  progress may restore the same fingerprint): never collected.

``gc`` removes only stale and orphaned feature stores and the leftovers of killed runs
(``<store>.creating`` / ``<store>.replaced`` folders, half-made URL stores and their
``.creating`` marker, lock files of stores that no longer exist). Each removal holds the store's
writer lock (:class:`cache.store_lock.StoreLock`), so a store some run is writing is skipped and
no writer can start on it meanwhile. Render stores are never removed.

All functions here are pure library code (no click); ``pipeline/cli.py`` only formats.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cache import integrity
from cache.atomic import atomic_write_with
from cache.feature_store import read_colour_basis, read_derived, read_pca, store_variance_kept
from cache.zarr_io import (
    CREATING_SUFFIX,
    StoreError,
    describe_changes,
    du,
    exists,
    half_made,
    is_url,
    join,
    open_group,
    read_checked,
    remove,
)

REPLACED_SUFFIX = ".replaced"
LOCK_SUFFIX = ".lock"
#: the attrs key that marks each kind of store (as in cache.verify.KINDS)
KIND_KEYS = {"render": "config_key", "feature": "store_key"}
CURRENT_FORMAT = 2
MAX_DEPTH = 8  # folders below a root searched for stores


# --- finding stores ----------------------------------------------------------------------------

@dataclass
class Leftover:
    """Something a killed run left behind: a half-built ``.creating`` / ``.replaced`` folder, a
    half-made URL store (``kind="half-made"``: the store and its marker), or a lock file of a
    store that no longer exists (``kind="lock"``)."""

    path: str
    store: str  # the store it belongs to (whose writer lock guards it)
    kind: str  # "creating" | "replaced" | "half-made" | "lock"
    size_bytes: int = 0
    lock: dict[str, Any] | None = None

    @property
    def reason(self) -> str:
        return {"creating": "half-built copy of a killed creation",
                "replaced": "old copy left by a killed replacement",
                "half-made": "URL store whose creation never finished (marker left)",
                "lock": "lock file of a store that no longer exists"}[self.kind]


def _url_fs(url: str) -> tuple[Any, str, str]:
    """(fsspec filesystem, path inside it, ``scheme://``) of a URL, listing cache cleared."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url.rstrip("/"))
    fs.invalidate_cache()
    return fs, root, url.split("://", 1)[0] + "://"


def _children(path: str) -> list[tuple[str, bool]]:
    """(child path, is a folder) of a local folder or a URL prefix, sorted by name."""
    if is_url(path):
        fs, root, scheme = _url_fs(path)
        entries = fs.ls(root, detail=True)
        out = [(scheme + str(e["name"]).rstrip("/"), e.get("type") == "directory")
               for e in entries]
        return sorted(p for p in out if p[0].rstrip("/") != path.rstrip("/"))
    with os.scandir(path) as it:
        return sorted((str(Path(path, e.name)), e.is_dir(follow_symlinks=False)) for e in it)


def _zarr_attrs(path: str) -> dict[str, Any] | None:
    """The attributes in ``<path>/zarr.json`` (a Zarr v3 node), or None when there is none."""
    meta = join(path, "zarr.json")
    try:
        if is_url(path):
            fs, root, _ = _url_fs(meta)
            if not fs.exists(root):
                return None
            raw = fs.cat_file(root)
        else:
            if not Path(meta).is_file():
                return None
            raw = Path(meta).read_bytes()
        doc = json.loads(raw)
    except (OSError, ValueError):
        return {}
    return dict(doc.get("attributes") or {}) if isinstance(doc, dict) else {}


def kind_of(attrs: dict[str, Any]) -> str | None:
    """``render`` / ``feature`` from a store's attrs (any format version), else None."""
    for kind, key in KIND_KEYS.items():
        if key in attrs:
            return kind
    return None


def _strip_suffix(name: str, suffix: str) -> str | None:
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else None


def discover(roots: Sequence[str]) -> tuple[list[str], list[Leftover]]:
    """Every render and feature store under ``roots`` (a root may be a store itself), and the
    leftovers of killed runs. Does not descend into Zarr nodes or hidden folders."""
    from cache.store_lock import holder

    stores: list[str] = []
    leftovers: list[Leftover] = []
    seen: set[str] = set()
    for root in roots:
        root = str(root).rstrip("/") if is_url(root) else os.path.normpath(root)
        if not exists(root):
            raise StoreError(f"{root}: no such folder or prefix to search for stores")
        queue: list[tuple[str, int]] = [(root, 0)]
        while queue:
            path, depth = queue.pop(0)
            if path in seen:
                continue
            seen.add(path)
            attrs = _zarr_attrs(path)
            if attrs is not None:
                if kind_of(attrs):
                    stores.append(path)
                continue  # a Zarr node: never walk its chunks
            if depth >= MAX_DEPTH:
                continue
            try:
                children = _children(path)
            except (NotADirectoryError, FileNotFoundError, PermissionError):
                continue
            names = {c for c, _ in children}
            markers = {_strip_suffix(c, CREATING_SUFFIX) for c in names} if is_url(path) else set()
            if {c.rsplit("/", 1)[-1] for c in names} & {".zgroup", ".zarray"}:
                continue  # a Zarr v2 node (not this pipeline's): never walk its chunks
            for child, is_dir in children:
                name = child.rstrip("/").rsplit("/", 1)[-1]
                if is_dir:
                    for suffix, kind in ((CREATING_SUFFIX, "creating"),
                                         (REPLACED_SUFFIX, "replaced")):
                        store = _strip_suffix(child, suffix)
                        if store is not None and not is_url(child):
                            leftovers.append(Leftover(child, store, kind))
                            break
                    else:
                        if not name.startswith(".") and child not in markers:
                            queue.append((child, depth + 1))
                elif is_url(child) and (store := _strip_suffix(child, CREATING_SUFFIX)):
                    leftovers.append(Leftover(child, store, "half-made"))  # marker of a URL store
                elif not is_url(child) and (store := _strip_suffix(child, LOCK_SUFFIX)):
                    if store not in names and not Path(f"{store}{CREATING_SUFFIX}").exists():
                        leftovers.append(Leftover(child, store, "lock"))
    for item in leftovers:
        item.size_bytes = du(item.path) if item.kind != "half-made" else (
            du(item.store) + du(f"{item.store}{CREATING_SUFFIX}"))
        item.lock = holder(item.store)
    return stores, leftovers


# --- describing one store ----------------------------------------------------------------------

@dataclass
class StoreSummary:
    """One store as ``cache ls`` shows it (``asdict`` gives the ``--json`` record)."""

    kind: str
    path: str
    format_version: int | None
    n_objects: int | None
    n_done: int | None
    complete: bool
    size_bytes: int
    fingerprint: str | None  # the store's own (None while incomplete)
    render_fingerprint: str | None  # render: its own fingerprint; feature: computed from
    teacher: str | None = None
    teacher_summary: str | None = None
    dim: int | None = None
    pca_dim: int | None = None
    render_store: str | None = None  # feature: the render store it was computed from
    status: str = "ok"  # render: ok; feature: fresh | stale | orphaned | pending; or half-made
    reason: str | None = None  # why stale / orphaned / pending
    lock: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def old_format(self) -> bool:
        return self.format_version != CURRENT_FORMAT


def _short_weights(weights: Any) -> str:
    text = str(weights)
    return text.rsplit("/", 1)[-1].rsplit(":", 1)[-1] or text


def identity_summary(identity: dict[str, Any], dim: int | None = None,
                     pca_dim: int | None = None) -> str:
    """Model, weights id, layer / blocks, facet, timestep and grid x dim of a teacher identity,
    e.g. ``vit_small_patch8_224.dino, weights random (seed 0), layer 9, facet key, 32x32x384``."""
    parts = [str(identity.get("model") or identity.get("name", "?"))]
    weights = identity.get("weights")
    if weights not in (None, "none"):
        seed = f" (seed {identity['seed']})" if weights == "random" and "seed" in identity else ""
        parts.append(f"weights {_short_weights(weights)}{seed}")
    elif identity.get("model_source"):
        parts.append(f"weights from {identity['model_source']}")
    if identity.get("layer") is not None:
        parts.append(f"layer {identity['layer']}")
    if identity.get("blocks"):
        parts.append("blocks " + "+".join(str(b) for b in identity["blocks"]))
    if identity.get("facet"):
        parts.append(f"facet {identity['facet']}")
    if identity.get("timestep") is not None:
        parts.append(f"t={identity['timestep']}")
    grid = "x".join(str(g) for g in identity.get("grid") or []) or "?"
    teacher_dim = identity.get("feature_dim")
    if pca_dim:
        parts.append(f"{grid}x{pca_dim} (PCA of {teacher_dim})")
    else:
        parts.append(f"{grid}x{dim or teacher_dim}")
    return ", ".join(parts)


def resolve_render_store(feature_path: str, ref: str | None) -> str | None:
    """The render store a feature store's ``render_store`` attr names, as a path that exists:
    URLs and absolute paths as they are; a relative path (the stage's working directory was
    its base) against each folder above the feature store, nearest first, then against the
    working directory. None when none of these exists.

    The folders above come first so that listing another checkout's ``data/`` never resolves
    to this checkout's render store of the same name."""
    if not ref:
        return None
    if is_url(ref) or Path(ref).is_absolute():
        return ref if exists(ref) else None
    if is_url(feature_path):
        base = feature_path.rstrip("/")
        while "/" in base.split("://", 1)[1]:
            base = base.rsplit("/", 1)[0]
            candidate = join(base, *Path(ref).parts)
            if exists(candidate):
                return candidate
        return None
    for parent in Path(feature_path).absolute().parents:
        if (parent / ref).exists():
            return str(parent / ref)
    return ref if Path(ref).exists() else None


def _done_count(group: Any, notes: list[str]) -> int | None:
    try:
        return int(np.asarray(group[integrity.DONE][:]).astype(bool).sum())
    except Exception as exc:  # noqa: BLE001 - a corrupt or missing flag array is reported
        notes.append(f"done flags unreadable ({type(exc).__name__}); run `fnerf-pipeline verify`")
        return None


def current_fingerprint(group: Any, attrs: dict[str, Any]) -> str | None:
    """The store's fingerprint: the attr of a finished store, None for an unfinished one."""
    if attrs.get("complete") and attrs.get("fingerprint"):
        return str(attrs["fingerprint"])
    return None


def freshness(path: str, attrs: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(status, reason, resolved render store) of the feature store at ``path`` (module doc)."""
    from cache.feature_store import stale_reason

    ref = attrs.get("render_store")
    render = resolve_render_store(path, ref)
    if render is None:
        where = f"{ref} is gone" if ref else "it names no render store"
        return "orphaned", f"render store {where}", None
    render_attrs = _zarr_attrs(render) or {}
    if kind_of(render_attrs) != "render" or half_made(render):
        return "orphaned", f"{render} is not a (finished) render store", render
    group = open_group(render)
    fingerprint = current_fingerprint(group, render_attrs)
    found = attrs.get("render_fingerprint")
    if fingerprint == found:
        return "fresh", None, render
    changes = describe_changes(attrs.get("render_config") or {}, render_attrs.get("config") or {})
    if fingerprint is None and not changes:
        return ("pending", f"render store {render} is unfinished with the same settings (a "
                "resume or repair may restore it)", render)
    digests = None
    if integrity.DIGESTS in group and fingerprint is not None:
        digests = np.stack([integrity.array_digest(d) for d in group[integrity.DIGESTS][:]])
    wanted = {"identity": attrs.get("identity"), "render_fingerprint": fingerprint,
              "render_config": render_attrs.get("config"),
              "object_ids": render_attrs.get("object_ids")}
    feature_group = open_group(path)
    return "stale", stale_reason(feature_group, wanted, digests), render


def summarize(path: str) -> StoreSummary:
    """What ``cache ls`` shows for the store at ``path``."""
    from cache.store_lock import holder

    attrs = _zarr_attrs(path) or {}
    kind = kind_of(attrs)
    if kind is None:
        raise StoreError(f"{path}: not a render or feature store of this pipeline (no "
                         "config_key / store_key in its attrs)")
    notes: list[str] = []
    group = open_group(path)
    n_objects = None
    try:
        n_objects = int(group[integrity.DONE].shape[0])
    except Exception:  # noqa: BLE001 - missing array: reported below
        notes.append("no done array (damaged store)")
    summary = StoreSummary(
        kind=kind, path=path, format_version=attrs.get("format_version"), n_objects=n_objects,
        n_done=_done_count(group, notes) if n_objects is not None else None,
        complete=bool(attrs.get("complete")), size_bytes=du(path),
        fingerprint=current_fingerprint(group, attrs), render_fingerprint=None,
        lock=holder(path), notes=notes)
    if summary.old_format:
        notes.append(f"format {summary.format_version}, not this version's {CURRENT_FORMAT}: "
                     "the stages refuse it (re-create it with --overwrite)")
    if kind == "render":
        summary.render_fingerprint = summary.fingerprint
    else:
        identity = dict(attrs.get("identity") or {})
        summary.teacher = identity.get("name") or attrs.get("teacher")
        summary.pca_dim = attrs.get("pca_dim")
        try:
            summary.dim = int(group["feat"].shape[-1])
        except Exception:  # noqa: BLE001
            summary.dim = None
        summary.teacher_summary = identity_summary(identity, summary.dim, summary.pca_dim)
        summary.render_fingerprint = attrs.get("render_fingerprint")
        summary.render_store = attrs.get("render_store")
        summary.status, summary.reason, resolved = freshness(path, attrs)
        ref = summary.render_store
        if resolved and ref and not is_url(resolved) and not (
                Path(ref).exists() and Path(ref).resolve() == Path(resolved).resolve()):
            notes.append(f"render store {ref} resolved to {resolved}")
        if resolved and summary.status == "stale":
            now = current_fingerprint(open_group(resolved), _zarr_attrs(resolved) or {})
            summary.reason = (f"{summary.reason} (render fingerprint "
                              f"{(summary.render_fingerprint or '?')[:12]} -> "
                              f"{(now or '(unfinished)')[:12]})")
    if half_made(path):
        summary.status, summary.reason = "half-made", "its creation never finished"
    return summary


def list_stores(roots: Sequence[str]) -> tuple[list[StoreSummary], list[Leftover]]:
    """Every store under ``roots`` with its status, and the leftovers of killed runs."""
    paths, leftovers = discover(roots)
    return [summarize(p) for p in paths], leftovers


# --- info --------------------------------------------------------------------------------------

def store_info(path: str) -> dict[str, Any]:
    """Everything about one store: identity, settings, per-object status, format, fingerprint,
    size, lock and (feature stores) freshness; plain JSON data."""
    path = str(path)
    if not exists(path):
        raise StoreError(f"{path}: no store here")
    summary = summarize(path)
    group = open_group(path)
    attrs = dict(group.attrs)
    n = summary.n_objects or 0
    ids = list(attrs.get("object_ids") or [str(i) for i in range(n)])
    splits = list(attrs.get("splits") or ["?"] * n)
    try:
        done = np.asarray(group[integrity.DONE][:]).astype(bool).tolist()
    except Exception:  # noqa: BLE001 - reported in the summary's notes
        done = [None] * n
    skipped = dict(attrs.get("skipped") or {})
    objects = [{"index": i, "id": ids[i], "split": splits[i] if i < len(splits) else "?",
                "done": done[i], **({"skipped": skipped[ids[i]]} if ids[i] in skipped else {})}
               for i in range(n)]
    info: dict[str, Any] = {"summary": asdict(summary), "objects": objects}
    if summary.kind == "render":
        info["settings"] = attrs.get("config")
        info["identity"] = None
        info["details"] = {k: attrs.get(k) for k in (
            "category", "synset", "source", "renderer", "camera", "background", "part_names",
            "keypoint_names", "config_key", "failures", "pipeline_version") if k in attrs}
        info["arrays"] = {name: list(group[name].shape) for name in sorted(group.array_keys())}
    else:
        info["settings"] = attrs.get("render_config")
        info["identity"] = attrs.get("identity")
        info["details"] = {k: attrs.get(k) for k in (
            "category", "teacher", "render_store", "render_fingerprint", "pca_dim",
            "teacher_dim", "background_zeroed", "store_key", "expected_objects", "failures")
            if k in attrs}
        info["details"]["colour_basis"] = colour_basis_text(group)
        if kept := store_variance_kept(group):
            info["details"]["variance_kept"] = {k: round(v, 4) for k, v in kept.items()}
        info["arrays"] = {name: list(group[name].shape) for name in sorted(group.array_keys())}
    return info


def colour_basis_text(group: Any) -> str:
    """Whether a feature store holds its category colouring, and its shape."""
    basis = read_colour_basis(group)
    if basis is None:
        return "none (an older store: reports fit a colouring per picture set)"
    dim, k = basis[1].shape
    return f"{k} axes of the {dim} stored channels, fitted on train objects at distill time"


# --- gc ----------------------------------------------------------------------------------------

@dataclass
class GcItem:
    """One thing ``cache gc`` removes (or would): a stale / orphaned feature store or a
    leftover. ``skipped`` says why it was kept (a writer holds its lock...)."""

    path: str
    store: str
    what: str  # "feature store" | leftover kind
    reason: str
    size_bytes: int
    lock: dict[str, Any] | None = None
    deleted: bool = False
    skipped: str | None = None


def plan_gc(roots: Sequence[str]) -> list[GcItem]:
    """What ``gc`` would remove under ``roots``: stale and orphaned feature stores, leftovers."""
    summaries, leftovers = list_stores(roots)
    items = [GcItem(s.path, s.path, "feature store", f"{s.status}: {s.reason}", s.size_bytes,
                    s.lock)
             for s in summaries if s.kind == "feature" and s.status in ("stale", "orphaned")]
    items += [GcItem(x.path, x.store, x.kind, x.reason, x.size_bytes, x.lock) for x in leftovers]
    for item in items:
        if item.lock:
            item.skipped = f"locked by {_holder_text(item.lock)}"
    return items


def _holder_text(record: dict[str, Any]) -> str:
    if record.get("unreadable"):
        return "a live writer (record unreadable)"
    return (f"pid {record.get('pid', '?')} on {record.get('host', '?')} "
            f"({record.get('stage', '?')}, since {record.get('started', '?')})")


def run_gc(items: Iterable[GcItem]) -> list[GcItem]:
    """Remove each planned item under its store's writer lock, re-checking it first; items whose
    lock is held (or that are no longer stale) are skipped with the reason."""
    from cache.store_lock import StoreLock, StoreLocked

    done = []
    for item in items:
        done.append(item)
        if item.skipped:
            continue
        try:
            with StoreLock(item.store, stage="cache gc"):
                if item.what == "feature store":
                    status, _, _ = freshness(item.path, _zarr_attrs(item.path) or {})
                    if status not in ("stale", "orphaned"):
                        item.skipped = f"now {status}"
                        continue
                if item.what == "half-made":
                    remove(item.store)
                    remove(f"{item.store.rstrip('/')}{CREATING_SUFFIX}")
                elif item.what != "lock":  # a lock file goes away when the lock is released
                    remove(item.path)
                item.deleted = True
        except StoreLocked as exc:
            item.skipped = f"locked: {exc}"
        except StoreError as exc:
            item.skipped = str(exc)
    return done


# --- export ------------------------------------------------------------------------------------

def parse_objects(spec: str | None, object_ids: Sequence[str]) -> list[int] | None:
    """Store indices of ``--objects``: ``id,id,...`` (an object id, else an integer index) or a
    Python slice ``start:stop[:step]`` of indices; None (all) for an empty spec."""
    if spec is None or not spec.strip():
        return None
    n = len(object_ids)
    if ":" in spec and spec.strip() not in object_ids:
        try:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
        except ValueError:
            raise ValueError(f"--objects {spec!r}: a slice is start:stop[:step] of integers") \
                from None
        if len(parts) > 3:
            raise ValueError(f"--objects {spec!r}: a slice is start:stop[:step]")
        return list(range(n))[slice(*parts)]
    out = []
    position = {oid: i for i, oid in enumerate(object_ids)}
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token in position:
            out.append(position[token])
        elif token.lstrip("-").isdigit() and -n <= int(token) < n:
            out.append(int(token) % n)
        else:
            shown = ", ".join(object_ids[:3]) + (" ..." if n > 3 else "")
            raise ValueError(f"--objects: no object {token!r} in the store ({n} objects: "
                             f"{shown}; or indices 0-{n - 1})")
    return out


def _safe_name(object_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in object_id) or "object"


def read_object_verified(group: Any, path: str, index: int, object_id: str,
                         names: Sequence[str], content: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays ``names`` of one done object, each checked against its stored digest."""
    stored = read_checked(group[integrity.DIGESTS], index, path, integrity.DIGESTS)
    out = {}
    for name in names:
        value = read_checked(group[name], index, path, name, object_ids=None)
        if not np.array_equal(integrity.array_digest(value), stored[list(content).index(name)]):
            problem = integrity.Problem(index, object_id, name, "content differs from its digest")
            raise StoreError(integrity.describe([problem], path, "the stage that wrote it"))
        out[name] = value
    return out


def export_npz(store: str, out_dir: str | Path, objects: Sequence[int] | None = None,
               compress: bool = False) -> dict[str, Any]:
    """One ``<object_id>.npz`` per done object of ``store`` into ``out_dir`` plus a
    ``manifest.json``; every array is checked against its digest first.

    Feature stores: ``feat`` as **float32 (V, C, h, w)** (channels first, as the official
    FeatureNeRF processed data; float16 -> float32 is exact, so ``feat.transpose(0, 2, 3, 1)``
    cast to float16 gives the stored array back bit for bit), ``object_id``, ``split``; the
    fitted bases go to ``pca.npz`` and ``colour.npz`` (:func:`export_fitted_bases`).
    Render stores: every content array of the object as stored (``rgb`` (V, H, W, 3) uint8...).
    Returns the manifest.
    """
    store = str(store)
    group = open_group(store)
    attrs = dict(group.attrs)
    kind = kind_of(attrs)
    if kind is None or "content_arrays" not in attrs:
        raise StoreError(f"{store}: not a render or feature store of this format (no "
                         "content_arrays); re-create it with --overwrite")
    content = list(attrs["content_arrays"])
    n = int(group[integrity.DONE].shape[0])
    ids = list(attrs.get("object_ids") or [str(i) for i in range(n)])
    splits = list(attrs.get("splits") or ["?"] * n)
    done = np.asarray(group[integrity.DONE][:]).astype(bool)
    if objects is None:
        chosen = [i for i in range(n) if done[i]]
    else:
        missing = [ids[i] for i in objects if not done[i]]
        if missing:
            raise StoreError(f"{store}: object(s) {', '.join(missing[:5])} are not done in this "
                             "store; re-run the stage that writes it, or leave them out")
        chosen = list(objects)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save = np.savez_compressed if compress else np.savez
    files = []
    for i in chosen:
        arrays = read_object_verified(group, store, i, ids[i], content, content)
        if kind == "feature":
            arrays = {"feat": np.ascontiguousarray(
                arrays["feat"].astype(np.float32).transpose(0, 3, 1, 2))}
        arrays.update(object_id=np.array(ids[i]), split=np.array(splits[i]))
        target = out / f"{_safe_name(ids[i])}.npz"
        atomic_write_with(target, lambda fh, arrays=arrays: save(fh, **arrays))
        files.append({"index": i, "id": ids[i], "split": splits[i], "file": target.name})
    manifest: dict[str, Any] = {
        "source": store, "kind": kind, "format": "npz",
        "layout": ("feat: float32 (V, C, h, w), channels first" if kind == "feature"
                   else "each content array as stored, per object"),
        "fingerprint": attrs.get("fingerprint"), "objects": files}
    if kind == "feature":
        manifest.update(identity=attrs.get("identity"),
                        render_fingerprint=attrs.get("render_fingerprint"),
                        pca_dim=attrs.get("pca_dim"))
        manifest.update(export_fitted_bases(group, store, out))
    else:
        manifest["settings"] = attrs.get("config")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    return manifest


def export_fitted_bases(group: Any, store: str, out: Path) -> dict[str, str | None]:
    """Write a feature store's fitted bases into ``out``, each array checked against its
    recorded sha256 first; returns the manifest entries of the files written.

    - ``pca.npz`` (a ``--pca`` store): ``mean`` (C,), ``components`` (C, D) and, when
      recorded, ``variances`` (C,), the train sample's spectrum.
    - ``colour.npz`` (the report colouring): ``mean`` (D,), ``components`` (D, k), ``lo`` /
      ``hi`` (k,) and, when recorded, ``variances`` (D,). A store written before colour bases
      has none: its manifest's ``colour_basis`` is null.
    """
    entries: dict[str, str | None] = {"colour_basis": None}
    bases = (("pca", "pca.npz", read_pca(group, store), ("mean", "components"),
              "pca_variances"),
             ("colour_basis", "colour.npz", read_colour_basis(group, store),
              ("mean", "components", "lo", "hi"), "colour_variances"))
    for key, file_name, arrays, names, spectrum in bases:
        if arrays is None:
            continue
        values = dict(zip(names, arrays, strict=True))
        if spectrum in group:
            values["variances"] = read_derived(group, spectrum, store)
        atomic_write_with(out / file_name, lambda fh, values=values: np.savez(fh, **values))
        entries[key] = file_name
    return entries


def export_store(store: str, fmt: str, out_dir: str | Path, objects: str | None = None,
                 compress: bool = False) -> dict[str, Any]:
    """``cache export``: ``npz`` (:func:`export_npz`) or ``official`` (the official FeatureNeRF
    processed-data layout, ``cache.export_official.export_official``; a feature store is
    exported with the render store it was computed from). ``objects``: see
    :func:`parse_objects`. Returns a summary (``objects``: the ids written)."""
    store = str(store)
    attrs = _zarr_attrs(store)
    if attrs is None or not kind_of(attrs):
        raise StoreError(f"{store}: no render or feature store here")
    ids = list(attrs.get("object_ids") or [])
    if not ids:
        ids = [str(i) for i in range(int(open_group(store)[integrity.DONE].shape[0]))]
    indices = parse_objects(objects, ids)
    if fmt == "npz":
        manifest = export_npz(store, out_dir, indices, compress)
        return {"format": "npz", "out": str(out_dir),
                "objects": [o["id"] for o in manifest["objects"]]}
    if fmt != "official":
        raise ValueError(f"--format {fmt!r}: choose npz or official")
    try:
        from cache.export_official import export_official
    except ImportError as exc:
        raise StoreError(f"--format official needs cache/export_official.py, which this "
                         f"installation lacks ({exc})") from None
    if kind_of(attrs) == "feature":
        status, reason, render = freshness(store, attrs)
        if render is None:
            raise StoreError(f"{store}: cannot export in the official layout: {reason}")
        if status == "stale":
            raise StoreError(f"{store}: feature store is stale ({reason}); re-run "
                             "`fnerf-pipeline distill-cache --if-stale overwrite` first")
        feature_store: str | None = store
    else:
        render, feature_store = store, None
    chosen = None if indices is None else [ids[i] for i in indices]
    result = export_official(render, str(out_dir), feature_store=feature_store, objects=chosen)
    details = asdict(result) if is_dataclass(result) and not isinstance(result, type) else {}
    return {"format": "official", "out": str(out_dir),
            "objects": list(details.get("objects") or chosen or []), "result": details}


# --- text formatting (used by the CLI) ---------------------------------------------------------

def human_bytes(n: int | None) -> str:
    """Decimal units: ``43.0 MB`` (1 MB = 10^6 bytes)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


def format_ls(summaries: Sequence[StoreSummary], leftovers: Sequence[Leftover]) -> str:
    """The plain-text ``cache ls`` table, then one line per stale / orphaned / locked store."""
    if not summaries and not leftovers:
        return "no render or feature stores found"
    rows = []
    for s in summaries:
        status = s.status.upper() if s.status in ("stale", "orphaned", "half-made") else s.status
        if s.old_format:
            status += f" (format {s.format_version})"
        rows.append([s.kind, s.path, s.teacher or "-", (s.render_fingerprint or "-")[:12],
                     f"{s.n_done if s.n_done is not None else '?'}/{s.n_objects or '?'}",
                     "yes" if s.complete else "no", human_bytes(s.size_bytes), status,
                     "LOCKED" if s.lock else "-", s.teacher_summary or "-"])
    lines = _table(["KIND", "PATH", "TEACHER", "RENDER-FP", "DONE", "COMPLETE", "SIZE", "STATUS",
                    "LOCK", "IDENTITY"], rows)
    for s in summaries:
        if s.reason and s.status != "fresh":
            lines.append(f"  {s.status}: {s.path}: {s.reason}")
        if s.lock:
            lines.append(f"  locked: {s.path}: {_holder_text(s.lock)}")
        lines += [f"  note: {s.path}: {n}" for n in s.notes]
    for x in leftovers:
        held = f" (locked by {_holder_text(x.lock)})" if x.lock else ""
        lines.append(f"  leftover: {x.path} ({human_bytes(x.size_bytes)}): {x.reason}{held}")
    return "\n".join(lines)


def format_info(info: dict[str, Any]) -> str:
    """The plain-text ``cache info`` report."""
    s = info["summary"]
    unset = "(none recorded)" if s["complete"] else "(unfinished)"
    lines = [f"{s['path']}: {s['kind']} store, format {s['format_version']}",
             f"  objects: {s['n_done']}/{s['n_objects']} done, complete: "
             f"{'yes' if s['complete'] else 'no'}",
             f"  fingerprint: {s['fingerprint'] or unset}",
             f"  size: {human_bytes(s['size_bytes'])} ({s['size_bytes']} bytes)",
             f"  lock: {_holder_text(s['lock']) if s['lock'] else 'none'}"]
    if s["kind"] == "feature":
        lines += [f"  teacher: {s['teacher']}: {s['teacher_summary']}",
                  f"  render store: {s['render_store']} (fingerprint "
                  f"{(s['render_fingerprint'] or '?')[:12]})",
                  f"  status: {s['status']}" + (f" ({s['reason']})" if s["reason"] else "")]
    lines += [f"  note: {n}" for n in s["notes"]]

    def block(title: str, data: Any) -> None:
        if not data:
            return
        lines.append(f"{title}:")
        for key, value in data.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            lines.append(f"  {key}: {text}")

    block("identity", info.get("identity"))
    block("settings" if s["kind"] == "render" else "render settings", info.get("settings"))
    block("details", info.get("details"))
    block("arrays", info.get("arrays"))
    rows = [[str(o["index"]), o["id"], o["split"], {True: "done", False: "-", None: "?"}[o["done"]]
             + (f" (skipped: {o['skipped']})" if o.get("skipped") else "")]
            for o in info["objects"]]
    lines.append("objects:")
    lines += ["  " + line for line in _table(["INDEX", "ID", "SPLIT", "DONE"], rows)]
    return "\n".join(lines)


def format_gc(items: Sequence[GcItem], dry_run: bool) -> str:
    """The plain-text ``cache gc`` listing with the bytes reclaimed (or that would be)."""
    if not items:
        return "nothing to remove: no stale or orphaned feature stores, no leftovers"
    lines = []
    for item in items:
        if item.skipped:
            verb = "keep"
        else:
            verb = "would remove" if dry_run else ("removed" if item.deleted else "kept")
        extra = f" [{item.skipped}]" if item.skipped else ""
        lines.append(f"{verb}: {item.path} ({item.what}, {human_bytes(item.size_bytes)}): "
                     f"{item.reason}{extra}")
    freed = sum(i.size_bytes for i in items
                if not i.skipped and (dry_run or i.deleted))
    lines.append(f"{'would reclaim' if dry_run else 'reclaimed'} {human_bytes(freed)} "
                 f"({freed} bytes)" + ("; pass --yes to delete" if dry_run else ""))
    return "\n".join(lines)
