"""NeRF-synthetic (Blender) and nerfstudio ``transforms.json`` importer on fixtures in the true
layout: RGBA PNGs of a sphere whose centre and a marked point are projected with the source's
own formula (OpenGL c2w, focal from camera_angle_x / fl_x), compared with the imported cameras
through ``renderers.cameras.project``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renderers.asset import AssetError
from renderers.cameras import project
from renderers.importers import ImportedObject, load_source
from renderers.importers import nerf_synthetic as ns
from tests.test_importers_srn_dvr import check_image_only_object

CENTRE = np.array([0.5, -0.2, 0.3])  # the object's centre in the capture's world (z-up)
RADIUS = 0.8  # the sphere drawn in every view (capture units)
DOT = CENTRE + np.array([0.3, -0.4, 0.35])  # a marked surface-ish point (drawn red)
DIST = 4.0
ANGLE_X = 0.6911112070083618  # NeRF-synthetic's lego camera_angle_x
PTS = CENTRE + np.random.default_rng(1).uniform(-0.6, 0.6, (20, 3))


def _c2w_gl(eye: np.ndarray) -> np.ndarray:
    """OpenGL c2w (x right, y up, looks along -z) at ``eye`` looking at CENTRE, world z-up."""
    back = (eye - CENTRE) / np.linalg.norm(eye - CENTRE)
    x = np.cross([0.0, 0.0, 1.0], back)
    x /= np.linalg.norm(x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, np.cross(back, x), back, eye
    return m


def _gl_project(points: np.ndarray, c2w_gl: np.ndarray, fx: float, fy: float, cx: float,
                cy: float) -> np.ndarray:
    """NeRF's ray convention inverted: dir = ((u - cx)/fx, -(v - cy)/fy, -1) in the GL camera."""
    cam = (np.linalg.inv(c2w_gl) @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    depth = -cam[:, 2]
    return np.c_[cx + fx * cam[:, 0] / depth, cy - fy * cam[:, 1] / depth]


def _eyes(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        az, el = 2 * np.pi * k / n + rng.uniform(0, 0.3), np.deg2rad(rng.uniform(15, 60))
        out.append(CENTRE + DIST * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                                             np.sin(el)]))
    return out


def _sphere_rgba(c2w_gl: np.ndarray, fx: float, fy: float, cx: float, cy: float, w: int,
                 h: int, alpha: bool = True) -> np.ndarray:
    """(h, w, 4) RGBA: the silhouette of the sphere (exact: rays within its cone), a red dot
    at DOT, transparent black elsewhere (straight alpha; colour 0 outside)."""
    v, u = np.mgrid[:h, :w] + 0.5
    d = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], -1) @ c2w_gl[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    oc = CENTRE - c2w_gl[:3, 3]
    t = d @ oc
    inside = (oc @ oc - t ** 2) < RADIUS ** 2
    img = np.zeros((h, w, 4), np.uint8)
    img[inside] = (60, 160, 200, 255)
    j, i = np.floor(_gl_project(DOT[None], c2w_gl, fx, fy, cx, cy)[0]).astype(int)
    img[i - 1:i + 2, j - 1:j + 2] = (240, 20, 20, 255)
    if not alpha:
        img[..., 3] = 255
    return img


def make_blender(folder: Path, n: tuple[int, int] = (6, 3), size: int = 32) -> dict:
    """A NeRF-synthetic capture: transforms_{train,test}.json, RGBA PNGs ``<split>/r_k.png``."""
    f = 0.5 * size / np.tan(0.5 * ANGLE_X)
    cams = {}
    for split, count, seed in (("train", n[0], 0), ("test", n[1], 1)):
        (folder / split).mkdir(parents=True)
        frames = []
        for k, eye in enumerate(_eyes(count, seed)):
            m = _c2w_gl(eye)
            Image.fromarray(_sphere_rgba(m, f, f, size / 2, size / 2, size, size)).save(
                folder / split / f"r_{k}.png")
            frames.append({"file_path": f"./{split}/r_{k}", "rotation": 0.0,
                           "transform_matrix": m.tolist()})
            cams[f"{split}/r_{k}"] = m
        (folder / f"transforms_{split}.json").write_text(
            json.dumps({"camera_angle_x": ANGLE_X, "frames": frames}))
    return cams


def _to_obj(obj: ImportedObject, points: np.ndarray) -> np.ndarray:
    m = np.asarray(obj.meta["object_from_source"])
    return points @ m[:3, :3].T + m[:3, 3]


def _check_dot(obj: ImportedObject) -> None:
    dot = _to_obj(obj, DOT[None])
    for v in range(obj.n_views):
        uv, z = project(dot, obj.K[v].astype(np.float64), obj.c2w[v].astype(np.float64))
        j, i = np.floor(uv[0]).astype(int)
        assert z[0] > 0 and obj.rgb[v, i, j, 0] > 150 and obj.rgb[v, i, j, 1] < 80, (v, uv)


def test_blender_round_trip_normalisation_and_hull(tmp_path: Path) -> None:
    cams = make_blender(tmp_path / "lego")
    assert ns.list_objects(tmp_path / "lego", "toy")[0][0] == "lego"
    (obj,) = ns.iter_objects(tmp_path / "lego", "toy")
    check_image_only_object(obj, 9, 32)
    assert obj.meta["format"] == "nerf_synthetic"
    assert obj.meta["frame_split"] == ["train"] * 6 + ["test"] * 3
    assert obj.meta["views"][0] == "train/r_0.png"
    f = 16 / np.tan(0.5 * ANGLE_X)
    pts = _to_obj(obj, PTS)
    for v, key in enumerate([f"train/r_{k}" for k in range(6)] + [f"test/r_{k}" for k in
                                                                    range(3)]):
        want = _gl_project(PTS, cams[key], f, f, 16, 16)
        got, _ = project(pts, obj.K[v].astype(np.float64), obj.c2w[v].astype(np.float64))
        np.testing.assert_allclose(got, want, atol=1e-3)
    _check_dot(obj)
    # normalisation: the rig centre is the sphere centre, mean camera distance 1.3, z-up -> +Y
    np.testing.assert_allclose(obj.meta["frame"]["centre_source"], CENTRE, atol=1e-6)
    np.testing.assert_allclose(_to_obj(obj, CENTRE[None])[0], 0, atol=1e-6)
    scale = 1.3 / DIST
    assert obj.meta["frame"]["scale"] == pytest.approx(scale)
    assert obj.meta["camera"]["distance"] == pytest.approx(1.3, abs=1e-5)
    up = _to_obj(obj, (CENTRE + [0, 0, 1])[None])[0]
    np.testing.assert_allclose(up, [0, scale, 0], atol=1e-6)
    # cameras are upright in the object frame: their up (-y) has a positive +Y component
    assert (-obj.c2w[:, 1, 1] > 0).all()
    # visual hull of the sphere silhouettes ~ its radius (a grid cell or two larger)
    assert RADIUS * scale <= obj.meta["object_radius"] <= RADIUS * scale + 0.12
    cam = obj.meta["camera"]
    assert cam["near"] == pytest.approx(1.3 - obj.meta["object_radius"], abs=1e-4)
    assert obj.meta["near"] == cam["near"] and obj.meta["far"] == cam["far"]
    # over black with alpha from A
    assert (obj.rgb[obj.alpha == 0] == 0).all() and obj.alpha.max() == 255


def test_blender_resize_views_and_root_of_captures(tmp_path: Path) -> None:
    make_blender(tmp_path / "root" / "b_cap", n=(4, 2))
    make_blender(tmp_path / "root" / "test" / "a_cap", n=(4, 2))
    (tmp_path / "root" / "splits.json").write_text(json.dumps({"val": ["b_cap"]}))
    assert ns.list_objects(tmp_path / "root", "x") == [("b_cap", "val"), ("a_cap", "test")]
    objs = list(ns.iter_objects(tmp_path / "root", "x", size=16, views=3,
                                objects=[("a_cap", "train")]))
    assert [(o.object_id, o.split) for o in objs] == [("a_cap", "train")]
    check_image_only_object(objs[0], 3, 16)
    assert objs[0].meta["resize"]["from"] == [32, 32]
    _check_dot(objs[0])
    layout = ns.scan_layout(tmp_path / "root", "x", [("a_cap", "test"), ("b_cap", "val")])
    assert (layout["n_views"], layout["image_size"], layout["n_points"]) == (6, 32, 0)
    assert load_source("nerf-synthetic").iter_objects is ns.iter_objects


def test_nerfstudio_variant_per_frame_intrinsics_masks_and_distortion(tmp_path: Path) -> None:
    cap = tmp_path / "scan"
    (cap / "images").mkdir(parents=True)
    (cap / "masks").mkdir()
    w, h = 40, 32
    glob = {"fl_x": 30.0, "fl_y": 31.0, "cx": 19.5, "cy": 16.5, "w": w, "h": h,
            "camera_model": "OPENCV", "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}
    frames, mats, intr = [], [], []
    for k, eye in enumerate(_eyes(5)):
        m = _c2w_gl(eye)
        fx, fy, cx, cy = (33.0, 33.0, 20.0, 16.0) if k == 2 else (30.0, 31.0, 19.5, 16.5)
        rgba = _sphere_rgba(m, fx, fy, cx, cy, w, h)
        Image.fromarray(rgba[..., :3]).save(cap / "images" / f"frame_{k:05d}.png")
        Image.fromarray(rgba[..., 3]).save(cap / "masks" / f"frame_{k:05d}.png")
        fr = {"file_path": f"images/frame_{k:05d}.png", "mask_path": f"masks/frame_{k:05d}.png",
              "transform_matrix": m.tolist()}
        if k == 2:
            fr.update({"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy})
        frames.append(fr)
        mats.append(m)
        intr.append((fx, fy, cx, cy))
    (cap / "transforms.json").write_text(json.dumps({**glob, "frames": frames}))
    (obj,) = ns.iter_objects(cap, "scan")
    assert obj.rgb.shape == (5, h, w, 3) and obj.alpha.shape == (5, h, w)
    assert obj.validate() is obj
    json.dumps(obj.meta)
    assert obj.meta["format"] == "nerfstudio" and obj.meta["alpha"] == "mask_path"
    pts = _to_obj(obj, PTS)
    for v in range(5):
        want = _gl_project(PTS, mats[v], *intr[v])
        got, _ = project(pts, obj.K[v].astype(np.float64), obj.c2w[v].astype(np.float64))
        np.testing.assert_allclose(got, want, atol=1e-3)
    _check_dot(obj)
    assert (obj.rgb[obj.alpha == 0] == 0).all()


def test_undistort_moves_a_distorted_dot_to_its_pinhole_position() -> None:
    K = np.array([[40.0, 0, 32], [0, 40.0, 32], [0, 0, 1]])
    dist = {"k1": 0.15, "k2": 0.02, "k3": 0.0, "k4": 0.0, "p1": 0.01, "p2": -0.01}
    x, y = 0.5, -0.4  # a normalised pinhole point; where the distorted camera saw it:
    r2 = x * x + y * y
    rad = 1 + dist["k1"] * r2 + dist["k2"] * r2 ** 2
    xd = x * rad + 2 * dist["p1"] * x * y + dist["p2"] * (r2 + 2 * x * x)
    yd = y * rad + dist["p1"] * (r2 + 2 * y * y) + 2 * dist["p2"] * x * y
    img = np.zeros((64, 64, 1), np.uint8)
    jd, i_d = int(xd * 40 + 32), int(yd * 40 + 32)
    img[i_d - 1:i_d + 2, jd - 1:jd + 2] = 255
    out = ns.undistort(img, K, dist)[..., 0]
    i, j = np.unravel_index(np.argmax(out), out.shape)
    assert abs(j + 0.5 - (x * 40 + 32)) <= 1.5 and abs(i + 0.5 - (y * 40 + 32)) <= 1.5


def test_broken_inputs(tmp_path: Path) -> None:
    cap = tmp_path / "cap"
    make_blender(cap, n=(3, 2))
    (cap / "train" / "r_1.png").unlink()
    with pytest.raises(AssetError, match=r"transforms_train.json frame 1: missing image .*r_1"):
        ns.load_object(cap, "x", "cap")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.7}))
    with pytest.raises(AssetError, match=r"transforms.json: no 'frames' list"):
        next(ns.iter_objects(bad, "x"))
    (bad / "transforms.json").write_text("{not json")
    with pytest.raises(AssetError, match="not valid JSON"):
        ns.load_object(bad, "x", "bad")
    fish = tmp_path / "fish"
    make_blender(fish, n=(3, 2))
    data = json.loads((fish / "transforms_train.json").read_text())
    data["camera_model"] = "OPENCV_FISHEYE"
    (fish / "transforms_train.json").write_text(json.dumps(data))
    with pytest.raises(AssetError, match="OPENCV_FISHEYE is not supported"):
        ns.load_object(fish, "x", "fish")
    flat = tmp_path / "flat"
    make_blender(flat, n=(3, 2))
    for name in ("transforms_train.json", "transforms_test.json"):
        data = json.loads((flat / name).read_text())
        for k, fr in enumerate(data["frames"]):  # forward-facing: all cameras parallel
            m = np.eye(4)
            m[:3, 3] = (k, 0.1 * k, 0)
            fr["transform_matrix"] = m.tolist()
        (flat / name).write_text(json.dumps(data))
    with pytest.raises(AssetError, match="optical axes do not meet"):
        ns.load_object(flat, "x", "flat")
    with pytest.raises(AssetError, match="no transforms_train.json"):
        ns.list_objects(tmp_path / "cap" / "train", "x")
