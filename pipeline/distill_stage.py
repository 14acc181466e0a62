"""The distill-cache stage: run a teacher once over a render store into a feature store.

In-process runs stream: a reader thread reads the next batch of views from the render store
while the teacher computes, and a writer thread writes finished batches, so neither I/O side
blocks the teacher. Batches span objects. ``--workers N`` / ``--scheduler`` instead run one dask
task per object (each worker builds the teacher once).

One sample of train-object views (:func:`fit_sample_pairs`, ``pca_fit_views`` draws) serves
every fit: the ``--pca`` basis (teacher features of those views, before anything is written)
and, once the store is complete, the category's report colouring (the stored features of the
same views: kept by the writer thread as it writes and reads back each object, read from the
store for objects computed by an earlier run or by dask workers), whose spectrum also gives the
variance kept per width.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.atomic import write_json
from cache.feature_store import (
    FeatureStore,
    FeatureStoreWriter,
    apply_pca,
    fit_principal,
    foreground_rows,
    principal_components,
)
from cache.render_store import RenderStore
from cache.zarr_io import StoreError
from pipeline.executor import run_tasks, worker_id, writer_records
from pipeline.guards import (
    PreflightError,
    check_range,
    check_scheduler,
    check_writable,
    is_fatal_os_error,
    os_error_message,
    redo_damaged,
)
from pipeline.reports.distill import write_distill_report
from pipeline.reports.features import ColourBasis, colour_basis_of
from renderers.categories import resolve_category
from teachers.registry import IMPORTED_TEACHERS, teacher_label

ORACLE_EXTRAS = ("part", "depth", "K", "c2w")


@dataclass
class DistillStageConfig:
    """Settings of one distill-cache run."""

    category: str
    teacher: str = "daisy"
    teacher_options: dict[str, Any] = field(default_factory=dict)
    renders: str | None = None
    out: str | None = None
    report_dir: str | None = None
    batch_size: int = 16
    pca: int | None = None
    pca_fit_views: int = 256
    workers: int = 1
    scheduler: str | None = None
    if_stale: str = "fail"
    overwrite: bool = False
    # imported teachers (``official-dino``): the dataset the render stage imported
    import_format: str | None = None
    import_root: str | None = None
    import_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.category = resolve_category(self.category, free=True).name
        label = self.label
        self.renders = self.renders or f"data/renders/{self.category}.zarr"
        self.out = self.out or f"data/features/{label}/{self.category}.zarr"
        self.report_dir = self.report_dir or f"reports/distill-cache/{label}/{self.category}"

    @property
    def label(self) -> str:
        """The teacher's name in default paths (``timm-<model slug>`` for timm models)."""
        return teacher_label(self.teacher, self.teacher_options.get("model_name"))


# CLI option -> constructor argument, per teacher (None: not applicable)
CLI_OPTION_NAMES: dict[str, dict[str, str]] = {
    "dino": {
        "weights": "weights",
        "model_id": "model_name",
        "layer": "layer",
        "facet": "facet",
        "input_size": "input_size",
        "device": "device",
        "dtype": "dtype",
    },
    "ldm": {
        "model_id": "model",
        "timestep": "timestep",
        "prompt": "prompt_template",
        "input_size": "input_size",
        "device": "device",
        "dtype": "dtype",
    },
    "effnet": {
        "weights": "weights",
        "model_id": "model_id",
        "input_size": "input_size",
        "device": "device",
        "dtype": "dtype",
    },
    "daisy": {"input_size": "input_size"},
    "oracle": {},
}
CLI_OPTION_NAMES["timm"] = CLI_OPTION_NAMES["dino"]  # dino is a preset of the timm teacher
CLI_OPTION_NAMES.update({name: {} for name in IMPORTED_TEACHERS})  # no model, no options


def cli_options(teacher: str, named: dict[str, Any]) -> dict[str, Any]:
    """Translate the generic CLI options into ``teacher``'s constructor arguments."""
    if teacher not in CLI_OPTION_NAMES:
        raise ValueError(
            f"unknown teacher {teacher!r}; choose one of {', '.join(CLI_OPTION_NAMES)}"
        )
    routes = CLI_OPTION_NAMES[teacher]
    bad = sorted(k for k in named if k not in routes)
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        raise ValueError(f"{flags} do(es) not apply to the {teacher} teacher")
    return {routes[k]: v for k, v in named.items()}


_TEACHERS: dict[str, Any] = {}


def get_teacher(name: str, options: dict[str, Any]):
    """This process's teacher for (name, options), built once."""
    from teachers.registry import build_teacher

    key = repr((name, sorted(options.items())))
    if key not in _TEACHERS:
        _TEACHERS[key] = build_teacher(name, **options)
    return _TEACHERS[key]


class VerifiedObjects:
    """Whole-object reads of the arrays a teacher needs, each checked against its digest before
    use (one shard read per array and object); keeps the last two objects for batch slicing."""

    def __init__(self, store: RenderStore, extras: bool):
        self.store, self.names = store, ("rgb", "alpha", *(ORACLE_EXTRAS if extras else ()))
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def get(self, obj: int) -> dict[str, np.ndarray]:
        if obj not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[obj] = self.store.read_object(obj, self.names)
        return self._cache[obj]


def read_batch(objects: VerifiedObjects, pairs: list[tuple[int, int]], category: str):
    """TeacherInput for (object, view) pairs, from verified whole-object arrays."""
    from teachers.base import TeacherInput

    parts: dict[str, list[np.ndarray]] = {n: [] for n in objects.names}
    for obj, views in _group_pairs(pairs):
        arrays = objects.get(obj)
        for n in objects.names:
            parts[n].append(arrays[n][views])
    arrays = {n: np.concatenate(v) for n, v in parts.items()}
    return TeacherInput(category=category, **arrays)


def _group_pairs(pairs: list[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """[(obj, view), ...] in order -> [(obj, [contiguous views]), ...]."""
    groups: list[tuple[int, list[int]]] = []
    for obj, view in pairs:
        if groups and groups[-1][0] == obj and groups[-1][1][-1] == view - 1:
            groups[-1][1].append(view)
        else:
            groups.append((obj, [view]))
    return groups


def fit_sample_pairs(renders: RenderStore, n_draws: int) -> list[tuple[int, int]]:
    """Sorted distinct (object, view) pairs of ``n_draws`` seeded draws from the train objects
    (all rendered objects when the store has no train split): the sample of every fit."""
    rng = np.random.default_rng(0)
    valid = renders.valid_indices("train") or renders.valid_indices()
    n_views = renders.n_views
    return sorted({(int(rng.choice(valid)), int(rng.integers(n_views))) for _ in range(n_draws)})


def sample_views(renders: RenderStore, n_draws: int) -> dict[int, np.ndarray]:
    """:func:`fit_sample_pairs` grouped: object -> its sample views (ascending objects)."""
    by_object: dict[int, list[int]] = {}
    for obj, view in fit_sample_pairs(renders, n_draws):
        by_object.setdefault(obj, []).append(view)
    return {obj: np.array(views) for obj, views in by_object.items()}


def fit_store_colour_basis(
    store: FeatureStore, renders: RenderStore, n_draws: int,
    known_rows: dict[int, np.ndarray] | None = None,
) -> tuple[ColourBasis, np.ndarray] | None:
    """The category colouring from the stored features of the :func:`fit_sample_pairs` views:
    a :class:`ColourBasis` (D-space, lo/hi = 2nd/98th percentiles of the sample) and the
    sample's spectrum (D,); None when the sample has 3 or fewer foreground cells.

    ``known_rows``: object -> the foreground rows of its sample views, kept by this run's
    writer from features it wrote and verified by reading back (the same values); the other
    objects' rows are read from the store."""
    known = known_rows or {}
    rows = np.concatenate([
        known[obj] if obj in known else foreground_rows(store.read_views(obj, views))
        for obj, views in sample_views(renders, n_draws).items()]).astype(np.float64)
    if len(rows) <= 3:
        return None
    principal = principal_components(rows)
    return colour_basis_of(principal, rows), principal.variances


def add_colour_basis(cfg: DistillStageConfig, writer: FeatureStoreWriter, store: FeatureStore,
                     renders: RenderStore,
                     known_rows: dict[int, np.ndarray] | None = None) -> FeatureStore:
    """Fit and store the category colouring when the complete store lacks one; returns the
    store reopened with it."""
    fitted = None if store.colour_basis() is not None else fit_store_colour_basis(
        store, renders, cfg.pca_fit_views, known_rows)
    if fitted is None:
        return store
    basis, variances = fitted
    writer.set_colour_basis(basis.mean, basis.components, basis.lo, basis.hi, variances)
    return FeatureStore(cfg.out)


def prepare_store(cfg: DistillStageConfig, teacher, renders: RenderStore) -> FeatureStoreWriter:
    """Create/resume the feature store, fitting the PCA basis first when asked."""
    dim = cfg.pca or teacher.feature_dim
    if cfg.pca and cfg.pca > teacher.feature_dim:
        raise ValueError(f"--pca {cfg.pca} exceeds the teacher's {teacher.feature_dim} channels")
    attrs = {
        "identity": teacher.identity(),
        "render_fingerprint": renders.fingerprint,
        "render_config": renders.attrs.get("config"),
        "render_store": str(cfg.renders),
        "pca_dim": cfg.pca,
        "category": cfg.category,
        "teacher": cfg.teacher,
        "object_ids": renders.object_ids,
        "splits": renders.splits,
        "background_zeroed": bool(getattr(teacher, "zero_bg", True)),
        "teacher_dim": int(teacher.feature_dim),
    }
    writer = FeatureStoreWriter.create_or_resume(
        cfg.out,
        renders.n_objects,
        renders.n_views,
        tuple(teacher.grid),
        dim,
        attrs,
        if_stale=cfg.if_stale,
        overwrite=cfg.overwrite,
        render_digests=renders.object_digests(),
    )
    if cfg.pca and writer.pca() is None:
        pairs = fit_sample_pairs(renders, cfg.pca_fit_views)
        objects = VerifiedObjects(renders, cfg.teacher == "oracle")
        feats = [
            teacher(read_batch(objects, pairs[k : k + cfg.batch_size], cfg.category))
            for k in range(0, len(pairs), cfg.batch_size)
        ]
        principal = fit_principal(np.concatenate(feats), cfg.pca)
        writer.set_pca(principal.mean, principal.axes[:, : cfg.pca], principal.variances)
    return writer


@dataclass
class StreamResult:
    """What :func:`stream_objects` did: seconds per part (and bytes written), the objects it
    wrote and verified by reading back, and the foreground rows of the colour-fit sample views
    of those objects (object -> (M, D) float16)."""

    timings: dict[str, float]
    verified: set[int] = field(default_factory=set)
    sample_rows: dict[int, np.ndarray] = field(default_factory=dict)


def stream_objects(
    cfg: DistillStageConfig,
    teacher,
    renders: RenderStore,
    writer: FeatureStoreWriter,
    objects: list[int],
) -> StreamResult:
    """In-process reader thread -> teacher -> writer thread over ``objects``.

    The writer thread, per finished object: one shard write, its digest and done flag, then
    read-after-write (the shard re-read against the digest, StoreError if it differs) and the
    object's colour-fit sample rows, so none of that waits for the last object."""
    from tqdm import tqdm

    pairs = [(o, v) for o in objects for v in range(renders.n_views)]
    batches = [pairs[k : k + cfg.batch_size] for k in range(0, len(pairs), cfg.batch_size)]
    pca = writer.pca()
    objects_in = VerifiedObjects(renders, cfg.teacher == "oracle")
    to_teacher: queue.Queue = queue.Queue(maxsize=3)
    to_writer: queue.Queue = queue.Queue(maxsize=3)
    timings = {"read": 0.0, "teacher": 0.0, "write": 0.0, "bytes": 0.0}
    result = StreamResult(timings)
    sample = sample_views(renders, cfg.pca_fit_views)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for batch in batches:
                t0 = time.perf_counter()
                item = (batch, read_batch(objects_in, batch, cfg.category))
                timings["read"] += time.perf_counter() - t0
                to_teacher.put(item)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            to_teacher.put(None)

    def write() -> None:
        # an object's views are buffered and written in one call (one shard write per object,
        # not a read-modify-write of the shard per batch), then its digest and done flag
        pending: dict[int, list[np.ndarray]] = {o: [] for o in objects}  # views in order
        all_views = np.arange(renders.n_views)
        try:
            while (item := to_writer.get()) is not None:
                batch, feat = item
                t0 = time.perf_counter()
                k = 0
                for obj, views in _group_pairs(batch):
                    pending[obj].append(feat[k : k + len(views)].astype(np.float16))
                    k += len(views)
                    if sum(len(p) for p in pending[obj]) == renders.n_views:
                        whole = np.concatenate(pending.pop(obj))
                        writer.write_views(obj, all_views, whole)
                        writer.mark_done(obj, whole)
                        writer.check_written(obj)
                        result.verified.add(obj)
                        if obj in sample:
                            result.sample_rows[obj] = foreground_rows(whole[sample[obj]])
                timings["write"] += time.perf_counter() - t0
                timings["bytes"] += feat.size * 2
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=reader, daemon=True),
        threading.Thread(target=write, daemon=True),
    ]
    for t in threads:
        t.start()
    bar = tqdm(total=len(pairs), desc=f"{cfg.teacher} {cfg.category}", unit="img")
    try:
        while (item := to_teacher.get()) is not None:
            batch, inputs = item
            t0 = time.perf_counter()
            feat = teacher(inputs)
            if pca is not None:
                feat = apply_pca(feat, *pca)
            timings["teacher"] += time.perf_counter() - t0
            to_writer.put((batch, feat))
            bar.update(len(batch))
            if errors:
                break
    finally:
        to_writer.put(None)
        threads[1].join()
        bar.close()
    if errors:
        raise errors[0]
    return result


def distill_object_task(index: int, cfg: DistillStageConfig) -> dict:
    """dask task: compute and write every view of one object (teacher built once per worker)."""
    t0 = time.perf_counter()
    try:
        teacher = get_teacher(cfg.teacher, cfg.teacher_options)
        renders = RenderStore(cfg.renders)
        writer = FeatureStoreWriter(cfg.out)
        streamed = stream_objects(cfg, teacher, renders, writer, [index])
        return {"index": index, "ok": True, "timings": streamed.timings,
                "verified": sorted(streamed.verified), "wall": time.perf_counter() - t0}
    except Exception as exc:
        return {
            "index": index,
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "wall": time.perf_counter() - t0,
        }


def preflight(cfg: DistillStageConfig) -> None:
    """Settings, output locations and the scheduler, checked before anything is written."""
    check_range("--batch-size", cfg.batch_size, 1, 4096)
    check_range("--workers", cfg.workers, 1, 256)
    if cfg.pca is not None:
        check_range("--pca", cfg.pca, 1)
    check_writable(cfg.out, "--out")
    check_writable(cfg.report_dir, "--report-dir")
    if cfg.scheduler:
        check_scheduler(cfg.scheduler)


def run_distill_stage(cfg: DistillStageConfig) -> dict:
    """Compute (or resume) the feature store, then write the report and metrics.

    The feature store is locked for the run (one writer); every render object is verified
    against its digests as it is read, and a resumed store's done objects are re-verified.
    """
    from cache.store_lock import StoreLock

    preflight(cfg)
    if cfg.teacher in IMPORTED_TEACHERS:
        return import_teacher_features(cfg)
    renders = RenderStore(cfg.renders)
    with StoreLock(cfg.out, stage="distill-cache"):
        return _distill_locked(cfg, renders)


def import_teacher_features(cfg: DistillStageConfig) -> dict:
    """An imported teacher (``official-dino``): the dataset's own cached features of the
    render store's objects, through the import stage's ``--features-only`` path (its report in
    ``<report_dir>/import``), then the store's colouring and the distill report and metrics."""
    from cache.store_lock import StoreLock
    from pipeline.import_stage import ImportStageConfig, run_import_stage

    t_start = time.perf_counter()
    fmt, folder, _ = IMPORTED_TEACHERS[cfg.teacher]
    switch = (f"--teacher {cfg.teacher} imports the features of the {fmt} data the render stage "
              f"imported: set render.source: import, render.import_format: {fmt} and "
              "render.import_root in params.yaml (docs/import.md)")
    if cfg.import_format != fmt or not cfg.import_root:
        raise PreflightError(f"{switch}; got --import-format {cfg.import_format or '(unset)'} "
                             f"--import-root {cfg.import_root or '(unset)'}")
    if cfg.pca or cfg.teacher_options:
        raise PreflightError(f"--pca and teacher options do not apply to --teacher "
                             f"{cfg.teacher} (its features are imported as they are)")
    renders = RenderStore(cfg.renders)
    if renders.attrs.get("source") != f"import-{fmt}":
        raise PreflightError(f"{switch}; {cfg.renders} is a {renders.attrs.get('source')!r} "
                             "store")
    result = run_import_stage(ImportStageConfig(
        format=fmt, root=cfg.import_root, category=cfg.category, options=cfg.import_options,
        out=cfg.renders, report_dir=str(Path(cfg.report_dir) / "import"), features_out=cfg.out,
        features_folder=folder, features_only=True, if_stale=cfg.if_stale,
        overwrite=cfg.overwrite))
    imported = result.metrics["features"]
    t_colour = time.perf_counter()
    with StoreLock(cfg.out, stage="distill-cache"):
        store = add_colour_basis(cfg, FeatureStoreWriter(cfg.out), FeatureStore(cfg.out),
                                 renders)
    metrics = {
        "teacher": cfg.teacher,
        "category": cfg.category,
        "source": f"imported: {cfg.import_root} ({fmt} {folder})",
        "objects": imported["objects"],
        "absent_val_objects": imported["absent_val_objects"],
        "failures": len(imported["failures"]),
        "import_s": imported["wall_s"],
        "colour_fit_s": time.perf_counter() - t_colour,
        "store_mb": _du(cfg.out) / 1e6,
        "feature_dim": imported["dim"],
        "grid": imported["grid"],
        **store_metrics(store, renders),
        "stage_wall_s": time.perf_counter() - t_start,
    }
    write_distill_report(cfg, metrics, imported["failures"], store, renders)
    write_json(Path(cfg.report_dir) / "metrics.json", metrics)
    return metrics


def _distill_locked(cfg: DistillStageConfig, renders: RenderStore) -> dict:
    t_start = time.perf_counter()
    missing = [n for n in ("rgb", "alpha") if n not in renders.group]
    if missing:
        raise StoreError(f"{cfg.renders}: render store lacks {missing}")
    if renders.attrs.get("category") != cfg.category:
        raise StoreError(
            f"{cfg.renders} holds {renders.attrs.get('category')!r} renders, not {cfg.category!r}"
        )
    if cfg.teacher == "oracle" and "n_parts" not in cfg.teacher_options:
        cfg.teacher_options["n_parts"] = max(1, len(renders.attrs.get("part_names", [])))
    teacher = get_teacher(cfg.teacher, cfg.teacher_options)
    writer = prepare_store(cfg, teacher, renders)
    expected = renders.valid_indices()
    if not expected:
        raise StoreError(f"{cfg.renders}: no rendered objects to distil; re-run the render stage")
    done = writer.done_mask()
    t_verify = time.perf_counter()
    redo = redo_damaged(writer, [i for i in expected if done[i]])
    resume_verify_s = time.perf_counter() - t_verify
    todo = [i for i in expected if not done[i] or i in redo]
    streamed = StreamResult({"read": 0.0, "teacher": 0.0, "write": 0.0, "bytes": 0.0})
    timings = streamed.timings
    failures: dict[str, str] = {}
    fatal: str | None = None
    t_run = time.perf_counter()
    results: list[dict] = []  # one per object computed now (who wrote it: writers.json)
    if cfg.workers > 1 or cfg.scheduler:
        for r in run_tasks(
            distill_object_task,
            todo,
            cfg,
            workers=cfg.workers,
            scheduler=cfg.scheduler,
            desc=f"{cfg.teacher} {cfg.category}",
        ):
            results.append(r)
            if r["ok"]:
                for k, v in r["timings"].items():
                    timings[k] += v
                streamed.verified.update(r["verified"])
            else:
                failures[renders.object_ids[r["index"]]] = r["error"]
    elif todo:
        try:
            streamed = stream_objects(cfg, teacher, renders, writer, todo)
            timings = streamed.timings
        except OSError as exc:  # full disk, read-only: finalise and report what finished
            if not is_fatal_os_error(exc):
                raise
            fatal = os_error_message(exc, "--out", cfg.out)
    run_wall = time.perf_counter() - t_run
    if todo and not results:  # in-process: this process wrote every object it finished
        written = writer.done_mask()
        results = [{"index": i, "ok": bool(written[i]), "worker": worker_id(),
                    "dask_worker": None} for i in todo]
    try:
        complete = writer.finalize(expected, {"failures": failures})
    except OSError as exc:
        fatal, complete = fatal or os_error_message(exc, "--out", cfg.out), False
    n_images = len(todo) * renders.n_views
    store = FeatureStore(cfg.out) if complete else None
    unverified = [i for i in todo if i not in streamed.verified]
    if store is not None and unverified:  # read-after-write of what the writers did not check
        store.verify(unverified)
    t_colour = time.perf_counter()
    if store is not None:
        store = add_colour_basis(cfg, writer, store, renders, streamed.sample_rows)
    colour_fit_s = time.perf_counter() - t_colour
    metrics = {
        "teacher": cfg.teacher,
        "category": cfg.category,
        "objects": len(expected),
        "objects_computed_now": len(todo) - len(failures),
        "failures": len(failures),
        "images": n_images,
        "images_per_s": n_images / run_wall if n_images else 0.0,
        "teacher_s": timings["teacher"],
        "read_s": timings["read"],
        "write_s": timings["write"],
        "writer_mb_per_s": timings["bytes"] / 1e6 / timings["write"] if timings["write"] else 0.0,
        "store_mb": _du(cfg.out) / 1e6,
        "feature_dim": writer.group["feat"].shape[-1],
        "grid": list(writer.group["feat"].shape[2:4]),
        "stage_wall_s": time.perf_counter() - t_start,
        "verify_s": renders.verify_s + resume_verify_s,
        "colour_fit_s": colour_fit_s,
    }
    metrics["writer_processes"] = len({r["worker"] for r in results if r["ok"]})
    if store is not None:
        metrics.update(store_metrics(store, renders))
    write_json(Path(cfg.report_dir) / "writers.json", writer_records(results, renders.object_ids))
    write_distill_report(cfg, metrics, failures, store, renders)
    write_json(Path(cfg.report_dir) / "metrics.json", metrics)
    if fatal:
        n_done = int(writer.done_mask().sum())
        raise StoreError(f"distill-cache stopped with {n_done} object(s) done: {fatal} "
                         f"(report: {cfg.report_dir}/index.html)")
    if failures:
        raise StoreError(
            f"{len(failures)} object(s) failed: "
            + "; ".join(f"{k}: {v}" for k, v in failures.items())
        )
    return metrics


def _du(path: str | Path) -> int:
    """Bytes of the store (a local folder or a URL prefix)."""
    from cache.zarr_io import du

    return du(path)


def store_metrics(store: FeatureStore, renders: RenderStore) -> dict:
    """A complete store's :func:`feature_stats` and its variance kept per width."""
    return {**feature_stats(store, renders),
            **{f"variance_kept_{k}": v for k, v in store.variance_kept().items()}}


def feature_stats(store: FeatureStore, renders: RenderStore, n_objects: int = 4) -> dict:
    """Norms of foreground features and the zero fraction over background cells."""
    from teachers.base import alpha_to_grid

    norms, bg_zero, bg_total = [], 0, 0
    for i in renders.valid_indices()[:n_objects]:
        feat = store.read(i).astype(np.float32)
        fg = alpha_to_grid(renders.read("alpha", i), store.grid)
        n = np.linalg.norm(feat, axis=-1)
        norms.append(n[fg])
        bg_zero += int((n[~fg] == 0).sum())
        bg_total += int((~fg).sum())
    allnorms = np.concatenate(norms) if norms else np.zeros(1)
    return {
        "fg_norm_mean": float(allnorms.mean()),
        "fg_norm_std": float(allnorms.std()),
        "bg_zero_fraction": bg_zero / bg_total if bg_total else 1.0,
        "fg_zero_fraction": float((allnorms == 0).mean()),
    }
