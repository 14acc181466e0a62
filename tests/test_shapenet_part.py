"""ShapeNet-Part: the three releases, label tables, split files and round trips to v2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from renderers.annotations.shapenet_part import (
    N_GLOBAL,
    OFFSETS,
    PART_NAMES,
    SEG_CLASSES,
    ShapeNetPartRoot,
    category_name,
    global_label,
    local_label,
    map_to_category,
    read_normal_txt,
    read_split_json,
    read_synsetoffset2category,
)
from renderers.asset import AssetError
from renderers.shapenet import v1_to_v2
from tests import annotation_fixtures as af

RELEASES = ("v0", "benchmark", "normal")
PLANE_ID = "cf71f5442c4120db37678474be485ca"


@pytest.fixture(scope="module")
def mesh() -> af.PartMesh:
    return af.chair_mesh()


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory, mesh: af.PartMesh) -> dict[str, Path]:
    out = {}
    for rel in RELEASES:
        root = tmp_path_factory.mktemp(rel)
        af.write_shapenet_part(root, mesh, af.MODEL_A, rel)
        af.write_shapenet_part_meta(root, {"train": [(af.CHAIR, af.MODEL_A)],
                                           "test": [("02691156", PLANE_ID)]})
        out[rel] = root
    return out


def test_global_label_table() -> None:
    """PointNet++ ``seg_classes`` (yanx27 ShapeNetDataLoader.py), formats.md §3.3."""
    expected = {"Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 7], "Car": [8, 9, 10, 11],
                "Chair": [12, 13, 14, 15], "Earphone": [16, 17, 18], "Guitar": [19, 20, 21],
                "Knife": [22, 23], "Lamp": [24, 25, 26, 27], "Laptop": [28, 29],
                "Motorbike": [30, 31, 32, 33, 34, 35], "Mug": [36, 37], "Pistol": [38, 39, 40],
                "Rocket": [41, 42, 43], "Skateboard": [44, 45, 46], "Table": [47, 48, 49]}
    assert SEG_CLASSES == expected and N_GLOBAL == 50
    assert PART_NAMES["Chair"] == ("back", "seat", "leg", "arm")
    assert global_label("chair", 1) == 12 and global_label("03790512", 6) == 35
    assert local_label(49) == ("Table", 3) and local_label(14) == ("Chair", 3)
    assert category_name("motorcycle") == "Motorbike" and category_name("03001627") == "Chair"
    assert OFFSETS["Car"] == 8
    with pytest.raises(AssetError):
        local_label(50)
    with pytest.raises(AssetError, match="ShapeNet-Part has no category"):
        category_name("bottle")


def test_map_to_category_appends_unmatched() -> None:
    labels, names = map_to_category(np.array([0, 1, 2, -1]), ["top", "leg", "drawer"],
                                    {"top": "top", "leg": "leg"}, ["top", "leg", "support"])
    assert names == ["top", "leg", "support", "drawer"]
    assert labels.tolist() == [0, 1, 3, -1]


@pytest.mark.parametrize("release", RELEASES)
def test_release_round_trip(roots: dict[str, Path], mesh: af.PartMesh, release: str) -> None:
    pp = ShapeNetPartRoot(roots[release]).load("chair", af.MODEL_A)
    p1, _, local, p2 = af.shapenet_part_points(mesh, af.MODEL_A, 2500)
    assert pp.frame == "v1" and pp.dataset == "shapenet-part" and pp.synset == af.CHAIR
    assert pp.part_names == ["back", "seat", "leg", "arm"]
    np.testing.assert_array_equal(pp.labels, local - 1)
    np.testing.assert_array_equal(pp.source_labels, local - 1)
    back = v1_to_v2(pp.points, af.v1_shift(mesh, af.MODEL_A))
    np.testing.assert_allclose(back, p2, atol=2e-5)  # .pts has 5 decimals
    assert pp.meta["release"] == {"v0": "pts+seg", "benchmark": "pts+seg",
                                  "normal": "normal"}[release]


def test_normal_release_stores_global_float_labels(roots: dict[str, Path]) -> None:
    f = roots["normal"] / af.CHAIR / f"{af.MODEL_A}.txt"
    first = f.read_text().splitlines()[0].split()
    assert len(first) == 7 and first[6].endswith(".000000")
    _, normals, glob = read_normal_txt(f)
    assert set(np.unique(glob)) <= {12, 13, 14, 15}
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-4)


def test_v0_part_masks(roots: dict[str, Path], mesh: af.PartMesh) -> None:
    """Without the expert_verified labels, the per-part 0/1 mask folders are used."""
    root = roots["v0"]
    ev = root / af.CHAIR / "expert_verified" / "points_label" / f"{af.MODEL_A}.seg"
    text = ev.read_text()
    ev.unlink()
    try:
        pp = ShapeNetPartRoot(root).load("chair", af.MODEL_A)
        _, _, local, _ = af.shapenet_part_points(mesh, af.MODEL_A, 2500)
        np.testing.assert_array_equal(pp.labels, local - 1)
        assert pp.meta["release"] == "pts+part masks"
    finally:
        ev.write_text(text)


def test_split_files_and_category_file(roots: dict[str, Path]) -> None:
    root = ShapeNetPartRoot(roots["benchmark"])
    assert root.split("train") == [(af.CHAIR, af.MODEL_A)]
    assert root.split("test") == [("02691156", PLANE_ID)]
    assert root.split("val") == []
    raw = (roots["benchmark"] / "train_test_split" / "shuffled_train_file_list.json").read_text()
    assert raw == f'["shape_data/{af.CHAIR}/{af.MODEL_A}"]'
    cats = read_synsetoffset2category(roots["benchmark"] / "synsetoffset2category.txt")
    assert cats == {"Airplane": "02691156", "Chair": "03001627"}
    with pytest.raises(AssetError, match="unknown split"):
        root.split("dev")


def test_dataset_names_option(roots: dict[str, Path]) -> None:
    pp = ShapeNetPartRoot(roots["normal"]).load(af.CHAIR, af.MODEL_A, names="dataset")
    assert pp.part_names == list(PART_NAMES["Chair"])


def test_malformed_files(tmp_path: Path, mesh: af.PartMesh) -> None:
    af.write_shapenet_part(tmp_path, mesh, af.MODEL_A, "benchmark", n=50)
    seg = tmp_path / af.CHAIR / "points_label" / f"{af.MODEL_A}.seg"
    seg.write_text("1\n" * 49)
    with pytest.raises(AssetError, match="has 49 labels but .* has 50 points"):
        ShapeNetPartRoot(tmp_path).load("chair", af.MODEL_A)
    seg.write_text("1\n" * 49 + "7\n")
    with pytest.raises(AssetError, match="local labels must be 1..4"):
        ShapeNetPartRoot(tmp_path).load("chair", af.MODEL_A)
    txt = tmp_path / af.CHAIR / f"{af.MODEL_A}.txt"
    txt.write_text("0.1 0.2 0.3 0 1 0 47.000000\n")
    with pytest.raises(AssetError, match=r"outside Chair's range \[12, 13, 14, 15\]"):
        ShapeNetPartRoot(tmp_path).load("chair", af.MODEL_A)
    txt.write_text("0.1 0.2 0.3 0 1 0\n")
    with pytest.raises(AssetError, match=f"{txt}:1: expected 7 numbers"):
        ShapeNetPartRoot(tmp_path).load("chair", af.MODEL_A)
    bad = tmp_path / "split.json"
    bad.write_text('["shape_data/03001627"]')
    with pytest.raises(AssetError, match="entry 0 .* is not 'shape_data/<synset>/<id>'"):
        read_split_json(bad)
    with pytest.raises(AssetError, match="no ShapeNet-Part annotation for 03001627/absent"):
        ShapeNetPartRoot(tmp_path).load("chair", "absent")
