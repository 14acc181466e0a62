"""SRN and DVR/NMR importers on fixtures in their true on-disk layout (formats.md 7.1, 7.2).

Each fixture draws a red dot at the projection of a known 3D point (computed with the source's
own formula, written here from formats.md), so the tests check the camera convention by
projecting through the imported K / c2w with ``renderers.cameras.project``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renderers.asset import AssetError
from renderers.cameras import project
from renderers.importers import ImportedObject, dvr, load_source, srn

DOT = np.array([0.12, -0.08, 0.1])  # a 3D point in the source world, drawn as a red dot
RNG_POINTS = np.random.default_rng(0).uniform(-0.4, 0.4, (20, 3))


def _look_at_cv(eye: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV c2w (x right, y down, z forward) at ``eye`` looking at the origin."""
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, np.cross(z, x), z, eye
    return c2w


def _draw(size: int, centre_uv: np.ndarray, dot_uv: np.ndarray, bg: int) -> np.ndarray:
    """(size, size, 3) image: background ``bg``, a grey disc of radius size/4 at ``centre_uv``,
    a 3x3 red dot at ``dot_uv`` (continuous pixel coordinates)."""
    img = np.full((size, size, 3), bg, np.uint8)
    v, u = np.mgrid[:size, :size] + 0.5
    img[(u - centre_uv[0]) ** 2 + (v - centre_uv[1]) ** 2 < (size / 4) ** 2] = (90, 120, 150)
    j, i = int(dot_uv[0]), int(dot_uv[1])
    img[i - 1:i + 2, j - 1:j + 2] = (230, 10, 10)
    return img


# ------------------------------------------------------------------------------------- SRN


def _srn_project(points: np.ndarray, pose: np.ndarray, f: float, cx: float, cy: float
                 ) -> np.ndarray:
    """SRN's convention (formats.md 7.1): pose = OpenCV cam2world, u = f x/z + cx."""
    cam = (np.linalg.inv(pose) @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    return np.c_[f * cam[:, 0] / cam[:, 2] + cx, f * cam[:, 1] / cam[:, 2] + cy]


def make_srn(root: Path, prefix: str = "cars", split: str = "train", ids: tuple[str, ...] = ("a1",),
             n_views: int = 4, size: int = 32, nested: bool = False, five_lines: bool = False,
             flag: str = "0", write_w2c: bool = False) -> list[np.ndarray]:
    """An SRN split folder (``flag``: the 5th intrinsics line; ``write_w2c``: pose files hold
    world-to-camera); returns the camera-to-world poses of the last object."""
    base = root / f"{prefix}_{split}"
    if nested:
        base = base / f"{prefix}_2.0_{split}"
    f, c = 525 / 512 * size, size / 2
    dist = 2.0 if "chair" in prefix else 1.3
    poses = []
    for oid in ids:
        d = base / oid
        (d / "rgb").mkdir(parents=True)
        (d / "pose").mkdir()
        lines = [f"{f:.6f} {c:.6f} {c:.6f} 0.", "0. 0. 0.", "1.", f"{size} {size}"]
        (d / "intrinsics.txt").write_text("\n".join(lines + ([flag] if five_lines else [])) + "\n")
        poses = []
        for k in range(n_views):
            az, el = 2 * np.pi * k / n_views + 0.3, np.deg2rad(20 + 10 * k)
            eye = dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
            pose = _look_at_cv(eye, np.array([0.0, 0.0, 1.0]))  # SRN world is z-up
            poses.append(pose)
            written = np.linalg.inv(pose) if write_w2c else pose
            (d / "pose" / f"{k:06d}.txt").write_text(" ".join(f"{x:.8f}" for x in
                                                             written.ravel()))
            uv = _srn_project(np.stack([np.zeros(3), DOT]), pose, f, c, c)
            Image.fromarray(_draw(size, uv[0], uv[1], 255)).save(d / "rgb" / f"{k:06d}.png")
    return poses


def check_image_only_object(obj: ImportedObject, v: int, size: int) -> None:
    """An imported object of an image-only source: v views of size x size RGB, alpha, K and
    c2w with the store's dtypes, no geometry or annotations, a valid object and JSON-able meta."""
    assert obj.rgb.shape == (v, size, size, 3) and obj.rgb.dtype == np.uint8
    assert obj.alpha.shape == (v, size, size) and obj.alpha.dtype == np.uint8
    assert obj.K.shape == (v, 3, 3) and obj.K.dtype == np.float32
    assert obj.c2w.shape == (v, 4, 4) and obj.c2w.dtype == np.float32
    for name in ("depth", "part", "kp3d", "kp_id", "kp2d", "kp_visible", "points", "point_part"):
        assert getattr(obj, name) is None
    assert obj.validate() is obj
    json.dumps(obj.meta)  # JSON-serialisable
    assert obj.validate() is obj
    json.dumps(obj.meta)  # JSON-serialisable
    assert (obj.rgb[obj.alpha == 0] == 0).all()  # over black


def _check_dot(obj: ImportedObject, dot_obj: np.ndarray) -> None:
    """The red dot sits where the imported camera projects its 3D point, in every view."""
    for v in range(obj.n_views):
        uv, z = project(dot_obj[None], obj.K[v].astype(np.float64), obj.c2w[v].astype(np.float64))
        assert z[0] > 0
        j, i = np.floor(uv[0]).astype(int)
        r, g, b = obj.rgb[v, i, j].astype(int)
        assert r > 150 and g < 80 and obj.alpha[v, i, j] == 255, (v, uv, obj.rgb[v, i, j])


def test_srn_round_trip_shapes_and_alpha(tmp_path: Path) -> None:
    poses = make_srn(tmp_path, ids=("b2", "a1"))
    make_srn(tmp_path, split="test", ids=("t1",), n_views=3)
    assert srn.list_objects(tmp_path, "car") == [("a1", "train"), ("b2", "train"),
                                                 ("t1", "test")]
    objs = list(srn.iter_objects(tmp_path, "car", split="train", object_ids=["a1"]))
    assert [o.object_id for o in objs] == ["a1"]
    obj = objs[0]
    check_image_only_object(obj, 4, 32)
    r = srn.R_SRN_TO_OBJECT
    pts_obj = RNG_POINTS @ r.T
    for v, pose in enumerate(poses):
        want = _srn_project(RNG_POINTS, pose, 525 / 16, 16, 16)
        got, _ = project(pts_obj, obj.K[v].astype(np.float64), obj.c2w[v].astype(np.float64))
        np.testing.assert_allclose(got, want, atol=1e-3)
    _check_dot(obj, DOT @ r.T)
    # alpha: 255 on the (non-white) disc and dot, 0 on the white background
    assert obj.alpha[0, 0, 0] == 0 and obj.alpha.mean() > 20
    cam = obj.meta["camera"]
    assert cam["distance"] == pytest.approx(1.3, abs=1e-5)
    assert (cam["near"], cam["far"], cam["fits_project_near_far"]) == (0.8, 1.8, True)
    assert obj.meta["near"] == 0.8 and obj.meta["far"] == 1.8
    assert "approximate" in obj.meta["alpha"]
    np.testing.assert_allclose(obj.meta["object_from_source"],
                               np.block([[r, np.zeros((3, 1))], [np.zeros((1, 3)), 1]]))


def test_srn_chairs_nesting_five_lines_rig_scale_resize_and_protocol(tmp_path: Path) -> None:
    poses = make_srn(tmp_path, prefix="chairs", nested=True, five_lines=True, size=32)
    assert srn.list_objects(tmp_path, "chair") == [("a1", "train")]
    # pixelNeRF-style path <dir>/chairs, the stage's objects= protocol with another split
    (obj,) = srn.iter_objects(tmp_path / "chairs", "chair", objects=[("a1", "val")], size=16,
                              world_scale="rig", views=2)
    assert obj.split == "val" and obj.meta["source_split"] == "train"
    check_image_only_object(obj, 2, 16)
    cam = obj.meta["camera"]
    s = 1.3 / 2.0
    assert cam["distance"] == pytest.approx(1.3, abs=1e-5)
    assert cam["near"] == pytest.approx(1.25 * s) and cam["far"] == pytest.approx(2.75 * s)
    assert cam["fits_project_near_far"]
    kept = [0, 3]  # views=2 of 4: evenly spaced
    assert obj.meta["views"] == ["000000.png", "000003.png"]
    m = np.asarray(obj.meta["object_from_source"])
    pts_obj = RNG_POINTS @ m[:3, :3].T + m[:3, 3]
    for v, k in enumerate(kept):
        want = _srn_project(RNG_POINTS, poses[k], 525 / 16, 16, 16) / 2  # 32 -> 16 px
        got, _ = project(pts_obj, obj.K[v].astype(np.float64), obj.c2w[v].astype(np.float64))
        np.testing.assert_allclose(got, want, atol=1e-3)
    # unscaled chairs do not fit the project's 0.8/1.8
    (raw,) = srn.iter_objects(tmp_path, "chair")
    assert not raw.meta["camera"]["fits_project_near_far"]
    assert srn.scan_layout(tmp_path, "chair", [("a1", "train")]) == {
        "n_views": 4, "image_size": 32, "n_keypoint_slots": 0, "n_points": 0,
        "n_kp_candidates": 0}


@pytest.mark.parametrize(("flag", "w2c", "note"), [
    ("1", True, "inverted (world2cam flag)"),
    ("1", False, "despite the world2cam flag"),  # pixelNeRF ignores the flag
    ("0", True, "inverted: the files hold world-to-camera"),
])
def test_srn_world2cam_flag(tmp_path: Path, flag: str, w2c: bool, note: str) -> None:
    poses = make_srn(tmp_path, five_lines=True, flag=flag, write_w2c=w2c)
    obj = srn.load_object(tmp_path, "car", "a1")
    assert note in obj.meta["poses"]
    np.testing.assert_allclose(obj.c2w[:, :3, 3], np.stack(poses)[:, :3, 3] @ srn.R_SRN_TO_OBJECT.T,
                               atol=1e-5)
    _check_dot(obj, DOT @ srn.R_SRN_TO_OBJECT.T)


def test_srn_registered_and_layout_mismatch(tmp_path: Path) -> None:
    make_srn(tmp_path, ids=("a1",), n_views=4)
    make_srn(tmp_path, split="test", ids=("t1",), n_views=3)
    src = load_source("srn")
    assert src.iter_objects is srn.iter_objects and src.scan_layout is srn.scan_layout
    with pytest.raises(AssetError, match="different view counts: 3 \\(t1\\), 4 \\(a1\\)"):
        srn.scan_layout(tmp_path, "car", srn.list_objects(tmp_path, "car"))
    assert srn.scan_layout(tmp_path, "car", srn.list_objects(tmp_path, "car"),
                           views=3)["n_views"] == 3


@pytest.mark.parametrize(("fmt", "accepted"), [("srn", "world_scale, views, frame"),
                                                ("dvr", "world_scale, views, frame"),
                                                ("nerf-synthetic", "up, normalize, views")])
def test_options_are_checked_against_the_loaders_keywords(tmp_path: Path, fmt: str,
                                                          accepted: str) -> None:
    """iter_objects / scan_layout come from one helper; their signatures list the loader's
    options, so a misspelt --option is an error naming the accepted ones."""
    from pipeline.import_stage import ImportStageConfig, check_options

    cfg = ImportStageConfig(format=fmt, root=str(tmp_path), category="car",
                            options={"frmae": "z-up"}, out=str(tmp_path / "s.zarr"))
    with pytest.raises(ValueError, match=rf"'frmae' \(format {fmt} accepts {accepted}\)"):
        check_options(cfg, load_source(fmt))
    check_options(ImportStageConfig(format=fmt, root=str(tmp_path), category="car",
                                    options={"views": 3}, size=32), load_source(fmt))


def _move_cameras(obj_dir: Path, factor: float) -> None:
    """Scale the camera distance of every pose file of an SRN object by ``factor``."""
    for f in sorted((obj_dir / "pose").glob("*.txt")):
        pose = np.array(f.read_text().split(), dtype=np.float64).reshape(4, 4)
        pose[:3, 3] *= factor
        f.write_text(" ".join(f"{x:.8f}" for x in pose.ravel()))


def test_store_near_far_span_every_object_or_the_explicit_values(tmp_path: Path) -> None:
    """Two objects at camera distances 1.3 and 2.6, rig-scaled (world_scale=rig): their near/far
    are (0.8, 1.8) and (0.4, 0.9); the store keeps (0.4, 1.8), not the first object's."""
    from cache.render_store import RenderStore
    from pipeline.import_stage import ImportStageConfig, run_import_stage

    make_srn(tmp_path / "srn", ids=("a1", "a2"), n_views=3)
    _move_cameras(tmp_path / "srn" / "cars_train" / "a2", 2.0)

    def camera(**kw: float) -> dict:
        run_import_stage(ImportStageConfig(
            format="srn", root=str(tmp_path / "srn"), category="car",
            options={"world_scale": "rig"}, out=str(tmp_path / "s.zarr"),
            report_dir=str(tmp_path / "rep"), if_stale="overwrite", overwrite=True, **kw))
        return RenderStore(tmp_path / "s.zarr").attrs["camera"]

    spanned = camera()
    assert spanned["near"] == pytest.approx(0.4) and spanned["far"] == pytest.approx(1.8)
    assert spanned["near_far_source"] == "objects"
    explicit = camera(near=1.25, far=2.75)
    assert (explicit["near"], explicit["far"]) == (1.25, 2.75)
    assert explicit["near_far_source"] == "--near/--far"
    with pytest.raises(ValueError, match="--near and --far go together"):
        camera(near=1.0)


def test_srn_broken_inputs(tmp_path: Path) -> None:
    make_srn(tmp_path, ids=("a1", "b2", "c3"))
    base = tmp_path / "cars_train"
    (base / "a1" / "rgb" / "000002.png").unlink()
    with pytest.raises(AssetError, match=r"missing image rgb/000002.png for pose/000002.txt"):
        srn.load_object(tmp_path, "car", "a1")
    (base / "b2" / "pose" / "000001.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0")
    with pytest.raises(AssetError, match=r"000001.txt: 12 numbers, expected 16"):
        next(srn.iter_objects(tmp_path, "car", object_ids=["b2"]))
    (base / "c3" / "pose" / "000001.txt").write_text(" ".join(["2"] * 16))
    with pytest.raises(AssetError, match="last row"):
        srn.load_object(tmp_path, "car", "c3")
    with pytest.raises(AssetError, match="no object"):
        list(srn.iter_objects(tmp_path, "car", object_ids=["zz"]))
    with pytest.raises(AssetError, match=r"no cars_\{train,val,test\}"):
        srn.list_objects(tmp_path / "nothing", "car")


# ------------------------------------------------------------------------------------- DVR


def _dvr_project(points: np.ndarray, world_mat: np.ndarray, camera_mat: np.ndarray,
                 scale_mat: np.ndarray, w: int, h: int) -> np.ndarray:
    """DVR's projection (formats.md 7.2): p = camera_mat world_mat scale_mat X in [-1, 1],
    (-1, -1) the top-left image corner -> u = (x + 1) W / 2."""
    wm = np.vstack([world_mat, [0, 0, 0, 1]]) if world_mat.shape == (3, 4) else world_mat
    p = (camera_mat @ wm @ scale_mat @ np.c_[points, np.ones(len(points))].T).T
    xy = p[:, :2] / p[:, 2:3]
    return np.c_[(xy[:, 0] + 1) * w / 2, (xy[:, 1] + 1) * h / 2]


def make_dvr(root: Path, synset: str = "02958343", ids: tuple[str, ...] = ("m1",),
             n_views: int = 4, size: int = 32, masks: bool = True, scale_mat: bool = False,
             lists: dict[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """An NMR_Dataset synset folder; returns the last object's cameras."""
    cat = root / synset
    fn = 2.1875
    cams: dict[str, np.ndarray] = {}
    for oid in ids:
        d = cat / oid
        (d / "image").mkdir(parents=True)
        if masks:
            (d / "mask").mkdir()
        cams = {}
        for k in range(n_views):
            az, el = 2 * np.pi * k / n_views + 0.2, np.deg2rad(30)
            eye = 2.732 * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
            c2w = _look_at_cv(eye, np.array([0.0, 1.0, 0.0]))  # DVR world is y-up
            w2c = np.linalg.inv(c2w)
            cams[f"world_mat_{k}"] = w2c[:3] if k == 0 else w2c  # 3x4 and 4x4 both occur
            cams[f"camera_mat_{k}"] = np.diag([fn, fn, 1.0, 1.0])
            sm = np.eye(4)
            if scale_mat:
                sm = np.diag([0.5, 0.5, 0.5, 1.0])
                sm[:3, 3] = (0.05, -0.02, 0.03)
            cams[f"scale_mat_{k}"] = sm
            uv = _dvr_project(np.stack([np.zeros(3), DOT]), cams[f"world_mat_{k}"],
                              cams[f"camera_mat_{k}"], sm, size, size)
            img = _draw(size, uv[0], uv[1], 255)
            Image.fromarray(img).save(d / "image" / f"{k:04d}.png")
            if masks:
                m = np.where((img < 255).any(axis=-1), 255, 0).astype(np.uint8)
                Image.fromarray(m).save(d / "mask" / f"{k:04d}.png")
        np.savez(d / "cameras.npz", **cams)
    for split, names in (lists or {}).items():
        (cat / f"softras_{split}.lst").write_text("\n".join(names) + "\n")
    return cams


@pytest.mark.parametrize("scale_mat", [False, True])
def test_dvr_round_trip_shapes_and_masks(tmp_path: Path, scale_mat: bool) -> None:
    cams = make_dvr(tmp_path, ids=("m2", "m1"), scale_mat=scale_mat,
                    lists={"train": ["m1", "missing"], "test": ["m2"]})
    assert dvr.list_objects(tmp_path, "car") == [("m1", "train"), ("m2", "test")]
    (obj,) = dvr.iter_objects(tmp_path, "02958343", split="test")
    check_image_only_object(obj, 4, 32)
    assert obj.object_id == "m2" and obj.meta["alpha"] == "mask/"
    r = dvr.R_DVR_TO_OBJECT
    for v in range(4):
        want = _dvr_project(RNG_POINTS, cams[f"world_mat_{v}"], cams[f"camera_mat_{v}"],
                            cams[f"scale_mat_{v}"], 32, 32)
        got, _ = project(RNG_POINTS @ r.T, obj.K[v].astype(np.float64),
                         obj.c2w[v].astype(np.float64))
        np.testing.assert_allclose(got, want, atol=1e-3)
    _check_dot(obj, DOT @ r.T)
    np.testing.assert_allclose(obj.K[0], [[35, 0, 16], [0, 35, 16], [0, 0, 1]], atol=1e-5)
    cam = obj.meta["camera"]
    assert (cam["near"], cam["far"], cam["fits_project_near_far"]) == (1.2, 4.0, False)
    if not scale_mat:
        assert cam["distance"] == pytest.approx(2.732, abs=1e-4)
        assert obj.meta["scale_mat"] == "identity"
    assert obj.meta["split_source"].endswith("softras_test.lst")


def test_dvr_without_masks_or_lists_rig_scale(tmp_path: Path) -> None:
    make_dvr(tmp_path / "NMR", ids=("m1",), masks=False)
    from renderers.shapenet import hash_split

    assert dvr.list_objects(tmp_path / "NMR" / "02958343", "car") == [("m1", hash_split("m1"))]
    (obj,) = dvr.iter_objects(tmp_path / "NMR", "car", size=16, world_scale="rig")
    check_image_only_object(obj, 4, 16)
    assert "approximate" in obj.meta["alpha"] and obj.meta["split_source"] == "hash"
    assert obj.meta["camera"]["distance"] == pytest.approx(1.3, abs=1e-5)
    s = 1.3 / 2.732
    assert obj.meta["near"] == pytest.approx(1.2 * s)
    _check_dot(obj, s * (DOT @ dvr.R_DVR_TO_OBJECT.T))
    layout = dvr.scan_layout(tmp_path / "NMR", "car", [("m1", "train")], size=16)
    assert (layout["n_views"], layout["image_size"]) == (4, 16)


def test_dvr_frame_option_and_yaml_typed_values(tmp_path: Path) -> None:
    make_dvr(tmp_path, ids=("m1",))
    (obj,) = dvr.iter_objects(tmp_path, "car", frame="shapenet-v2", world_scale="0.5", views=2)
    assert obj.n_views == 2 and obj.meta["frame"]["name"] == "shapenet-v2"
    np.testing.assert_allclose(obj.meta["object_from_source"], np.diag([0.5, 0.5, 0.5, 1.0]))
    _check_dot(obj, 0.5 * DOT)
    with pytest.raises(AssetError, match="unknown world frame 'y-up'"):
        dvr.load_object(tmp_path, "car", "m1", frame="y-up")
    with pytest.raises(AssetError, match="world_scale must be a number or 'rig'"):
        dvr.load_object(tmp_path, "car", "m1", world_scale="big")


def test_dvr_broken_inputs(tmp_path: Path) -> None:
    make_dvr(tmp_path, ids=("m1", "m2", "m3", "m4"))
    cat = tmp_path / "02958343"
    (cat / "m1" / "image" / "0002.png").unlink()
    with pytest.raises(AssetError, match=r"missing image image/0002.png \(cameras.npz has "
                                         "camera 2\\)"):
        dvr.load_object(tmp_path, "car", "m1")
    cams = dict(np.load(cat / "m2" / "cameras.npz"))
    cams["world_mat_1"] = np.eye(3)
    np.savez(cat / "m2" / "cameras.npz", **cams)
    with pytest.raises(AssetError, match=r"world_mat_1 has shape \(3, 3\)"):
        dvr.load_object(tmp_path, "car", "m2")
    (cat / "m3" / "mask" / "0001.png").unlink()
    with pytest.raises(AssetError, match=r"missing mask mask/0001.png"):
        dvr.load_object(tmp_path, "car", "m3")
    (cat / "m4" / "cameras.npz").unlink()
    with pytest.raises(AssetError, match="no cameras.npz"):
        dvr.load_object(tmp_path, "car", "m4")
    with pytest.raises(AssetError, match="no folder"):
        dvr.list_objects(tmp_path, "airplane")
