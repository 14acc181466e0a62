"""KeypointNet: json records, pcd reader, keypoints rebuilt on the mesh (fixture + real sample)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from renderers.annotations import AnnotationSources, annotate_asset
from renderers.annotations.keypointnet import (
    KeypointAnnotations,
    KeypointNetRoot,
    annotation_name,
    keypoints_on_mesh,
    read_annotations,
    read_pcd,
)
from renderers.asset import AssetError
from renderers.shapenet import load_model
from tests import annotation_fixtures as af

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLE = SHARED / "data/keypointnet-sample"
SAMPLE_ID = "88382b877be91b2a572f8e1c1caad99e"
FACE_INDEX = r"keypoints\[0\]\.mesh_info\.face_index"
needs_sample = pytest.mark.skipif(not (SAMPLE / "annotations/chair.json").is_file(),
                                  reason=f"real KeypointNet sample not found at {SAMPLE}")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two v2 chairs (A: the fixture chair, B: stretched) and their KeypointNet files."""
    root = tmp_path_factory.mktemp("kpn")
    meshes = {af.MODEL_A: af.chair_mesh(), af.MODEL_B: af.chair_mesh(scale_z=1.3)}
    for mid, m in meshes.items():
        af.write_chair_model(root / "ShapeNetCore.v2", mid, m)
    ann = af.write_keypointnet(root / "KeypointNet", meshes)
    return {"root": root, "kpn": root / "KeypointNet", "ann": ann, "meshes": meshes,
            "sn": root / "ShapeNetCore.v2"}


def surface_distance(mesh: trimesh.Trimesh, pts: np.ndarray) -> np.ndarray:
    return trimesh.proximity.closest_point(mesh, pts)[1]


def test_annotation_names() -> None:
    for name in ("motorbike", "Motorbike", "03790512", "motorcycle"):
        assert annotation_name(name) == "motorcycle"
    assert annotation_name("vessel") == annotation_name("04530566") == "vessel"
    assert annotation_name("chair") == "chair"
    with pytest.raises(AssetError, match="KeypointNet has no category 'lamp'"):
        annotation_name("lamp")


def test_fixture_keypoints_round_trip(tree: dict) -> None:
    root = KeypointNetRoot(tree["kpn"])
    for mid in (af.MODEL_A, af.MODEL_B):
        rec = root.record("chair", mid)
        asset = load_model(tree["sn"], af.CHAIR, mid)
        pts, ids, err = keypoints_on_mesh(rec, asset.mesh, return_error=True)
        assert err < 1e-5
        np.testing.assert_allclose(pts, rec.xyz, atol=1e-5)
        assert surface_distance(asset.mesh, pts).max() < 1e-5
        np.testing.assert_array_equal(ids, [1, 3, 5, 7, 9, 11])
        # the three ways of locating a keypoint agree: xyz, pcd point, barycentric point
        pcd = root.pcd("chair", mid)
        assert pcd is not None and pcd.xyz.shape == (2048, 3)
        for k, p in zip(rec.keypoints, pts, strict=True):
            np.testing.assert_allclose(pcd.xyz[k.point_index], k.xyz, atol=1e-6)
            np.testing.assert_allclose(pcd.xyz[k.point_index], p, atol=1e-5)


def test_wrong_mesh_names_model_and_keypoint(tree: dict) -> None:
    rec = KeypointNetRoot(tree["kpn"]).record("chair", af.MODEL_A)
    other = load_model(tree["sn"], af.CHAIR, af.MODEL_B)  # same face count, other geometry
    with pytest.raises(AssetError, match=rf"model {af.MODEL_A}: keypoint \d+ \(semantic_id"):
        keypoints_on_mesh(rec, other.mesh)
    small = trimesh.creation.box()
    with pytest.raises(AssetError, match=rf"model {af.MODEL_A}: keypoint 0 .* has face_index"):
        keypoints_on_mesh(rec, small)


def _write(tmp_path: Path, records: object, raw: str | None = None) -> Path:
    f = tmp_path / "annotations" / "chair.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(raw if raw is not None else json.dumps(records))
    return f


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda k: k["mesh_info"].pop("face_index"), FACE_INDEX),
        (lambda k: k["mesh_info"].update(face_index="12"), FACE_INDEX),
        (lambda k: k.update(xyz=[0.1, 0.2]), r"keypoints\[0\]\.xyz"),
        (lambda k: k.pop("semantic_id"), r"keypoints\[0\]\.semantic_id"),
        (lambda k: k.update(semantic_id=True), r"keypoints\[0\]\.semantic_id"),
        (lambda k: k["mesh_info"].update(face_uv=[0.5, "a", 0.5]),
         r"keypoints\[0\]\.mesh_info\.face_uv"),
        (lambda k: k.update(pcd_info={"point_index": None}), r"keypoints\[0\]\.pcd_info"),
        (lambda k: k.pop("mesh_info"), r"keypoints\[0\]\.mesh_info"),
    ],
)
def test_malformed_keypoint_names_file_model_field(tree: dict, tmp_path: Path, edit, field: str
                                                   ) -> None:
    records = json.loads(tree["ann"].read_text())
    edit(records[0]["keypoints"][0])
    f = _write(tmp_path, records)
    ann = KeypointAnnotations(f)
    ann.record(af.MODEL_B)  # other records stay usable
    with pytest.raises(AssetError, match=rf"{f}: model {af.MODEL_A}: field {field}"):
        ann.record(af.MODEL_A)
    with pytest.raises(AssetError, match=field):
        read_annotations(f)


def test_malformed_records_and_files(tree: dict, tmp_path: Path) -> None:
    records = json.loads(tree["ann"].read_text())
    bad = [dict(records[0]), dict(records[1])]
    bad[0]["keypoints"] = {"not": "a list"}
    f = _write(tmp_path, bad)
    with pytest.raises(AssetError, match=rf"model {af.MODEL_A}: field keypoints must be a list"):
        KeypointAnnotations(f).record(af.MODEL_A)
    del bad[1]["model_id"]
    with pytest.raises(AssetError, match=r"field \[1\]\.model_id is missing"):
        KeypointAnnotations(_write(tmp_path, bad))
    f = _write(tmp_path, None, raw='[{"class_id": "03001627", ')
    with pytest.raises(AssetError, match=f"{f}: not valid json"):
        KeypointAnnotations(f)
    with pytest.raises(AssetError, match="has no keypoints for model nope"):
        KeypointAnnotations(tree["ann"]).record("nope")


def test_pcd_reader_checks(tmp_path: Path) -> None:
    xyz = np.array([[0.1, 0.2, 0.3], [-0.5, 0.25, 0.125]])
    rgb = np.array([[255, 0, 7], [1, 2, 3]])
    f = tmp_path / "a.pcd"
    f.write_text(af.pcd_text(xyz, rgb))
    cloud = read_pcd(f)
    np.testing.assert_allclose(cloud.xyz, xyz, atol=1e-6)
    np.testing.assert_array_equal(cloud.rgb, rgb)
    f.write_text(af.pcd_text(xyz, rgb).replace("POINTS 2", "POINTS 3"))
    with pytest.raises(AssetError, match="POINTS 3 but 2 data lines"):
        read_pcd(f)
    f.write_text(af.pcd_text(xyz, rgb).replace("DATA ascii", "DATA binary"))
    with pytest.raises(AssetError, match="only ascii"):
        read_pcd(f)
    packed = np.array([(255 << 16) | 7], dtype=np.uint32).view(np.float32)[0]
    f.write_text("FIELDS x y z rgb\nTYPE F F F F\nPOINTS 1\nDATA ascii\n"
                 f"0 0 0 {float(packed)!r}\n")
    assert read_pcd(f).rgb.tolist() == [[255, 0, 7]]


def test_sources_annotate_keypoints(tree: dict) -> None:
    asset = load_model(tree["sn"], af.CHAIR, af.MODEL_A)
    out = AnnotationSources(keypointnet=tree["kpn"]).annotate(asset, af.CHAIR, af.MODEL_A,
                                                               sets=("keypointnet",))
    rec = KeypointNetRoot(tree["kpn"]).record("chair", af.MODEL_A)
    np.testing.assert_allclose(out.keypoints, rec.xyz, atol=1e-5)
    np.testing.assert_array_equal(out.keypoint_ids, rec.semantic_ids)
    info = out.meta["annotations"]["keypointnet"]
    assert info["candidate"].startswith("identity") and not info["mirrored"]
    assert info["verified_on"] == "pcd" and info["chamfer"] < 0.02
    assert out.face_part.tolist() == asset.face_part.tolist()  # parts untouched
    json.dumps(out.meta)
    missing = AnnotationSources(keypointnet=tree["kpn"]).annotate(asset, af.CHAIR, "absent",
                                                                   sets=("keypointnet",))
    assert missing.meta["annotations"]["missing"] == ["keypointnet"]


def test_mirrored_pcd_is_rejected(tree: dict, tmp_path: Path) -> None:
    """A pcd in the mirrored frame makes the identity check fail loudly."""
    af.write_keypointnet(tmp_path, {af.MODEL_A: tree["meshes"][af.MODEL_A]}, mirror_pcd=True)
    root = KeypointNetRoot(tmp_path)
    asset = load_model(tree["sn"], af.CHAIR, af.MODEL_A)
    with pytest.raises(AssetError, match="not the identity"):
        annotate_asset(asset, keypoints=root.record("chair", af.MODEL_A),
                       keypoint_pcd=root.pcd("chair", af.MODEL_A).xyz)


@needs_sample
def test_real_sample_keypoints_on_surface() -> None:
    root = KeypointNetRoot(SAMPLE)
    assert len(root.annotations("chair")) == 999
    rec = root.record("03001627", SAMPLE_ID)
    asset = load_model(SAMPLE / "ShapeNetCore.v2", "03001627", SAMPLE_ID)
    pts, ids, err = keypoints_on_mesh(rec, asset.mesh, return_error=True)
    assert err < 1e-5
    assert surface_distance(asset.mesh, pts).max() < 1e-5
    assert ids.tolist() == [0, 1, 2, 3, 4, 5, 17, 18, 19, 20]
    pcd = root.pcd("chair", SAMPLE_ID)
    assert pcd.xyz.shape == (2048, 3)
    for k in rec.keypoints:
        np.testing.assert_allclose(pcd.xyz[k.point_index], k.xyz, atol=1e-6)
        assert tuple(pcd.rgb[k.point_index]) == k.rgb
    out = annotate_asset(asset, keypoints=rec, keypoint_pcd=pcd.xyz)
    info = out.meta["annotations"]["keypointnet"]
    scores = info["scores"]
    assert info["candidate"] == "identity (KeypointNet = v2)" and info["chamfer"] < 0.01
    assert scores["identity (KeypointNet = v2) [mirrored]"] > 2 * info["chamfer"]
    np.testing.assert_array_equal(out.keypoint_ids, ids)


@needs_sample
def test_real_annotation_file_validates() -> None:
    records = read_annotations(SAMPLE / "annotations/chair.json")
    assert len(records) == 999
    n = sum(len(r.keypoints) for r in records.values())
    assert n == 12060
    assert {int(i) for r in records.values() for i in r.semantic_ids} <= set(range(21))
