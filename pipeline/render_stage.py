"""The render stage: build one job per object, render through dask, write the store + report."""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cache.render_store import RenderStoreWriter, StoreLayout
from cache.zarr_io import StoreError
from pipeline.executor import run_tasks, write_stage_outputs
from pipeline.guards import (
    PreflightError,
    check_image_size,
    check_range,
    check_scheduler,
    check_writable,
    is_fatal_os_error,
    os_error_message,
    redo_damaged,
    stop_on_failure,
)
from pipeline.reports.render import write_render_report
from renderers.asset import AssetError
from renderers.base import RendererUnavailable
from renderers.cameras import CameraRig
from renderers.categories import resolve_category
from renderers.job import RenderJob, object_seed, run_job

PIPELINE_VERSION = "0.1.0"


@dataclass
class RenderStageConfig:
    """Settings of one render run (saved in the store's attrs and the report)."""

    category: str
    source: str = "procedural"
    objects: int = 24
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    shapenet_root: str | None = None
    split_file: str | None = None
    renderer: str = "pyrender"
    views: int = 50
    size: int = 128
    seed: int = 0
    n_points: int = 2048
    workers: int = 1
    scheduler: str | None = None
    on_error: str = "fail"  # "fail" | "skip"
    out: str | None = None
    report_dir: str | None = None
    overwrite: bool = False
    if_stale: str = "fail"  # existing store with other settings: "fail" | "overwrite"
    annotations: tuple[str, ...] = ()  # keypointnet, shapenet-part, partnet (shapenet source)
    keypointnet_root: str | None = None
    shapenet_part_root: str | None = None
    partnet_root: str | None = None
    partnet_level: int = 1
    mesh_root: str | None = None  # source "meshes": a folder of OBJ/GLB/glTF/PLY/OFF files
    mesh_up: str = "+y"  # source "meshes": their up axis (+z for most scans)
    rig: CameraRig = field(default_factory=CameraRig)

    def __post_init__(self) -> None:
        self.category = stage_category(self.category, self.source).name
        self.rig = CameraRig(**{**asdict(self.rig), "image_size": self.size, "n_views": self.views})
        if self.out is None:
            suffix = "" if self.source == "procedural" else f"-{self.source}"
            self.out = f"data/renders/{self.category}{suffix}.zarr"
        if self.report_dir is None:
            self.report_dir = f"reports/render/{self.category}"
        if self.annotations and self.source != "shapenet":
            raise ValueError("--annotations needs --source shapenet")
        if self.on_error not in ("fail", "skip"):
            raise ValueError(f"--on-error must be 'fail' or 'skip', not {self.on_error!r}")
        self.validate()

    def validate(self) -> None:
        """Every setting checked before anything is written (PreflightError names the flag)."""
        if self.source == "procedural":
            from renderers.procedural import FAMILIES

            if self.category not in FAMILIES:
                raise PreflightError(
                    f"--category {self.category}: no procedural family; procedural categories: "
                    f"{', '.join(sorted(FAMILIES))} (other ShapeNet categories need --source "
                    "shapenet --shapenet-root PATH)")
        check_range("--objects", self.objects, 1)
        check_range("--views", self.views, 2, 1000, "cross-view tasks need two views")
        check_image_size("--size", self.size)
        check_range("--points", self.n_points, 1)
        check_range("--workers", self.workers, 1, 256)
        if self.source not in ("procedural", "shapenet", "meshes"):
            raise PreflightError(f"--source {self.source}: choose procedural, shapenet or meshes")
        if self.source == "meshes" and not self.mesh_root:
            raise PreflightError("--source meshes needs --mesh-root DIR (a folder of OBJ, GLB, "
                                 "glTF, PLY or OFF files)")
        fractions = self.split_fractions
        if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
            raise PreflightError(f"--split-fractions {fractions}: three numbers >= 0 "
                                 "(train,val,test) with a positive sum")
        if self.source == "procedural":
            warn_small_test_split(self.objects, fractions, self.seed)

    def store_config(self) -> dict:
        """The settings that define the store's content (resume only if these match)."""
        return {
            "category": self.category,
            "source": self.source,
            "renderer": self.renderer,
            "seed": self.seed,
            "n_points": self.n_points,
            "rig": asdict(self.rig),
            "pipeline_version": PIPELINE_VERSION,
            "annotations": list(self.annotations),
            "annotation_roots": self.annotation_roots() if self.annotations else {},
            **({"mesh_root": self.mesh_root, "mesh_up": self.mesh_up}
               if self.source == "meshes" else {}),
        }

    def annotation_roots(self) -> dict:
        """Keyword arguments of ``renderers.annotations.AnnotationSources``."""
        return {
            "keypointnet": self.keypointnet_root,
            "shapenet_part": self.shapenet_part_root,
            "partnet": self.partnet_root,
            "partnet_level": self.partnet_level,
        }


@dataclass
class PlannedObjects:
    object_ids: list[str]
    splits: list[str]
    seeds: list[int]
    errors: dict[str, str]  # object id -> reason, found while planning (missing models...)
    paths: dict[str, str] = field(default_factory=dict)  # source "meshes": id -> mesh file


def split_assignment(n: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Deterministically assign n objects to train/val/test in the given proportions."""
    counts = np.floor(np.asarray(fractions) / sum(fractions) * n).astype(int)
    counts[0] += n - counts.sum()
    labels = np.repeat(np.array(["train", "val", "test"]), counts)
    return list(np.random.default_rng(seed).permutation(labels))


def warn_small_test_split(n: int, fractions: tuple[float, float, float], seed: int) -> None:
    """The evaluation needs two test objects: say so now, and which --objects would do."""
    splits = split_assignment(n, fractions, seed)
    if fractions[2] > 0 and splits.count("test") < 2:
        need = next(k for k in range(n, 100_000)
                    if split_assignment(k, fractions, seed).count("test") >= 2)
        counts = "/".join(str(splits.count(s)) for s in ("train", "val", "test"))
        print(f"warning: --objects {n} gives train/val/test = {counts}; `evaluate` needs at "
              f"least 2 test objects: use --objects {need} or more", file=sys.stderr)


def stage_category(name: str, source: str):
    """The category of a run: a known one, or (``meshes``) a free name without part tables."""
    return resolve_category(name, free=source == "meshes")


def mesh_part_names(root: str | None, category) -> tuple[str, ...]:
    """Part names of a mesh folder: the keys of its ``parts.yaml``, else the category's."""
    import yaml

    f = Path(root or "") / "parts.yaml"
    if root and f.is_file():
        data = yaml.safe_load(f.read_text()) or {}
        return tuple(str(k) for k in data)
    return tuple(category.part_names)


def plan_objects(cfg: RenderStageConfig) -> PlannedObjects:
    """Choose the objects to render and their splits."""
    if cfg.source == "meshes":
        from renderers.mesh_folder import list_meshes, mesh_splits

        meshes = list_meshes(cfg.mesh_root)[: cfg.objects]
        ids = [oid for oid, _ in meshes]
        splits = mesh_splits(cfg.mesh_root, ids)
        plan = PlannedObjects(ids, [splits[i] for i in ids], [0] * len(ids), {})
        plan.paths = {oid: str(path) for oid, path in meshes}
        return plan
    if cfg.source == "procedural":
        seeds = [cfg.seed * 100_000 + i for i in range(cfg.objects)]
        ids = [f"proc-{cfg.category}-{s:06d}" for s in seeds]
        return PlannedObjects(
            ids, split_assignment(cfg.objects, cfg.split_fractions, cfg.seed), seeds, {}
        )
    if cfg.source == "shapenet":
        from renderers.shapenet import select_models

        if not cfg.shapenet_root:
            raise AssetError("--source shapenet needs --shapenet-root PATH (ShapeNetCore.v2 or v1)")
        synset = resolve_category(cfg.category).synset
        selection = select_models(
            cfg.shapenet_root, synset, split_file=cfg.split_file, split="all", n_objects=cfg.objects
        )
        errors = {
            m: f"{m} ({split}): listed in {selection.source} but there is no model at "
            f"{cfg.shapenet_root}/{synset}/{m}"
            for m, split in selection.missing
        }
        ids = [m for m, _ in selection.models]
        return PlannedObjects(ids, [s for _, s in selection.models], [0] * len(ids), errors)
    raise ValueError(f"unknown --source {cfg.source!r}; choose procedural or shapenet")


def render_task(job: RenderJob, store_path: str, renderer_name: str) -> dict:
    """Render one object and write it; failures are returned, never raised.

    A failure no later object can escape (no renderer / a broken GL context, a full disk or a
    read-only store) comes back with ``"fatal": True``: the stage stops on it with one error.
    """
    from renderers.registry import get_renderer

    t0 = time.perf_counter()
    try:
        renderer = get_renderer(renderer_name)
        obj = run_job(job, renderer)
        t1 = time.perf_counter()
        try:
            RenderStoreWriter.in_this_process(store_path).write_object(job.index, obj)
        except OSError as exc:
            if is_fatal_os_error(exc):  # no other object can succeed: the stage stops
                return {"index": job.index, "object_id": job.object_id, "ok": False,
                        "fatal": True, "error": os_error_message(exc, "--out", store_path),
                        "wall": time.perf_counter() - t0}
            raise
        timings = {**obj.timings, "write": time.perf_counter() - t1}
        return {
            "index": job.index,
            "object_id": job.object_id,
            "ok": True,
            "timings": timings,
            "renderer": renderer.version(),
            "wall": time.perf_counter() - t0,
            "annotations": alignment_summary(obj.meta),
        }
    except RendererUnavailable as exc:  # no GL / a broken context: no later object can render
        return {"index": job.index, "object_id": job.object_id, "ok": False, "fatal": True,
                "error": f"renderer {renderer_name!r} unavailable: {exc}",
                "wall": time.perf_counter() - t0}
    except (AssetError, StoreError) as exc:
        reason = str(exc)
    except Exception as exc:  # unexpected: keep the object id and the last frame for the user
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f"{type(exc).__name__}: {exc} (at {Path(frame.filename).name}:{frame.lineno})"
    return {
        "index": job.index,
        "object_id": job.object_id,
        "ok": False,
        "error": reason,
        "wall": time.perf_counter() - t0,
    }


def alignment_summary(meta: dict) -> dict:
    """Per annotation set: the chosen transform and its chamfer error (for the report)."""
    info = meta.get("annotations") or {}
    out: dict = {}
    for name, value in info.items():
        if isinstance(value, dict) and "chamfer" in value:
            out[name] = {
                "chamfer": value["chamfer"],
                "candidate": value.get("candidate"),
                "mirrored": value.get("mirrored"),
            }
    if info.get("missing"):
        out["missing"] = list(info["missing"])
    if meta.get("unmapped_parts"):
        out["unmapped_parts"] = list(meta["unmapped_parts"])
    return out


def keypoint_slots_for(cfg: RenderStageConfig, category) -> tuple[int, list[str]]:
    """Keypoint slots P and their names: KeypointNet semantic ids, or the procedural names."""
    if "keypointnet" in cfg.annotations:
        import json

        from renderers.annotations import KeypointNetRoot

        path = KeypointNetRoot(cfg.keypointnet_root).annotation_file(category.synset)
        try:
            records = json.loads(Path(path).read_text())
            top = max(int(k["semantic_id"]) for r in records for k in r["keypoints"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AssetError(
                f"{path}: cannot read the semantic ids ({exc}); is it a KeypointNet "
                "annotation file?"
            ) from exc
        return top + 1, [f"kpn_{i:02d}" for i in range(top + 1)]
    return max(1, len(category.keypoint_names)), list(category.keypoint_names)


@dataclass
class RenderStageResult:
    metrics: dict
    failures: dict[str, str]
    store: str
    report: str

    @property
    def ok(self) -> bool:
        return self.metrics["failures"] == 0 or self.metrics["on_error"] == "skip"


def preflight(cfg: RenderStageConfig) -> None:
    """Output locations and the scheduler, checked before any store is created."""
    check_writable(cfg.out, "--out")
    check_writable(cfg.report_dir, "--report-dir")
    if cfg.scheduler:
        check_scheduler(cfg.scheduler)


def run_render_stage(cfg: RenderStageConfig) -> RenderStageResult:
    """Render every planned object into the store (resuming), then write report + metrics.

    The store is locked for the whole run (one writer); a resumed store's done objects are
    re-verified and damaged ones redone; a full disk or read-only target stops the run after
    finalising what finished, writing the report, and raising one clear error.
    """
    from cache.store_lock import StoreLock

    category = stage_category(cfg.category, cfg.source)
    if cfg.source == "meshes":
        from dataclasses import replace

        category = replace(category, part_names=mesh_part_names(cfg.mesh_root, category))
    t_start = time.perf_counter()
    preflight(cfg)
    plan = plan_objects(cfg)
    if not plan.object_ids:
        raise AssetError(f"no {cfg.category} objects selected; check --objects / --split")
    n_kp, kp_names = keypoint_slots_for(cfg, category)
    with StoreLock(cfg.out, stage="render") as lock:
        if lock.took_over_from:
            print(f"note: {cfg.out}: the previous writer (pid {lock.took_over_from.get('pid')}) "
                  "died; resuming its store", file=sys.stderr)
        return _render_locked(cfg, category, plan, n_kp, kp_names, t_start)


def _render_locked(cfg: RenderStageConfig, category, plan: PlannedObjects, n_kp: int,
                   kp_names: list[str], t_start: float) -> RenderStageResult:
    layout = StoreLayout(len(plan.object_ids), cfg.views, cfg.size, n_kp, cfg.n_points)
    attrs = {
        "category": category.name,
        "synset": category.synset,
        "source": cfg.source,
        "object_ids": plan.object_ids,
        "splits": plan.splits,
        "seeds": plan.seeds,
        "part_names": list(category.part_names),
        "keypoint_names": kp_names,
        "camera": {
            "distance": cfg.rig.distance,
            "fov_deg": cfg.rig.fov_deg,
            "min_elevation_deg": cfg.rig.min_elevation_deg,
            "max_elevation_deg": cfg.rig.max_elevation_deg,
            "near": 0.8,
            "far": 1.8,
            "convention": "opencv c2w, pixel centres +0.5",
        },
        "background": [0, 0, 0],
        "depth": "z-depth in the camera frame, 0 = empty",
        "pipeline_version": PIPELINE_VERSION,
        "config": cfg.store_config(),
    }
    writer = RenderStoreWriter.create_or_resume(
        cfg.out, layout, attrs, overwrite=cfg.overwrite, if_stale=cfg.if_stale
    )
    done = writer.done_mask()
    t_verify = time.perf_counter()
    redone = redo_damaged(writer, np.flatnonzero(done).tolist())
    verify_s = time.perf_counter() - t_verify
    done = writer.done_mask()
    jobs = [
        RenderJob(
            index=i,
            category=category.name,
            object_id=oid,
            split=split,
            source=cfg.source,
            seed=seed,
            camera_seed=object_seed(cfg.seed, category.name, oid),
            rig=cfg.rig,
            n_keypoint_slots=n_kp,
            n_points=cfg.n_points,
            shapenet_root=cfg.shapenet_root,
            synset=category.synset,
            part_names=tuple(category.part_names),
            mesh_path=plan.paths.get(oid),
            mesh_up=cfg.mesh_up,
            annotations={"sets": list(cfg.annotations), "roots": cfg.annotation_roots()}
            if cfg.annotations
            else None,
        )
        for i, (oid, split, seed) in enumerate(
            zip(plan.object_ids, plan.splits, plan.seeds, strict=True)
        )
        if not done[i] and oid not in plan.errors
    ]
    results: list[dict] = []
    fatal: str | None = None
    tasks = run_tasks(render_task, jobs, str(cfg.out), cfg.renderer, workers=cfg.workers,
                      scheduler=cfg.scheduler, desc=f"render {category.name}")
    try:
        for r in tasks:
            results.append(r)
            if r.get("fatal"):
                fatal = r["error"]
                break
    finally:
        tasks.close()
    failures = {**plan.errors, **{r["object_id"]: r["error"] for r in results if not r["ok"]}}
    ok = [r for r in results if r["ok"]]
    skipped = failures if cfg.on_error == "skip" and fatal is None else {}
    renderer_version = ok[0]["renderer"] if ok else writer.group.attrs.get("renderer", cfg.renderer)
    alignment = dict(writer.group.attrs.get("alignment", {}))
    alignment.update({r["object_id"]: r["annotations"] for r in ok if r.get("annotations")})
    try:
        fingerprint = writer.finalize({"renderer": renderer_version, "skipped": skipped,
                                       "failures": failures, "alignment": alignment})
    except OSError as exc:
        fatal, fingerprint = fatal or os_error_message(exc, "--out", cfg.out), None
    wall = time.perf_counter() - t_start
    metrics = stage_metrics(cfg, results, failures, int(done.sum()), wall)
    metrics["fingerprint"] = fingerprint
    metrics["objects_redone_after_damage"] = len(redone)
    metrics["verify_s"] = verify_s
    metrics["writer_processes"] = len({r.get("worker") for r in ok})
    report_path = write_stage_outputs(
        cfg.report_dir, results, metrics,
        lambda path: write_render_report(cfg, path, metrics, failures))
    stop_on_failure("render", fatal, len(ok), metrics["objects"], cfg.category, failures,
                    report_path)
    return RenderStageResult(metrics, failures, str(cfg.out), str(report_path))


def stage_metrics(
    cfg: RenderStageConfig, results: list[dict], failures: dict, resumed: int, wall: float
) -> dict:
    ok = [r for r in results if r["ok"]]
    busy = sum(r["wall"] for r in ok)
    shares: dict[str, float] = {}
    for r in ok:
        for k, v in r["timings"].items():
            shares[k] = shares.get(k, 0.0) + v
    total = sum(v for k, v in shares.items() if "." not in k) or 1.0  # "render.x" are sub-parts
    return {
        "category": cfg.category,
        "renderer": cfg.renderer,
        "objects": len(ok) + resumed,
        "objects_rendered_now": len(ok),
        "objects_resumed": resumed,
        "failures": len(failures),
        "on_error": cfg.on_error,
        "views": (len(ok) + resumed) * cfg.views,
        "views_per_s": (len(ok) * cfg.views / busy) if busy else 0.0,
        "stage_wall_s": wall,
        "workers": cfg.workers,
        "time_share": {k: v / total for k, v in shares.items()},
    }
