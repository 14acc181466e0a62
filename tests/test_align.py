"""Alignment candidates, chamfer choice/rejection, label transfer and annotate_asset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from renderers.annotations import AnnotationSources, PartNetRoot, ShapeNetPartRoot
from renderers.annotations.align import (
    CHAMFER_THRESHOLD,
    V1_TO_V2,
    SurfaceIndex,
    align_part_points,
    align_points,
    annotate_asset,
    apply_matrix,
    candidates_for,
    chamfer,
    mirror_matrix,
    transfer_point_labels,
)
from renderers.asset import AssetError, ShapeAsset
from renderers.shapenet import load_model, v2_to_v1
from tests import annotation_fixtures as af
from tests import shapenet_fixtures as fx


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One v2 chair + every annotation set written from it (plain, mirrored, perturbed)."""
    root = tmp_path_factory.mktemp("align")
    mesh = af.chair_mesh()
    af.write_chair_model(root / "sn", af.MODEL_A, mesh)
    fx.write_v2_model(root / "sn", af.CHAIR, "other0000000000000000000000000000")  # box+leg
    sp = {}
    for name, kw in {"plain": {}, "mirrored": {"mirror": True},
                     "perturbed": {"scale": 0.97, "offset": (0.01, -0.02, 0.005)}}.items():
        sp[name] = root / f"sp-{name}"
        af.write_shapenet_part(sp[name], mesh, af.MODEL_A, "normal", **kw)
    af.write_partnet(root / "pn", mesh, af.MODEL_A, n=3000)
    af.write_partnet(root / "pn-mirrored", mesh, af.MODEL_A, n=3000, mirror=True, stats=False)
    af.write_keypointnet(root / "kpn", {af.MODEL_A: mesh})
    asset = load_model(root / "sn", af.CHAIR, af.MODEL_A)
    return {"root": root, "mesh": mesh, "asset": asset, "sp": sp,
            "index": SurfaceIndex(asset.mesh)}


def face_accuracy(face_part: np.ndarray, mesh: af.PartMesh) -> float:
    return float((face_part == mesh.face_part).mean())


def test_candidates_are_the_documented_transforms(world: dict) -> None:
    mesh = world["mesh"]
    shift = af.v1_shift(mesh, af.MODEL_A)
    p2, _ = af.sample(mesh, 100)
    cands = {c.name: c for c in candidates_for("v1", v1_shift=shift)}
    exact = cands["v1->v2 R + json shift"]
    assert exact.exact and not exact.mirrored
    np.testing.assert_allclose(apply_matrix(exact.matrix, v2_to_v1(p2, shift)), p2, atol=1e-12)
    mirrored = cands["v1->v2 R + json shift [mirrored]"]
    p1m = v2_to_v1(p2, shift) * [1, 1, -1]  # z -> -z in v1
    np.testing.assert_allclose(apply_matrix(mirrored.matrix, p1m), p2, atol=1e-12)
    pn = {c.name: c for c in candidates_for("partnet")}
    rot = pn["PartNet->v1 (z,y,-x), v1->v2 = diag(-1,1,-1)"].matrix
    np.testing.assert_allclose(rot[:3, :3], np.diag([-1.0, 1.0, -1.0]), atol=1e-12)
    np.testing.assert_allclose(rot[:3, :3], V1_TO_V2[:3, :3] @ V1_TO_V2[:3, :3])
    assert np.diag(mirror_matrix("v1"))[:3].tolist() == [1, 1, -1]
    assert np.diag(mirror_matrix("v2"))[:3].tolist() == [-1, 1, 1]
    with pytest.raises(AssetError, match="unknown annotation frame"):
        candidates_for("srn")  # type: ignore[arg-type]


def test_chamfer_is_symmetric_mean() -> None:
    a = np.zeros((1, 3))
    b = np.array([[1.0, 0, 0], [3.0, 0, 0]])
    assert chamfer(a, b) == pytest.approx(0.5 * (1.0 + 2.0))
    assert chamfer(b, a) == chamfer(a, b) and chamfer(b, b) == 0


def test_shapenet_part_exact_alignment_and_labels(world: dict) -> None:
    pp = ShapeNetPartRoot(world["sp"]["plain"]).load("chair", af.MODEL_A)
    al = align_part_points(world["asset"], pp, index=world["index"])
    assert al.name == "v1->v2 R + json shift" and not al.mirrored
    assert al.chamfer < 0.01 and al.mirror_margin > 2.0
    np.testing.assert_allclose(al.matrix[:3, :3], V1_TO_V2[:3, :3])
    fp = transfer_point_labels(world["asset"].mesh, apply_matrix(al.matrix, pp.points), pp.labels)
    assert fp.dtype == np.int16 and face_accuracy(fp, world["mesh"]) > 0.99
    # k-NN voting gives the same answer on this clean fixture
    fp3 = transfer_point_labels(world["asset"].mesh, apply_matrix(al.matrix, pp.points),
                                pp.labels, k=3)
    assert face_accuracy(fp3, world["mesh"]) > 0.99


def test_mirrored_fixture_recovered_by_mirrored_candidate(world: dict) -> None:
    pp = ShapeNetPartRoot(world["sp"]["mirrored"]).load("chair", af.MODEL_A)
    al = align_part_points(world["asset"], pp, index=world["index"])
    assert al.mirrored and al.name == "v1->v2 R + json shift [mirrored]"
    assert al.scores["v1->v2 R + json shift"] > 2 * al.chamfer
    fp = transfer_point_labels(world["asset"].mesh, apply_matrix(al.matrix, pp.points), pp.labels)
    assert face_accuracy(fp, world["mesh"]) > 0.99


def test_perturbed_fixture_needs_the_fit(world: dict) -> None:
    pp = ShapeNetPartRoot(world["sp"]["perturbed"]).load("chair", af.MODEL_A)
    al = align_part_points(world["asset"], pp, index=world["index"])
    assert al.name.endswith("+fit") and not al.mirrored and al.chamfer < 0.01
    assert al.scores["v1->v2 R + json shift"] > CHAMFER_THRESHOLD * 0.5
    fp = transfer_point_labels(world["asset"].mesh, apply_matrix(al.matrix, pp.points), pp.labels)
    assert face_accuracy(fp, world["mesh"]) > 0.99


def test_wrong_matrix_or_model_fails(world: dict) -> None:
    pp = ShapeNetPartRoot(world["sp"]["plain"]).load("chair", af.MODEL_A)
    # v1 points taken for v2 (identity candidates): rotated by 90 degrees about Y
    with pytest.raises(AssetError, match=r"alignment failed for m1: best chamfer 0\.\d+ >= 0\.02 "
                                         r"\(candidates identity"):
        align_points(pp.points, world["index"], candidates_for("v2"), model="m1")
    # the right frame but another model
    other = load_model(world["root"] / "sn", af.CHAIR, "other0000000000000000000000000000")
    with pytest.raises(AssetError, match="alignment failed for chair/other0"):
        align_part_points(other, pp)


@pytest.mark.parametrize("variant", ["official matrix", "no matrix", "mirrored"])
def test_partnet_alignment(world: dict, variant: str) -> None:
    root = world["root"]
    if variant == "mirrored":
        pn = PartNetRoot(root / "pn-mirrored" / "data_v0")
    else:
        pn = PartNetRoot(root / "pn" / "data_v0",
                         matrices=root / "pn" / "matrices.json" if variant != "no matrix" else None)
    pp = pn.load(af.MODEL_A)
    al = align_part_points(world["asset"], pp, index=world["index"])
    expected = {"official matrix": "inverse official PartNet matrix, v1->v2",
                "no matrix": "PartNet->v1 (z,y,-x), v1->v2 = diag(-1,1,-1) +fit",
                "mirrored": "PartNet->v1 (z,y,-x), v1->v2 = diag(-1,1,-1) [mirrored] +fit"}
    assert al.name == expected[variant] and al.mirrored == (variant == "mirrored")
    assert al.chamfer < 0.01
    assert al.scores["PartNet rotation (z,y,-x) applied to v2 directly +fit"] > CHAMFER_THRESHOLD
    fp = transfer_point_labels(world["asset"].mesh, apply_matrix(al.matrix, pp.points), pp.labels)
    assert face_accuracy(fp, world["mesh"]) > 0.99


def test_transfer_distance_cutoff_and_unlabelled(world: dict) -> None:
    mesh = world["mesh"]
    p2, fid = af.sample(mesh, 3000)
    labels = mesh.face_part[fid].astype(np.int64)
    seat_only = np.where(labels == 1, 1, -1)  # other points are unlabelled and ignored
    fp = transfer_point_labels(world["asset"].mesh, p2, seat_only, max_dist=0.05)
    assert set(np.unique(fp)) == {-1, 1}
    assert (fp[mesh.face_part == 1] == 1).all()
    assert (fp[mesh.face_part == 2] == -1).mean() > 0.5  # far leg ends stay unlabelled
    empty = transfer_point_labels(world["asset"].mesh, p2, np.full(len(p2), -1))
    assert (empty == -1).all()


def test_annotate_asset_fills_parts_keypoints_and_meta(world: dict) -> None:
    root = world["root"]
    src = AnnotationSources(keypointnet=root / "kpn", shapenet_part=world["sp"]["mirrored"])
    asset = world["asset"]
    out = src.annotate(asset, af.CHAIR, af.MODEL_A, sets=("keypointnet", "shapenet-part"))
    assert isinstance(out, ShapeAsset) and out.mesh is asset.mesh
    assert out.part_names == ["back", "seat", "leg", "arm"]
    assert face_accuracy(out.face_part, world["mesh"]) > 0.99
    assert len(out.keypoints) == 6 and out.keypoint_ids.tolist() == [1, 3, 5, 7, 9, 11]
    ann = out.meta["annotations"]
    assert ann["shapenet-part"]["mirrored"] and ann["keypointnet"]["candidate"].startswith("id")
    assert ann["errors"] == [] and ann["missing"] == []
    assert np.array(ann["shapenet-part"]["matrix"]).shape == (4, 4)
    json.dumps(out.meta)
    assert (asset.face_part == -1).all()  # the input asset is not modified


def test_annotate_asset_skip_records_alignment_error(world: dict) -> None:
    pp = ShapeNetPartRoot(world["sp"]["plain"]).load("chair", af.MODEL_A)
    pp.frame = "v2"  # wrong frame declared: identity candidates only
    out = annotate_asset(world["asset"], parts=pp, on_error="skip")
    assert (out.face_part == -1).all()
    assert out.meta["annotations"]["errors"][0].startswith("alignment failed for chair/")
    with pytest.raises(AssetError, match="alignment failed"):
        annotate_asset(world["asset"], parts=pp)


def test_v1_shift_read_from_asset_json(world: dict, tmp_path: Path) -> None:
    """Without model_normalized.json only the fitted v1 candidate is available."""
    pp = ShapeNetPartRoot(world["sp"]["plain"]).load("chair", af.MODEL_A)
    asset = world["asset"]
    bare = ShapeAsset(asset.object_id, asset.category, asset.mesh, asset.face_part,
                      asset.part_names, meta={"source": str(tmp_path / "model_normalized.obj")})
    al = align_part_points(bare, pp, index=world["index"])
    assert al.name == "v1->v2 R +fit" and al.chamfer < 0.01


def test_sources_partnet_and_errors(world: dict) -> None:
    root = world["root"]
    src = AnnotationSources(partnet=root / "pn" / "data_v0",
                            partnet_matrices=root / "pn" / "matrices.json")
    out = src.annotate(world["asset"], af.CHAIR, af.MODEL_A, sets=("partnet",))
    assert out.part_names == ["back", "seat", "leg", "arm"]
    assert face_accuracy(out.face_part, world["mesh"]) > 0.99
    info = out.meta["annotations"]["partnet"]
    assert info["candidate"] == "inverse official PartNet matrix, v1->v2"
    assert info["source_meta"]["anno_id"] == "38037"
    with pytest.raises(AssetError, match="'keypointnet' requested but its root is not set"):
        src.annotate(world["asset"], af.CHAIR, af.MODEL_A, sets=("keypointnet",))
    with pytest.raises(AssetError, match="unknown annotation sets"):
        src.annotate(world["asset"], af.CHAIR, af.MODEL_A, sets=("coco",))
    skipped = src.annotate(world["asset"], af.CHAIR, af.MODEL_A,
                           sets=("keypointnet", "partnet"), on_error="skip")
    assert "not set" in skipped.meta["annotations"]["errors"][0]
    assert face_accuracy(skipped.face_part, world["mesh"]) > 0.99
