"""Mesh folders (OBJ, GLB/glTF, PLY, OFF) -> ShapeAsset: loading, sidecars, normalisation,
clear errors, and that the asset renders with the project's ray-cast renderer."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from renderers.asset import AssetError, validate_asset
from renderers.cameras import CameraRig, fixed_eval_poses, intrinsics
from renderers.mesh_folder import axes_rotation, list_meshes, load_mesh_asset, mesh_splits
from renderers.shapenet import hash_split

OBJ = """# two boxes: a seat (red) and a leg (blue), z-up
mtllib two.mtl
v 0 0 1
v 2 0 1
v 2 1 1
v 0 1 1
v 0 0 1.2
v 2 0 1.2
v 2 1 1.2
v 0 1 1.2
v 0.9 0.4 0
v 1.1 0.4 0
v 1.1 0.6 0
v 0.9 0.6 0
v 50 50 50
g seat
usemtl red
f 1 2 3 4
f 5 8 7 6
f 1 5 6 2
f 3 7 8 4
g leg
usemtl blue
f 9 10 2
f  10 11 3
l 1 2
f 11 12 4
"""
MTL = "newmtl red\nKd 1 0 0\nnewmtl blue\nKd 0 0 1\n"


def _write_obj(folder: Path, name: str = "two") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.obj").write_text(OBJ)
    (folder / "two.mtl").write_text(MTL)
    return folder / f"{name}.obj"


def _empty_glb(path: Path) -> None:
    """A valid GLB 2.0 container whose scene has one node and no mesh."""
    doc = json.dumps({"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}],
                      "nodes": [{"name": "empty"}]}).encode()
    doc += b" " * (-len(doc) % 4)
    body = struct.pack("<I4s", len(doc), b"JSON") + doc
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body)


def _scene_glb(path: Path) -> trimesh.Scene:
    seat = trimesh.creation.box((1.0, 0.2, 1.0))
    seat.visual.face_colors = (200, 30, 30, 255)
    leg = trimesh.creation.cylinder(0.05, 1.0, sections=8)
    leg.visual.face_colors = (30, 30, 200, 255)
    scene = trimesh.Scene()
    scene.add_geometry(seat, node_name="seat_node", geom_name="seat_mesh",
                       transform=trimesh.transformations.translation_matrix([0, 0.5, 0]))
    for k, x in enumerate((-0.4, 0.4)):
        t = trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0])
        t[:3, 3] = (x, 0.0, 0.4)
        scene.add_geometry(leg, node_name=f"leg_{k}", geom_name="leg_mesh", transform=t)
    scene.export(path)
    return scene


def _renders(asset) -> float:
    """Mean foreground fraction of 4 raycast views of ``asset`` at 32 px."""
    from renderers.raycast import RaycastRenderer

    rig = CameraRig(image_size=32, n_views=4)
    views = RaycastRenderer().render(asset, intrinsics(32, rig.fov_deg), fixed_eval_poses(rig), 32)
    return float((views.alpha > 0).mean())


def test_obj_labels_keypoints_up_axis_and_render(tmp_path: Path) -> None:
    path = _write_obj(tmp_path / "m")
    np.save(tmp_path / "m" / "two.labels.npy", np.array([1] * 8 + [0] * 3))  # 4 quads + 3 tris
    kps = [{"id": 3, "xyz": [2, 1, 1.2], "name": "seat_corner"}, {"id": 0, "xyz": [0.9, 0.4, 0]}]
    (tmp_path / "m" / "two.keypoints.json").write_text(json.dumps(kps))
    asset = load_mesh_asset(path, "stool", up="+z")
    validate_asset(asset)
    assert asset.category == "stool" and asset.object_id == "two"
    assert len(asset.mesh.faces) == 11 and asset.face_part.dtype == np.int16
    np.testing.assert_array_equal(asset.face_part, [1] * 8 + [0] * 3)
    assert asset.part_names == ["part_0", "part_1"]
    # unit diagonal, bbox-centred; the z-up source turned to +Y up (leg below the seat)
    v = np.asarray(asset.mesh.vertices)
    assert np.linalg.norm(np.ptp(v, axis=0)) == pytest.approx(1.0)
    np.testing.assert_allclose((v.min(0) + v.max(0)) / 2, 0, atol=1e-12)
    assert v[8:, 1].max() < v[:8, 1].min()
    # keypoints follow the same map, in file order with their ids
    m = np.asarray(asset.meta["normalisation"]["object_from_mesh"])
    np.testing.assert_array_equal(asset.keypoint_ids, [3, 0])
    np.testing.assert_allclose(asset.keypoints, np.array([k["xyz"] for k in kps]) @ m[:3, :3].T
                               + m[:3, 3], atol=1e-6)
    np.testing.assert_allclose(asset.keypoints[0], v[6], atol=1e-6)  # vertex 7 of the OBJ
    assert asset.meta["keypoint_names"] == ["seat_corner", None]
    assert asset.meta["keypoints_surface_distance_max"] < 1e-6
    assert asset.meta["unreferenced_vertices_removed"] == 1  # the stray "v 50 50 50"
    np.testing.assert_allclose(m[:3, :3] / asset.meta["normalisation"]["scale"],
                               axes_rotation("+z"))
    # per-face colours from the mtl (red seat, blue leg)
    fc = asset.mesh.visual.face_colors
    assert tuple(fc[0, :3]) == (255, 0, 0) and tuple(fc[-1, :3]) == (0, 0, 255)
    assert _renders(asset) > 0.02


def test_glb_scene_parts_yaml_transforms_and_colours(tmp_path: Path) -> None:
    path = tmp_path / "chair.glb"
    _scene_glb(path)
    (tmp_path / "parts.yaml").write_text("seat: [seat_node]\nleg: ['leg_*']\nback: [nothing]\n")
    asset = load_mesh_asset(path, "chair", object_id="c1")
    validate_asset(asset)
    n_seat, n_leg = 12, len(trimesh.creation.cylinder(0.05, 1.0, sections=8).faces)
    assert len(asset.mesh.faces) == n_seat + 2 * n_leg
    # sorted node names: leg_0, leg_1, seat_node
    np.testing.assert_array_equal(asset.face_part, [1] * (2 * n_leg) + [0] * n_seat)
    assert asset.part_names == ["seat", "leg", "back"]
    assert any("'nothing'" in w for w in asset.meta["warnings"])
    assert asset.meta["n_geometries"] == 3 and "per-face" in asset.meta["colour_mode"]
    fc = asset.mesh.visual.face_colors
    assert tuple(fc[0, :3]) == (30, 30, 200) and tuple(fc[-1, :3]) == (200, 30, 30)
    # node transforms applied: legs translated to x = -+0.4 and rotated to stand along y
    v = np.asarray(asset.mesh.vertices)
    scale = asset.meta["normalisation"]["scale"]
    leg0, leg1 = (v[asset.mesh.faces[k * n_leg:(k + 1) * n_leg]].reshape(-1, 3) for k in (0, 1))
    seat = v[asset.mesh.faces[2 * n_leg:]].reshape(-1, 3)
    assert leg1[:, 0].mean() - leg0[:, 0].mean() == pytest.approx(0.8 * scale)
    assert np.ptp(leg0[:, 1]) == pytest.approx(1.0 * scale)
    assert np.ptp(leg0[:, 2]) < 0.11 * scale
    assert seat[:, 1].mean() - leg0[:, 1].mean() == pytest.approx(0.5 * scale)
    # glTF's front is +Z: front="+z" turns the asset 180 degrees about Y
    turned = load_mesh_asset(path, "chair", front="+z")
    np.testing.assert_allclose(turned.mesh.vertices[:, [0, 2]], -v[:, [0, 2]], atol=1e-9)
    assert _renders(asset) > 0.02


def test_ply_off_single_mesh_keep_visual_and_list_meshes(tmp_path: Path) -> None:
    box = trimesh.creation.box((2.0, 1.0, 0.5))
    box.visual.vertex_colors = np.tile([10, 200, 10, 255], (len(box.vertices), 1))
    (tmp_path / "scans" / "s1").mkdir(parents=True)
    box.export(tmp_path / "scans" / "s1" / "model.ply")
    trimesh.creation.icosphere(1).export(tmp_path / "ball.off")
    _write_obj(tmp_path)
    np.save(tmp_path / "two.labels.npy", np.zeros(11, np.int64))  # sidecars are not meshes
    assert [(i, p.name) for i, p in list_meshes(tmp_path)] == [
        ("ball", "ball.off"), ("scans__s1__model", "model.ply"), ("two", "two.obj")]
    ply = load_mesh_asset(tmp_path / "scans" / "s1" / "model.ply", "scan", "s1")
    validate_asset(ply)
    assert ply.mesh.visual.kind == "vertex" and (ply.face_part == -1).all()
    assert ply.part_names == [] and len(ply.keypoints) == 0
    off = load_mesh_asset(tmp_path / "ball.off", "ball")
    validate_asset(off)
    (tmp_path / "splits.json").write_text(json.dumps({"test": ["two"]}))
    assert mesh_splits(tmp_path, ["two", "ball"]) == {"two": "test", "ball": hash_split("ball")}
    (tmp_path / "two.glb").write_bytes(b"")
    with pytest.raises(AssetError, match="same object id 'two'"):
        list_meshes(tmp_path)


def _textured(colour: tuple[int, int, int]) -> trimesh.Trimesh:
    from PIL import Image

    m = trimesh.creation.icosphere(1, 0.3)
    uv = np.random.default_rng(0).random((len(m.vertices), 2))
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.new("RGB", (4, 4),
                                                                              colour))
    m.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return m


def test_textures_kept_for_one_geometry_and_baked_for_several(tmp_path: Path) -> None:
    one = trimesh.Scene()
    one.add_geometry(_textured((10, 220, 30)), node_name="ball")
    one.export(tmp_path / "one.glb")
    asset = load_mesh_asset(tmp_path / "one.glb", "ball")
    validate_asset(asset)
    assert isinstance(asset.mesh.visual, trimesh.visual.TextureVisuals) and asset.meta["textured"]
    two = trimesh.Scene()
    two.add_geometry(_textured((10, 220, 30)), node_name="a")
    two.add_geometry(_textured((200, 20, 90)), node_name="b",
                     transform=trimesh.transformations.translation_matrix([1, 0, 0]))
    two.export(tmp_path / "two.glb")
    asset = load_mesh_asset(tmp_path / "two.glb", "balls")
    validate_asset(asset)
    fc = asset.mesh.visual.face_colors
    n = len(fc) // 2
    assert (np.abs(fc[:n, :3].astype(int) - (10, 220, 30)) <= 1).all()
    assert (np.abs(fc[n:, :3].astype(int) - (200, 20, 90)) <= 1).all()
    json.dumps(asset.meta)  # JSON-serialisable
    assert _renders(asset) > 0.01


def test_broken_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.glb"
    _empty_glb(empty)
    with pytest.raises(AssetError, match=r"empty.glb: no triangle geometry"):
        load_mesh_asset(empty, "x")
    path = _write_obj(tmp_path)
    np.save(tmp_path / "two.labels.npy", np.zeros(10, np.int64))
    with pytest.raises(AssetError, match=r"two.labels.npy: 10 labels for 11 faces"):
        load_mesh_asset(path, "x")
    with pytest.raises(AssetError, match=r"\(F,\) integer"):
        load_mesh_asset(path, "x", labels=np.full(11, 0.5))
    (tmp_path / "junk.glb").write_bytes(b"glTF not really a binary gltf file")
    with pytest.raises(AssetError, match=r"cannot read mesh .*junk.glb"):
        load_mesh_asset(tmp_path / "junk.glb", "x")
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(cloud)
    with pytest.raises(AssetError, match=r"cloud.ply: no triangle geometry; it holds only"):
        load_mesh_asset(cloud, "x")
    (tmp_path / "two.keypoints.json").write_text(json.dumps([{"id": 1, "xyz": [0, 1]}]))
    with pytest.raises(AssetError, match=r"two.keypoints.json: keypoint 0"):
        load_mesh_asset(path, "x", labels=np.zeros(11, np.int64))
    with pytest.raises(AssetError, match="does not exist"):
        load_mesh_asset(tmp_path / "nope.obj", "x")
    with pytest.raises(AssetError, match="up must be one of"):
        load_mesh_asset(path, "x", up="up")


def test_render_stage_renders_a_mesh_folder_with_a_free_category(tmp_path):
    """`render --source meshes` through the real CLI: every file becomes one object."""
    from click.testing import CliRunner

    from cache.render_store import RenderStore
    from pipeline.cli import main

    root = tmp_path / "meshes"
    root.mkdir()
    for i in range(3):
        box = trimesh.creation.box((0.5 + 0.1 * i, 0.3, 0.4))
        box.export(root / f"thing{i}.{'glb' if i % 2 else 'obj'}")
    out = tmp_path / "mugs.zarr"
    result = CliRunner().invoke(main, [
        "render", "--source", "meshes", "--mesh-root", str(root), "--category", "mug",
        "--objects", "3", "--views", "4", "--size", "32", "--points", "64", "--renderer",
        "raycast", "--out", str(out), "--report-dir", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    store = RenderStore(out)
    assert store.object_ids == ["thing0", "thing1", "thing2"] and store.attrs["category"] == "mug"
    assert (store.read("alpha", 0) > 0).any()
