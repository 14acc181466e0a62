"""PartNet data_v0: hierarchy, level-k labels (formats.md §4.5), our names, round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from renderers.annotations.partnet import (
    PartNetRoot,
    leaf_level_labels,
    parse_tree,
    read_anno,
    read_level_file,
    read_merging_mapping,
)
from renderers.asset import AssetError
from renderers.shapenet import v1_to_v2
from tests import annotation_fixtures as af

N = 3000  # not 10000: the loader must not hard-code it


@pytest.fixture(scope="module")
def mesh() -> af.PartMesh:
    return af.chair_mesh()


@pytest.fixture(scope="module")
def partnet(tmp_path_factory: pytest.TempPathFactory, mesh: af.PartMesh) -> Path:
    root = tmp_path_factory.mktemp("partnet")
    af.write_partnet(root, mesh, af.MODEL_A, anno_id="38037", n=N)
    return root


def truth(mesh: af.PartMesh) -> np.ndarray:
    """(N,) our part label of each fixture point."""
    _, fid = af.sample(mesh, N, seed=7)
    return mesh.face_part[fid]


def test_tree_and_level_labels(partnet: Path) -> None:
    anno = partnet / "data_v0" / "38037"
    tree = parse_tree(json.loads((anno / "result.json").read_text()))
    assert tree.leaves == {3, 6, 10, 11, 12, 13, 16}
    assert tree.paths[3] == "chair/chair_back/back_surface/back_single_surface"
    assert tree.objs[16] == ["new-0"]
    stats = partnet / "stats"
    mapping = read_merging_mapping(stats / "merging_hierarchy_mapping" / "Chair.txt")
    lvl1 = read_level_file(stats / "after_merging_label_ids" / "Chair-level-1.txt")
    assert lvl1 == [p for _, p in af.LEVEL1]
    # 1-based line index: head 1, back 2, arm 3, base 4, seat 5
    got = leaf_level_labels(tree, lvl1, mapping)
    assert got == {3: 2, 6: 5, 10: 4, 11: 4, 12: 4, 13: 4, 16: 3}
    lvl2 = read_level_file(stats / "after_merging_label_ids" / "Chair-level-2.txt")
    got2 = leaf_level_labels(tree, lvl2, mapping)
    # the arm bar is only found through the merging mapping (raw path has arm_sofa_style)
    assert got2 == {3: 1, 6: 4, 10: 3, 11: 3, 12: 3, 13: 3, 16: 2}
    assert leaf_level_labels(tree, lvl2, {})[16] == 0  # without the mapping: "other"


def test_load_level1_our_names(partnet: Path, mesh: af.PartMesh) -> None:
    root = PartNetRoot(partnet / "data_v0")  # stats found next to data_v0
    assert root.stats == (partnet / "stats").resolve()
    pp = root.load(af.MODEL_A)
    assert pp.frame == "partnet" and pp.dataset == "partnet" and len(pp.points) == N
    assert pp.part_names == ["back", "seat", "leg", "arm"]  # chair_head also -> back
    np.testing.assert_array_equal(pp.labels, truth(mesh))
    assert pp.source_names[0] == "other" and pp.meta["anno_id"] == "38037"
    assert set(np.unique(pp.source_labels)) == {2, 3, 4, 5}


def test_load_level2_dataset_names(partnet: Path, mesh: af.PartMesh) -> None:
    pp = PartNetRoot(partnet / "data_v0").load(af.MODEL_A, level=2)
    assert pp.part_names[1] == "chair/chair_arm/arm_horizontal_bar"
    leg = truth(mesh) == 2
    assert (pp.labels[leg] == 2).all() and (pp.labels[~leg] != 2).all()
    with pytest.raises(AssetError, match="has no level 3"):
        PartNetRoot(partnet / "data_v0").load(af.MODEL_A, level=3)


def test_without_stats_builtin_level1(tmp_path: Path, mesh: af.PartMesh) -> None:
    data = af.write_partnet(tmp_path, mesh, af.MODEL_B, anno_id="7", n=200, stats=False)
    root = PartNetRoot(data)
    assert root.stats is None and root.anno_ids(af.MODEL_B) == ["7"]  # index from meta.json
    pp = root.load(af.MODEL_B)
    _, fid = af.sample(mesh, 200, seed=7)
    np.testing.assert_array_equal(pp.labels, mesh.face_part[fid])
    assert pp.meta["builtin_level_table"] and pp.matrix is None
    with pytest.raises(AssetError, match="needs the stats folder"):
        root.load(af.MODEL_B, level=2)
    with pytest.raises(AssetError, match="no PartNet annotation for model nope"):
        root.load("nope")


def test_official_matrix_round_trip(partnet: Path, mesh: af.PartMesh) -> None:
    root = PartNetRoot(partnet / "data_v0", matrices=partnet / "matrices.json")
    pp = root.load(af.MODEL_A)
    np.testing.assert_allclose(pp.matrix, af.PARTNET_MATRIX)
    p1 = (pp.points - pp.matrix[:3, 3]) @ np.linalg.inv(pp.matrix[:3, :3]).T
    p2, _ = af.sample(mesh, N, seed=7)
    np.testing.assert_allclose(v1_to_v2(p1, af.v1_shift(mesh, af.MODEL_A)), p2, atol=2e-6)
    # PartNet = v2 turned 180 degrees about Y (up to scale and offset), formats.md §0
    flipped = (pp.points - pp.points.mean(0)) * [-1, 1, -1]
    centred = p2 - p2.mean(0)
    np.testing.assert_allclose(flipped / af.PARTNET_SCALE, centred, atol=2e-6)


def test_malformed(tmp_path: Path, partnet: Path) -> None:
    src = partnet / "data_v0" / "38037"
    anno = tmp_path / "data_v0" / "1"
    shutil.copytree(src, anno)
    lab = anno / "point_sample" / f"label-{N}.txt"
    lab.write_text("3\n" * (N - 1) + "99\n")
    with pytest.raises(AssetError, match=r"ids \[99\] are not nodes"):
        read_anno(anno)
    lab.write_text("3\n" * (N - 1))
    with pytest.raises(AssetError, match=f"has {N - 1} labels but .* has {N} points"):
        read_anno(anno)
    (anno / "meta.json").write_text(json.dumps({"model_cat": "Chair"}))
    with pytest.raises(AssetError, match="meta.json: field model_id is missing"):
        read_anno(anno)
    (anno / "meta.json").write_text(json.dumps({"model_id": "x", "model_cat": "Chair"}))
    tree = json.loads((src / "result.json").read_text())
    tree[0]["children"][0]["id"] = "2"
    (anno / "result.json").write_text(json.dumps(tree))
    with pytest.raises(AssetError, match=r"result.json: node \[0\]\.children\[0\] \(chair_back\) "
                                         "field id must be an integer"):
        read_anno(anno)
    (anno / "result.json").write_text((src / "result.json").read_text())
    shutil.rmtree(anno / "point_sample")
    (anno / "point_sample").mkdir()
    with pytest.raises(AssetError, match="no pts-<N>.txt"):
        read_anno(anno)
