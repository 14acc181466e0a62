"""One render job per object (kubric style): everything needed to render it, seeds included."""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np
import trimesh

from renderers.asset import FIX_HINT, AssetError, ShapeAsset, validate_asset
from renderers.base import RenderedViews, Renderer
from renderers.cameras import (
    CameraRig,
    fixed_eval_poses,
    intrinsics,
    project,
    random_hemisphere_poses,
)
from renderers.raycast import first_hit_distance, ray_intersector

KEYPOINT_VISIBILITY_EPS = 2e-3  # object units (unit bbox diagonal)
# An object's best view must cover at least this fraction of the image (anti-aliased coverage,
# sum(alpha) / 255; 16 px at 128 px). Measured with the default rig: real objects cover >= 5.5%
# in their best view (procedural families, 12 seeds each: airplane 5.5% ... table 20%; the
# ShapeNet sample chair 11%) and even a 0.005-thick rod spanning the unit diagonal covers 0.45%,
# while collapsed geometry (a 2%-of-diagonal box beside far outlier vertices) covers 0.015% and
# zero-area meshes 0%: the threshold sits 4x below the thinnest valid shape and 7x above that.
MIN_FOREGROUND_FRACTION = 1e-3


def object_seed(base_seed: int, category: str, key: str) -> int:
    """Deterministic 31-bit seed for one object from the run seed, category and object key."""
    seq = np.random.SeedSequence(
        [base_seed, zlib.crc32(category.encode()), zlib.crc32(key.encode())]
    )
    return int(seq.generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class RenderJob:
    """Everything needed to render one object; picklable, so it can travel to dask workers."""

    index: int
    category: str
    object_id: str
    split: str
    source: str  # "procedural" | "shapenet"
    seed: int  # shape seed (procedural) and base of the camera seed
    camera_seed: int
    rig: CameraRig = field(default_factory=CameraRig)
    n_keypoint_slots: int = 1
    n_points: int = 2048
    shapenet_root: str | None = None
    synset: str | None = None
    # {"sets": ["keypointnet", ...], "roots": AnnotationSources kwargs}; None = no annotations
    annotations: dict | None = None
    part_names: tuple[str, ...] = ()  # the store's label table (annotated labels map onto it)
    mesh_path: str | None = None  # source "meshes": the mesh file
    mesh_up: str = "+y"  # source "meshes": the file's up axis

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rig"] = self.rig.to_dict()
        return d


@dataclass
class RenderedObject:
    """All per-object arrays of the render store (see docs/contracts.md, section 1)."""

    job: RenderJob
    views: RenderedViews
    K: np.ndarray  # (V, 3, 3) float32
    c2w: np.ndarray  # (V, 4, 4) float32
    kp3d: np.ndarray  # (P, 3) float32, slot = semantic id
    kp_id: np.ndarray  # (P,) int32, -1 = absent
    kp2d: np.ndarray  # (V, P, 2) float32 pixel coordinates
    kp_visible: np.ndarray  # (V, P) bool, depth-tested
    points: np.ndarray  # (S, 3) float32 surface samples
    point_part: np.ndarray  # (S,) int16
    meta: dict
    timings: dict


def load_asset(job: RenderJob) -> ShapeAsset:
    """Build (procedural) or load (ShapeNet) the job's shape."""
    if job.source == "procedural":
        from renderers.procedural import generate

        return generate(job.category, job.seed)
    if job.source == "shapenet":
        from renderers.shapenet import load_model

        asset = load_model(job.shapenet_root, job.synset, job.object_id)
        if job.annotations:
            asset = annotate(asset, job)
        return asset
    if job.source == "meshes":
        from renderers.mesh_folder import load_mesh_asset

        return load_mesh_asset(job.mesh_path, job.category, job.object_id, up=job.mesh_up,
                               part_names=list(job.part_names) or None)
    raise AssetError(f"{job.object_id}: unknown source {job.source!r} "
                     "(procedural | shapenet | meshes)")


def annotate(asset: ShapeAsset, job: RenderJob) -> ShapeAsset:
    """Add real annotations (KeypointNet, ShapeNet-Part, PartNet) aligned to the asset's frame,
    with part labels remapped by name onto the store's label table."""
    from renderers.annotations import AnnotationSources

    sources = AnnotationSources(**job.annotations["roots"])
    out = sources.annotate(asset, job.synset, job.object_id, sets=job.annotations["sets"])
    table = {name: i for i, name in enumerate(job.part_names)}
    lut = np.array([table.get(name, -1) for name in out.part_names] + [-1], np.int16)
    unknown = [n for n in out.part_names if n not in table]
    face_part = np.where(out.face_part >= 0, lut[out.face_part], -1).astype(np.int16)
    meta = {**out.meta, "unmapped_parts": unknown}
    return ShapeAsset(out.object_id, out.category, out.mesh, face_part, list(job.part_names),
                      out.keypoints, out.keypoint_ids, out.seed, meta)


def camera_poses(job: RenderJob) -> np.ndarray:
    """(V, 4, 4) c2w: seeded random hemisphere poses for train, the fixed set otherwise."""
    if job.split == "train":
        return random_hemisphere_poses(job.rig, job.camera_seed)
    return fixed_eval_poses(job.rig)


def keypoint_slots(asset: ShapeAsset, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Scatter keypoints into fixed slots indexed by semantic id.

    Returns:
        kp3d: (P, 3) float32 (zeros where absent), kp_id: (P,) int32 (-1 where absent).
    """
    kp3d = np.zeros((n_slots, 3), np.float32)
    kp_id = np.full(n_slots, -1, np.int32)
    for xyz, sid in zip(asset.keypoints, asset.keypoint_ids, strict=True):
        if not 0 <= sid < n_slots:
            raise AssetError(
                f"{asset.category}/{asset.object_id}: keypoint id {sid} outside 0..{n_slots - 1}"
            )
        kp3d[sid], kp_id[sid] = xyz, sid
    return kp3d, kp_id


def project_keypoints(
    mesh: trimesh.Trimesh,
    kp3d: np.ndarray,
    kp_id: np.ndarray,
    K: np.ndarray,
    c2w: np.ndarray,
    size: int,
    intersector=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Project keypoints into every view with a ray-cast occlusion test (one ray query for all
    views; ``intersector``: an existing one for ``mesh``, else one is built).

    Returns:
        kp2d: (V, P, 2) float32 pixel coords, kp_visible: (V, P) bool (in image, unoccluded).
    """
    n_views, n_slots = len(c2w), len(kp3d)
    kp2d = np.zeros((n_views, n_slots, 2), np.float32)
    visible = np.zeros((n_views, n_slots), bool)
    present = kp_id >= 0
    if not present.any():
        return kp2d, visible
    if intersector is None:
        intersector = ray_intersector(mesh)
    pts = kp3d[present].astype(np.float64)
    proj = [project(pts, K, c2w[v]) for v in range(n_views)]
    uv = np.stack([p[0] for p in proj])  # (V, p, 2)
    z = np.stack([p[1] for p in proj])
    eye = np.repeat(np.asarray(c2w, np.float64)[:, :3, 3], len(pts), axis=0)  # (V * p, 3)
    targets = np.tile(pts, (n_views, 1))
    dist = np.linalg.norm(targets - eye, axis=-1).reshape(n_views, -1)
    hit = first_hit_distance(intersector, eye, targets).reshape(n_views, -1)
    kp2d[:, present] = uv
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < size) & (uv[..., 1] >= 0) & (uv[..., 1] < size)
    visible[:, present] = inside & (z > 0) & (hit >= dist - KEYPOINT_VISIBILITY_EPS)
    return kp2d, visible


def sample_surface(asset: ShapeAsset, n_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform surface samples with their part labels: (S, 3) float32, (S,) int16."""
    points, face_index = trimesh.sample.sample_surface(asset.mesh, n_points, seed=seed)
    return points.astype(np.float32), asset.face_part[face_index].astype(np.int16)


def check_foreground(asset: ShapeAsset, views: RenderedViews) -> None:
    """Raise AssetError if even the best view covers < MIN_FOREGROUND_FRACTION of its pixels."""
    n_views, height, width = views.alpha.shape
    covered = views.alpha.reshape(n_views, -1).sum(axis=1, dtype=np.int64) / 255.0
    best = float(covered.max()) if n_views else 0.0
    need = MIN_FOREGROUND_FRACTION * height * width
    if best < need:
        what = "no foreground in any view" if best == 0 else "too little foreground"
        raise AssetError(
            f"{asset.category}/{asset.object_id}: {what}: its best view covers "
            f"{best:.1f} of {height}x{width} pixels ({covered.sum():.1f} over all {n_views} "
            f"views; at least {need:.1f} = {MIN_FOREGROUND_FRACTION:.1%} needed), so the mesh is "
            f"(nearly) degenerate or off-centre; {FIX_HINT}"
        )


def run_job(job: RenderJob, renderer: Renderer) -> RenderedObject:
    """Load/build and validate the asset, render all views (rejecting objects with too little
    foreground) and compute keypoints and surface samples."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    asset = load_asset(job)
    validate_asset(asset)
    timings["load"] = time.perf_counter() - t0
    K = intrinsics(job.rig.image_size, job.rig.fov_deg)
    c2w = camera_poses(job)
    t0 = time.perf_counter()
    views = renderer.render(asset, K, c2w, job.rig.image_size)
    timings["render"] = time.perf_counter() - t0
    check_foreground(asset, views)
    for name, value in getattr(renderer, "last_timings", {}).items():
        timings[f"render.{name}"] = value
    t0 = time.perf_counter()
    kp3d, kp_id = keypoint_slots(asset, job.n_keypoint_slots)
    kp2d, kp_visible = project_keypoints(asset.mesh, kp3d, kp_id, K, c2w, job.rig.image_size)
    timings["keypoints"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    points, point_part = sample_surface(asset, job.n_points, job.seed)
    timings["points"] = time.perf_counter() - t0
    n_views = len(c2w)
    return RenderedObject(
        job=job,
        views=views,
        K=np.broadcast_to(K, (n_views, 3, 3)).astype(np.float32),
        c2w=c2w.astype(np.float32),
        kp3d=kp3d,
        kp_id=kp_id,
        kp2d=kp2d,
        kp_visible=kp_visible,
        points=points,
        point_part=point_part,
        meta=asset.meta,
        timings=timings,
    )
