"""The evaluate stage: student (and baselines) on the official FeatureNeRF protocols.

For one category: 2D keypoint / part transfer cross-view and cross-instance, 3D keypoint / part
transfer, and NVS, for every available method:

* ``student_internal`` (``nerf-internal``, the official evaluation feature) and
  ``student_feature`` (``nerf-feature``, the distilled head) of the student run;
* ``teacher_2d`` (``teacher-2d``): needs the feature store (skipped, with the reason, if it is
  missing or stale);
* ``pixelnerf_internal`` (``pixelnerf-internal``): needs a pixelNeRF run (skipped if absent).

Outputs in ``report_dir`` (default ``reports/evaluate/<run name>/``): ``metrics.json`` (flat keys
such as ``chair.cross_instance.kp2d.pck@5.student_internal``, for ``dvc metrics show``),
``plots/*.json`` (rows ``{threshold, method, pck}``), ``summary.json`` (settings, timings,
skipped methods/metrics with reasons, pair source), ``pairs.json``, ``pairs_<task>.json``
(per-pair scores, like the official ``results.json``) and ``index.html``.

2D PCK thresholds are defined at 128x128 (2.5/5/7.5/10 px) and scaled with the image size for
other resolutions; keys always name the 128-px value.

Metric protocols (``EvaluateConfig.protocol``, :mod:`pipeline.evaluation.metrics`): every pair
is scored from the same maps under ``official`` (the released scripts) and ``project`` (the
refinements). The primary protocol (default official) owns the plain keys, ``plots/`` and
``pairs_<task>.json``; the other gets ``<key>.<protocol>`` and ``pairs_<task>.<protocol>.json``.
Dropped pairs (where the released code would raise) and pairs kept without a score are counted
per reason in summary.json ``protocols``, never skipped silently.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cache import zarr_io
from cache.atomic import write_json
from cache.feature_store import FeatureStore
from cache.render_store import RenderStore
from cache.zarr_io import StaleStoreError, StoreError
from pipeline.evaluation import stats
from pipeline.evaluation.controls import (
    CONTROL_NAMES,
    PixelPositionSource,
    RenderedCoordinateSource,
)
from pipeline.evaluation.features import (
    FeatureSource,
    NerfRenderer,
    NerfSource,
    TeacherSource,
    resolve_checkpoint,
    resolve_device,
)
from pipeline.evaluation.metrics import PROJECT_REFINEMENTS, PROTOCOLS
from pipeline.evaluation.pairs import PairSet, make_pairs
from pipeline.evaluation.tasks import (
    NvsResult,
    TaskResult,
    nvs_views,
    run_2d_task,
    run_3d_task,
    run_nvs,
    scaled_thresholds,
)
from renderers.categories import check_store_category

ALL_TASKS = ("cross_view", "cross_instance", "cross_instance_views", "3d", "nvs")
ALL_METHODS = ("student_internal", "student_feature", "teacher_2d", "pixelnerf_internal",
               *CONTROL_NAMES)
#: 2D tasks: name -> the PairSet attribute holding their pairs
#: (the two cross-instance tasks run back to back: they read the same own-view maps, which the
#: renderers' caches then hold for both)
PAIR_TASKS = {"cross_instance": "cross_instance",
              "cross_instance_views": "cross_instance_views", "cross_view": "cross_view"}


@dataclass
class EvaluateConfig:
    """Settings of one evaluation (one category; paths may contain ``{category}``,
    ``{synset}`` and ``{teacher}`` templates).

    Attributes:
        category: category name (keys of metrics.json start with it).
        teacher: the student's teacher name (only for the default run / features paths).
        run: student run dir (newest checkpoint) or a ``.ckpt`` file
            (default ``runs/{category}-{teacher}``).
        pixelnerf_run: pixelNeRF run dir / checkpoint (default ``runs/{category}-pixelnerf``;
            ``""`` disables it); absent -> skipped with the reason.
        renders: render store (default ``data/renders/{category}.zarr``).
        features: teacher feature store for the 2D baseline (default
            ``data/features/{teacher}/{category}.zarr``; ``""`` disables it).
        split_json: official ``<synset>.json`` with the eval pairs (used when its objects are
            in the store's test split); otherwise ``n_pairs`` seeded pairs.
        n_pairs, seed: pairs per task (official 1000) and their seed.
        eval_views: seeded pairs draw their views from this many views spread over the 50
            (0 = all); fewer views share more maps between pairs (the cost is per map).
        cache_maps: rendered maps kept per NeRF (a map shared by pairs is rendered once).
        eval_size: render resolution of the feature maps (None = image size, official); lower
            values are upsampled bilinearly to the image size before matching.
        n_coarse, n_importance, n_depth, chunk: rendering overrides (None = checkpoint's).
        fg_only: render only the rays the metrics read (exact; see features.py).
        cross_view_input: "source" (official: both maps from the source image) or "own".
        protocol: the PRIMARY metric protocol, "official" (default: the released scripts'
            per-pair logic, for the paper recipe and comparison with published numbers) or
            "project" (the refinements, see :mod:`pipeline.evaluation.metrics`). Both are
            computed from the same maps; the primary's numbers take the plain metrics.json keys,
            the other's the same keys with a ``.<protocol>`` suffix segment.
        n_views, nvs_objects, nvs_input_view: NVS target views per object, objects, input view.
        tasks, methods: subsets of ALL_TASKS / ALL_METHODS.
        progress: print progress lines to stderr.
        n_visual: worst pairs pictured per task. swap_example: add a part texture swap.
        device: "auto" | "cpu" | "cuda[:i]".
        report_dir: default ``reports/evaluate/<run name>``.
        allow_stale: evaluate even when an input is stale (a checkpoint trained on other
            renders or features, a feature store computed from other renders); the stale
            inputs are then printed to stderr and listed in metrics.json. Otherwise a stale
            input is an error before anything is computed.
    """

    category: str = "chair"
    teacher: str = "effnet"
    run: str | None = None
    pixelnerf_run: str | None = None
    renders: str | None = None
    features: str | None = None
    split_json: str | None = None
    n_pairs: int = 50
    seed: int = 0
    eval_views: int = 0
    cache_maps: int = 1024
    eval_size: int | None = None
    n_coarse: int | None = None
    n_importance: int | None = None
    n_depth: int | None = None
    chunk: int | None = None
    fg_only: bool = True
    cross_view_input: str = "source"
    protocol: str = "official"
    n_views: int = 4
    nvs_objects: int = 2
    nvs_input_view: int = 0
    tasks: tuple[str, ...] = ALL_TASKS
    methods: tuple[str, ...] = ALL_METHODS
    n_visual: int = 3
    swap_example: bool = True
    device: str = "auto"
    report_dir: str | None = None
    progress: bool = True
    allow_stale: bool = False

    def __post_init__(self) -> None:
        from renderers.categories import resolve_category

        cat = resolve_category(self.category, free=True)  # checked on the store
        self.category = cat.name
        fill = {"category": cat.name, "synset": cat.synset, "teacher": self.teacher}
        self.run = (self.run or "runs/{category}-{teacher}").format(**fill)
        if self.pixelnerf_run is None:
            self.pixelnerf_run = "runs/{category}-pixelnerf"
        self.pixelnerf_run = self.pixelnerf_run.format(**fill)
        self.renders = (self.renders or "data/renders/{category}.zarr").format(**fill)
        if self.features is None:
            self.features = "data/features/{teacher}/{category}.zarr"
        self.features = self.features.format(**fill)
        if self.split_json:
            self.split_json = self.split_json.format(**fill)
        self.report_dir = (self.report_dir or f"reports/evaluate/{run_name(self.run)}").format(
            **fill)
        self.tasks, self.methods = tuple(self.tasks), tuple(self.methods)
        bad = set(self.tasks) - set(ALL_TASKS) | set(self.methods) - set(ALL_METHODS)
        if bad:
            raise ValueError(f"unknown tasks/methods {sorted(bad)}; tasks: {ALL_TASKS}, "
                             f"methods: {ALL_METHODS}")
        if self.cross_view_input not in ("source", "own"):
            raise ValueError("cross_view_input must be 'source' or 'own'")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")

    @property
    def protocols(self) -> tuple[str, ...]:
        """Every metric protocol, the primary (``protocol``) first."""
        return (self.protocol, *(p for p in PROTOCOLS if p != self.protocol))


def run_name(path: str | Path) -> str:
    """``runs/chair-daisy`` -> ``chair-daisy``; ``runs/x/checkpoints/step-1.ckpt`` -> ``x``."""
    p = Path(path)
    if p.suffix == ".ckpt" and p.parent.name == "checkpoints":
        return p.parent.parent.name
    return p.stem if p.suffix == ".ckpt" else p.name


def _fmt(t: float) -> str:
    return f"{t:g}"


def _clean(v: Any) -> Any:
    """NaN/inf -> None (strict JSON for DVC)."""
    if isinstance(v, float | np.floating):
        return None if not math.isfinite(float(v)) else float(v)
    return v


@dataclass
class Methods:
    """The feature sources and NeRF renderers that could be built, and the skipped ones."""

    sources: list[FeatureSource]
    renderers: dict[str, NerfRenderer]
    teacher: TeacherSource | None
    skipped: dict[str, str]
    notes: list[str]
    stale: list[str]


def build_methods(cfg: EvaluateConfig, store: RenderStore, device: str) -> Methods:
    """Load the student (required), the teacher store and pixelNeRF (optional, else skipped)."""
    overrides = {"n_coarse": cfg.n_coarse, "n_importance": cfg.n_importance,
                 "n_depth": cfg.n_depth, "chunk": cfg.chunk}
    kw = {"eval_size": cfg.eval_size, "device": device, "fg_only": cfg.fg_only,
          "cache_size": cfg.cache_maps, **overrides}
    student = NerfRenderer.from_checkpoint(cfg.run, store, **kw)
    skipped: dict[str, str] = {}
    notes: list[str] = []
    stale = stale_checkpoint(f"student {cfg.run}", student, store)
    # a student whose coordinate loss saw ground-truth depth is a variant, never the headline
    tag = "_gt_geometry" if student.state_info.get("coord_target") == "gt-surface" else ""
    if tag:
        notes.append("the student was trained with the gt-surface coordinate target (uses "
                     "ground-truth depth, which the baselines do not get): its rows are named "
                     "*_gt_geometry and are not headline results")
    sources: list[FeatureSource] = []
    renderers = {"student": student}
    want = set(cfg.methods)
    if "student_internal" in want:
        sources.append(NerfSource(f"student_internal{tag}", student, "internal"))
    if "student_feature" in want:
        if student.has_feature:
            sources.append(NerfSource(f"student_feature{tag}", student, "feature"))
        else:
            skipped["student_feature"] = "the student checkpoint has no distilled feature head"
    teacher = None
    if "teacher_2d" in want:
        if not cfg.features:
            skipped["teacher_2d"] = "disabled (--features '')"
        else:
            features = open_teacher_store(cfg, store, stale)
            stale += stale_teacher(student, features)
            teacher = TeacherSource(features, store)
            sources.append(teacher)
    if "pixelnerf_internal" in want:
        try:
            path = resolve_checkpoint(cfg.pixelnerf_run) if cfg.pixelnerf_run else None
        except FileNotFoundError as exc:
            path, reason = None, str(exc)
        else:
            reason = "no pixelNeRF run configured"
        if path is None:
            skipped["pixelnerf_internal"] = reason
        else:
            pix = NerfRenderer.from_checkpoint(path, store, **kw)
            stale += stale_checkpoint(f"pixelNeRF {cfg.pixelnerf_run}", pix, store)
            renderers["pixelnerf"] = pix
            sources.append(NerfSource("pixelnerf_internal", pix, "internal",
                                      kind="pixelnerf-internal"))
    _add_controls(cfg, store, kw, student, sources, renderers, skipped)
    return Methods(sources, renderers, teacher, skipped, notes, stale)


def annotations_present(store: RenderStore, indices: list[int]) -> dict[str, bool]:
    """The store's ``annotations_present`` (imports), else what objects ``indices`` carry (a
    mesh folder without label sidecars or keypoint files renders none)."""
    present = store.attrs.get("annotations_present")
    if present:
        return dict(present)
    has_kp = any((store.read("kp_id", i) >= 0).any() for i in indices)
    has_parts = any((store.read("point_part", i) >= 0).any() for i in indices)
    return {"parts": bool(has_parts), "keypoints": bool(has_kp), "points": True}


def tasks_without_annotations(store: RenderStore, indices: list[int]) -> dict[str, str]:
    """Tasks the store cannot score on objects ``indices``, with the reason (imported sources
    such as SRN or NeRF-synthetic, and unlabelled mesh folders, carry no part labels or
    keypoints)."""
    present = annotations_present(store, indices)
    out = {}
    if not present.get("parts") and not present.get("keypoints"):
        why = "this source has no part labels or keypoints (only novel views can be scored)"
        out.update({task: why for task in PAIR_TASKS})
        out["3d"] = why
    elif not present.get("points"):
        out["3d"] = "this source has no labelled surface points"
    return out


class SourcePoints:
    """A render store whose importer-padded arrays read as the source's (docs/import.md):
    ``points`` / ``point_part`` cut to ``point_count``, ``kp_candidates`` to
    ``kp_candidate_count`` (shorter sets are padded by repeating their points, which would
    weight the repeated points twice in the 3D part mIoU). Other reads go to the store."""

    COUNTS = {"points": "point_count", "point_part": "point_count",
              "kp_candidates": "kp_candidate_count"}

    def __init__(self, store: RenderStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def read(self, name: str, index: Any) -> np.ndarray:
        value = self.store.read(name, index)
        count = self.COUNTS.get(name)
        if count is None or count not in self.store.group \
                or not isinstance(index, int | np.integer):
            return value
        n = int(self.store.group[count][int(index)])
        return value[:n] if n else value  # 0: the source has none (fill values)


def verified_points(store: RenderStore, indices: list[int]) -> RenderStore | SourcePoints:
    """``store`` for the 3D task: an imported one's own arrays (``point_count``,
    ``kp_candidates`` ...) checked against their digests first, and read unpadded."""
    if not store.attrs.get("import_arrays"):
        return store
    from pipeline.import_stage import verify_import_arrays

    verify_import_arrays(store, indices)
    return SourcePoints(store)


def report_stale(stale: list[str], allow: bool) -> None:
    """Stale inputs: an error before any computation, or (``allow``) a warning on stderr."""
    import sys

    if stale and not allow:
        raise StaleStoreError("stale inputs: " + "; ".join(stale) + "; re-run the stages "
                              "upstream (`dvc repro`), or pass --allow-stale to evaluate anyway")
    for line in stale:
        print(f"warning: stale input: {line}", file=sys.stderr)


def stale_checkpoint(label: str, nerf: NerfRenderer, store: RenderStore) -> list[str]:
    """A checkpoint trained on another render store: what changed, by setting name."""
    from train.trainer import input_changes

    info = nerf.state_info
    saved = info.get("inputs") or {"render_fingerprint": info.get("render_fingerprint")}
    if saved.get("render_fingerprint") in (None, store.fingerprint):
        return []
    current = {"render_fingerprint": store.fingerprint, "render_config": store.attrs.get("config")}
    changes = [c for c in input_changes({**saved, "teacher_identity": None,
                                         "feature_fingerprint": None}, current)]
    return [f"{label} was trained on other renders than {store.path}: {'; '.join(changes)}"]


def stale_teacher(student: NerfRenderer, features: FeatureStore) -> list[str]:
    """The teacher store is not the one the student was distilled from."""
    from cache.zarr_io import describe_changes

    info = student.state_info
    saved = info.get("inputs") or {}
    if info.get("teacher_identity") and info["teacher_identity"] != features.attrs.get("identity"):
        diffs = describe_changes(info["teacher_identity"], features.attrs.get("identity") or {})
        return [f"the teacher_2d store {features.path} holds another teacher than the student "
                f"was distilled from: {', '.join(diffs)}"]
    if saved.get("feature_fingerprint") not in (None, features.fingerprint):
        return [f"the teacher_2d store {features.path} was recomputed after the student was "
                "trained (same teacher, other content)"]
    return []


def open_teacher_store(cfg: EvaluateConfig, store: RenderStore, stale: list[str]) -> FeatureStore:
    """The teacher feature store, verified on the test objects. Missing or damaged: an error;
    stale (other renders): an error unless ``allow_stale`` (then noted in ``stale``)."""
    if not zarr_io.exists(cfg.features):
        raise StoreError(f"--features {cfg.features}: no feature store there (needed for the "
                         "teacher_2d baseline); run `fnerf-pipeline distill-cache`, or pass "
                         "--features '' to evaluate without that baseline")
    try:
        features = FeatureStore(cfg.features, renders=store)
    except StaleStoreError as exc:
        if not cfg.allow_stale:
            raise
        stale.append(str(exc))
        features = FeatureStore(cfg.features)
    features.verify(store.valid_indices("test"), rerun="distill-cache")
    return features


def source_key(pair: Any) -> tuple[int, ...]:
    """Sort key: the (object, view) whose source map a pair reads, then the rest of the pair."""
    d = asdict(pair)
    obj = d.get("obj", d.get("src"))
    view = d.get("src_view", d.get("view"))
    return (obj, view, *d.values())


def init_checkpoint(run: str | Path) -> Path:
    """The step-0 checkpoint of a run dir or of a ``.ckpt`` inside one (``<run>/init.ckpt``)."""
    from train.trainer import INIT_CKPT

    p = Path(run)
    if p.suffix == ".ckpt":
        p = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return p / INIT_CKPT


def _add_controls(cfg: EvaluateConfig, store: RenderStore, kw: dict[str, Any],
                  student: NerfRenderer, sources: list[FeatureSource],
                  renderers: dict[str, NerfRenderer], skipped: dict[str, str]) -> None:
    """The controls of :mod:`pipeline.evaluation.controls` that ``cfg.methods`` asks for."""
    want = set(cfg.methods)
    if "untrained_internal" in want:
        init = init_checkpoint(cfg.run)
        if init.is_file():
            untrained = NerfRenderer.from_checkpoint(init, store, **kw)
            renderers["untrained"] = untrained
            sources.append(NerfSource("untrained_internal", untrained, "internal",
                                      kind="control"))
        else:
            skipped["untrained_internal"] = (f"{init} is missing (runs trained before the "
                                             "step-0 control existed); retrain to get it")
    present = store.attrs.get("annotations_present") or {}
    if "coord_depth" in want and present.get("depth", True):
        sources.append(RenderedCoordinateSource(student))
    elif "coord_depth" in want:
        skipped["coord_depth"] = "the render store has no depth (an imported source)"
    if "pixel_xy" in want:
        sources.append(PixelPositionSource(store))
    if "pixel_bbox_xy" in want:
        sources.append(PixelPositionSource(store, relative_to_bbox=True))


def flat_metrics(
    category: str,
    results: dict[str, TaskResult],
    nvs: NvsResult | None,
    pairs: PairSet,
) -> dict[str, float | int | None]:
    """Flat ``<category>.<task>.<metric>.<method>`` keys (NaN -> None) for each task's primary
    protocol; its other protocols get the same keys with a ``.<protocol>`` suffix segment. Per
    metric also ``<category>.<group>.<kp|part><dim>.n_dropped.<method>[.<protocol>]``: pairs
    without that score (dropped pairs + pairs kept without it; reasons in summary.json)."""
    out: dict[str, Any] = {}
    for task, res in results.items():
        group, dim = stats.TASK_GROUPS[task]
        for k, protocol in enumerate(res.protocols):
            suffix = f".{protocol}" if k else ""
            for method, s in res.summary(protocol).items():
                for t, v in zip(res.thresholds, s["pck"], strict=True):
                    out[f"{category}.{group}.kp{dim}.pck@{_fmt(t)}.{method}{suffix}"] = _clean(v)
                out[f"{category}.{group}.part{dim}.miou.{method}{suffix}"] = _clean(s["miou"])
                for metric in ("kp", "part"):
                    out[f"{category}.{group}.{metric}{dim}.n_dropped.{method}{suffix}"] = (
                        s["n_pairs"] - s[f"n_pairs_{metric}"])
        n = len(getattr(pairs, PAIR_TASKS.get(task, "cross_instance")))
        out[f"{category}.{group}.n_pairs"] = n
    if nvs is not None:
        for method, s in nvs.summary().items():
            for k in ("psnr", "ssim", "lpips"):
                if k not in nvs.skipped:
                    out[f"{category}.nvs.{k}.{method}"] = _clean(s[k])
            out[f"{category}.nvs.n_images.{method}"] = s["n_images"]
    return out


def plot_rows(results: dict[str, TaskResult], category: str) -> dict[str, list[dict]]:
    """DVC plot data: ``pck2d_cross_instance``, ``pck2d_cross_view``, ``pck3d`` rows."""
    files = {"cross_instance": "pck2d_cross_instance", "cross_view": "pck2d_cross_view",
             "cross_instance_views": "pck2d_cross_instance_views", "3d": "pck3d"}
    out = {}
    for task, res in results.items():
        out[files[task]] = [
            {"threshold": t, "method": m, "pck": _clean(v), "category": category}
            for m, s in res.summary().items()
            for t, v in zip(res.thresholds, s["pck"], strict=True)
        ]
    return out


def _per_pair_rows(res: TaskResult, object_ids: list[str],
                   protocol: str | None = None) -> list[dict[str, Any]]:
    """The task's rows (of one ``protocol``; None = all) as strict JSON, with object ids."""
    rows = []
    for r in res.rows:
        if protocol is not None and r.get("protocol", res.protocols[0]) != protocol:
            continue
        pair = dict(r["pair"])
        for k in ("obj", "src", "trg"):
            if k in pair:
                pair[f"{k}_id"] = object_ids[pair[k]]
        rows.append({**r, "pair": pair, "miou": _clean(r["miou"]),
                     "pck": [_clean(v) for v in r["pck"]],
                     "errors": [_clean(v) for v in r["errors"]]})
    return rows


def protocol_summary(cfg: EvaluateConfig, results: dict[str, TaskResult]) -> dict[str, Any]:
    """summary.json ``protocols``: the primary, the project refinements, and per task,
    protocol and method the scores with scored-pair counts and drop counts by reason."""
    keep = ("pck", "miou", "miou_released", "n_pairs", "n_pairs_kp", "n_pairs_part",
            "n_dropped", "dropped", "dropped_kp", "dropped_part")
    return {
        "primary": cfg.protocol, "computed": list(cfg.protocols),
        "project_refinements": PROJECT_REFINEMENTS,
        "tasks": {task: {"info": res.info, **{
            p: {m: {k: ([_clean(x) for x in v] if k == "pck" else _clean(v))
                    for k, v in s["by_protocol"][p].items() if k in keep}
                for m, s in res.summary().items()}
            for p in res.protocols}} for task, res in results.items()},
    }


def run_evaluate_stage(cfg: EvaluateConfig) -> dict[str, Any]:
    """Evaluate one category; write the outputs (module doc) and return the flat metrics."""
    from pipeline.reports.evaluate import write_evaluate_report

    t_start = time.perf_counter()
    log = _logger(cfg.progress)
    store = RenderStore(cfg.renders)
    check_store_category(cfg.category, store.attrs, cfg.renders)
    test = store.valid_indices("test")
    if len(test) < 2:
        raise ValueError(f"{cfg.renders}: the evaluation needs at least 2 complete test "
                         f"objects, found {len(test)}")
    store.verify(test)  # every array of every test object against its digests
    points_store = verified_points(store, test)  # and an import's own arrays
    device = str(resolve_device(cfg.device))
    pairs = make_pairs(store.object_ids, test, store.n_views, cfg.n_pairs, cfg.seed,
                       cfg.split_json, cfg.eval_views)
    methods = build_methods(cfg, store, device)
    report_stale(methods.stale, cfg.allow_stale)
    for name, reason in methods.skipped.items():  # on the console too, never only in the HTML
        print(f"note: skipped {name}: {reason}", file=sys.stderr)
    px = scaled_thresholds(store.image_size)
    results: dict[str, TaskResult] = {}
    task_time: dict[str, float] = {}
    absent = tasks_without_annotations(store, test)
    for task, reason in absent.items():
        if task in cfg.tasks:
            print(f"note: skipped {task}: {reason}", file=sys.stderr)
    for task, attr in PAIR_TASKS.items():
        if task in cfg.tasks and task not in absent:
            t0 = time.perf_counter()
            # pairs grouped by their source map, so a map shared by pairs is still cached
            task_pairs = sorted(getattr(pairs, attr), key=source_key)
            results[task] = run_2d_task(task, task_pairs, store, methods.sources, px,
                                        cross_view_input=cfg.cross_view_input,
                                        n_visual=cfg.n_visual, progress=log,
                                        protocols=cfg.protocols)
            task_time[task] = time.perf_counter() - t0
    if "3d" in cfg.tasks and "3d" not in absent:
        t0 = time.perf_counter()
        results["3d"] = run_3d_task(pairs.cross_instance, points_store, methods.sources,
                                    n_visual=cfg.n_visual, progress=log,
                                    protocols=cfg.protocols)
        task_time["3d"] = time.perf_counter() - t0
    nvs = None
    if "nvs" in cfg.tasks:
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, 3])
        objs = sorted(rng.choice(test, size=min(cfg.nvs_objects, len(test)), replace=False))
        views = nvs_views(store.n_views, cfg.nvs_input_view, cfg.n_views)
        nerfs = {k: v for k, v in methods.renderers.items() if k != "untrained"}
        nvs = run_nvs(nerfs, store, [int(o) for o in objs], cfg.nvs_input_view,
                      views, methods.teacher, device, progress=log)
        task_time["nvs"] = time.perf_counter() - t0
    swap = None
    if cfg.swap_example and pairs.cross_instance:
        swap = _swap_example(methods.renderers["student"], store, pairs)

    metrics = flat_metrics(cfg.category, results, nvs, pairs)
    metrics.update({f"{cfg.category}.skipped.{t}": r for t, r in absent.items() if t in cfg.tasks})
    metrics[f"{cfg.category}.stale_inputs"] = len(methods.stale)
    if methods.stale:
        metrics[f"{cfg.category}.stale"] = methods.stale

    protocols = stats.protocols(results, cfg.protocol)  # [None] or e.g. [primary, other]
    headline = [stats.headline_table(results, p, seed=cfg.seed) for p in protocols]
    for k, table in enumerate(headline):  # the first protocol's keys carry no protocol segment
        metrics.update(stats.flat_keys(table, cfg.category, protocol_segment=k > 0))
    if protocols[0] is not None:
        metrics[f"{cfg.category}.headline_protocol"] = protocols[0]
    out = Path(cfg.report_dir)
    write_json(out / "metrics.json", metrics)
    for name, metric in stats.DVC_HEADLINE.items():  # the short files `dvc metrics show` reads
        write_json(out / f"{name}.json", stats.dvc_headline(headline[0], metric))
    for name, rows in plot_rows(results, cfg.category).items():
        write_json(out / "plots" / f"{name}.json", rows)
    write_json(out / "pairs.json", pairs.to_dict(store.object_ids))
    for task, res in results.items():  # primary protocol: pairs_<task>.json, others suffixed
        for k, protocol in enumerate(res.protocols):
            name = f"pairs_{task}.json" if k == 0 else f"pairs_{task}.{protocol}.json"
            write_json(out / name, _per_pair_rows(res, store.object_ids, protocol))
    summary = {
        "config": asdict(cfg),
        "methods": [{"name": s.name, "kind": s.kind} for s in methods.sources],
        "skipped": {**methods.skipped, **({f"nvs.{k}": v for k, v in nvs.skipped.items()}
                                          if nvs else {}),
                    **{f"task {t}": r for t, r in absent.items() if t in cfg.tasks}},
        "notes": methods.notes + ([pairs.note] if pairs.note else []),
        "stale": methods.stale,
        "pairs": {"source": pairs.source, "dropped": pairs.dropped,
                  "cross_view": len(pairs.cross_view),
                  "cross_instance": len(pairs.cross_instance),
                  "cross_instance_views": len(pairs.cross_instance_views),
                  "test_objects": len(test)},
        "render": {name: {**asdict(r.settings), "eval_size": r.eval_size,
                          "image_size": r.image_size, "fg_only": r.fg_only,
                          **r.timing.summary()} for name, r in methods.renderers.items()},
        "task_seconds": task_time,
        "thresholds_px": list(px),
        "wall_s": time.perf_counter() - t_start,
        "verify_s": store.verify_s + (methods.teacher.features.verify_s if methods.teacher
                                      else 0.0),
    }
    summary["headline"] = headline
    summary["protocols"] = protocol_summary(cfg, results)
    write_json(out / "summary.json", summary)
    write_evaluate_report(out / "index.html", cfg, store, metrics, results, nvs, summary, swap,
                          headline=headline)
    return metrics


def evaluate_categories(categories: list[str], **fields: Any) -> dict[str, Any]:
    """Run :func:`run_evaluate_stage` for each category (``fields`` may use ``{category}``
    templates, e.g. ``run="runs/{category}-dino"``); returns the merged flat metrics (keys are
    category-prefixed, so they never collide). Each category writes its own report dir."""
    merged: dict[str, Any] = {}
    for category in categories:
        merged.update(run_evaluate_stage(EvaluateConfig(category=category, **fields)))
    return merged


def _swap_example(renderer: NerfRenderer, store: RenderStore, pairs: PairSet) -> dict | None:
    """The paper's part texture swap on the first cross-instance pair, most common part of A."""
    from pipeline.editing import swap_texture_with

    p = pairs.cross_instance[0]
    labels = store.read("point_part", p.src)
    labels = labels[labels >= 0]
    b_labels = set(np.unique(store.read("point_part", p.trg)).tolist())
    counts = np.bincount(labels) if len(labels) else np.zeros(0, int)
    common = [int(x) for x in np.argsort(-counts, kind="stable")
              if counts[x] > 0 and int(x) in b_labels]
    if not common:
        return None
    result = swap_texture_with(renderer, p.src, p.trg, common[0], p.view)
    names = list(store.attrs.get("part_names", []))
    part = names[common[0]] if common[0] < len(names) else str(common[0])
    result["caption"] = (f"A = {store.object_ids[p.src]}, B = {store.object_ids[p.trg]}, "
                         f"view {p.view}, part {part!r}")
    return result


def _logger(enabled: bool):
    """Progress bars on stderr, one per task (rate and ETA), for :data:`tasks.Progress`."""
    if not enabled:
        return None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def log(label: str, done: int, total: int) -> None:
        if label not in bars:
            bars[label] = tqdm(total=total, desc=f"evaluate {label}", unit="it",
                               file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
        bar = bars[label]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return log
