"""Bring annotation point sets into the render store's object frame and transfer their labels.

Frames (``shared/reference/formats.md`` section 0). The target is always the ShapeNetCore v2
``model_normalized`` frame that :func:`renderers.shapenet.load_model` returns (+Y up, -Z front,
vertex mean at the origin, unit bbox diagonal). Every annotation set reaches it through one
explicit 4x4 matrix acting on column vectors, chosen among *candidates*:

=========== ==================================================================================
source      candidates (each also mirrored, each also with a scale+translation fit)
=========== ==================================================================================
``v2``      KeypointNet ``xyz`` / ``pcds``: identity [V: formats.md §2.2].
``v1``      ShapeNet-Part points: ``R_v1→v2`` and, when the model's ``model_normalized.json``
            shift ``s`` is known, the exact ``p_v2 = R·p - s`` [formats.md §0, I].
``partnet`` PartNet ``point_sample``: ``inv(official v1→PartNet matrix)`` then v1→v2, if the
            matrix is given; ``diag(-1, 1, -1)`` (Mo's ``(x,y,z)→(z,y,-x)`` to v1, then v1→v2:
            PartNet = v2 turned 180° about Y [I]); ``(x,y,z)→(z,y,-x)`` alone (the conflicting
            third-party report that the PartNet rotation applies to v2 directly).
=========== ==================================================================================

* **Mirror**: the source's left-right axis is negated *before* the candidate (v1: z → -z, v2 and
  PartNet: x → -x); shapenet.org lists left-right flips among the v1 defects.
* **Fit**: the rotated points get a uniform scale + translation, first from their bbox (centre
  and diagonal onto the mesh's), then refined by :data:`FIT_ITERS` nearest-neighbour
  least-squares steps (scale and translation only; rotation stays the candidate's).
* **Score**: :func:`chamfer` = symmetric mean nearest-neighbour distance between the transformed
  points and :data:`N_SURFACE` points sampled on the mesh (``scipy.spatial.cKDTree``); sparse
  sets (fewer than :data:`MIN_SYMMETRIC` points, e.g. 10 keypoints) use the one-sided mean
  exact point→surface distance instead, and are never fitted.
* **Choice**: among the candidates scoring within ``10% + 1e-4`` of the best, exact documented
  ones (no fit) come before fitted ones, unmirrored before mirrored, then the listed order; so
  an exact transform is not replaced by a fit to sampling noise, and a symmetric shape keeps the
  unmirrored frame. The choice is accepted only below ``threshold`` (default
  :data:`CHAMFER_THRESHOLD`), else :class:`~renderers.asset.AssetError` ``"alignment failed for
  <model>: best chamfer X (candidates ...)"``.

Measured scores (unit bbox diagonal, 60k mesh samples; ``tests/test_align.py``,
``tests/test_keypointnet.py``):

=========================================  ============  ===========  ==============  =========
data                                       right         mirrored     wrong rotation  wrong model
=========================================  ============  ===========  ==============  =========
fixture ShapeNet-Part (2500 pts, v1)       0.0059        0.018-0.021  0.047-0.069     0.109
fixture PartNet (3000 pts)                 0.0055        0.017-0.024  0.067-0.072
real KeypointNet chair pcd (2048 pts, v2)  0.0055        0.0178       0.059-0.069
real KeypointNet keypoints (10, one-sided) 3e-9          0.028
=========================================  ============  ===========  ==============  =========

The "right" floor is the spacing of the annotation points seen from the dense mesh samples
(it grows like ``sqrt(area / N)``: sparser or larger-area sets score higher). A mirrored
candidate of a near-symmetric object can score below the threshold, so mirroring is decided by
*ranking* (both versions are always tried; ``Alignment.mirror_margin`` reports how clearly);
:data:`CHAMFER_THRESHOLD` = 0.02 rejects wrong rotations, wrong models and wrong frames with
a 2.4x margin over the worst measured wrong case and 3.4x over the right floor. (PartNet's own
script flags > 0.1 with another convention.)

Label transfer (:func:`transfer_point_labels`): each face votes with 7 barycentric sample points
(its centroid counted 1.5x to break ties); every sample takes the label of its ``k`` nearest
labelled points; the face gets the majority label. Faces whose nearest sample is farther than
``max_dist`` from every labelled point stay -1 (unlabelled).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from renderers.asset import AssetError, ShapeAsset
from renderers.shapenet import V1_TO_V2, normalized_json_shift, v1_to_v2_matrix

if TYPE_CHECKING:
    from renderers.annotations.keypointnet import KeypointRecord

Frame = Literal["v2", "v1", "partnet"]

CHAMFER_THRESHOLD = 0.02
"""Largest accepted score (unit bbox diagonal); see the module docstring for measurements."""
N_SURFACE = 60_000
"""Points sampled on the mesh for scoring and fitting."""
N_SURFACE_BACK = 15_000
"""Of those, how many are used for the mesh→points direction of the symmetric score."""
MIN_SYMMETRIC = 200
"""Point sets smaller than this are scored one-sided (points→surface) and never fitted."""
FIT_ITERS = 8
FIT_POINTS = 1000
LABEL_MAX_DIST = 0.05
"""Default :func:`transfer_point_labels` distance beyond which a face stays unlabelled."""
PREFER_REL, PREFER_ABS = 1.10, 1e-4

# Left-right axis of each source frame (mirror = negate it before the candidate).
_LR_AXIS: dict[str, int] = {"v2": 0, "v1": 2, "partnet": 0}
# (x, y, z) -> (z, y, -x): PartNet -> v1 rotation of Mo's compute_transmat script; equals R_v1→v2.
R_PARTNET_TO_V1 = V1_TO_V2[:3, :3].copy()
# Barycentric sample points of a face: centroid first (rows sum to 1).
_BARY = np.array(
    [[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3],
     [5 / 12, 5 / 12, 1 / 6], [1 / 6, 5 / 12, 5 / 12], [5 / 12, 1 / 6, 5 / 12]]
)
_BARY_WEIGHT = np.array([1.5, 1, 1, 1, 1, 1, 1])


# ------------------------------------------------------------------------------ data types


@dataclass
class PartPoints:
    """A labelled point set from a part dataset, in its *source* frame.

    Attributes:
        points: (N, 3) float64 points in ``frame``.
        labels: (N,) int64 index into ``part_names``; -1 = unlabelled / "other".
        part_names: label names (our category names when a mapping exists, else the dataset's).
        frame: source frame, ``"v1"`` (ShapeNet-Part), ``"partnet"`` or ``"v2"``.
        dataset: ``"shapenet-part"`` or ``"partnet"``.
        model_id: ShapeNet model id.
        synset: ShapeNet synset id ("" if unknown).
        source: file the points came from.
        source_labels: (N,) the dataset's own labels (local 0-based / PartNet level-k index).
        source_names: names of ``source_labels``.
        matrix: optional (4, 4) official v1→source matrix (PartNet), row-major as in its json.
        meta: provenance (release, level, unmapped names, ...).
    """

    points: np.ndarray
    labels: np.ndarray
    part_names: list[str]
    frame: Frame
    dataset: str
    model_id: str
    synset: str = ""
    source: str = ""
    source_labels: np.ndarray | None = None
    source_names: list[str] = field(default_factory=list)
    matrix: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 3)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.points) != len(self.labels):
            raise AssetError(f"{self.source or self.model_id}: {len(self.points)} points but "
                             f"{len(self.labels)} labels; the label file does not match")


@dataclass
class Candidate:
    """One source→v2 transform to try.

    Attributes:
        name: human-readable description.
        matrix: (4, 4) source→v2 matrix (before any fit).
        exact: the matrix is the full documented transform (scale and offset included).
        mirrored: the source's left-right axis is negated first (included in ``matrix``).
    """

    name: str
    matrix: np.ndarray
    exact: bool = False
    mirrored: bool = False


@dataclass
class Alignment:
    """Result of :func:`align_points`.

    Attributes:
        matrix: (4, 4) chosen source→v2 matrix (fit included).
        name: the chosen candidate's name (``"+fit"`` appended when fitted).
        chamfer: its score (unit-diagonal units; one-sided for sparse sets).
        mirrored: whether the chosen candidate mirrors the source.
        scores: every tried candidate name → score.
        symmetric: whether scores are symmetric chamfer (False: one-sided points→surface).
        threshold: the acceptance threshold used.
        n_points: number of annotation points scored.
        mirror_margin: best score of the other mirroring / the chosen score (how clearly the
            mirror question was decided; ~1 for symmetric shapes).
    """

    matrix: np.ndarray
    name: str
    chamfer: float
    mirrored: bool
    scores: dict[str, float]
    symmetric: bool = True
    threshold: float = CHAMFER_THRESHOLD
    n_points: int = 0
    mirror_margin: float = float("inf")

    def to_meta(self) -> dict:
        """JSON-serialisable summary for ``ShapeAsset.meta``."""
        return {"matrix": np.round(self.matrix, 8).tolist(), "candidate": self.name,
                "chamfer": round(float(self.chamfer), 6), "mirrored": self.mirrored,
                "symmetric": self.symmetric, "threshold": self.threshold,
                "n_points": self.n_points,
                "mirror_margin": round(float(self.mirror_margin), 3)
                if np.isfinite(self.mirror_margin) else None,
                "scores": {k: round(float(v), 6) for k, v in self.scores.items()}}


# ------------------------------------------------------------------------------ geometry


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) points transformed by a (4, 4) matrix acting on column vectors."""
    m = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


def _homogeneous(rot: np.ndarray, trans: np.ndarray | None = None) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot
    if trans is not None:
        m[:3, 3] = trans
    return m


def mirror_matrix(frame: Frame) -> np.ndarray:
    """(4, 4) reflection negating the left-right axis of ``frame`` (v1: z, v2/PartNet: x)."""
    d = np.ones(3)
    d[_LR_AXIS[frame]] = -1.0
    return _homogeneous(np.diag(d))


def sample_surface(mesh: trimesh.Trimesh, n: int = N_SURFACE, seed: int = 0) -> np.ndarray:
    """(n, 3) points sampled uniformly by area on ``mesh`` (deterministic for a seed)."""
    if len(mesh.faces) == 0 or not mesh.area > 0:
        raise AssetError("cannot align to a mesh without area; the model has no usable faces")
    pts, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(pts, dtype=np.float64)


class SurfaceIndex:
    """Dense surface samples of a mesh with a KD-tree, for scoring and fitting.

    Args:
        mesh: the render mesh (target frame).
        n: number of samples; the first :data:`N_SURFACE_BACK` are used mesh→points.
    """

    def __init__(self, mesh: trimesh.Trimesh, n: int = N_SURFACE, seed: int = 0) -> None:
        self.mesh = mesh
        self.samples = sample_surface(mesh, n, seed)
        self.tree = cKDTree(self.samples)
        self.back = self.samples[:N_SURFACE_BACK]
        lo, hi = mesh.bounds
        self.centre, self.diag = 0.5 * (lo + hi), float(np.linalg.norm(hi - lo))

    def to_surface(self, points: np.ndarray) -> np.ndarray:
        """(N,) distance of each point to the nearest surface sample."""
        return self.tree.query(points)[0]

    def score(self, points: np.ndarray, symmetric: bool = True) -> float:
        """Symmetric mean NN distance, or (``symmetric=False``) the mean exact distance of the
        points to the mesh surface (meant for small sets)."""
        if not symmetric:
            _, dist, _ = trimesh.proximity.closest_point(self.mesh, points)
            return float(np.mean(dist))
        fwd = float(self.to_surface(points).mean())
        back = float(cKDTree(points).query(self.back)[0].mean())
        return 0.5 * (fwd + back)


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean nearest-neighbour distance between (N, 3) and (M, 3) point sets."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d_ab = cKDTree(b).query(a, workers=-1)[0].mean()
    d_ba = cKDTree(a).query(b, workers=-1)[0].mean()
    return float(0.5 * (d_ab + d_ba))


def bbox_fit(points: np.ndarray, centre: np.ndarray, diag: float) -> np.ndarray:
    """(4, 4) uniform scale + translation taking the bbox of (N, 3) ``points`` onto a bbox with
    the given centre and diagonal."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    d = float(np.linalg.norm(hi - lo))
    s = diag / d if d > 0 else 1.0
    return _homogeneous(np.eye(3) * s, centre - s * 0.5 * (lo + hi))


def refine_scale_translation(points: np.ndarray, index: SurfaceIndex, iters: int = FIT_ITERS
                             ) -> np.ndarray:
    """(4, 4) scale + translation minimising the squared distance of ``points`` (N, 3) to their
    nearest surface samples, by up to ``iters`` alternating NN / least-squares steps (on at most
    :data:`FIT_POINTS` evenly strided points; stops when a step no longer moves them)."""
    total = np.eye(4)
    cur = points[:: max(1, len(points) // FIT_POINTS)]
    for _ in range(iters):
        _, idx = index.tree.query(cur)
        q = index.samples[idx]
        pc, qc = cur.mean(axis=0), q.mean(axis=0)
        den = float(((cur - pc) ** 2).sum())
        s = float(((cur - pc) * (q - qc)).sum()) / den if den > 0 else 1.0
        step = _homogeneous(np.eye(3) * s, qc - s * pc)
        total = step @ total
        cur = apply_matrix(step, cur)
        if abs(s - 1.0) < 1e-5 and np.abs(step[:3, 3]).max() < 1e-5:
            break
    return total


# ---------------------------------------------------------------------------- candidates


def candidates_for(frame: Frame, *, v1_shift: np.ndarray | None = None,
                   partnet_matrix: np.ndarray | None = None,
                   extra: Sequence[Candidate] = ()) -> list[Candidate]:
    """Documented source→v2 candidates of a frame, each followed by its mirrored version.

    Args:
        frame: ``"v2"`` (KeypointNet), ``"v1"`` (ShapeNet-Part) or ``"partnet"``.
        v1_shift: (3,) ``s`` of :func:`renderers.shapenet.normalized_json_shift`; makes the v1
            candidate exact (and the PartNet official-matrix one).
        partnet_matrix: (4, 4) official v1→PartNet matrix (row-major, as in PartNet's json).
        extra: further candidates, appended as given (not mirrored).
    """
    base: list[Candidate] = []
    if frame == "v2":
        base.append(Candidate("identity (KeypointNet = v2)", np.eye(4), exact=True))
    elif frame == "v1":
        if v1_shift is not None:
            base.append(Candidate("v1->v2 R + json shift", v1_to_v2_matrix(v1_shift), exact=True))
        base.append(Candidate("v1->v2 R", V1_TO_V2.copy()))
    elif frame == "partnet":
        if partnet_matrix is not None:
            inv = np.linalg.inv(np.asarray(partnet_matrix, dtype=np.float64).reshape(4, 4))
            base.append(Candidate("inverse official PartNet matrix, v1->v2",
                                  v1_to_v2_matrix(v1_shift) @ inv, exact=v1_shift is not None))
        base.append(Candidate("PartNet->v1 (z,y,-x), v1->v2 = diag(-1,1,-1)",
                              V1_TO_V2 @ _homogeneous(R_PARTNET_TO_V1)))
        base.append(Candidate("PartNet rotation (z,y,-x) applied to v2 directly",
                              _homogeneous(R_PARTNET_TO_V1)))
    else:
        raise AssetError(f"unknown annotation frame {frame!r}; use 'v2', 'v1' or 'partnet'")
    mirror = mirror_matrix(frame)
    out: list[Candidate] = []
    for c in base:
        out.append(c)
        out.append(Candidate(c.name + " [mirrored]", c.matrix @ mirror, c.exact, mirrored=True))
    return out + list(extra)


# ------------------------------------------------------------------------------- choosing


def _fmt_scores(scores: dict[str, float]) -> str:
    return "; ".join(f"{k}: {v:.4f}" for k, v in sorted(scores.items(), key=lambda kv: kv[1]))


def align_points(points: np.ndarray, mesh: trimesh.Trimesh | SurfaceIndex,
                 candidates: Sequence[Candidate], *, model: str = "?",
                 threshold: float = CHAMFER_THRESHOLD, fit: bool = True,
                 symmetric: bool | None = None) -> Alignment:
    """Pick the source→v2 matrix that best puts ``points`` (N, 3) on ``mesh``.

    Args:
        points: annotation points in their source frame.
        mesh: the render mesh (v2 frame) or a prebuilt :class:`SurfaceIndex` of it.
        candidates: from :func:`candidates_for`.
        model: model id for messages.
        threshold: largest accepted score.
        fit: also try each candidate with a scale+translation fit (ignored for sparse sets).
        symmetric: symmetric chamfer (default: when ``N >= MIN_SYMMETRIC``).

    Raises:
        AssetError: ``"alignment failed for <model>: best chamfer X (candidates ...)"``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0 or not candidates:
        raise AssetError(f"alignment failed for {model}: no annotation points or no candidates")
    index = mesh if isinstance(mesh, SurfaceIndex) else SurfaceIndex(mesh)
    sym = len(pts) >= MIN_SYMMETRIC if symmetric is None else symmetric
    do_fit = fit and len(pts) >= MIN_SYMMETRIC
    tried: list[tuple[str, np.ndarray, float, bool, bool]] = []  # name, matrix, score, exact, mir
    for c in candidates:
        moved = apply_matrix(c.matrix, pts)
        if c.exact or not do_fit:
            tried.append((c.name, c.matrix, index.score(moved, sym), c.exact, c.mirrored))
        if do_fit:
            m = bbox_fit(moved, index.centre, index.diag) @ c.matrix
            m = refine_scale_translation(apply_matrix(m, pts), index) @ m
            tried.append((c.name + " +fit", m, index.score(apply_matrix(m, pts), sym), False,
                          c.mirrored))
    scores = {name: score for name, _, score, _, _ in tried}
    best = min(tried, key=lambda t: t[2])
    near = [t for t in tried if t[2] <= best[2] * PREFER_REL + PREFER_ABS]
    # about as good as the best: exact before fitted, unmirrored before mirrored, then listed order
    best = min(near, key=lambda t: (not t[3], t[4]))
    if not best[2] < threshold:
        raise AssetError(f"alignment failed for {model}: best chamfer {best[2]:.4f} >= "
                         f"{threshold} (candidates {_fmt_scores(scores)}); the annotation does "
                         "not match this mesh (wrong model, frame or version)")
    other = [t[2] for t in tried if t[4] != best[4]]
    margin = min(other) / max(best[2], 1e-12) if other else float("inf")
    return Alignment(best[1], best[0], float(best[2]), best[4], scores, sym, threshold, len(pts),
                     margin)


# --------------------------------------------------------------------------- label transfer


def transfer_point_labels(mesh: trimesh.Trimesh, points: np.ndarray, labels: np.ndarray,
                          k: int = 1, max_dist: float = LABEL_MAX_DIST) -> np.ndarray:
    """(F,) int16 face labels from labelled points already in the mesh frame.

    Args:
        mesh: target mesh (faces in file order).
        points: (N, 3) labelled points.
        labels: (N,) int labels; negative = unlabelled (ignored).
        k: neighbours per face sample point (votes).
        max_dist: faces whose nearest sample is farther than this from every labelled point
            get -1.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    keep = lab >= 0
    n_faces = len(mesh.faces)
    if not keep.any() or n_faces == 0:
        return np.full(n_faces, -1, dtype=np.int16)
    pts, lab = pts[keep], lab[keep]
    k = max(1, min(int(k), len(pts)))
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)]  # (F, 3, 3)
    samples = np.einsum("sc,fcd->fsd", _BARY, tri).reshape(-1, 3)  # (F*S, 3)
    dist, idx = cKDTree(pts).query(samples, k=k, workers=-1)
    dist = dist.reshape(n_faces, len(_BARY), k)
    votes_lab = lab[idx].reshape(n_faces, len(_BARY), k)
    n_lab = int(lab.max()) + 1
    votes = np.zeros((n_faces, n_lab))
    w = np.broadcast_to(_BARY_WEIGHT[None, :, None], votes_lab.shape)
    np.add.at(votes, (np.repeat(np.arange(n_faces), len(_BARY) * k), votes_lab.reshape(-1)),
              w.reshape(-1))
    out = votes.argmax(axis=1).astype(np.int16)
    out[dist[..., 0].min(axis=1) > max_dist] = -1
    return out


# ------------------------------------------------------------------------------ assets


def _v1_shift_of(asset: ShapeAsset) -> np.ndarray | None:
    """``model_normalized.json`` shift next to the asset's v2 OBJ, or None."""
    src = asset.meta.get("source")
    if not src:
        return None
    f = Path(src).with_name("model_normalized.json")
    if not f.is_file():
        return None
    try:
        return normalized_json_shift(json.loads(f.read_text()))
    except (OSError, ValueError, AssetError):
        return None


def align_part_points(asset: ShapeAsset, parts: PartPoints, *, v1_shift: np.ndarray | None = None,
                      threshold: float = CHAMFER_THRESHOLD,
                      index: SurfaceIndex | None = None) -> Alignment:
    """Alignment of a :class:`PartPoints` set onto ``asset.mesh`` (candidates from its frame;
    ``v1_shift`` defaults to the asset's own ``model_normalized.json``)."""
    shift = v1_shift if v1_shift is not None else _v1_shift_of(asset)
    cands = candidates_for(parts.frame, v1_shift=shift, partnet_matrix=parts.matrix)
    return align_points(parts.points, index or asset.mesh, cands, threshold=threshold,
                        model=f"{asset.category}/{asset.object_id} ({parts.dataset})")


def annotate_asset(asset: ShapeAsset, *, keypoints: KeypointRecord | None = None,
                   keypoint_pcd: np.ndarray | None = None, parts: PartPoints | None = None,
                   v1_shift: np.ndarray | None = None, threshold: float = CHAMFER_THRESHOLD,
                   label_k: int = 1, label_max_dist: float = LABEL_MAX_DIST,
                   on_error: Literal["raise", "skip"] = "raise") -> ShapeAsset:
    """A copy of ``asset`` with real part labels and/or keypoints (mesh shared, not copied).

    Args:
        asset: from :func:`renderers.shapenet.load_model` (v2 frame; OBJ face order).
        keypoints: KeypointNet record of this model: keypoints are recomputed from
            ``face_index`` + barycentrics on ``asset.mesh`` (checked against ``xyz``);
            ``keypoint_ids`` become the KeypointNet ``semantic_id``.
        keypoint_pcd: (M, 3) the model's KeypointNet pcd points; if given, the identity
            alignment is verified on them (symmetric chamfer) instead of on the keypoints.
        parts: labelled points (ShapeNet-Part / PartNet) in their source frame; aligned by
            :func:`align_part_points`, then :func:`transfer_point_labels`.
        v1_shift: v1→v2 shift override (default: read from the asset's model_normalized.json).
        threshold: alignment acceptance threshold.
        label_k, label_max_dist: see :func:`transfer_point_labels`.
        on_error: ``"raise"`` (AssetError) or ``"skip"``: leave that annotation out and record
            the message in ``meta["annotations"]["errors"]``.

    Returns:
        ShapeAsset with ``face_part``/``part_names`` (if ``parts``), ``keypoints``/
        ``keypoint_ids`` (if ``keypoints``) and ``meta["annotations"]`` = {"keypointnet": {...},
        "<parts dataset>": {...}, "errors": [...]} holding each alignment's matrix and scores.
    """
    from renderers.annotations.keypointnet import keypoints_on_mesh

    info: dict = {"errors": []}
    changes: dict = {}
    index = SurfaceIndex(asset.mesh)
    if keypoints is not None:
        try:
            kp_src = keypoint_pcd if keypoint_pcd is not None else keypoints.xyz
            al = align_points(kp_src, index, candidates_for("v2"), threshold=threshold,
                              model=f"{asset.category}/{asset.object_id} (keypointnet)")
            if al.mirrored or not np.array_equal(al.matrix, np.eye(4)):
                raise AssetError(f"alignment failed for {asset.object_id}: KeypointNet fits "
                                 f"best with {al.name!r}, not the identity; scores "
                                 f"{_fmt_scores(al.scores)}")
            pts, ids, err = keypoints_on_mesh(keypoints, asset.mesh, return_error=True)
            changes.update(keypoints=pts, keypoint_ids=ids)
            info["keypointnet"] = {**al.to_meta(), "source": str(keypoints.source),
                                   "n_keypoints": len(ids), "max_xyz_error": float(err),
                                   "verified_on": "pcd" if keypoint_pcd is not None else "xyz"}
        except AssetError as exc:
            if on_error == "raise":
                raise
            info["errors"].append(str(exc))
    if parts is not None:
        try:
            al = align_part_points(asset, parts, v1_shift=v1_shift, threshold=threshold,
                                   index=index)
            moved = apply_matrix(al.matrix, parts.points)
            face_part = transfer_point_labels(asset.mesh, moved, parts.labels, label_k,
                                              label_max_dist)
            changes.update(face_part=face_part, part_names=list(parts.part_names))
            info[parts.dataset] = {**al.to_meta(), "source": parts.source,
                                   "labelled_faces": float((face_part >= 0).mean()),
                                   "source_meta": parts.meta}
        except AssetError as exc:
            if on_error == "raise":
                raise
            info["errors"].append(str(exc))
    meta = {**asset.meta, "annotations": info}
    return dataclasses.replace(asset, meta=meta, **changes)
