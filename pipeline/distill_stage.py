"""The distill-cache stage: run a teacher once over a render store into a feature store.

In-process runs stream: a reader thread reads the next batch of views from the render store
while the teacher computes, and a writer thread writes finished batches, so neither I/O side
blocks the teacher. Batches span objects. ``--workers N`` / ``--scheduler`` instead run one dask
task per object (each worker builds the teacher once).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.feature_store import (
    FeatureStore,
    FeatureStoreWriter,
    apply_pca,
    fit_pca,
)
from cache.render_store import RenderStore
from cache.zarr_io import StoreError
from pipeline.executor import run_tasks, worker_id, writer_records
from pipeline.guards import (
    check_range,
    check_scheduler,
    check_writable,
    is_fatal_os_error,
    os_error_message,
    redo_damaged,
)
from pipeline.report import HtmlReport, write_json
from pipeline.reports.features import pca_rgb
from renderers.categories import resolve_category

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

    def __post_init__(self) -> None:
        self.category = resolve_category(self.category).name
        self.renders = self.renders or f"data/renders/{self.category}.zarr"
        self.out = self.out or f"data/features/{self.teacher}/{self.category}.zarr"
        self.report_dir = self.report_dir or f"reports/distill-cache/{self.teacher}/{self.category}"


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
    "timm": {
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
        rng = np.random.default_rng(0)
        valid = renders.valid_indices("train") or renders.valid_indices()
        pairs = sorted(
            {
                (int(rng.choice(valid)), int(rng.integers(renders.n_views)))
                for _ in range(cfg.pca_fit_views)
            }
        )
        objects = VerifiedObjects(renders, cfg.teacher == "oracle")
        feats = [
            teacher(read_batch(objects, pairs[k : k + cfg.batch_size], cfg.category))
            for k in range(0, len(pairs), cfg.batch_size)
        ]
        sample = np.concatenate(feats).reshape(-1, teacher.feature_dim)
        writer.set_pca(*fit_pca(sample, cfg.pca))
    return writer


def stream_objects(
    cfg: DistillStageConfig,
    teacher,
    renders: RenderStore,
    writer: FeatureStoreWriter,
    objects: list[int],
) -> dict[str, float]:
    """In-process reader thread -> teacher -> writer thread over ``objects``; returns timings."""
    from tqdm import tqdm

    pairs = [(o, v) for o in objects for v in range(renders.n_views)]
    batches = [pairs[k : k + cfg.batch_size] for k in range(0, len(pairs), cfg.batch_size)]
    pca = writer.pca()
    objects_in = VerifiedObjects(renders, cfg.teacher == "oracle")
    to_teacher: queue.Queue = queue.Queue(maxsize=3)
    to_writer: queue.Queue = queue.Queue(maxsize=3)
    timings = {"read": 0.0, "teacher": 0.0, "write": 0.0, "bytes": 0.0}
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
    return timings


def distill_object_task(index: int, cfg: DistillStageConfig) -> dict:
    """dask task: compute and write every view of one object (teacher built once per worker)."""
    t0 = time.perf_counter()
    try:
        teacher = get_teacher(cfg.teacher, cfg.teacher_options)
        renders = RenderStore(cfg.renders)
        writer = FeatureStoreWriter(cfg.out)
        timings = stream_objects(cfg, teacher, renders, writer, [index])
        return {"index": index, "ok": True, "timings": timings, "wall": time.perf_counter() - t0}
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
    renders = RenderStore(cfg.renders)
    with StoreLock(cfg.out, stage="distill-cache"):
        return _distill_locked(cfg, renders)


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
    timings = {"read": 0.0, "teacher": 0.0, "write": 0.0, "bytes": 0.0}
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
            else:
                failures[renders.object_ids[r["index"]]] = r["error"]
    elif todo:
        try:
            timings = stream_objects(cfg, teacher, renders, writer, todo)
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
    if store is not None and todo:  # read-after-write: what this run wrote decodes and matches
        store.verify(todo)
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
    }
    metrics["writer_processes"] = len({r["worker"] for r in results if r["ok"]})
    if store is not None:
        metrics.update(feature_stats(store, renders))
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


def write_distill_report(
    cfg: DistillStageConfig,
    metrics: dict,
    failures: dict,
    store: FeatureStore | None,
    renders: RenderStore,
) -> None:
    """Input views beside a PCA colouring of their features, then statistics and identity."""
    import html

    from pipeline.report import png_data_uri

    report = HtmlReport(f"Distill-cache report: {cfg.teacher} on {cfg.category}")
    if failures:
        report.heading(f"Failures ({len(failures)})")
        report.table(["object", "reason"], [[k, v] for k, v in failures.items()])
    if store is not None:
        report.heading("Input views and a PCA-to-RGB colouring of their teacher features")
        size = renders.image_size
        for i in renders.valid_indices()[:4]:
            views = np.linspace(0, renders.n_views - 1, 4).astype(int)
            feats = np.stack([store.read((i, int(v))) for v in views]).astype(np.float32)
            colours = pca_rgb(feats)
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
    report.heading("Statistics")
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items()])
    if store is not None:
        report.heading("Teacher identity (the cache key)")
        report.table(["key", "value"], [[k, str(v)] for k, v in store.attrs["identity"].items()])
        report.paragraph(f"render store fingerprint: {store.attrs['render_fingerprint']}")
    report.write(Path(cfg.report_dir) / "index.html")
