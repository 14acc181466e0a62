"""Fixed evaluation pairs over the TEST split (official: ``cross_inst_pairs`` /
``cross_view_pairs`` of ``assets/splits/<synset>.json``).

Pairs hold store indices (not object ids). Seeded pairs are sampled without replacement from
every possible pair (all of them when ``n_pairs`` is at least their number), so a seed fixes
the list; official pairs keep their file order, minus the pairs whose objects the store lacks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CrossViewPair:
    """One object seen from two different views."""

    obj: int
    src_view: int
    trg_view: int


@dataclass(frozen=True)
class CrossInstancePair:
    """Two different objects seen from the same view (test views are shared by all objects)."""

    src: int
    trg: int
    view: int


@dataclass(frozen=True)
class CrossInstanceViewPair:
    """Two different objects seen from two different views (cross-instance across views): pixel
    position cannot carry a correspondence here, 3D-consistent features can."""

    src: int
    trg: int
    src_view: int
    trg_view: int


@dataclass
class PairSet:
    """The pairs of one evaluation.

    Attributes:
        cross_view, cross_instance: the pairs. cross_instance_views: cross-instance pairs
            across views (always seeded: the official json has none).
        source: "seeded" or "split-json".
        dropped: how many official pairs were dropped and why (absent object, other split, view
            out of range); empty for seeded pairs.
        note: why a split json was not used, if one was given.
    """

    cross_view: list[CrossViewPair]
    cross_instance: list[CrossInstancePair]
    source: str = "seeded"
    dropped: dict[str, int] = field(default_factory=dict)
    note: str = ""
    cross_instance_views: list[CrossInstanceViewPair] = field(default_factory=list)

    def to_dict(self, object_ids: list[str] | None = None) -> dict[str, Any]:
        """Plain data (for pairs.json); with ``object_ids`` the pairs also name the objects."""

        def named(p: Any) -> dict[str, Any]:
            d = asdict(p)
            if object_ids is not None:
                for k in ("obj", "src", "trg"):
                    if k in d:
                        d[f"{k}_id"] = object_ids[d[k]]
            return d

        return {
            "source": self.source,
            "dropped": self.dropped,
            "note": self.note,
            "cross_view": [named(p) for p in self.cross_view],
            "cross_instance": [named(p) for p in self.cross_instance],
            "cross_instance_views": [named(p) for p in self.cross_instance_views],
        }


def _choose(total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct codes in ``[0, total)`` in draw order (all, ascending, if n >= total)."""
    if n >= total:
        return np.arange(total)
    return rng.choice(total, size=n, replace=False)


def view_list(views: int | Sequence[int]) -> list[int]:
    """A view count ``V`` -> ``[0, V)``; a sequence of view indices -> itself."""
    return list(range(views)) if isinstance(views, int) else [int(v) for v in views]


def eval_view_subset(n_views: int, k: int) -> list[int]:
    """``k`` views spread evenly over ``[0, n_views)`` (all when ``k <= 0`` or ``k >= n_views``).

    Seeded pairs drawn from a few views share their feature maps, so a map is rendered once for
    many pairs (the evaluation cost is the number of distinct maps, not of pairs)."""
    if k <= 0 or k >= n_views:
        return list(range(n_views))
    return sorted({int(v) for v in np.linspace(0, n_views - 1, k).round()})


def sample_cross_view(
    objects: list[int], n_views: int | Sequence[int], n_pairs: int, seed: int
) -> list[CrossViewPair]:
    """Seeded cross-view pairs (obj, src_view != trg_view).

    Args:
        objects: store indices of the test objects (in store order).
        n_views: V views per object, or the view indices to draw from. n_pairs: how many (all
            if fewer exist). seed: RNG seed.
    """
    views = view_list(n_views)
    nv = len(views)
    per_obj = nv * (nv - 1)
    total = len(objects) * per_obj
    if total == 0 or n_pairs <= 0:
        return []
    codes = _choose(total, n_pairs, np.random.default_rng([seed, 1]))
    pairs = []
    for c in codes.tolist():
        o, rest = divmod(c, per_obj)
        s, t = divmod(rest, nv - 1)
        pairs.append(CrossViewPair(objects[o], views[s], views[t + int(t >= s)]))
    return pairs


def sample_cross_instance(
    objects: list[int], n_views: int | Sequence[int], n_pairs: int, seed: int
) -> list[CrossInstancePair]:
    """Seeded cross-instance pairs (src != trg, shared view), ordered (src, trg) pairs."""
    views = view_list(n_views)
    n = len(objects)
    per_src = (n - 1) * len(views)
    total = n * per_src
    if total == 0 or n_pairs <= 0:
        return []
    codes = _choose(total, n_pairs, np.random.default_rng([seed, 2]))
    pairs = []
    for c in codes.tolist():
        s, rest = divmod(c, per_src)
        t, v = divmod(rest, len(views))
        pairs.append(CrossInstancePair(objects[s], objects[t + int(t >= s)], views[v]))
    return pairs


def sample_cross_instance_views(
    objects: list[int], n_views: int | Sequence[int], n_pairs: int, seed: int
) -> list[CrossInstanceViewPair]:
    """Seeded cross-instance pairs across views (src != trg, src_view != trg_view)."""
    views = view_list(n_views)
    n, nv = len(objects), len(views)
    per_src = (n - 1) * nv * (nv - 1)
    total = n * per_src
    if total == 0 or n_pairs <= 0:
        return []
    codes = _choose(total, n_pairs, np.random.default_rng([seed, 4]))
    pairs = []
    for c in codes.tolist():
        s, rest = divmod(c, per_src)
        t, rest = divmod(rest, nv * (nv - 1))
        a, b = divmod(rest, nv - 1)
        pairs.append(CrossInstanceViewPair(objects[s], objects[t + int(t >= s)], views[a],
                                           views[b + int(b >= a)]))
    return pairs


def pairs_from_split(
    split: dict[str, Any],
    object_ids: list[str],
    test_objects: list[int],
    n_views: int,
    n_pairs: int | None = None,
) -> PairSet:
    """Official pairs mapped onto a store.

    Args:
        split: the parsed ``<synset>.json`` (keys ``cross_inst_pairs`` [{src, trg, view}],
            ``cross_view_pairs`` [{model_id, src_view, trg_view}]).
        object_ids: the store's object ids (index = store index).
        test_objects: store indices usable for evaluation (complete, test split).
        n_views: views in the store. n_pairs: keep the first ``n_pairs`` surviving pairs.

    Returns:
        A PairSet with ``source="split-json"``; ``dropped`` counts pairs whose object is not
        in the store (``absent``), not a usable test object (``not_test``) or whose view index
        is out of range (``view``).
    """
    where = {oid: i for i, oid in enumerate(object_ids)}
    usable = set(test_objects)
    dropped = {"absent": 0, "not_test": 0, "view": 0}

    def resolve(oid: str) -> int | None:
        if oid not in where:
            dropped["absent"] += 1
            return None
        if where[oid] not in usable:
            dropped["not_test"] += 1
            return None
        return where[oid]

    cross_view: list[CrossViewPair] = []
    for p in split.get("cross_view_pairs", []):
        o = resolve(str(p["model_id"]))
        if o is None:
            continue
        s, t = int(p["src_view"]), int(p["trg_view"])
        if max(s, t) >= n_views:
            dropped["view"] += 1
            continue
        cross_view.append(CrossViewPair(o, s, t))
    cross_inst: list[CrossInstancePair] = []
    for p in split.get("cross_inst_pairs", []):
        s, t = resolve(str(p["src"])), resolve(str(p["trg"]))
        if s is None or t is None:
            continue
        if int(p["view"]) >= n_views:
            dropped["view"] += 1
            continue
        cross_inst.append(CrossInstancePair(s, t, int(p["view"])))
    if n_pairs is not None:
        cross_view, cross_inst = cross_view[:n_pairs], cross_inst[:n_pairs]
    return PairSet(cross_view, cross_inst, "split-json", dropped)


def make_pairs(
    object_ids: list[str],
    test_objects: list[int],
    n_views: int,
    n_pairs: int,
    seed: int,
    split_json: str | Path | None = None,
    eval_views: int = 0,
) -> PairSet:
    """Official pairs when ``split_json`` matches the store (at least one pair survives),
    otherwise seeded pairs (with ``note`` saying why the json was not used). Seeded pairs draw
    their views from :func:`eval_view_subset` ``(n_views, eval_views)``. Cross-instance pairs
    across views are always seeded (the official json has none)."""
    views = eval_view_subset(n_views, eval_views)
    across = sample_cross_instance_views(test_objects, views, n_pairs, seed)
    note = ""
    if split_json is not None:
        split = json.loads(Path(split_json).read_text())
        official = pairs_from_split(split, object_ids, test_objects, n_views, n_pairs)
        if official.cross_view or official.cross_instance:
            official.cross_instance_views = across
            return official
        note = (f"{split_json}: no pair's objects are test objects of this store "
                f"(dropped {official.dropped}); using seeded pairs")
    return PairSet(
        sample_cross_view(test_objects, views, n_pairs, seed),
        sample_cross_instance(test_objects, views, n_pairs, seed),
        "seeded",
        {},
        note,
        across,
    )
