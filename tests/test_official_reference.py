"""The ``official`` protocol against an independent reference of the released FeatureNeRF eval.

The reference below is written from the behaviour of the released scripts
(``eval/eval_2d_task.py``, ``eval/eval_nv_2d_task.py``, ``eval/eval_3d_task.py`` of
jianglongye/featurenerf), not from the project's code, which it never calls:

* features are normalised as ``x / max(|x|, 1e-6)`` and matched by ``argmax`` of the cosine,
  first index on (exact) ties;
* 2D: foreground = part label != background; every target foreground pixel takes the label of
  its best source foreground pixel; IoU per label in both GT label lists (background left out)
  over the target foreground pixels, ``np.mean`` of those (NaN when none is shared);
  each source keypoint reads its own pixel (background or not) and takes the best target
  foreground pixel; only ids in both keypoint lists count (sorted); PCK = ``sum(d < t) /
  len(d)``;
* 3D: all part points are candidates and scored; label lists without the unlabelled label;
  keypoints against the candidate points;
* the scripts raise (argmax over an empty dimension, ``torch.cat([])``) on an empty source
  foreground / source point set (part step), then on an empty target foreground / candidate set
  (keypoint step), then on no shared keypoint id.

The reference computes cosines exactly: features are small integers, and for a query ``q`` the
cosine with ``k`` ranks as ``sign(q.k) (q.k)^2 / |k|^2``, made an integer by a common multiple
of the ``|k|^2``. Our encoding: label -1 = background / unlabelled (the released 0).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.evaluation import metrics as M
from pipeline.evaluation.pairs import CrossInstancePair
from pipeline.evaluation.tasks import KP_CANDIDATES, run_2d_task, run_3d_task

BG = -1
TH_2D = (1.0, 1.5, 2.5, 4.0)
TH_3D = (0.1, 0.3, 0.6, 1.0)


class Raised(Exception):
    """Where the released script raises; ``args[0]`` is the reason."""


# ------------------------------------------------------------------ exact reference


def exact_rank(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(M, C), (N, C) small ints -> (M, N) int64 scores ordered exactly as the cosines."""
    q = np.asarray(queries, np.int64)
    k = np.asarray(keys, np.int64)
    d = q @ k.T
    n = (k * k).sum(axis=1)
    lcm = 1
    for v in set(n.tolist()) - {0}:
        lcm = lcm * v // math.gcd(lcm, v)
    assert lcm * max(1, int((d * d).max(initial=0))) < 2**62
    scale = np.where(n > 0, lcm // np.maximum(n, 1), 0)  # a zero key scores 0, as 0/1e-6
    return np.sign(d) * d * d * scale[None, :]


def ref_argmax(queries: np.ndarray, keys: np.ndarray, reason: str) -> np.ndarray:
    """First index of the exact maximum per query row; raises where torch.argmax would."""
    if len(keys) == 0:
        raise Raised(reason)
    if len(queries) == 0:
        return np.zeros(0, np.int64)
    return np.argmax(exact_rank(queries, keys), axis=1)


def ref_ious(pred: np.ndarray, gt: np.ndarray, src_labels: np.ndarray) -> list[float]:
    src_u = sorted(set(np.unique(src_labels).tolist()) - {BG})
    trg_u = sorted(set(np.unique(gt).tolist()) - {BG})
    inter = sorted(set(src_u) & set(trg_u))
    return [np.sum((gt == lab) & (pred == lab)) / float(np.sum((gt == lab) | (pred == lab)))
            for lab in inter]


def ref_mean(values: list[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # np.mean([]) -> NaN, as released
        return float(np.mean(values))


def ref_accs(dist: np.ndarray, thresholds: tuple[float, ...]) -> list[float]:
    return [np.sum(dist < t) / float(len(dist)) for t in thresholds]


@dataclass
class Ref:
    iou: float
    kp_accs: list[float]
    pred_labels: np.ndarray  # per scored target element, in order
    pred_kp: np.ndarray  # (K, 2|3) per shared id, ascending
    dist: np.ndarray


def ref_2d(src_feat, trg_feat, src_part, trg_part, src_kps, trg_kps, thresholds=TH_2D) -> Ref:
    """One pair; ``*_kps`` = [(x, y, id)] integer pixels of the view's annotated keypoints."""
    h, w = src_part.shape
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
    s_mask, t_mask = (src_part != BG).reshape(-1), (trg_part != BG).reshape(-1)
    s_valid = src_feat.reshape(h * w, -1)[s_mask]
    t_valid = trg_feat.reshape(h * w, -1)[t_mask]
    t_grid = grid[t_mask]
    idx = ref_argmax(t_valid, s_valid, "empty source foreground")  # part matching first
    pred_labels = src_part.reshape(-1)[s_mask][idx]
    iou = ref_mean(ref_ious(pred_labels, trg_part.reshape(-1)[t_mask], src_part.reshape(-1)))
    s_kp = np.array(src_kps, np.int64).reshape(-1, 3)
    t_kp = np.array(trg_kps, np.int64).reshape(-1, 3)
    kp_feat = src_feat[s_kp[:, 1], s_kp[:, 0]]
    kidx = ref_argmax(kp_feat, t_valid, "empty target foreground")
    pred_uv = t_grid[kidx][:, [1, 0]]
    inter = sorted(set(s_kp[:, 2].tolist()) & set(t_kp[:, 2].tolist()))
    if not inter:
        raise Raised("no shared keypoint id")
    pred = np.concatenate([pred_uv[s_kp[:, 2] == x] for x in inter])
    gt = np.concatenate([t_kp[t_kp[:, 2] == x, :2] for x in inter])
    dist = np.linalg.norm(pred - gt, axis=1)
    return Ref(iou, ref_accs(dist, thresholds), pred_labels, pred, dist)


def ref_3d(src_feat, src_labels, trg_feat, trg_labels, src_kp_feat, src_kp_ids, cand_feat,
           cand_xyz, trg_kp_xyz, trg_kp_ids, thresholds=TH_3D) -> Ref:
    idx = ref_argmax(trg_feat, src_feat, "no source points")
    pred_labels = np.asarray(src_labels)[idx]
    iou = ref_mean(ref_ious(pred_labels, np.asarray(trg_labels), np.asarray(src_labels)))
    kidx = ref_argmax(src_kp_feat, cand_feat, "no candidate points")
    pred_pts = cand_xyz[kidx]
    inter = sorted(set(src_kp_ids) & set(trg_kp_ids))
    if not inter:
        raise Raised("no shared keypoint id")
    src_ids, trg_ids = np.asarray(src_kp_ids), np.asarray(trg_kp_ids)
    pred = np.concatenate([pred_pts[src_ids == x] for x in inter])
    gt = np.concatenate([trg_kp_xyz[trg_ids == x] for x in inter])
    dist = np.linalg.norm(pred - gt, axis=1)
    return Ref(iou, ref_accs(dist, thresholds), pred_labels, pred, dist)


def run_ref(fn, *args):
    try:
        return fn(*args), None
    except Raised as err:
        return None, err.args[0]


# ------------------------------------------------------------------ random cases


def rand_feat(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "binary":
        return rng.integers(0, 2, shape)
    return rng.integers(-3, 4, shape)


def rand_labels(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    p_bg = rng.choice([0.0, 0.3, 0.6, 1.0], p=[0.3, 0.35, 0.25, 0.1])
    lab = rng.integers(0, int(rng.integers(1, 4)), shape)
    return np.where(rng.random(shape) < p_bg, BG, lab).astype(np.int16)


@dataclass
class Case2D:
    src_feat: np.ndarray
    trg_feat: np.ndarray
    src_part: np.ndarray
    trg_part: np.ndarray
    src_uv: np.ndarray
    trg_uv: np.ndarray
    src_id: np.ndarray
    trg_id: np.ndarray
    src_vis: np.ndarray
    trg_vis: np.ndarray

    @property
    def counted(self) -> np.ndarray:
        return (self.src_id >= 0) & (self.trg_id >= 0) & self.src_vis & self.trg_vis

    def kps(self, role: str) -> list[tuple[int, int, int]]:
        """The view's annotated keypoints (present and visible) as integer pixels."""
        uv, ids, vis = ((self.src_uv, self.src_id, self.src_vis) if role == "src"
                        else (self.trg_uv, self.trg_id, self.trg_vis))
        return [(int(math.floor(u)), int(math.floor(v)), int(i))
                for (u, v), i, ok in zip(uv, ids, vis, strict=True) if i >= 0 and ok]

    def project(self, protocol: str = "official", alpha: bool = False) -> M.PairResult:
        kw = {}
        if alpha:
            kw = {"src_alpha": np.full(self.src_part.shape, 255),
                  "trg_alpha": np.full(self.trg_part.shape, 255)}
        return M.pair_2d(self.src_feat.astype(np.float32), self.trg_feat.astype(np.float32),
                         self.src_part, self.trg_part, self.src_uv, self.trg_uv, self.counted,
                         protocol=protocol, thresholds=TH_2D, **kw)

    def reference(self) -> tuple[Ref | None, str | None]:
        return run_ref(ref_2d, self.src_feat, self.trg_feat, self.src_part, self.trg_part,
                       self.kps("src"), self.kps("trg"))


def random_2d(rng: np.random.Generator) -> Case2D:
    h, w = (int(v) for v in rng.integers(1, 7, 2))
    c = int(rng.integers(1, 5))
    kind = str(rng.choice(["int", "binary"]))
    p = int(rng.integers(0, 5))

    def ids() -> np.ndarray:
        return np.where(rng.random(p) < 0.8, np.arange(p), -1)

    return Case2D(rand_feat(rng, (h, w, c), kind), rand_feat(rng, (h, w, c), kind),
                  rand_labels(rng, (h, w)), rand_labels(rng, (h, w)),
                  rng.uniform(0, 1, (p, 2)) * [w, h], rng.uniform(0, 1, (p, 2)) * [w, h],
                  ids(), ids(), rng.random(p) < 0.85, rng.random(p) < 0.85)


@dataclass
class Case3D:
    src_feat: np.ndarray
    src_labels: np.ndarray
    trg_feat: np.ndarray
    trg_labels: np.ndarray
    src_kp_feat: np.ndarray
    src_id: np.ndarray
    trg_id: np.ndarray
    cand_feat: np.ndarray
    cand_xyz: np.ndarray
    trg_kp: np.ndarray

    @property
    def counted(self) -> np.ndarray:
        return (self.src_id >= 0) & (self.trg_id >= 0)

    def project(self, protocol: str = "official") -> M.PairResult:
        f = np.float32
        return M.pair_3d(self.src_feat.astype(f), self.src_labels, self.trg_feat.astype(f),
                         self.trg_labels, self.src_kp_feat.astype(f), self.cand_feat.astype(f),
                         self.cand_xyz, self.trg_kp, self.counted, protocol, TH_3D)

    def reference(self) -> tuple[Ref | None, str | None]:
        s_ok, t_ok = self.src_id >= 0, self.trg_id >= 0
        return run_ref(ref_3d, self.src_feat, self.src_labels, self.trg_feat, self.trg_labels,
                       self.src_kp_feat[s_ok], self.src_id[s_ok].tolist(), self.cand_feat,
                       self.cand_xyz, self.trg_kp[t_ok], self.trg_id[t_ok].tolist())


def random_3d(rng: np.random.Generator) -> Case3D:
    c = int(rng.integers(1, 5))
    kind = str(rng.choice(["int", "binary"]))
    ns, nt, nc, p = (int(v) for v in rng.integers(0, 10, 4))
    ns = ns if rng.random() < 0.9 else 0
    nc = nc if rng.random() < 0.9 else 0

    def ids() -> np.ndarray:
        return np.where(rng.random(p) < 0.8, np.arange(p), -1)

    return Case3D(rand_feat(rng, (ns, c), kind), rand_labels(rng, (ns,)),
                  rand_feat(rng, (nt, c), kind), rand_labels(rng, (nt,)),
                  rand_feat(rng, (p, c), kind), ids(), ids(), rand_feat(rng, (nc, c), kind),
                  rng.uniform(-1, 1, (nc, 3)), rng.uniform(-1, 1, (p, 3)))


# ------------------------------------------------------------------ agreement checks


def _assert_dropped(res: M.PairResult, reason: str) -> str:
    """A pair the released code raises on: dropped with that reason, nothing scored."""
    assert res.dropped == reason, (reason, res.dropped)
    assert np.isnan(res.kp.pck).all() and np.isnan(res.part.miou)
    return reason


def _assert_same_keypoints(res: M.PairResult, ref, counted: np.ndarray) -> None:
    """Exact keypoint agreement: PCK per threshold and the per-keypoint errors."""
    assert res.dropped is None and res.kp_dropped is None
    assert res.kp.pck.tolist() == ref.kp_accs
    assert res.kp.errors[counted].tolist() == ref.dist.tolist()


def assert_agrees_2d(case: Case2D, res: M.PairResult | None = None) -> str | None:
    ref, reason = case.reference()
    res = res or case.project()
    assert res.protocol == "official"
    if reason is not None:
        return _assert_dropped(res, reason)
    counted = case.counted
    _assert_same_keypoints(res, ref, counted)
    assert (res.kp.pred[counted] - 0.5).tolist() == ref.pred_kp.tolist()
    assert res.part.pred[case.trg_part != BG].tolist() == ref.pred_labels.tolist()
    if np.isnan(ref.iou):
        assert np.isnan(res.part.miou) and res.part_dropped == "no shared part label"
    else:
        assert res.part.miou == ref.iou and res.part_dropped is None
    return None


def assert_agrees_3d(case: Case3D, res: M.PairResult | None = None) -> str | None:
    ref, reason = case.reference()
    res = res or case.project()
    if reason is not None:
        return _assert_dropped(res, reason)
    counted = case.counted
    _assert_same_keypoints(res, ref, counted)
    assert res.kp.pred[counted].tolist() == ref.pred_kp.tolist()
    assert res.part.pred.tolist() == ref.pred_labels.tolist()
    if np.isnan(ref.iou):
        assert np.isnan(res.part.miou) and res.part_dropped == "no shared part label"
    else:
        assert res.part.miou == ref.iou and res.part_dropped is None
    return None


def test_2d_official_matches_the_reference_on_random_cases():
    rng = np.random.default_rng(2024)
    outcomes = Counter()
    for _ in range(1200):
        case = random_2d(rng)
        outcomes[assert_agrees_2d(case) or "scored"] += 1
        # the alpha a view may have never gives the official protocol a foreground
        assert case.project(alpha=True).dropped == case.project().dropped
    # every branch was exercised
    assert outcomes["scored"] > 400 and min(outcomes.values()) >= 20, outcomes
    assert set(outcomes) == {"scored", "empty source foreground", "empty target foreground",
                             "no shared keypoint id"}


def test_3d_official_matches_the_reference_on_random_cases():
    rng = np.random.default_rng(7)
    outcomes = Counter()
    for _ in range(1200):
        outcomes[assert_agrees_3d(random_3d(rng)) or "scored"] += 1
    assert outcomes["scored"] > 400 and min(outcomes.values()) >= 20, outcomes
    assert set(outcomes) == {"scored", "no source points", "no candidate points",
                             "no shared keypoint id"}


# ------------------------------------------------------------------ edge cases


def one_hot(codes: list[list[int]], c: int) -> np.ndarray:
    """(H, W) code indices (-1 = zero vector) -> (H, W, c) one-hot ints."""
    codes = np.asarray(codes)
    out = np.zeros((*codes.shape, c), np.int64)
    rows, cols = np.nonzero(codes >= 0)
    out[rows, cols, codes[rows, cols]] = 1
    return out


def test_keypoint_on_background_reads_its_own_pixel():
    part = np.array([[BG, 0, BG]])
    src_feat = one_hot([[0, 1, -1]], 2)  # the keypoint's bg pixel looks like target pixel 0
    trg_part = np.array([[0, 0, BG]])
    trg_feat = one_hot([[0, 1, -1]], 2)
    case = Case2D(src_feat, trg_feat, part, trg_part, np.array([[0.5, 0.5]]),
                  np.array([[1.5, 0.5]]), np.array([0]), np.array([0]), np.array([True]),
                  np.array([True]))
    assert assert_agrees_2d(case) is None
    official, project = case.project("official"), case.project("project")
    assert official.kp.pred.tolist() == [[0.5, 0.5]] and official.kp.errors.tolist() == [1.0]
    assert project.kp.pred.tolist() == [[1.5, 0.5]] and project.kp.errors.tolist() == [0.0]


def test_label_only_on_one_side_is_left_out_but_its_predictions_count():
    src_part = np.array([[0, 1]])
    trg_part = np.array([[0, 0]])
    feat = one_hot([[0, 1]], 2)
    case = Case2D(feat, feat, src_part, trg_part, np.zeros((1, 2)) + 0.5, np.zeros((1, 2)) + 0.5,
                  np.array([0]), np.array([0]), np.array([True]), np.array([True]))
    assert assert_agrees_2d(case) is None
    res = case.project()
    assert res.part.ious == {0: 0.5} and res.part.miou == 0.5  # label 1 only in the source


def test_exact_ties_go_to_the_first_index_even_where_float32_rounding_differs():
    # keys [1, 1] and [3, 3] have the same cosine with [1, 0]; float32 rounding makes the
    # second one larger (0.70710677 < 0.7071068), exact scores tie -> the first index
    keys = np.array([[1.0, 1.0], [3.0, 3.0], [0.0, 1.0]])
    q32 = np.float32([[1, 0]]) / np.float32(1)
    k32 = keys.astype(np.float32) / np.linalg.norm(keys.astype(np.float32), axis=1,
                                                   keepdims=True)
    assert (q32 @ k32.T)[0, 1] > (q32 @ k32.T)[0, 0]  # the trap is real
    assert M.nearest_neighbours(np.array([[1.0, 0.0]]), keys).tolist() == [0]
    assert M.nearest_neighbours(np.array([[1.0, 0.0]]), keys[::-1]).tolist() == [1]
    trg_feat = np.array([[[1, 1], [3, 3], [0, 1]]])
    src_feat = np.array([[[1, 0], [0, 1], [0, 1]]])
    part = np.array([[0, 1, 1]])
    case = Case2D(src_feat, trg_feat, part, part, np.array([[0.5, 0.5]]), np.array([[0.5, 0.5]]),
                  np.array([0]), np.array([0]), np.array([True]), np.array([True]))
    assert assert_agrees_2d(case) is None
    assert case.project().kp.pred.tolist() == [[0.5, 0.5]]
    # zero features (e.g. an unrendered pixel) tie with everything: first candidate
    zero = Case2D(np.zeros((1, 3, 2), np.int64), trg_feat, part, part, np.array([[2.5, 0.5]]),
                  np.array([[0.5, 0.5]]), np.array([0]), np.array([0]), np.array([True]),
                  np.array([True]))
    assert assert_agrees_2d(zero) is None
    assert zero.project().kp.pred.tolist() == [[0.5, 0.5]]


def test_empty_foregrounds_and_no_shared_ids_drop_the_pair_with_the_released_order():
    feat = one_hot([[0, 1]], 2)
    labelled, empty = np.array([[0, 1]]), np.array([[BG, BG]])
    kp = np.array([[0.5, 0.5]])

    def case(src_part, trg_part, trg_id=0):
        return Case2D(feat, feat, src_part, trg_part, kp, kp, np.array([0]),
                      np.array([trg_id]), np.array([True]), np.array([True]))

    assert assert_agrees_2d(case(empty, labelled)) == "empty source foreground"
    assert assert_agrees_2d(case(empty, empty)) == "empty source foreground"
    assert assert_agrees_2d(case(labelled, empty)) == "empty target foreground"
    assert assert_agrees_2d(case(labelled, labelled, -1)) == "no shared keypoint id"
    # with an alpha mask the project protocol still scores what it can
    proj = case(empty, labelled).project("project", alpha=True)
    assert proj.dropped is None and proj.kp.n_counted == 1
    assert proj.part_dropped == "no shared part label"
    proj = case(labelled, labelled, -1).project("project")
    assert proj.dropped is None and proj.kp_dropped == "no shared keypoint id"
    assert proj.part.miou == 1.0
    assert case(labelled, empty).project("project").dropped == "empty target foreground"


def test_unlabelled_3d_points_are_candidates_and_scored():
    # source: a labelled point and an unlabelled one; the target's unlabelled point looks like
    # the labelled source point -> official: label 0 predicted on 2 points, GT on 1 -> IoU 0.5
    feat = np.array([[1, 0], [0, 1]])
    src_labels = np.array([0, BG])
    trg_feat = np.array([[1, 0], [2, 1]])
    trg_labels = np.array([0, BG])
    case = Case3D(feat, src_labels, trg_feat, trg_labels, np.array([[1, 0]]), np.array([0]),
                  np.array([0]), feat, np.zeros((2, 3)), np.zeros((1, 3)))
    assert assert_agrees_3d(case) is None
    assert case.project("official").part.miou == 0.5
    assert case.project("project").part.miou == 1.0
    # an unlabelled source point can win: its label counts as a wrong prediction
    case.trg_feat = np.array([[0, 1], [0, 1]])
    assert assert_agrees_3d(case) is None and case.project().part.miou == 0.0


# ------------------------------------------------------------------ task loops


class FakeStore:
    """Just what the task loops read: ``read(name, index)`` and the array names."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.group = set(arrays)

    def read(self, name: str, index):
        return self.arrays[name][index]


class FakeSource:
    """Integer features: 2D maps per (object, view), 3D by a lookup of the point."""

    name, kind = "fake", "fake"

    def __init__(self, maps: np.ndarray, table: dict[tuple[float, ...], np.ndarray]):
        self.maps, self.table = maps, table

    def map_2d(self, obj: int, input_view: int, view: int) -> np.ndarray:
        return self.maps[obj, view].astype(np.float32)

    def at_points(self, obj: int, input_view: int, xyz: np.ndarray) -> np.ndarray:
        return np.stack([self.table[(obj, *map(float, p))] for p in xyz]).astype(np.float32)


def random_store(rng: np.random.Generator, n_obj: int = 4, n_views: int = 2, size: int = 5,
                 c: int = 3, p: int = 4, s: int = 7, k: int = 6, candidates: bool = True):
    shape = (n_obj, n_views, size, size)
    part = np.stack([rand_labels(rng, shape[1:]) for _ in range(n_obj)])
    arrays = {
        "rgb": np.zeros((*shape, 3), np.uint8), "part": part,
        "alpha": np.full(shape, 255, np.uint8),  # official must ignore it
        "kp2d": rng.uniform(0, size, (n_obj, n_views, p, 2)),
        "kp_visible": rng.random((n_obj, n_views, p)) < 0.8,
        "kp_id": np.where(rng.random((n_obj, p)) < 0.8, np.arange(p), -1),
        "points": rng.integers(-9, 10, (n_obj, s, 3)) / 8.0,
        "point_part": rand_labels(rng, (n_obj, s)),
        "kp3d": rng.integers(-9, 10, (n_obj, p, 3)) / 8.0,
    }
    if candidates:
        arrays[KP_CANDIDATES] = rng.integers(-9, 10, (n_obj, k, 3)) / 8.0
    table = {}
    for o in range(n_obj):
        for name in ("points", "kp3d", KP_CANDIDATES):
            for pt in arrays.get(name, np.zeros((n_obj, 0, 3)))[o]:
                table.setdefault((o, *map(float, pt)), rand_feat(rng, (c,), "int"))
    maps = rand_feat(rng, (*shape, c), str(rng.choice(["int", "binary"])))
    return FakeStore(arrays), FakeSource(maps, table)


def test_task_loops_score_the_official_rows_as_the_reference():
    rng = np.random.default_rng(11)
    for trial in range(12):
        store, source = random_store(rng, candidates=trial % 2 == 0)
        a = store.arrays
        pairs = [CrossInstancePair(int(x), int(y), int(v)) for x, y, v in
                 zip(rng.integers(0, 4, 6), rng.integers(0, 4, 6), rng.integers(0, 2, 6),
                     strict=True)]
        res2d = run_2d_task("cross_instance", pairs, store, [source], TH_2D, nominal=TH_2D,
                            protocols=("official", "project"), n_visual=0)
        res3d = run_3d_task(pairs, store, [source], TH_3D, n_visual=0,
                            protocols=("official", "project"))
        cand = KP_CANDIDATES if trial % 2 == 0 else "points"
        assert res3d.info["kp3d_candidates"]["official"].startswith(cand)
        assert res3d.info["kp3d_candidates"]["project"].startswith("points")
        rows2d = [r for r in res2d.rows if r["protocol"] == "official"]
        rows3d = [r for r in res3d.rows if r["protocol"] == "official"]
        assert len(rows2d) == len(rows3d) == len(pairs) == len(res2d.rows) // 2
        refs = []
        for pair, r2, r3 in zip(pairs, rows2d, rows3d, strict=True):
            s, t, v = pair.src, pair.trg, pair.view
            case = Case2D(source.maps[s, v], source.maps[t, v], a["part"][s, v], a["part"][t, v],
                          a["kp2d"][s, v], a["kp2d"][t, v], a["kp_id"][s], a["kp_id"][t],
                          a["kp_visible"][s, v], a["kp_visible"][t, v])
            ref, reason = case.reference()
            assert r2["dropped"] == reason
            if ref is not None:
                assert r2["pck"] == ref.kp_accs
                assert (r2["miou"] == ref.iou) or (np.isnan(r2["miou"]) and np.isnan(ref.iou))
            refs.append((ref, reason))

            def feats(o, xyz, table=source.table):
                return np.stack([table[(o, *map(float, q))] for q in xyz])

            s_ok, t_ok = a["kp_id"][s] >= 0, a["kp_id"][t] >= 0
            cxyz = a[cand][t]
            ref3, reason3 = run_ref(ref_3d, feats(s, a["points"][s]), a["point_part"][s],
                                    feats(t, a["points"][t]), a["point_part"][t],
                                    feats(s, a["kp3d"][s][s_ok]), a["kp_id"][s][s_ok].tolist(),
                                    feats(t, cxyz), cxyz, a["kp3d"][t][t_ok],
                                    a["kp_id"][t][t_ok].tolist())
            assert r3["dropped"] == reason3
            if ref3 is not None:
                assert r3["pck"] == ref3.kp_accs
                assert (r3["miou"] == ref3.iou) or (np.isnan(r3["miou"]) and np.isnan(ref3.iou))
        check_summary(res2d, refs)


def check_summary(res, refs: list[tuple[Ref | None, str | None]]) -> None:
    """The official summary: means over the kept pairs, the released NaN-propagating mIoU, and
    the drop counts by reason."""
    s = res.summary("official")["fake"]
    kept = [r for r, reason in refs if reason is None]
    assert s["dropped"] == dict(Counter(reason for _, reason in refs if reason))
    assert s["n_pairs"] == len(refs) and s["n_pairs_kp"] == len(kept)
    if kept:
        assert s["pck"] == pytest.approx(np.mean([r.kp_accs for r in kept], axis=0), rel=1e-12)
        released = ref_mean([r.iou for r in kept])
        if np.isnan(released):
            assert np.isnan(s["miou_released"])
        else:
            assert s["miou_released"] == pytest.approx(released, rel=1e-12)
        scored = [r.iou for r in kept if not np.isnan(r.iou)]
        assert s["n_pairs_part"] == len(scored)
        assert s["dropped_part"] == ({"no shared part label": len(kept) - len(scored)}
                                     if len(kept) > len(scored) else {})
        if scored:
            assert s["miou"] == pytest.approx(np.mean(scored), rel=1e-12)


def test_released_mean_is_nan_once_a_pair_shares_no_part_label():
    feat = one_hot([[0, 1]], 2)[None, None]  # (1 view, 1, 2, 2) per object
    store = FakeStore({
        "rgb": np.zeros((2, 1, 1, 2, 3), np.uint8),
        "part": np.array([[[[0, 0]]], [[[1, 1]]]]),  # object 1 shares no label with object 0
        "alpha": np.full((2, 1, 1, 2), 255, np.uint8),
        "kp2d": np.full((2, 1, 1, 2), 0.5), "kp_visible": np.ones((2, 1, 1), bool),
        "kp_id": np.zeros((2, 1), np.int64)})
    source = FakeSource(np.concatenate([feat, feat]), {})
    pairs = [CrossInstancePair(0, 0, 0), CrossInstancePair(0, 1, 0)]
    res = run_2d_task("cross_instance", pairs, store, [source], TH_2D, nominal=TH_2D,
                      protocols=("official", "project"), n_visual=0)
    off = res.summary()["fake"]
    assert off["protocol"] == "official" and off["miou"] == 1.0 and off["n_pairs_part"] == 1
    assert np.isnan(off["miou_released"]) and off["dropped_part"] == {"no shared part label": 1}
    assert off["n_pairs_kp"] == 2 and off["dropped"] == {}
    assert "miou_released" not in off["by_protocol"]["project"]
    assert [r["part_dropped"] for r in res.rows] == [None, None, "no shared part label",
                                                     "no shared part label"]
    assert [r["protocol"] for r in res.rows] == ["official", "project"] * 2
