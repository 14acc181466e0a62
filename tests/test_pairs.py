"""Evaluation pairs: seeded, deterministic, test split only; official split json mapping."""

import json

from pipeline.evaluation.pairs import (
    CrossInstancePair,
    CrossInstanceViewPair,
    CrossViewPair,
    eval_view_subset,
    make_pairs,
    pairs_from_split,
    sample_cross_instance,
    sample_cross_instance_views,
    sample_cross_view,
)

IDS = [f"obj{i}" for i in range(6)]
TEST = [1, 3, 4]


def test_seeded_pairs_are_deterministic_and_valid():
    a = sample_cross_view(TEST, 10, 25, seed=3)
    assert a == sample_cross_view(TEST, 10, 25, seed=3)
    assert a != sample_cross_view(TEST, 10, 25, seed=4)
    assert len(a) == 25 and len(set(a)) == 25
    for p in a:
        assert p.obj in TEST and p.src_view != p.trg_view and 0 <= p.trg_view < 10
    b = sample_cross_instance(TEST, 10, 25, seed=3)
    assert b == sample_cross_instance(TEST, 10, 25, seed=3)
    assert len(set(b)) == 25
    for p in b:
        assert p.src in TEST and p.trg in TEST and p.src != p.trg and 0 <= p.view < 10


def test_all_pairs_when_n_pairs_exceeds_their_number():
    cv = sample_cross_view([2, 5], 3, 1000, seed=0)
    assert len(cv) == 2 * 3 * 2 and len(set(cv)) == len(cv)
    ci = sample_cross_instance([2, 5], 3, 1000, seed=0)
    assert sorted(ci, key=lambda p: (p.src, p.trg, p.view)) == [
        CrossInstancePair(s, t, v) for s, t in ((2, 5), (5, 2)) for v in range(3)
    ]
    assert sample_cross_instance([2], 3, 10, seed=0) == []


def test_split_json_maps_ids_and_counts_dropped(tmp_path):
    split = {
        "cross_inst_pairs": [
            {"src": "obj1", "trg": "obj3", "view": 2},
            {"src": "obj1", "trg": "missing", "view": 2},  # absent
            {"src": "obj0", "trg": "obj3", "view": 1},  # obj0 is not a test object
            {"src": "obj4", "trg": "obj1", "view": 49},  # view out of range
        ],
        "cross_view_pairs": [
            {"model_id": "obj4", "src_view": 0, "trg_view": 5},
            {"model_id": "nope", "src_view": 0, "trg_view": 5},
        ],
    }
    ps = pairs_from_split(split, IDS, TEST, n_views=10)
    assert ps.source == "split-json"
    assert ps.cross_instance == [CrossInstancePair(1, 3, 2)]
    assert ps.cross_view == [CrossViewPair(4, 0, 5)]
    assert ps.dropped == {"absent": 2, "not_test": 1, "view": 1}
    path = tmp_path / "03001627.json"
    path.write_text(json.dumps(split))
    chosen = make_pairs(IDS, TEST, 10, n_pairs=5, seed=0, split_json=path)
    assert chosen.source == "split-json" and chosen.cross_view == ps.cross_view
    named = chosen.to_dict(IDS)
    assert named["cross_instance"][0] == {"src": 1, "trg": 3, "view": 2, "src_id": "obj1",
                                          "trg_id": "obj3"}


def test_split_json_without_matching_objects_falls_back_to_seeded(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"cross_inst_pairs": [{"src": "x", "trg": "y", "view": 0}]}))
    ps = make_pairs(IDS, TEST, 10, n_pairs=4, seed=1, split_json=path)
    assert ps.source == "seeded" and "no pair" in ps.note
    assert len(ps.cross_view) == 4 and len(ps.cross_instance) == 4
    assert ps.cross_view == make_pairs(IDS, TEST, 10, n_pairs=4, seed=1).cross_view


def test_cross_instance_across_views_pairs_differ_in_object_and_view():
    pairs = sample_cross_instance_views(TEST, [0, 5, 9], 40, seed=1)
    assert pairs == sample_cross_instance_views(TEST, [0, 5, 9], 40, seed=1)
    assert len(set(pairs)) == 36  # all of 3 x 2 ordered objects x 3 x 2 ordered views
    for p in pairs:
        assert isinstance(p, CrossInstanceViewPair)
        assert p.src != p.trg and p.src_view != p.trg_view
        assert {p.src_view, p.trg_view} <= {0, 5, 9}
    assert sample_cross_instance_views([1], 5, 10, seed=0) == []


def test_view_subset_restricts_every_seeded_protocol():
    views = eval_view_subset(50, 8)
    assert len(views) == 8 and views[0] == 0 and views[-1] == 49
    assert eval_view_subset(50, 0) == list(range(50))
    ps = make_pairs(IDS, TEST, 50, 30, seed=0, eval_views=8)
    used = ({p.view for p in ps.cross_instance} | {p.src_view for p in ps.cross_view}
            | {p.trg_view for p in ps.cross_view} | {p.src_view for p in ps.cross_instance_views})
    assert used <= set(views) and len(ps.cross_instance_views) == 30
