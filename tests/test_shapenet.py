"""ShapeNetCore v1/v2 loader: layouts, frames, colours, errors and split selection."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renderers.asset import AssetError, validate_asset
from renderers.shapenet import (
    V1_TO_V2,
    ShapeNetRoot,
    hash_split,
    load_model,
    normalized_json_shift,
    select_models,
    v1_to_v2,
    v1_to_v2_matrix,
    v2_to_v1,
)
from tests import shapenet_fixtures as fx

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLE_ROOT = SHARED / "data/keypointnet-sample/ShapeNetCore.v2"
SAMPLE_ID = "88382b877be91b2a572f8e1c1caad99e"
FNERF_CHAIR_SPLIT = SHARED / "data/featurenerf-splits/03001627.json"
KPN_SPLITS = SHARED / "data/keypointnet-sample/splits"
needs_sample = pytest.mark.skipif(
    not (SAMPLE_ROOT / fx.CHAIR / SAMPLE_ID).is_dir() or not FNERF_CHAIR_SPLIT.is_file(),
    reason=f"real ShapeNet sample / splits not found under {SHARED}")


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(v2 root, v1 root) holding the same three models."""
    base = tmp_path_factory.mktemp("shapenet")
    return (fx.make_tree(base / "ShapeNetCore.v2", "v2"),
            fx.make_tree(base / "ShapeNetCore.v1", "v1"))


def _json(v2_root: Path, model_id: str = fx.MODEL_ID) -> Path:
    return v2_root / fx.CHAIR / model_id / "models" / "model_normalized.json"


# ------------------------------------------------------------------------------ real sample


@needs_sample
def test_real_sample_loads_with_texture_colours() -> None:
    root = ShapeNetRoot(SAMPLE_ROOT)
    assert root.version == "v2" and root.model_ids("chair") == [SAMPLE_ID]
    t0 = time.perf_counter()
    asset = load_model(root, "03001627", SAMPLE_ID)
    assert time.perf_counter() - t0 < 2.0
    assert asset.mesh.faces.shape == (3304, 3) and asset.mesh.vertices.shape == (814, 3)
    assert asset.category == "chair" and asset.part_names == ["back", "seat", "leg", "arm"]
    assert (asset.face_part == -1).all() and len(asset.keypoints) == 0
    assert asset.meta["version"] == "v2" and asset.meta["n_materials"] == 5
    assert asset.meta["textured"] and asset.meta["warnings"] == []
    assert [m["n_faces"] for m in asset.meta["materials"]] == [1522, 302, 868, 612, 0]
    json.dumps(asset.meta)  # JSON-serialisable
    colours = asset.mesh.visual.face_colors
    assert colours.shape == (3304, 4) and (colours[:, 3] == 255).all()
    assert len(np.unique(colours[:, :3], axis=0)) > 50  # sampled from textures, not flat Kd
    validate_asset(asset)  # unit diagonal, real surface: what run_job checks before rendering


@needs_sample
def test_real_splits_select_the_sample_and_report_missing() -> None:
    sel = select_models(SAMPLE_ROOT, "chair", FNERF_CHAIR_SPLIT, split="all")
    assert sel.models == [(SAMPLE_ID, "test")]
    assert len(sel.missing) == 4744 + 677 + 1357 - 1
    assert sel.valid_for_test[SAMPLE_ID] in (True, False)
    sel = select_models(SAMPLE_ROOT, "03001627", KPN_SPLITS / "train.txt", split="train")
    assert sel.models == [(SAMPLE_ID, "train")] and len(sel.missing) > 0
    assert all(s == "train" for _, s in sel.missing)
    assert select_models(SAMPLE_ROOT, "chair", KPN_SPLITS, split="val").models == []


# -------------------------------------------------------------------------------- layouts


def test_root_detects_layout_taxonomy_and_ids(trees: tuple[Path, Path]) -> None:
    v2, v1 = (ShapeNetRoot(p) for p in trees)
    assert (v2.version, v1.version) == ("v2", "v1")
    assert v2.synsets() == [fx.CHAIR] and v2.taxonomy[0]["synsetId"] == fx.CHAIR
    ids = sorted([fx.MODEL_ID, fx.SHORT_ID, fx.UUID_ID])
    assert v2.model_ids("chair") == ids and v1.model_ids(fx.CHAIR) == ids
    assert v2.model_path(fx.CHAIR, fx.UUID_ID).name == "model_normalized.obj"
    assert v1.model_path(fx.CHAIR, fx.UUID_ID).name == "model.obj"
    assert v2.synset_name(fx.CHAIR) == "chair"


def test_v2_fixture_loads_as_is(trees: tuple[Path, Path]) -> None:
    known = fx.known_mesh()
    asset = load_model(trees[0], "chair", fx.UUID_ID)
    np.testing.assert_allclose(asset.mesh.vertices, known.vertices, atol=5e-7)
    np.testing.assert_array_equal(asset.mesh.faces, known.faces)
    assert asset.object_id == fx.UUID_ID and asset.meta["version"] == "v2"
    rgba = asset.mesh.visual.face_colors
    textured = known.face_material == 0
    assert np.abs(rgba[textured, :3].astype(int) - fx.TEXTURE_RGB).max() <= 3
    plain = np.round(np.array(fx.PLAIN_KD) * 255)
    np.testing.assert_array_equal(rgba[~textured, :3], np.broadcast_to(plain, (
        (~textured).sum(), 3)))


def test_v1_and_v2_load_to_the_same_geometry(trees: tuple[Path, Path]) -> None:
    v2_root, v1_root = trees
    a2 = load_model(v2_root, fx.CHAIR, fx.MODEL_ID)
    a1 = load_model(v1_root, fx.CHAIR, fx.MODEL_ID, normalized_json=_json(v2_root))
    assert np.abs(a1.mesh.vertices - a2.mesh.vertices).max() < 1e-6
    np.testing.assert_array_equal(a1.mesh.faces, a2.mesh.faces)
    np.testing.assert_array_equal(a1.mesh.visual.face_colors, a2.mesh.visual.face_colors)
    assert a1.meta["version"] == "v1" and a1.meta["frame"]["centring"] == "model_normalized.json"
    assert a1.meta["warnings"] == []
    shift = normalized_json_shift(_json(v2_root))
    a1s = load_model(v1_root, fx.CHAIR, fx.MODEL_ID, v1_shift=shift)
    np.testing.assert_array_equal(a1s.mesh.vertices, a1.mesh.vertices)
    for asset in (a1, a2, a1s):
        validate_asset(asset)  # both layouts end in the unit-diagonal frame run_job checks


def test_v1_without_json_is_bbox_centred_unit_diagonal(trees: tuple[Path, Path]) -> None:
    known = fx.known_mesh().vertices
    bbox_centred = known - 0.5 * (known.min(axis=0) + known.max(axis=0))
    a1 = load_model(trees[1], fx.CHAIR, fx.SHORT_ID)
    np.testing.assert_allclose(a1.mesh.vertices, bbox_centred, atol=1e-6)
    assert abs(np.linalg.norm(np.ptp(a1.mesh.vertices, axis=0)) - 1) < 1e-9
    mean_centred = load_model(trees[1], fx.CHAIR, fx.SHORT_ID, v1_centring="mean")
    assert np.abs(mean_centred.mesh.vertices.mean(axis=0)).max() < 1e-12


def test_frame_transforms_round_trip() -> None:
    np.testing.assert_array_equal(V1_TO_V2[:3, :3] @ [1, 0, 0], [0, 0, -1])  # front +X -> -Z
    np.testing.assert_array_equal(V1_TO_V2[:3, :3] @ [0, 1, 0], [0, 1, 0])  # up stays +Y
    known = fx.known_mesh()
    info = fx.normalized_json(known, fx.MODEL_ID)
    shift = normalized_json_shift(info)
    v = known.vertices
    np.testing.assert_allclose(shift, -0.5 * (v.min(axis=0) + v.max(axis=0)), atol=1e-12)
    p1 = v2_to_v1(v, shift)
    np.testing.assert_allclose(0.5 * (p1.min(axis=0) + p1.max(axis=0)), 0, atol=1e-12)
    np.testing.assert_allclose(v1_to_v2(p1, shift), v, atol=1e-12)
    m = v1_to_v2_matrix(shift)
    np.testing.assert_allclose(p1 @ m[:3, :3].T + m[:3, 3], v, atol=1e-12)


# --------------------------------------------------------------------------------- colours


def test_face_colour_sampling_wraps_flips_and_multiplies_kd(tmp_path: Path) -> None:
    quad = np.zeros((2, 2, 3), np.uint8)
    quad[0, 0], quad[0, 1], quad[1, 0], quad[1, 1] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (
        255, 255, 255)  # rows: top (v near 1) then bottom
    d = tmp_path / fx.CHAIR / "m1" / "models"
    d.mkdir(parents=True)
    Image.fromarray(quad).save(tmp_path / fx.CHAIR / "m1" / "q.png")
    (d / "model_normalized.mtl").write_text(
        "newmtl t\nKd 1 1 1\nmap_Kd ../q.png\nnewmtl half\nKd 0.5 0.5 0.5\nmap_Kd ../q.png\n"
        "newmtl glass\nKd 0 0 1\nd 0.2\n")
    uv_centres = [(0.25, 0.75), (0.75, 0.75), (0.25, 0.25), (3.75, -1.75), (0.75, 0.75)]
    vt = "".join(f"vt {u - 0.05} {v - 0.05} 0\nvt {u + 0.05} {v - 0.05} 0\nvt {u} {v + 0.05} 0\n"
                 for u, v in uv_centres)
    faces = "".join(f"f  1/{3 * i + 1} 2/{3 * i + 2} 3/{3 * i + 3}\n" for i in range(4))
    (d / "model_normalized.obj").write_text(
        f"mtllib model_normalized.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\n{vt}usemtl t\n{faces}"
        "usemtl half\nf  1/13 2/14 3/15\nusemtl glass\nf  1 2 3\n")
    rgba = load_model(tmp_path, fx.CHAIR, "m1").mesh.visual.face_colors
    expected = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [255, 255, 255, 255],
                [0, 128, 0, 255], [0, 0, 255, 51]]
    np.testing.assert_array_equal(rgba, expected)


def test_missing_texture_and_missing_mtl_fall_back(tmp_path: Path) -> None:
    fx.write_v2_model(tmp_path, fx.CHAIR, "notex", texture=False)
    fx.write_v2_model(tmp_path, fx.CHAIR, "nomtl", mtl=False)
    known = fx.known_mesh()
    a = load_model(tmp_path, fx.CHAIR, "notex")
    assert any("texture0.jpg" in w for w in a.meta["warnings"]) and not a.meta["textured"]
    assert (a.mesh.visual.face_colors[known.face_material == 0] == 255).all()  # Kd 1 1 1
    b = load_model(tmp_path, fx.CHAIR, "nomtl")
    assert any("model_normalized.mtl" in w for w in b.meta["warnings"])
    assert (b.mesh.visual.face_colors[:, :3] == 204).all()  # default grey 0.8


# ---------------------------------------------------------------------------------- errors


def test_clear_errors_for_missing_root_synset_and_model(tmp_path: Path,
                                                        trees: tuple[Path, Path]) -> None:
    with pytest.raises(AssetError, match="does not exist: pass --shapenet-root"):
        ShapeNetRoot(tmp_path / "nowhere")
    (tmp_path / "emptyroot").mkdir()
    with pytest.raises(AssetError, match="is --shapenet-root the ShapeNetCore.v2 folder"):
        ShapeNetRoot(tmp_path / "emptyroot")
    with pytest.raises(AssetError, match=r"no folder .*04379243: is --shapenet-root the "
                                         r"ShapeNetCore\.v2 folder\?"):
        load_model(trees[0], "table", fx.MODEL_ID)
    with pytest.raises(AssetError, match="no model 03001627/deadbeef under"):
        load_model(trees[0], "chair", "deadbeef")
    with pytest.raises(AssetError, match="unknown category 'sofa-bed'"):
        ShapeNetRoot(trees[0]).model_ids("sofa-bed")


def test_corrupt_model_file_raises_asset_error(tmp_path: Path) -> None:
    fx.make_tree(tmp_path, "v2", ids=(fx.MODEL_ID,))
    obj = tmp_path / fx.CHAIR / fx.MODEL_ID / "models" / "model_normalized.obj"
    line = fx.write_corrupt_obj(obj, "index")
    with pytest.raises(AssetError, match=rf"model_normalized\.obj:{line}: face index 912"):
        load_model(tmp_path, fx.CHAIR, fx.MODEL_ID)


# ---------------------------------------------------------------------------------- splits


def test_select_from_featurenerf_json_with_missing_id(tmp_path: Path,
                                                      trees: tuple[Path, Path]) -> None:
    split = fx.write_split_json(tmp_path / f"{fx.CHAIR}.json", train=[fx.UUID_ID, "gone0"],
                                val=[fx.SHORT_ID], test=[fx.MODEL_ID, "gone1"])
    sel = select_models(trees[0], "chair", split, split="train")
    assert sel.models == [(fx.UUID_ID, "train")] and sel.missing == [("gone0", "train")]
    sel = select_models(trees[0], "chair", split, split="all")
    assert sel.models == [(fx.UUID_ID, "train"), (fx.SHORT_ID, "val"), (fx.MODEL_ID, "test")]
    assert sel.missing == [("gone0", "train"), ("gone1", "test")]
    assert sel.valid_for_test == {fx.MODEL_ID: True, "gone1": True}
    assert select_models(trees[0], "chair", tmp_path, "all", n_objects=1).ids == [
        fx.UUID_ID, fx.SHORT_ID, fx.MODEL_ID]  # folder holding <synset>.json; 1 per split
    with pytest.raises(AssetError, match="is for synset 03001627, not 04379243"):
        select_models(trees[0], fx.TABLE, split)


def test_select_from_keypointnet_txt(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    folder = fx.write_split_txts(tmp_path / "splits", {
        "train": [f"{fx.CHAIR}-{fx.MODEL_ID}", f"{fx.TABLE}-{fx.SHORT_ID}", f"{fx.CHAIR}-gone"],
        "val": [f"{fx.CHAIR}-{fx.UUID_ID}"], "test": []})
    sel = select_models(trees[1], fx.CHAIR, folder / "train.txt")
    assert sel.models == [(fx.MODEL_ID, "train")] and sel.missing == [("gone", "train")]
    sel = select_models(trees[1], fx.CHAIR, folder, split="all")
    assert list(sel) == [(fx.MODEL_ID, "train"), (fx.UUID_ID, "val")] and len(sel) == 2
    with pytest.raises(AssetError, match="holds the 'train' split, but split 'val'"):
        select_models(trees[1], fx.CHAIR, folder / "train.txt", split="val")
    (folder / "train.txt").write_text(f"{fx.CHAIR}-{fx.MODEL_ID}\nnot a line\n")
    with pytest.raises(AssetError, match=r"train\.txt:2: expected '<synset>-<model_id>'"):
        select_models(trees[1], fx.CHAIR, folder / "train.txt")


def test_deterministic_split_without_file(trees: tuple[Path, Path]) -> None:
    everything = select_models(trees[0], "chair", split="all")
    assert sorted(everything.ids) == sorted([fx.MODEL_ID, fx.SHORT_ID, fx.UUID_ID])
    assert everything.missing == [] and everything.source == "hash"
    assert all(s == hash_split(m) for m, s in everything)
    capped = select_models(trees[0], "chair", split="all", n_objects=1).models
    assert capped == [next(m for m in everything.models if m[1] == s) for s in
                      ("train", "val", "test") if any(x[1] == s for x in everything.models)]
    with pytest.raises(AssetError, match="unknown split 'dev'"):
        select_models(trees[0], "chair", split="dev")


def test_cap_per_split_keeps_test_objects_of_the_official_pairs() -> None:
    """With a cap, a split file listing thousands of train ids first must still give test
    objects, and the test objects kept are those most used by the evaluation pairs."""
    from renderers.shapenet import cap_per_split

    models = [(f"tr{i}", "train") for i in range(50)] + [("va0", "val")] + [
        (f"te{i}", "test") for i in range(6)]
    counts = {"te4": 9, "te1": 5, "te5": 5}
    kept = cap_per_split(models, 3, counts)
    assert [m for m, s in kept if s == "train"] == ["tr0", "tr1", "tr2"]
    assert [m for m, s in kept if s == "test"] == ["te4", "te1", "te5"]
    assert ("va0", "val") in kept
