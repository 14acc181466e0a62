"""The import stage: existing multi-view datasets -> a render store (and a feature store).

``fnerf-pipeline import --format official|srn|dvr|nerf-synthetic --root PATH --category NAME``
reads a source one object at a time (:mod:`renderers.importers`) and writes each through
:class:`cache.render_store.RenderStoreWriter`, with the render stage's guarantees: settings and
outputs checked before writing, a writer lock, resumable per-object writes (a killed run
redoes only the objects without a ``done`` flag), damaged objects of a resumed store redone,
one-line disk errors, a report and ``metrics.json``.

Arrays a source lacks are written with the store's fill values; attrs ``annotations_present``
(``depth``, ``parts``, ``keypoints``, ``points``: any object has them) and
``annotated_objects`` (the indices that have each) say which are real. The importer's own
arrays beside the contract's (docs/import.md): ``import_summary`` (N, 7) int32 per object
(has depth, has parts, has keypoints, has points, part labels (max + 1), points, keypoint
candidates), ``point_count`` (N,) int32 (``points[:count]`` are the source's; shorter point sets
are padded by repeating their points cyclically), ``kp_candidates`` (N, M, 3) float32 +
``kp_candidate_count`` (N,) (only when the source has candidates, padded the same way), and
``import_digests`` (N, E, 32) uint8 over them (attr ``import_arrays``), written before the
object's ``done`` flag.

With ``features_out`` the source's cached teacher features (official: ``dino_feat_256``) go
into a feature store keyed on the new render store's fingerprint.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from cache import integrity
from cache.atomic import write_json
from cache.render_store import RenderStore, RenderStoreWriter, StoreLayout
from cache.zarr_io import StoreError, create_object_array
from pipeline.executor import worker_id, write_stage_outputs
from pipeline.guards import (
    PreflightError,
    check_image_size,
    check_range,
    check_writable,
    is_fatal_os_error,
    os_error_message,
    redo_damaged,
    stop_on_failure,
    summarize_failures,
)
from pipeline.render_stage import PIPELINE_VERSION
from pipeline.reports.imports import write_features_report, write_import_report
from renderers.asset import AssetError
from renderers.categories import resolve_category
from renderers.importers import (
    IMPORTERS,
    SPLITS,
    ImportedObject,
    ImportFormatError,
    Source,
    load_source,
    resize_object,
)
from renderers.shapenet import pair_counts

IMPORT_VERSION = "1"
ANNOTATIONS = ("depth", "parts", "keypoints", "points")
SUMMARY = "import_summary"
SUMMARY_COLUMNS = ("depth", "parts", "keypoints", "points", "part_labels", "points_n",
                   "kp_candidates_n")
POINT_COUNT, KP_CANDIDATES, KP_CANDIDATE_COUNT = "point_count", "kp_candidates", \
    "kp_candidate_count"
IMPORT_DIGESTS = "import_digests"
#: the official split json's known-bad id (FeatureNeRFDataset drops it)
INVALID_IDS = frozenset({"f9c1d7748c15499c6f2bd1c4e9adb41"})


@dataclass
class ImportStageConfig:
    """Settings of one import run (the content-defining ones are the store's ``config``)."""

    format: str
    root: str
    category: str
    split_file: str | None = None
    objects: int | None = None  # at most this many per split
    size: int | None = None  # square size of the stored views (None: the source's)
    options: dict[str, Any] = field(default_factory=dict)  # importer keyword options
    out: str | None = None
    report_dir: str | None = None
    features_out: str | None = None
    features_folder: str | None = None  # official: dino_feat_256 (default) or diff_feat_512
    on_error: str = "fail"  # "fail" | "skip"
    if_stale: str = "fail"  # "fail" | "overwrite"
    overwrite: bool = False
    features_only: bool = False  # only the features, for the render store an import made
    near: float | None = None  # camera near/far of the store (None: over the objects' own)
    far: float | None = None

    def __post_init__(self) -> None:
        self.category = resolve_category(self.category, free=True).name
        self.out = self.out or f"data/renders/{self.category}.zarr"
        self.report_dir = self.report_dir or f"reports/import/{self.category}"
        self.validate()

    def validate(self) -> None:
        """Every setting checked before anything is written (PreflightError names the flag)."""
        if self.format not in IMPORTERS:
            raise PreflightError(f"--format {self.format}: choose one of {', '.join(IMPORTERS)}")
        if not Path(self.root).is_dir():
            raise PreflightError(f"--root {self.root}: no such folder")
        if self.split_file and not Path(self.split_file).is_file():
            raise PreflightError(f"--split {self.split_file}: no such file")
        if self.objects is not None:
            check_range("--objects", self.objects, 1)
        if self.size is not None:
            check_image_size("--size", self.size)
        if self.on_error not in ("fail", "skip"):
            raise PreflightError(f"--on-error {self.on_error}: choose fail or skip")
        if self.if_stale not in ("fail", "overwrite"):
            raise PreflightError(f"--if-stale {self.if_stale}: choose refuse or overwrite")
        if self.features_out and Path(self.features_out).resolve() == Path(self.out).resolve():
            raise PreflightError("--features-out must differ from --out")
        if self.features_only and not self.features_out:
            raise PreflightError("--features-only needs --features-out")
        if (self.near is None) != (self.far is None):
            raise PreflightError("--near and --far go together; pass both or neither")
        if self.near is not None and not 0 <= self.near < self.far:
            raise PreflightError(f"--near {self.near} --far {self.far}: need 0 <= near < far")

    def source_options(self) -> dict[str, Any]:
        return {**self.options, **({"size": self.size} if self.size is not None else {})}

    def feature_options(self) -> dict[str, Any]:
        return {"features": self.features_folder} if self.features_folder else {}

    def store_config(self, layout: dict[str, int]) -> dict:
        """What defines the store's content (a store with another config is stale)."""
        split_digest = None
        if self.split_file:
            import hashlib

            split_digest = hashlib.sha256(Path(self.split_file).read_bytes()).hexdigest()[:16]
        return {
            "category": self.category,
            "source": f"import-{self.format}",
            "format": self.format,
            "root": str(Path(self.root).resolve()),
            "split_file": str(Path(self.split_file).resolve()) if self.split_file else None,
            "split_file_sha256": split_digest,
            "objects_per_split": self.objects,
            "size": self.size,
            "options": {k: self.options[k] for k in sorted(self.options)},
            "layout": layout,
            "import_version": IMPORT_VERSION,
        }


@dataclass
class ImportPlan:
    """The objects to import, and what the split file asked for that the source lacks."""

    objects: list[tuple[str, str]]
    missing: list[tuple[str, str]]
    split_source: str
    valid_for_test: dict[str, bool]
    notes: list[str]


@dataclass
class ImportStageResult:
    metrics: dict
    failures: dict[str, str]
    store: str
    report: str
    features: str | None = None

    @property
    def ok(self) -> bool:
        return self.metrics["failures"] == 0 or self.metrics["on_error"] == "skip"


# ---------------------------------------------------------------------------------- planning


def read_split_json(path: str | Path, synset: str) -> tuple[list[tuple[str, str]], dict, dict]:
    """(id, split) pairs of a FeatureNeRF ``<synset>.json`` (train, val, test order, first
    listing wins), its ``valid_flags_for_test`` and pair counts per id (test objects in many
    official pairs are kept first by ``--objects``)."""
    path = Path(path)
    if path.stem.isdigit() and len(path.stem) == 8 and path.stem != synset:
        raise ImportFormatError(f"--split {path} is for synset {path.stem}, not {synset}; pass "
                                f"{path.with_name(synset + '.json')}")
    try:
        data = json.loads(path.read_text())
        pairs, seen = [], set()
        for split in SPLITS:
            for oid in data.get(split, []):
                if str(oid) not in seen:
                    seen.add(str(oid))
                    pairs.append((str(oid), split))
        flags = data.get("valid_flags_for_test", {}) or {}
        counts = pair_counts(data)
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as exc:
        raise ImportFormatError(f"--split {path}: cannot read it ({type(exc).__name__}: {exc}); "
                                "expected a FeatureNeRF <synset>.json with train/val/test id "
                                "lists") from None
    if not pairs:
        raise ImportFormatError(f"--split {path}: no train/val/test ids in it")
    return pairs, {str(k): bool(v) for k, v in dict(flags).items()}, counts


def plan_objects(cfg: ImportStageConfig, source: Source) -> ImportPlan:
    """The (id, split) pairs to import: the source's objects, or the split file's that the
    source has (each with the file's split), at most ``cfg.objects`` per split."""
    from renderers.shapenet import cap_per_split

    listed = source.list_objects(cfg.root, cfg.category)
    notes: list[str] = []
    if not cfg.split_file:
        models = [(str(o), s) for o, s in listed]
        if cfg.objects is not None:
            models = cap_per_split(models, cfg.objects)
        return ImportPlan(models, [], f"{cfg.format} source", {}, notes)
    synset = resolve_category(cfg.category, free=True).synset
    requested, flags, counts = read_split_json(cfg.split_file, synset)
    dropped = [r for r in requested if r[0] in INVALID_IDS]
    if dropped:
        notes.append(f"left out {dropped[0][0]} (the id the released loader drops as invalid)")
    requested = [r for r in requested if r[0] not in INVALID_IDS]
    present = {str(o) for o, _ in listed}
    models = [r for r in requested if r[0] in present]
    missing = [r for r in requested if r[0] not in present]
    if cfg.objects is not None:
        models = cap_per_split(models, cfg.objects, counts)
        if missing:
            notes.append(f"{len(missing)} id(s) of {cfg.split_file} are not in {cfg.root}; "
                         f"--objects {cfg.objects} chose among the {len(models)} present")
        missing = []
    if not models:
        raise ImportFormatError(
            f"--split {cfg.split_file}: none of its {len(requested)} ids is an object of "
            f"{cfg.root} ({len(listed)} {cfg.category} objects there, e.g. "
            f"{', '.join(o for o, _ in listed[:3]) or 'none'}); is it the right --root / "
            "--category?")
    if missing and cfg.on_error == "fail":
        shown = ", ".join(f"{o} ({s})" for o, s in missing[:3])
        raise ImportFormatError(
            f"--split {cfg.split_file}: {len(missing)} of its ids are not objects of "
            f"{cfg.root} ({shown}{', ...' if len(missing) > 3 else ''}); complete the data, "
            "pass --objects N to import at most N present objects per split, or --on-error "
            "skip to import the others and list these as skipped")
    valid = {o: flags[o] for o, s in models if s == "test" and o in flags}
    return ImportPlan(models, missing, str(cfg.split_file), valid, notes)


def check_options(cfg: ImportStageConfig, source: Source) -> None:
    """``--option`` keys the importer accepts (by its signature), before anything is read."""
    sig = inspect.signature(source.iter_objects)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    try:
        sig.bind(cfg.root, cfg.category, None, objects=[], **cfg.source_options())
    except TypeError as exc:
        accepted = [n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY
                    and n not in ("objects", "size")]
        raise PreflightError(f"--option: {exc} (format {cfg.format} accepts "
                             f"{', '.join(accepted) or 'no options'})") from None


def read_one(cfg: ImportStageConfig, source: Source, oid: str, split: str) -> ImportedObject:
    """The source's object ``oid`` (resized to ``cfg.size`` if the source did not), validated."""
    it = source.iter_objects(cfg.root, cfg.category, None, objects=[(oid, split)],
                             **cfg.source_options())
    try:
        for obj in it:
            if obj.object_id == oid:
                break
        else:
            raise ImportFormatError(f"{cfg.format} importer yielded no object {oid!r}")
    finally:
        close = getattr(it, "close", None)
        if close:
            close()
    obj.split = split  # the plan's split wins (a --split file overrides the source's)
    if cfg.size is not None and obj.image_hw != (cfg.size, cfg.size):
        obj = resize_object(obj, cfg.size)
    return obj.validate()


def scan_layout(cfg: ImportStageConfig, source: Source, plan: ImportPlan) -> dict[str, int]:
    """Store sizes: the source's ``scan_layout`` where it has one, else the first object's."""
    hint: dict[str, int] = {}
    if source.scan_layout is not None:
        hint = dict(source.scan_layout(cfg.root, cfg.category, plan.objects,
                                       **cfg.source_options()))
    needed = ("n_views", "image_size", "n_keypoint_slots", "n_points", "n_kp_candidates")
    if any(k not in hint for k in needed):
        first = read_one(cfg, source, *plan.objects[0])
        found = {"n_views": first.n_views, "image_size": first.image_hw[0],
                 "n_keypoint_slots": first.n_keypoint_slots,
                 "n_points": 0 if first.points is None else len(first.points),
                 "n_kp_candidates": 0 if first.kp_candidates is None else
                 len(first.kp_candidates)}
        if first.image_hw[0] != first.image_hw[1]:
            raise ImportFormatError(f"object {first.object_id}: images are "
                                    f"{first.image_hw[1]}x{first.image_hw[0]}; a render store "
                                    "holds square views")
        hint = {**found, **hint}
    size = int(cfg.size or hint["image_size"])
    try:
        check_image_size("image size", size)
    except PreflightError as exc:
        raise ImportFormatError(f"{cfg.root}: the imported views are {size} px, which the "
                                f"pipeline cannot use ({exc}); pass --size N to downsample "
                                "them") from None
    check_range("views", int(hint["n_views"]), 2, 1000, "cross-view tasks need two views")
    return {"n_views": int(hint["n_views"]), "image_size": size,
            "n_keypoint_slots": int(hint["n_keypoint_slots"]), "n_points": int(hint["n_points"]),
            "n_kp_candidates": int(hint["n_kp_candidates"])}


# ----------------------------------------------------------------------------------- writing


def preflight(cfg: ImportStageConfig, source: Source) -> None:
    """Options, output locations and the features source, before any store is created."""
    check_options(cfg, source)
    check_writable(cfg.out, "--out")
    check_writable(cfg.report_dir, "--report-dir")
    if cfg.features_out:
        check_writable(cfg.features_out, "--features-out")
        if source.read_features is None:
            raise PreflightError(f"--features-out: the {cfg.format} format ships no cached "
                                 "teacher features; run `fnerf-pipeline distill-cache` on the "
                                 "imported renders instead")


def store_attrs(cfg: ImportStageConfig, plan: ImportPlan, layout: dict[str, int],
                first_meta: dict) -> dict:
    category = resolve_category(cfg.category, free=True)
    n_kp = layout["n_keypoint_slots"]
    names = list(first_meta.get("keypoint_names") or [])[:n_kp]
    names += [f"kpn_{i:02d}" for i in range(len(names), n_kp)]
    return {
        "category": category.name,
        "synset": category.synset,
        "source": f"import-{cfg.format}",
        "renderer": f"import ({cfg.format})",
        "object_ids": [o for o, _ in plan.objects],
        "splits": [s for _, s in plan.objects],
        "seeds": [0] * len(plan.objects),
        "part_names": [],
        "keypoint_names": names,
        "camera": {
            **camera_near_far(cfg, {}, [first_meta]),
            "convention": "opencv c2w, pixel centres +0.5",
            "source_frame": first_meta.get("frame", cfg.options.get("frame")),
        },
        "background": [0, 0, 0],
        "depth": "z-depth in the camera frame, 0 = empty (absent: see annotations_present)",
        "pipeline_version": PIPELINE_VERSION,
        "config": cfg.store_config(layout),
        "import": {"format": cfg.format, "root": str(cfg.root), "split_source": plan.split_source,
                   "missing_from_source": [o for o, _ in plan.missing], "notes": plan.notes},
        "valid_for_test": plan.valid_for_test,
        "import_arrays": [SUMMARY, POINT_COUNT] + (
            [KP_CANDIDATES, KP_CANDIDATE_COUNT] if layout["n_kp_candidates"] else []),
    }


def camera_near_far(cfg: ImportStageConfig, camera: dict, metas: list[dict]) -> dict:
    """``camera`` attrs near/far: ``--near/--far`` if given, else the smallest near and the
    largest far over the stored values and every object's ``meta`` (0.8 / 1.8 if none has
    them), with ``near_far_source`` saying which."""
    if cfg.near is not None:
        return {"near": float(cfg.near), "far": float(cfg.far),
                "near_far_source": "--near/--far"}
    nears = [float(m["near"]) for m in metas if "near" in m]
    fars = [float(m["far"]) for m in metas if "far" in m]
    if camera.get("near_far_source") == "objects":
        nears.append(float(camera["near"]))
        fars.append(float(camera["far"]))
    if not nears or not fars:
        return {"near": 0.8, "far": 1.8, "near_far_source": "default (the source has none)"}
    return {"near": min(nears), "far": max(fars), "near_far_source": "objects"}


def ensure_import_arrays(writer: RenderStoreWriter, layout: dict[str, int]) -> list[str]:
    """Create the importer's own per-object arrays (once; a resumed store has them)."""
    g, n = writer.group, len(writer.group.attrs["object_ids"])
    names = list(g.attrs["import_arrays"])
    specs = {SUMMARY: ((len(SUMMARY_COLUMNS),), "int32", 0), POINT_COUNT: ((), "int32", 0),
             KP_CANDIDATES: ((max(1, layout["n_kp_candidates"]), 3), "float32", 0.0),
             KP_CANDIDATE_COUNT: ((), "int32", 0)}
    for name in names:
        if name not in g:
            shape, dtype, fill = specs[name]
            create_object_array(g, name, n, shape, dtype, fill, per_view=False)
    if IMPORT_DIGESTS not in g:
        create_object_array(g, IMPORT_DIGESTS, n, (len(names), 32), "uint8", 0, per_view=False)
    return names


def _pad_cyclic(values: np.ndarray | None, n: int, fill: Any, dtype: str, tail: tuple[int, ...]
                ) -> tuple[np.ndarray, int]:
    """(n, *tail) ``values`` padded by cyclic repetition (fill when there are none)."""
    if values is None or len(values) == 0:
        return np.full((n, *tail), fill, dtype), 0
    count = len(values)
    idx = np.arange(n) % count
    return np.asarray(values, dtype)[idx], count


def fit_to_store(obj: ImportedObject, layout: dict[str, int]) -> dict[str, np.ndarray]:
    """The object's arrays at the store's sizes (fill values for what it lacks), plus the
    importer arrays; an object larger than the store's layout is an error naming it."""
    V, H = layout["n_views"], layout["image_size"]
    P, S, M = (max(1, layout[k]) for k in ("n_keypoint_slots", "n_points", "n_kp_candidates"))
    who = f"object {obj.object_id}"
    if obj.n_views != V or obj.image_hw != (H, H):
        raise ImportFormatError(
            f"{who}: {obj.n_views} views of {obj.image_hw[1]}x{obj.image_hw[0]} px; the store "
            f"holds {V} views of {H}x{H} (set by the first object; pass --size "
            f"{min(H, obj.image_hw[0])} to import every object at one size)")
    p_obj = obj.n_keypoint_slots
    s_obj = 0 if obj.points is None else len(obj.points)
    m_obj = 0 if obj.kp_candidates is None else len(obj.kp_candidates)
    for n, cap, what in ((p_obj, layout["n_keypoint_slots"], "keypoint slots"),
                         (s_obj, layout["n_points"], "points"),
                         (m_obj, layout["n_kp_candidates"], "keypoint candidates")):
        if n > cap:
            raise ImportFormatError(f"{who}: {n} {what}, more than the store's {cap} (sizes "
                                    "are fixed before the objects are read: by the source's "
                                    "scan_layout, else by the first object); give the source a "
                                    "scan_layout that covers every object")
    out: dict[str, np.ndarray] = {
        "rgb": obj.rgb, "alpha": obj.alpha, "K": obj.K, "c2w": obj.c2w,
        "depth": obj.depth if obj.depth is not None else np.zeros((V, H, H), np.float32),
        "part": obj.part if obj.part is not None else np.full((V, H, H), -1, np.int16),
    }
    kp3d = np.zeros((P, 3), np.float32)
    kp_id = np.full(P, -1, np.int32)
    kp2d = np.zeros((V, P, 2), np.float32)
    visible = np.zeros((V, P), bool)
    if obj.kp_id is not None:
        kp_id[:p_obj] = obj.kp_id
    if obj.kp3d is not None:
        kp3d[:p_obj] = obj.kp3d
    if obj.kp2d is not None:
        kp2d[:, :p_obj], visible[:, :p_obj] = obj.kp2d, obj.kp_visible
    out.update(kp3d=kp3d, kp_id=kp_id, kp2d=kp2d, kp_visible=visible)
    out["points"], n_points = _pad_cyclic(obj.points, S, 0.0, "float32", (3,))
    out["point_part"], _ = _pad_cyclic(obj.point_part, S, -1, "int16", ())
    out[KP_CANDIDATES], n_cand = _pad_cyclic(obj.kp_candidates, M, 0.0, "float32", (3,))
    has = obj.annotations()
    part_labels = int(obj.part.max()) + 1 if obj.part is not None and obj.part.size else 0
    if obj.point_part is not None and obj.point_part.size:
        part_labels = max(part_labels, int(obj.point_part.max()) + 1)
    out[SUMMARY] = np.array([has["depth"], has["parts"], has["keypoints"], has["points"],
                             part_labels, n_points, n_cand], np.int32)
    out[POINT_COUNT] = np.array(n_points, np.int32)
    out[KP_CANDIDATE_COUNT] = np.array(n_cand, np.int32)
    return out


def write_object(writer: RenderStoreWriter, index: int, obj: ImportedObject,
                 arrays: dict[str, np.ndarray], import_names: list[str]) -> None:
    """The importer arrays and their digests first, then the contract's arrays through
    :meth:`RenderStoreWriter.write_object` (which writes the ``done`` flag last)."""
    g = writer.group
    for name in import_names:
        g[name][index] = arrays[name]
    values = {n: np.asarray(arrays[n], dtype=g[n].dtype) for n in import_names}
    g[IMPORT_DIGESTS][index] = integrity.object_digests(values, import_names)
    views = SimpleNamespace(**{k: arrays[k] for k in ("rgb", "alpha", "depth", "part")})
    job = SimpleNamespace(object_id=obj.object_id, seed=0, camera_seed=0)
    rendered = SimpleNamespace(job=job, views=views, **{k: arrays[k] for k in (
        "K", "c2w", "kp3d", "kp_id", "kp2d", "kp_visible", "points", "point_part")})
    writer.write_object(index, rendered)  # type: ignore[arg-type]


def damaged_import_arrays(group: Any, path: str, indices: list[int]) -> list[integrity.Problem]:
    """Done objects whose importer arrays fail their digests (checked like the contract's)."""
    names = list(group.attrs.get("import_arrays") or [])
    if not names or IMPORT_DIGESTS not in group:
        return []
    ids = group.attrs["object_ids"]
    problems = []
    for i in indices:
        try:
            stored = group[IMPORT_DIGESTS][i]
        except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt chunk
            problems.append(integrity.Problem(i, ids[i], IMPORT_DIGESTS,
                                              f"unreadable ({type(exc).__name__})"))
            continue
        for k, name in enumerate(names):
            try:
                ok = np.array_equal(integrity.array_digest(group[name][i]), stored[k])
            except Exception as exc:  # noqa: BLE001
                problems.append(integrity.Problem(i, ids[i], name, f"a chunk fails its "
                                                  f"checksum ({type(exc).__name__})"))
                continue
            if not ok:
                problems.append(integrity.Problem(i, ids[i], name,
                                                  "content differs from its digest"))
    return problems


def verify_import_arrays(store: RenderStore, indices: list[int]) -> None:
    """Raise a StoreError naming the objects whose importer arrays are damaged (the evaluate
    stage should call this before reading ``kp_candidates`` / ``point_count``)."""
    problems = damaged_import_arrays(store.group, store.path, indices)
    if problems:
        raise StoreError(integrity.describe(problems, store.path, "the import stage"))


def import_task(cfg: ImportStageConfig, source: Source, writer: RenderStoreWriter,
                index: int, oid: str, split: str, layout: dict[str, int],
                import_names: list[str]) -> dict:
    """Read and write one object; failures come back as a dict, never raised."""
    t0 = time.perf_counter()
    base = {"index": index, "object_id": oid, "worker": worker_id(), "dask_worker": None}
    try:
        obj = read_one(cfg, source, oid, split)
        t1 = time.perf_counter()
        arrays = fit_to_store(obj, layout)
        try:
            write_object(writer, index, obj, arrays, import_names)
        except OSError as exc:
            if is_fatal_os_error(exc):
                return {**base, "ok": False, "fatal": True,
                        "error": os_error_message(exc, "--out", cfg.out),
                        "wall": time.perf_counter() - t0}
            raise
        return {**base, "ok": True, "wall": time.perf_counter() - t0,
                "timings": {"read": t1 - t0, "write": time.perf_counter() - t1},
                "summary": arrays[SUMMARY].tolist(), "meta": _json_safe(obj.meta)}
    except (AssetError, StoreError, ValueError, KeyError) as exc:
        reason = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    except OSError as exc:
        reason = os_error_message(exc)
    except Exception as exc:  # unexpected: keep the object id and the last frame
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f"{type(exc).__name__}: {exc} (at {Path(frame.filename).name}:{frame.lineno})"
    return {**base, "ok": False, "error": reason, "wall": time.perf_counter() - t0}


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_import_stage(cfg: ImportStageConfig) -> ImportStageResult:
    """Import every planned object into the store (resuming), then the features (optional),
    then write the report and metrics.json. Raises after the report when objects failed
    (``on_error == "fail"``), nothing was written, or the disk filled up."""
    from cache.store_lock import StoreLock

    t_start = time.perf_counter()
    source = load_source(cfg.format)
    preflight(cfg, source)
    if cfg.features_only:
        return _features_only(cfg, source, t_start)
    plan = plan_objects(cfg, source)
    layout = scan_layout(cfg, source, plan)
    with StoreLock(cfg.out, stage="import") as lock:
        if lock.took_over_from:
            print(f"note: {cfg.out}: the previous writer (pid {lock.took_over_from.get('pid')}) "
                  "died; resuming its store", file=sys.stderr)
        return _import_locked(cfg, source, plan, layout, t_start)


def _features_only(cfg: ImportStageConfig, source: Source, t_start: float
                   ) -> ImportStageResult:
    """``--features-only``: the features of the render store ``cfg.out`` that an earlier
    import of the same source made (what a separate distill stage of ``dvc repro`` runs)."""
    renders = RenderStore(cfg.out)
    conf = renders.attrs.get("config") or {}
    if (conf.get("format"), conf.get("root")) != (cfg.format, str(Path(cfg.root).resolve())):
        raise ImportFormatError(
            f"--out {cfg.out} was not imported from {cfg.root} ({cfg.format}) but from "
            f"{conf.get('root') or renders.attrs.get('source')} ({conf.get('format')}); run "
            "`fnerf-pipeline import` without --features-only first")
    features = import_features(cfg, source)
    metrics = {"category": cfg.category, "format": cfg.format, "features": features,
               "objects": features["objects"], "failures": len(features["failures"]),
               "on_error": cfg.on_error, "stage_wall_s": time.perf_counter() - t_start}
    report_path = Path(cfg.report_dir) / "index.html"
    write_features_report(cfg, report_path, features)
    write_json(Path(cfg.report_dir) / "metrics.json", metrics)
    if features["failures"] and cfg.on_error == "fail":
        raise ImportFormatError(
            f"{len(features['failures'])} object(s) have no usable features: "
            f"{summarize_failures(features['failures'])} (report: {report_path})")
    return ImportStageResult(metrics, features["failures"], str(cfg.out), str(report_path),
                             cfg.features_out)


def _first_meta(cfg: ImportStageConfig, source: Source, plan: ImportPlan) -> dict:
    try:
        return read_one(cfg, source, *plan.objects[0]).meta
    except (AssetError, ValueError, OSError):
        return {}


def _import_locked(cfg: ImportStageConfig, source: Source, plan: ImportPlan,
                   layout: dict[str, int], t_start: float) -> ImportStageResult:
    n = len(plan.objects)
    store_layout = StoreLayout(n, layout["n_views"], layout["image_size"],
                               layout["n_keypoint_slots"], layout["n_points"])
    attrs = store_attrs(cfg, plan, layout, _first_meta(cfg, source, plan))
    writer = RenderStoreWriter.create_or_resume(cfg.out, store_layout, attrs,
                                                overwrite=cfg.overwrite, if_stale=cfg.if_stale)
    import_names = ensure_import_arrays(writer, layout)
    t_verify = time.perf_counter()
    done_before = np.flatnonzero(writer.done_mask()).tolist()
    redone = redo_damaged(writer, done_before)
    bad_extra = damaged_import_arrays(writer.group, writer.path,
                                      [i for i in done_before if i not in redone])
    for p in bad_extra:
        print(f"warning: {writer.path}: {p.line()}; redoing it", file=sys.stderr)
    if bad_extra:
        writer.reset(sorted({p.index for p in bad_extra}))
        redone |= {p.index for p in bad_extra}
    verify_s = time.perf_counter() - t_verify
    done = writer.done_mask()
    results: list[dict] = []
    fatal: str | None = None
    todo = [(i, o, s) for i, (o, s) in enumerate(plan.objects) if not done[i]]
    from tqdm import tqdm

    for i, oid, split in tqdm(todo, desc=f"import {cfg.format} {cfg.category}", unit="obj",
                              disable=not todo):
        r = import_task(cfg, source, writer, i, oid, split, layout, import_names)
        results.append(r)
        if r.get("fatal"):
            fatal = r["error"]
            break
    failures = {r["object_id"]: r["error"] for r in results if not r["ok"]}
    failures.update({o: f"listed in {cfg.split_file} ({s}) but not an object of {cfg.root}"
                     for o, s in plan.missing})
    skipped = failures if cfg.on_error == "skip" and fatal is None else {}
    fingerprint = None
    try:
        extra = finalize_attrs(writer, results)
        camera = dict(writer.group.attrs.get("camera") or {})
        extra["camera"] = {**camera, **camera_near_far(
            cfg, camera, [r.get("meta") or {} for r in results if r["ok"]])}
        fingerprint = writer.finalize({**extra, "skipped": skipped, "failures": failures})
    except OSError as exc:
        fatal = fatal or os_error_message(exc, "--out", cfg.out)
        extra = {}
    wall = time.perf_counter() - t_start
    ok = [r for r in results if r["ok"]]
    n_done = int(writer.done_mask().sum())
    metrics = {
        "category": cfg.category, "format": cfg.format, "objects": n_done,
        "objects_imported_now": len(ok), "objects_resumed": int(done.sum()),
        "objects_redone_after_damage": len(redone), "failures": len(failures),
        "on_error": cfg.on_error, "views": n_done * layout["n_views"],
        "image_size": layout["image_size"], "layout": layout,
        "annotations_present": extra.get("annotations_present", {}),
        "stage_wall_s": wall, "verify_s": verify_s,
        "objects_per_s": len(ok) / max(1e-9, sum(r["wall"] for r in ok)) if ok else 0.0,
        "fingerprint": fingerprint, "notes": plan.notes,
        "checks": extra.get("import_checks", {}),
    }
    feature_path = None
    if cfg.features_out and fatal is None and not (failures and cfg.on_error == "fail"):
        try:
            metrics["features"] = import_features(cfg, source)
            feature_path = cfg.features_out
        except OSError as exc:
            if not is_fatal_os_error(exc):
                raise
            fatal = os_error_message(exc, "--features-out", cfg.features_out)
    elif cfg.features_out:
        metrics["features"] = {"skipped": "the render store is not complete"}
    report_path = write_stage_outputs(
        cfg.report_dir, results, metrics,
        lambda path: write_import_report(cfg, path, metrics, failures))
    stop_on_failure("import", fatal, len(ok), n_done, cfg.category, failures, report_path)
    feat_fail = (metrics.get("features") or {}).get("failures") or {}
    if (failures or feat_fail) and cfg.on_error == "fail":
        raise ImportFormatError(
            f"{len(failures) + len(feat_fail)} object(s) failed to import: "
            f"{summarize_failures({**failures, **feat_fail})} (report: {report_path}); fix "
            "them and re-run (finished objects are kept), or pass --on-error skip")
    return ImportStageResult(metrics, failures, str(cfg.out), str(report_path), feature_path)


def finalize_attrs(writer: RenderStoreWriter, results: list[dict]) -> dict:
    """annotations_present / annotated_objects / part_names from the per-object summaries of
    every done object (this run's and earlier runs'), plus the sources' own checks."""
    g = writer.group
    done = writer.done_mask()
    summary = g[SUMMARY][:]
    idx = np.flatnonzero(done)
    annotated = {k: [int(i) for i in idx if summary[i, c]] for c, k in enumerate(ANNOTATIONS)}
    present = {k: bool(v) for k, v in annotated.items()}
    n_parts = int(summary[idx, 4].max()) if len(idx) else 0
    metas = [r.get("meta") or {} for r in results if r["ok"]]
    names = next((m["part_names"] for m in metas if m.get("part_names")), None) \
        or list(g.attrs.get("part_names") or [])
    names = list(names)[:n_parts] + [f"part_{k}" for k in range(len(names), n_parts)]
    checks: dict[str, Any] = dict(g.attrs.get("import_checks") or {})
    gaps = [m["kp2d_vs_projected_kp3d_px"]["max"] for m in metas
            if m.get("kp2d_vs_projected_kp3d_px")]
    if gaps:
        checks["kp2d_vs_projected_kp3d_px_max"] = float(max(gaps))
        checks["kp2d_vs_projected_kp3d_px_median_of_max"] = float(np.median(gaps))
    if len(idx):
        from renderers.conventions import mean_camera_up

        up = mean_camera_up(np.stack([g["c2w"][int(i)] for i in idx[:8]]))
        checks["mean_camera_up"] = [round(float(x), 4) for x in up]
        if up[1] < 0.5:
            print(f"warning: {writer.path}: the cameras' mean up direction is {np.round(up, 3)}"
                  " in the project frame (+Y up expected for orbits without roll); the source "
                  "may be in another world frame: try --option frame=...", file=sys.stderr)
    return {"annotations_present": present, "annotated_objects": annotated,
            "part_names": names, "import_checks": checks}


# --------------------------------------------------------------------------------- features


def import_features(cfg: ImportStageConfig, source: Source) -> dict:
    """The source's cached features of every done object -> a feature store keyed on the
    render store's fingerprint; returns the feature metrics."""
    from cache.feature_store import FeatureStore, FeatureStoreWriter
    from cache.store_lock import StoreLock

    assert source.read_features is not None and cfg.features_out
    t0 = time.perf_counter()
    renders = RenderStore(cfg.out)
    expected = renders.valid_indices()
    opts = cfg.feature_options()
    first = None
    missing: dict[str, str] = {}
    for i in expected:  # the first object with features fixes the store's shape
        try:
            first = source.read_features(cfg.root, cfg.category, renders.object_ids[i], **opts)
            break
        except ImportFormatError as exc:
            missing[renders.object_ids[i]] = str(exc)
    if first is None:
        raise ImportFormatError(f"--features-out: no object of {cfg.root} has features "
                                f"({next(iter(missing.values()), 'no objects')})")
    V, C, h, w = first.shape
    if V != renders.n_views:
        raise ImportFormatError(f"--features-out: features hold {V} views, the renders "
                                f"{renders.n_views}; they must match view for view")
    identity = (source.feature_identity(cfg.root, cfg.category, C, (h, w), **opts)
                if source.feature_identity else
                {"name": f"{cfg.format}-cache", "root": str(Path(cfg.root).resolve()),
                 **opts})
    attrs = {
        "identity": identity, "render_fingerprint": renders.fingerprint,
        "render_config": renders.attrs.get("config"), "render_store": str(cfg.out),
        "pca_dim": None, "category": cfg.category, "teacher": identity["name"],
        "object_ids": renders.object_ids, "splits": renders.splits,
        "background_zeroed": True, "teacher_dim": int(C),
    }
    with StoreLock(cfg.features_out, stage="import"):
        writer = FeatureStoreWriter.create_or_resume(
            cfg.features_out, renders.n_objects, renders.n_views, (h, w), C, attrs,
            if_stale=cfg.if_stale, overwrite=cfg.overwrite,
            render_digests=renders.object_digests())
        done = writer.done_mask()
        redone = redo_damaged(writer, [i for i in expected if done[i]])
        done = writer.done_mask()
        failures: dict[str, str] = {}
        absent_val: list[str] = []
        written = [i for i in expected if done[i]]
        for i in expected:
            if done[i]:
                continue
            oid = renders.object_ids[i]
            try:
                feats = source.read_features(cfg.root, cfg.category, oid, **opts)
                if feats.shape != (V, C, h, w):
                    raise ImportFormatError(
                        f"features of {oid} have shape {feats.shape}; the store holds "
                        f"{(V, C, h, w)} (set by {renders.object_ids[expected[0]]}): every "
                        "object needs the same views, channels and grid")
                feat = np.ascontiguousarray(feats.transpose(0, 2, 3, 1)).astype(np.float16)
                if not np.isfinite(feat).all():
                    raise ImportFormatError(f"features of {oid} overflow float16 (or are not "
                                            "finite); they cannot be stored")
            except ImportFormatError as exc:
                if renders.splits[i] == "val" and "no features file" in str(exc):
                    absent_val.append(oid)  # the released data has none for val objects
                else:
                    failures[oid] = str(exc)
                continue
            writer.write_views(i, np.arange(V), feat)
            writer.mark_done(i, feat)
            written.append(i)
        complete = writer.finalize(sorted(written), {"failures": failures,
                                                     "absent_val_objects": absent_val})
    if complete:
        FeatureStore(cfg.features_out, renders=renders)  # read-after-write: flags, freshness
    return {"path": cfg.features_out, "objects": len(written), "failures": failures,
            "absent_val_objects": len(absent_val), "dim": int(C), "grid": [int(h), int(w)],
            "identity": identity["name"], "redone_after_damage": len(redone),
            "wall_s": time.perf_counter() - t0}

