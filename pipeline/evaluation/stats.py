"""Decisive statistics for the central comparison: object-level bootstrap intervals.

Pairs share objects (a chair appears in many cross-instance pairs), so per-pair scores are not
independent and a pair-level bootstrap is too narrow. Here OBJECTS are resampled with
replacement: a resample draws multiplicities ``m_o`` (multinomial, K draws over the K objects
of the scored pairs), each pair gets the weight ``prod_{o in pair} m_o`` (its distinct objects;
0 when any of them was not drawn), and the statistic is the weighted mean of the per-pair
values. The interval is the percentile 95% interval over ``n_boot`` resamples.

* :func:`bootstrap_mean` / :func:`paired_difference`: one method / the difference A - B on the
  pairs where both are scored (the bootstrap of the per-pair difference, i.e. the same
  resamples for A and B), with a verdict that states a claim only when the interval excludes 0.
* :func:`headline_table`: per task and headline metric (kp PCK@5, kp PCK@10, part mIoU), every
  method's mean + interval, and the claims ``student_internal - teacher_2d``,
  ``student_internal - pixelnerf_internal`` and ``student_internal - best control``.
* :func:`flat_keys`: the table as flat ``metrics.json`` keys.

Rows are :class:`~pipeline.evaluation.tasks.TaskResult` rows; an optional ``protocol`` key
("official" | "project") selects the rows of one protocol (absent = a single protocol) and an
optional ``dropped`` key (None or a reason) excludes a pair from scoring (it is counted in
``n_dropped``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.evaluation.controls import CONTROL_NAMES

HEADLINE = "student_internal"
CLAIM_BASELINES = ("teacher_2d", "pixelnerf_internal")
CONTROLS = CONTROL_NAMES
METHOD_ORDER = ("student_internal", "student_feature", "teacher_2d", "pixelnerf_internal",
                *CONTROLS)
TASK_ORDER = ("cross_instance_views", "cross_instance", "cross_view", "3d")
METRICS = ("kp PCK@5", "kp PCK@10", "part mIoU")
#: metric -> PCK threshold index (None = mIoU); 2D thresholds 2.5/5/7.5/10 px at 128,
#: 3D 0.025/0.05/0.075/0.1 object units.
METRIC_INDEX: dict[str, int | None] = {"kp PCK@5": 1, "kp PCK@10": 3, "part mIoU": None}
#: task -> (group, dimension) of the metrics.json keys (as in stage.flat_metrics).
TASK_GROUPS = {"cross_view": ("cross_view", "2d"), "cross_instance": ("cross_instance", "2d"),
               "cross_instance_views": ("cross_instance_views", "2d"),
               "3d": ("cross_instance", "3d")}
MIN_PAIRS = 30
MIN_OBJECTS = 5
LEVEL = 0.95


def pair_objects(pair: Mapping[str, Any]) -> tuple[int, ...]:
    """The distinct objects of a pair, in the order ``obj``, ``src``, ``trg``.

    Cross-view ``{obj, src_view, trg_view}`` -> ``(obj,)``; cross-instance ``{src, trg, view}``
    and cross-instance-across-views ``{src, trg, src_view, trg_view}`` -> ``(src, trg)``.
    """
    out: list[int] = []
    for k in ("obj", "src", "trg"):
        if k in pair and int(pair[k]) not in out:
            out.append(int(pair[k]))
    if not out:
        raise ValueError(f"pair {dict(pair)} names no object (keys obj / src / trg)")
    return tuple(out)


def incidence(groups: Sequence[Sequence[int]]) -> tuple[np.ndarray, int]:
    """Per-pair object tuples -> padded object indices.

    Args:
        groups: P tuples of object ids (any hashable ints), one per pair.

    Returns:
        (idx (P, J) int, K): ``idx[p, j]`` is the index in ``[0, K)`` of the pair's j-th
        distinct object, padded with ``K`` (a column of ones in :func:`pair_weights`); K is the
        number of distinct objects.
    """
    ids: dict[int, int] = {}
    rows = [[ids.setdefault(int(o), len(ids)) for o in dict.fromkeys(g)] for g in groups]
    k = len(ids)
    j = max((len(r) for r in rows), default=1)
    idx = np.full((len(rows), j), k, np.int64)
    for p, r in enumerate(rows):
        idx[p, : len(r)] = r
    return idx, k


def multiplicities(n_objects: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, K) int: how often each object is drawn in each resample (rows sum to K)."""
    if n_objects == 0:
        return np.zeros((n_boot, 0), np.int64)
    return rng.multinomial(n_objects, np.full(n_objects, 1.0 / n_objects), size=n_boot)


def pair_weights(mult: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(B, K) multiplicities and (P, J) padded object indices -> (B, P) pair weights
    ``prod_j mult[:, idx[p, j]]`` (the padding index K counts as 1)."""
    ext = np.concatenate([mult.astype(np.float64), np.ones((len(mult), 1))], axis=1)
    w = np.ones((len(mult), len(idx)))
    for j in range(idx.shape[1]):
        w *= ext[:, idx[:, j]]
    return w


def weighted_means(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(B, P) weights, (P,) values -> (B,) weighted means (NaN where a resample keeps no pair)."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights @ values) / np.where(total > 0, total, 1.0), np.nan)


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def is_few(n_pairs: int, n_objects: int) -> bool:
    """Fewer than MIN_PAIRS pairs or MIN_OBJECTS objects: too little to rest a claim on."""
    return n_pairs < MIN_PAIRS or n_objects < MIN_OBJECTS


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Sequence[int]],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Mean over pairs with an object-level bootstrap percentile interval.

    Args:
        values: (P,) per-pair values; NaN = not scored (excluded, with its objects unless
            another scored pair involves them).
        groups: P tuples, the objects of each pair (:func:`pair_objects`).
        n_boot: resamples. seed: numpy Generator seed. level: interval coverage.

    Returns:
        ``{"mean", "ci_lo", "ci_hi", "n_pairs", "n_objects", "few"}`` (None where undefined).
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if len(v) != len(groups):
        raise ValueError(f"{len(v)} values but {len(groups)} object tuples")
    ok = np.isfinite(v)
    v = v[ok]
    idx, k = incidence([g for g, keep in zip(groups, ok, strict=True) if keep])
    out: dict[str, Any] = {"mean": None, "ci_lo": None, "ci_hi": None, "n_pairs": int(len(v)),
                           "n_objects": int(k), "few": is_few(len(v), k)}
    if len(v) == 0:
        return out
    out["mean"] = float(v.mean())
    mult = multiplicities(k, n_boot, np.random.default_rng(seed))
    boot = weighted_means(pair_weights(mult, idx), v)
    boot = boot[np.isfinite(boot)]
    if len(boot):
        a = (1.0 - level) / 2.0
        lo, hi = np.quantile(boot, [a, 1.0 - a])
        out["ci_lo"], out["ci_hi"] = float(lo), float(hi)
    return out


def verdict(ci_lo: float | None, ci_hi: float | None, n_pairs: int, a: str = "A",
            b: str = "B") -> str:
    """``"A > B"`` if the interval is above 0, ``"A < B"`` if below, else ``"not resolved at
    N pairs"`` (also when there is no interval)."""
    if ci_lo is not None and ci_lo > 0:
        return f"{a} > {b}"
    if ci_hi is not None and ci_hi < 0:
        return f"{a} < {b}"
    return f"not resolved at {n_pairs} pairs"


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    groups: Sequence[Sequence[int]],
    n_boot: int = 2000,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
    level: float = LEVEL,
) -> dict[str, Any]:
    """A - B on the same pairs (only those where both are scored), object-level bootstrap.

    Args:
        a, b: (P,) per-pair values of the two methods on the same P pairs (NaN = not scored).
        groups: P object tuples. names: the methods' names for the verdict.

    Returns:
        :func:`bootstrap_mean` of the per-pair difference (``mean`` = mean diff) plus
        ``mean_a``, ``mean_b`` (on the common pairs) and ``verdict``.
    """
    av, bv = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if av.shape != bv.shape:
        raise ValueError(f"a and b differ in length: {av.shape} vs {bv.shape}")
    d = av - bv  # NaN where either is not scored
    out = bootstrap_mean(d, groups, n_boot, seed, level)
    both = np.isfinite(d)
    out["mean_a"] = float(av[both].mean()) if both.any() else None
    out["mean_b"] = float(bv[both].mean()) if both.any() else None
    out["verdict"] = verdict(out["ci_lo"], out["ci_hi"], out["n_pairs"], *names)
    if out.get("few"):  # an interval on a handful of pairs or objects supports no claim
        out["verdict"] = (f"too few to claim ({out['n_pairs']} pairs, {out.get('n_objects')} "
                          "objects)")
    return out


def protocols(results: Mapping[str, Any], primary: str | None = None) -> list[str | None]:
    """The protocols the rows carry: ``[None]`` when no row names one, else the names with
    ``primary`` (default "official") first."""
    first = primary or "official"
    found = {r.get("protocol") for res in results.values() for r in res.rows}
    named = sorted((p for p in found if p is not None), key=lambda p: (p != first, p))
    return named or [None]


def _pair_key(pair: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, pair[k]) for k in pair if not str(k).endswith("_id")))


def metric_values(rows: Iterable[Mapping[str, Any]], metric: str) -> list[float]:
    """Per-row value of ``metric`` (NaN for None / not scored / dropped rows)."""
    index = METRIC_INDEX[metric]
    out = []
    for r in rows:
        v = r.get("miou") if index is None else (r["pck"][index] if len(r["pck"]) > index
                                                 else None)
        out.append(float("nan") if v is None or r.get("dropped") else float(v))
    return out


def aligned_rows(res: Any, protocol: str | None = None) -> tuple[list[tuple], dict[str, list]]:
    """The task's pairs and each method's row per pair (None where the method has none).

    Rows are selected by ``protocol`` (None = every row; rows without the key belong to every
    protocol) and matched across methods by pair (repeated pairs by occurrence).

    Returns:
        (pair keys (P,), {method: P rows or None}); a pair key is ``(sorted pair items, k)``.
    """
    per_method: dict[str, dict[tuple, Mapping]] = {}
    order: dict[tuple, Mapping] = {}
    seen: dict[tuple, int] = {}
    for r in res.rows:
        if protocol is not None and r.get("protocol", protocol) != protocol:
            continue
        base = (_pair_key(r["pair"]), r["method"])
        k = seen.get(base, 0)
        seen[base] = k + 1
        key = (base[0], k)
        per_method.setdefault(r["method"], {})[key] = r
        order.setdefault(key, r["pair"])
    keys = list(order)
    return keys, {m: [rows.get(key) for key in keys] for m, rows in per_method.items()}


def ordered_methods(methods: Iterable[str]) -> list[str]:
    """Known methods in METHOD_ORDER (non-controls first), then unknown ones as given."""
    ms = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in ms] + [m for m in ms if m not in METHOD_ORDER]


def _task_cell(res: Any, metric: str, keys: list[tuple], rows: dict[str, list],
               n_boot: int, seed: int) -> dict[str, Any]:
    index = METRIC_INDEX[metric]
    groups = [pair_objects(dict(k[0])) for k in keys]
    values: dict[str, np.ndarray] = {}
    cell: dict[str, Any] = {"threshold": None if index is None else float(res.thresholds[index]),
                            "methods": {}, "claims": [], "best_control": None}
    for m in ordered_methods(rows):
        mrows = rows[m]
        present = [r for r in mrows if r is not None]
        values[m] = np.array([np.nan if r is None else metric_values([r], metric)[0]
                              for r in mrows], np.float64)
        est = bootstrap_mean(values[m], groups, n_boot, seed)
        est["n_dropped"] = sum(1 for r in present if r.get("dropped"))
        cell["methods"][m] = est
    controls = [(cell["methods"][c]["mean"], c) for c in CONTROLS
                if c in cell["methods"] and cell["methods"][c]["mean"] is not None]
    if controls:
        cell["best_control"] = max(controls, key=lambda t: t[0])[1]
    if HEADLINE in values:
        for kind in (*CLAIM_BASELINES, "best_control"):
            other = cell["best_control"] if kind == "best_control" else kind
            if other is None or other not in values:
                continue
            diff = paired_difference(values[HEADLINE], values[other], groups, n_boot, seed,
                                     (HEADLINE, other))
            cell["claims"].append({"a": HEADLINE, "b": other, "kind": kind, **diff})
    return cell


def headline_table(
    results: Mapping[str, Any],
    protocol: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Headline metrics with object-level bootstrap intervals, and the claims.

    Args:
        results: task -> TaskResult (rows with ``pair``, ``method``, ``pck`` (T,), ``miou``,
            optional ``protocol`` / ``dropped``).
        protocol: the rows' protocol to use (None = all rows; use :func:`protocols`).
        n_boot, seed: bootstrap resamples and seed (each claim bootstraps the per-pair
            difference, i.e. the same object resamples for both methods).

    Returns:
        Plain JSON data (NaN -> None)::

            {"protocol", "n_boot", "seed", "level", "min_pairs", "min_objects",
             "headline", "controls", "tasks": [...], "methods": [...], "few": bool,
             "metrics": {metric: {task: {
                 "threshold": 5.0 | 0.05 | None,
                 "methods": {method: {"mean", "ci_lo", "ci_hi", "n_pairs", "n_objects",
                                      "n_dropped", "few"}},
                 "best_control": name | None,
                 "claims": [{"a", "b", "kind" ("teacher_2d" | "pixelnerf_internal" |
                             "best_control"), "mean", "ci_lo", "ci_hi", "mean_a", "mean_b",
                             "n_pairs", "n_objects", "few", "verdict"}]}}}}
    """
    tasks = [t for t in TASK_ORDER if t in results] + [t for t in results if t not in TASK_ORDER]
    metrics: dict[str, dict[str, Any]] = {m: {} for m in METRICS}
    methods: list[str] = []
    for task in tasks:
        res = results[task]
        keys, rows = aligned_rows(res, protocol)
        if not keys:
            continue
        methods += list(rows)
        for metric in METRICS:
            metrics[metric][task] = _task_cell(res, metric, keys, rows, n_boot, seed)
    few = any(e["few"] for cells in metrics.values() for c in cells.values()
              for e in [*c["methods"].values(), *c["claims"]])
    return {"protocol": protocol, "n_boot": n_boot, "seed": seed, "level": LEVEL,
            "min_pairs": MIN_PAIRS, "min_objects": MIN_OBJECTS, "headline": HEADLINE,
            "controls": list(CONTROLS), "tasks": [t for t in tasks if t in metrics[METRICS[0]]],
            "methods": ordered_methods(methods), "few": few, "metrics": metrics}


def metric_key(task: str, metric: str, threshold: float | None) -> str:
    """``cross_instance`` + ``kp PCK@5`` -> ``cross_instance.kp2d.pck@5``; 3D keys use the
    3D threshold (``cross_instance.kp3d.pck@0.05``), mIoU ``<group>.part<dim>.miou``."""
    group, dim = TASK_GROUPS.get(task, (task, "3d" if task == "3d" else "2d"))
    if METRIC_INDEX[metric] is None:
        return f"{group}.part{dim}.miou"
    return f"{group}.kp{dim}.pck@{threshold:g}"


#: the files ``dvc metrics show`` reads: name -> headline metric (the headline task's claims)
DVC_HEADLINE = {"kp_pck5": "kp PCK@5", "part_miou": "part mIoU"}


def dvc_headline(table: Mapping[str, Any], metric: str) -> dict[str, float | None]:
    """student minus teacher_2d (``teacher``) and minus pixelNeRF (``pnerf``), with 95% interval
    bounds (``_lo``/``_hi``), on the headline (first) task, to 3 decimals: six short keys, so
    ``dvc metrics show`` stays within 120 columns (tests/test_stats.py runs it)."""
    task = table["tasks"][0] if table["tasks"] else None
    cell = table["metrics"].get(metric, {}).get(task, {})
    out: dict[str, float | None] = {}
    for kind, short in (("teacher_2d", "teacher"), ("pixelnerf_internal", "pnerf")):
        claim = next((c for c in cell.get("claims", []) if c["kind"] == kind), None)
        for suffix, key in (("", "mean"), ("_lo", "ci_lo"), ("_hi", "ci_hi")):
            value = _finite_or_none(claim[key]) if claim else None
            out[short + suffix] = None if value is None else round(float(value), 3)
    return out


def flat_keys(table: Mapping[str, Any], category: str,
              protocol_segment: bool = False) -> dict[str, float | str | None]:
    """The headline table as flat metrics.json keys.

    Per task, metric and method ``<cat>.<group>.<kp2d.pck@5|...>.<method>.ci_lo`` / ``.ci_hi``
    (the mean is the stage's ``<cat>.<group>.<metric>.<method>`` key), and per claim
    ``<cat>.<group>.<metric>.diff.<a>-<b>`` (mean diff) with ``.ci_lo``, ``.ci_hi`` and
    ``.verdict``; the best-control claim is ``diff.<a>-best_control`` plus ``.control`` (its
    name). With ``protocol_segment`` every key ends in ``.<protocol>`` (the stage's naming for
    the secondary protocol).
    """
    out: dict[str, float | str | None] = {}
    for metric, cells in table["metrics"].items():
        for task, cell in cells.items():
            base = metric_key(task, metric, cell["threshold"])
            for method, est in cell["methods"].items():
                out[f"{base}.{method}.ci_lo"] = _finite_or_none(est["ci_lo"])
                out[f"{base}.{method}.ci_hi"] = _finite_or_none(est["ci_hi"])
            for c in cell["claims"]:
                b = "best_control" if c["kind"] == "best_control" else c["b"]
                k = f"{base}.diff.{c['a']}-{b}"
                out[k] = _finite_or_none(c["mean"])
                out[f"{k}.ci_lo"] = _finite_or_none(c["ci_lo"])
                out[f"{k}.ci_hi"] = _finite_or_none(c["ci_hi"])
                out[f"{k}.verdict"] = c["verdict"]
                if c["kind"] == "best_control":
                    out[f"{k}.control"] = c["b"]
    if protocol_segment and table.get("protocol"):
        out = {f"{k}.{table['protocol']}": v for k, v in out.items()}
    return {f"{category}.{k}": v for k, v in out.items()}


def _finite_or_none(v: Any) -> float | None:
    return None if v is None else _finite(v)
