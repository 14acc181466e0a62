"""Object-level bootstrap statistics and the headline table (pipeline/evaluation/stats.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from pipeline.evaluation import stats as S
from pipeline.evaluation.tasks import TaskResult


def crossed_pairs(rng: np.random.Generator, n_obj: int, n_pairs: int) -> list[tuple[int, int]]:
    src = rng.integers(0, n_obj, n_pairs)
    trg = (src + rng.integers(1, n_obj, n_pairs)) % n_obj
    return list(zip(src.tolist(), trg.tolist(), strict=True))


def test_pair_objects_of_every_pair_kind():
    assert S.pair_objects({"obj": 3, "src_view": 0, "trg_view": 2}) == (3,)
    assert S.pair_objects({"src": 1, "trg": 4, "view": 0}) == (1, 4)
    assert S.pair_objects({"src": 1, "trg": 4, "src_view": 0, "trg_view": 3}) == (1, 4)
    assert S.pair_objects({"src": 2, "trg": 2, "view": 0}) == (2,)  # distinct objects
    with pytest.raises(ValueError):
        S.pair_objects({"view": 0})


def test_pair_weights_are_products_of_multiplicities_and_zero_when_an_object_is_missing():
    idx, k = S.incidence([(10, 20), (20,), (30, 10), (20, 20)])
    assert k == 3
    mult = np.array([[2, 1, 0],    # object 30 not drawn
                     [0, 3, 1],    # object 10 not drawn
                     [1, 1, 1]])
    w = S.pair_weights(mult, idx)
    np.testing.assert_array_equal(w, [[2, 1, 0, 1], [0, 3, 0, 3], [1, 1, 1, 1]])
    # weighted mean drops the zero-weight pairs
    np.testing.assert_allclose(S.weighted_means(w, np.array([1.0, 2.0, 100.0, 4.0])),
                               [(2 + 2 + 4) / 4, (6 + 12) / 6, 107 / 4])


def test_multiplicities_resample_objects_with_replacement():
    m = S.multiplicities(7, 500, np.random.default_rng(0))
    assert m.shape == (500, 7) and (m.sum(axis=1) == 7).all()
    assert (m == 0).any() and (m >= 2).any()


def test_known_effect_is_resolved_and_identical_methods_are_not():
    rng = np.random.default_rng(0)
    groups = crossed_pairs(rng, 40, 300)
    obj = rng.normal(0, 0.1, 40)
    b = 0.4 + obj[[g[0] for g in groups]] + rng.normal(0, 0.1, 300)
    a = b + 0.2 + rng.normal(0, 0.05, 300)
    d = S.paired_difference(a, b, groups, n_boot=1000, seed=1)
    assert d["ci_lo"] > 0 and d["verdict"] == "A > B"
    assert abs(d["mean"] - 0.2) < 0.02
    assert d["n_pairs"] == 300 and d["n_objects"] == 40 and not d["few"]
    assert S.paired_difference(b, a, groups, n_boot=1000, seed=1)["verdict"] == "A < B"
    same = S.paired_difference(b, b.copy(), groups, n_boot=1000, seed=1)
    assert same["verdict"] == "not resolved at 300 pairs"


def test_nan_pairs_are_excluded_and_only_common_pairs_are_compared():
    groups = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (5, 6)]
    v = np.array([1.0, 2.0, np.nan, 4.0, 5.0, np.nan])
    r = S.bootstrap_mean(v, groups, n_boot=200)
    assert r["n_pairs"] == 4 and r["n_objects"] == 5  # objects 5, 6 only in a NaN pair
    assert r["mean"] == pytest.approx(3.0) and r["few"]
    assert r["ci_lo"] <= 3.0 <= r["ci_hi"]
    b = np.array([0.0, np.nan, 0.0, 0.0, 0.0, 0.0])
    d = S.paired_difference(v, b, groups, n_boot=200)
    assert d["n_pairs"] == 3 and d["mean"] == pytest.approx((1 + 4 + 5) / 3)
    empty = S.bootstrap_mean([np.nan, np.nan], [(0,), (1,)])
    assert empty["mean"] is None and empty["ci_lo"] is None and empty["n_pairs"] == 0


def test_object_bootstrap_covers_a_null_difference_while_a_pair_bootstrap_does_not():
    """Object random effects make pairs sharing an object correlated: resampling pairs alone
    gives intervals far too narrow, resampling objects keeps ~nominal coverage."""
    rng = np.random.default_rng(123)
    n_sim, n_obj, n_pairs = 200, 25, 200
    cover_obj = cover_pair = 0
    for s in range(n_sim):
        groups = crossed_pairs(rng, n_obj, n_pairs)
        u, w = rng.normal(0, 1, n_obj), rng.normal(0, 1, n_obj)  # per object, mean 0
        d = np.array([u[i] + w[j] for i, j in groups]) + rng.normal(0, 0.5, n_pairs)
        a = S.bootstrap_mean(d, groups, n_boot=400, seed=s)
        p = S.bootstrap_mean(d, [(i,) for i in range(n_pairs)], n_boot=400, seed=s)
        cover_obj += a["ci_lo"] <= 0 <= a["ci_hi"]
        cover_pair += p["ci_lo"] <= 0 <= p["ci_hi"]
    assert cover_obj / n_sim >= 0.85
    assert cover_pair / n_sim <= 0.75


def test_bootstrap_is_seeded_and_fast():
    rng = np.random.default_rng(0)
    groups = crossed_pairs(rng, 200, 1000)
    v = rng.random(1000)
    t0 = time.perf_counter()
    r1 = S.bootstrap_mean(v, groups, n_boot=2000, seed=5)
    assert time.perf_counter() - t0 < 1.0
    assert r1 == S.bootstrap_mean(v, groups, n_boot=2000, seed=5)
    assert r1 != S.bootstrap_mean(v, groups, n_boot=2000, seed=6)


def make_result(task: str, effects: dict[str, float], n_obj: int = 12, n_pairs: int = 60,
                seed: int = 0, protocol: str | None = None, dropped: set[int] = frozenset(),
                ) -> TaskResult:
    """Synthetic TaskResult: per pair and method pck = effect + noise, miou = effect / 2."""
    rng = np.random.default_rng(seed)
    thresholds = (0.025, 0.05, 0.075, 0.1) if task == "3d" else (2.5, 5.0, 7.5, 10.0)
    res = TaskResult(task, list(effects), thresholds)
    for p, (s, t) in enumerate(crossed_pairs(rng, n_obj, n_pairs)):
        pair = ({"obj": s, "src_view": 0, "trg_view": 1} if task == "cross_view"
                else {"src": s, "trg": t, "view": 0})
        for m, e in effects.items():
            pck = np.clip(e + rng.normal(0, 0.05, 4), 0, 1).tolist()
            row = {"pair": pair, "method": m, "pck": pck, "miou": e / 2, "n_kp": 5,
                   "ious": [], "errors": []}
            if protocol is not None:
                row["protocol"] = protocol
                row["dropped"] = "no keypoints" if p in dropped else None
            res.rows.append(row)
    return res


EFFECTS = {"student_internal": 0.7, "teacher_2d": 0.5, "pixelnerf_internal": 0.7,
           "pixel_xy": 0.3, "coord_depth": 0.6, "untrained_internal": 0.1}


def test_headline_table_cells_claims_and_best_control():
    results = {"cross_instance": make_result("cross_instance", EFFECTS),
               "3d": make_result("3d", EFFECTS, seed=1)}
    table = S.headline_table(results, None, n_boot=300, seed=0)
    json.dumps(table, allow_nan=False)  # plain, strict JSON
    assert table["tasks"] == ["cross_instance", "3d"]
    assert table["methods"][:3] == ["student_internal", "teacher_2d", "pixelnerf_internal"]
    cell = table["metrics"]["kp PCK@5"]["cross_instance"]
    assert cell["threshold"] == 5.0
    assert table["metrics"]["kp PCK@10"]["3d"]["threshold"] == 0.1
    est = cell["methods"]["student_internal"]
    assert est["ci_lo"] < est["mean"] < est["ci_hi"] and est["n_pairs"] == 60
    assert est["n_objects"] == 12 and not est["few"]
    assert cell["best_control"] == "coord_depth"
    claims = {c["kind"]: c for c in cell["claims"]}
    assert set(claims) == {"teacher_2d", "pixelnerf_internal", "best_control"}
    assert claims["teacher_2d"]["verdict"] == "student_internal > teacher_2d"
    assert claims["pixelnerf_internal"]["verdict"] == "not resolved at 60 pairs"
    assert claims["best_control"]["b"] == "coord_depth"
    assert claims["best_control"]["verdict"] == "student_internal > coord_depth"
    # mIoU is the same per pair -> zero-width interval for equal methods, still not resolved
    miou = {c["kind"]: c for c in table["metrics"]["part mIoU"]["cross_instance"]["claims"]}
    assert miou["pixelnerf_internal"]["verdict"].startswith("not resolved")


def test_absent_methods_and_protocols_and_dropped_pairs():
    only = {"student_internal": 0.7, "pixel_bbox_xy": 0.4}
    official = make_result("cross_instance_views", only, protocol="official",
                           dropped={0, 1, 2})
    project = make_result("cross_instance_views", only, seed=3, protocol="project")
    res = TaskResult("cross_instance_views", list(only), official.thresholds,
                     official.rows + project.rows)
    assert S.protocols({"x": res}) == ["official", "project"]
    table = S.headline_table({"cross_instance_views": res}, "official", n_boot=200)
    cell = table["metrics"]["kp PCK@5"]["cross_instance_views"]
    est = cell["methods"]["student_internal"]
    assert est["n_pairs"] == 57 and est["n_dropped"] == 3
    assert [c["kind"] for c in cell["claims"]] == ["best_control"]
    assert cell["best_control"] == "pixel_bbox_xy"
    no_headline = S.headline_table({"cross_view": make_result("cross_view", {"pixel_xy": 0.2})},
                                   None, n_boot=50)
    assert no_headline["metrics"]["kp PCK@5"]["cross_view"]["claims"] == []


def test_flat_keys_naming():
    results = {"cross_instance": make_result("cross_instance", EFFECTS),
               "3d": make_result("3d", EFFECTS, seed=1)}
    keys = S.flat_keys(S.headline_table(results, None, n_boot=100), "chair")
    base = "chair.cross_instance.kp2d.pck@5"
    for k in (f"{base}.student_internal.ci_lo", f"{base}.student_internal.ci_hi",
              f"{base}.diff.student_internal-teacher_2d",
              f"{base}.diff.student_internal-teacher_2d.ci_lo",
              f"{base}.diff.student_internal-teacher_2d.ci_hi",
              f"{base}.diff.student_internal-pixelnerf_internal.verdict",
              f"{base}.diff.student_internal-best_control.ci_lo",
              "chair.cross_instance.kp3d.pck@0.05.student_internal.ci_lo",
              "chair.cross_instance.kp3d.pck@0.1.diff.student_internal-teacher_2d",
              "chair.cross_instance.part3d.miou.teacher_2d.ci_hi",
              "chair.cross_instance.part2d.miou.diff.student_internal-best_control.verdict"):
        assert k in keys, k
    assert keys[f"{base}.diff.student_internal-teacher_2d.verdict"] == (
        "student_internal > teacher_2d")
    assert keys[f"{base}.diff.student_internal-best_control.control"] == "coord_depth"
    assert all(v is None or isinstance(v, float | str) for v in keys.values())
    # 2 tasks x 3 metrics x (6 methods x 2 + 3 claims x 4 + 1)
    assert len(keys) == 2 * 3 * (12 + 12 + 1)
    tagged = S.flat_keys(S.headline_table(
        {"cross_view": make_result("cross_view", EFFECTS, protocol="project")}, "project",
        n_boot=50), "car", protocol_segment=True)
    assert "car.cross_view.kp2d.pck@5.student_internal.ci_lo.project" in tagged


def test_dvc_headline_files_fit_dvc_metrics_show_in_120_columns(tmp_path):
    """The two headline files, at their dvc.yaml paths, through the real ``dvc metrics show``."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    if not Path(dvc).exists():
        pytest.skip("dvc is not installed in this environment")
    results = {"cross_instance": make_result("cross_instance", EFFECTS)}
    table = S.headline_table(results, None, n_boot=200, seed=0)
    # the widest values dvc may print: negative, three decimals
    lines = []
    for name, metric in S.DVC_HEADLINE.items():
        out = S.dvc_headline(table, metric)
        assert set(out) == {"teacher", "teacher_lo", "teacher_hi", "pnerf", "pnerf_lo",
                            "pnerf_hi"}
        assert out["teacher_lo"] <= out["teacher"] <= out["teacher_hi"]
        worst = {k: -0.123 for k in out}
        path = tmp_path / "reports" / "evaluate" / "airplane-effnet" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(worst))
        lines.append(f"      - {path.relative_to(tmp_path)}:\n          cache: false")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: 'true'\n    metrics:\n" + "\n".join(lines) + "\n")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    shown = subprocess.run([dvc, "metrics", "show"], cwd=tmp_path, check=True,
                           capture_output=True, text=True).stdout
    rows = [line for line in shown.splitlines() if line.strip()]
    assert len(rows) == 3 and "-0.123" in rows[1], shown
    assert max(len(line) for line in rows) <= 120, shown
