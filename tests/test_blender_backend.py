"""The "blenderproc" backend: Blender Cycles out of process, checked against exact ray casting.

Tests marked ``blender`` need a Python with bpy or a blender binary (docs/blender.md) and are
skipped without one; the others check discovery, instructions and the mesh export helpers.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import trimesh
from PIL import Image

from renderers import blender_backend as bb
from renderers.asset import ShapeAsset
from renderers.base import RendererUnavailable
from renderers.cameras import CameraRig, intrinsics, look_at_c2w, project, random_hemisphere_poses
from renderers.raycast import cast_view, ray_intersector
from tests.conftest import make_toy_asset

SIZE = 128
FAST = bb.BlenderSettings(samples=8)


def _renderer_or_skip(**kwargs) -> bb.BlenderRenderer:
    try:
        return bb.BlenderRenderer(settings=FAST, **kwargs)
    except RendererUnavailable as err:
        pytest.skip(f"no Blender found (see docs/blender.md): {str(err).splitlines()[0]}")


@pytest.fixture(scope="module")
def rendered():
    renderer = _renderer_or_skip()
    asset = make_toy_asset(2)
    rig = CameraRig(n_views=3)
    K = intrinsics(SIZE, rig.fov_deg)
    c2w = random_hemisphere_poses(rig, 5)
    return renderer, asset, K, c2w, renderer.render(asset, K, c2w, SIZE)


def _quad_asset() -> ShapeAsset:
    """A 0.6 x 0.6 quad in the z=0 plane, textured with four colour quadrants (2 faces)."""
    v = np.array([[-0.3, -0.3, 0], [0.3, -0.3, 0], [0.3, 0.3, 0], [-0.3, 0.3, 0]], float)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    tex = np.zeros((32, 32, 3), np.uint8)  # PIL row 0 = top = v 1
    tex[:16, :16], tex[:16, 16:] = (255, 0, 0), (0, 255, 0)
    tex[16:, :16], tex[16:, 16:] = (0, 0, 255), (255, 255, 255)
    visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(tex))
    mesh = trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3]], visual=visual, process=False)
    return ShapeAsset("quad", "chair", mesh, [0, 1], ["a", "b"])


# --- without Blender ---------------------------------------------------------------------------


def test_explicit_missing_python_raises_with_instructions(monkeypatch, tmp_path):
    missing = str(tmp_path / "no-such-python")
    monkeypatch.setenv(bb.ENV_PYTHON, missing)
    with pytest.raises(RendererUnavailable) as err:
        bb.BlenderRenderer()
    msg = str(err.value)
    assert missing in msg and "Fix or unset it" in msg
    assert "pip install bpy==4.2.23" in msg and "python3.11 -m venv .venv-blender" in msg
    assert "blenderproc quickstart" in msg and bb.ENV_BINARY in msg


def test_nothing_found_lists_every_place_looked(monkeypatch, tmp_path):
    monkeypatch.delenv(bb.ENV_PYTHON, raising=False)
    monkeypatch.delenv(bb.ENV_BINARY, raising=False)
    monkeypatch.setattr(bb, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(bb, "_blenderproc_candidates", lambda: [str(tmp_path / "bp" / "blender")])
    monkeypatch.setattr(bb.shutil, "which", lambda name: None)
    with pytest.raises(RendererUnavailable) as err:
        bb.find_blender()
    msg = str(err.value)
    for where in [".venv-blender", "BlenderProc's Blender", "`blender` on PATH", bb.ENV_PYTHON]:
        assert where in msg
    assert "apt-get install" in msg


def test_launcher_commands():
    bpy_cmd = bb.BlenderLauncher("bpy", "/py", "4.2", "x").command("/job")
    assert bpy_cmd == ["/py", str(bb.JOB_SCRIPT), "/job"]
    bin_cmd = bb.BlenderLauncher("blender", "/bl", "4.2", "x").command("/job")
    assert bin_cmd[:2] == ["/bl", "-b"] and bin_cmd[-3:] == [str(bb.JOB_SCRIPT), "--", "/job"]


def test_corner_normals_keep_sharp_edges_and_smooth_curves():
    box = trimesh.creation.box()
    n = bb.corner_normals(box, 30.0)
    assert np.allclose(n, np.repeat(box.face_normals[:, None], 3, axis=1), atol=1e-6)
    sphere = trimesh.creation.icosphere(3)
    n = bb.corner_normals(sphere, 30.0)
    corners = sphere.vertices[sphere.faces]
    radial = corners / np.linalg.norm(corners, axis=-1, keepdims=True)
    assert np.einsum("fci,fci->fc", n, radial).min() > 0.999


def test_asset_arrays_colour_paths():
    box = trimesh.creation.box()
    box.visual.face_colors = [255, 128, 0, 255]
    arrays, tex = bb.asset_arrays(box, 0.0)
    assert tex is None and "corner_normals" not in arrays
    cc = arrays["corner_colors"]
    assert cc.shape == (12, 3, 4) and cc.dtype == np.float32
    assert np.allclose(cc[0, 0], [1.0, bb.srgb_to_linear(128 / 255), 0.0, 1.0], atol=1e-6)
    arrays, tex = bb.asset_arrays(_quad_asset().mesh, 30.0)
    assert tex is not None and arrays["corner_uvs"].shape == (2, 3, 2)
    assert arrays["corner_normals"].shape == (2, 3, 3) and "corner_colors" not in arrays
    sphere = trimesh.creation.icosphere(1)
    sphere.visual.vertex_colors = np.tile([10, 200, 30, 255], (len(sphere.vertices), 1))
    arrays, _ = bb.asset_arrays(sphere, 0.0)
    assert np.allclose(arrays["corner_colors"][..., 1], bb.srgb_to_linear(200 / 255), atol=1e-6)


def test_srgb_round_trip():
    x = np.linspace(0, 1, 101)
    assert np.allclose(bb.linear_to_srgb(bb.srgb_to_linear(x)), x, atol=1e-9)


# --- with Blender ------------------------------------------------------------------------------


@pytest.mark.blender
def test_version_comes_from_blender(rendered):
    renderer = rendered[0]
    assert renderer.name == "blenderproc"
    version = renderer.version()
    assert version.startswith("blender ") and version.endswith(f"({renderer.launcher.kind})")


@pytest.mark.blender
def test_shapes_dtypes_and_black_background(rendered):
    _, _, _, c2w, out = rendered
    v = len(c2w)
    assert out.rgb.shape == (v, SIZE, SIZE, 3) and out.rgb.dtype == np.uint8
    assert out.alpha.shape == (v, SIZE, SIZE) and out.alpha.dtype == np.uint8
    assert out.depth.dtype == np.float32 and out.part.dtype == np.int16
    assert (out.rgb[out.alpha == 0] == 0).all()
    # premultiplied over black: a pixel cannot be brighter than its coverage allows
    edge = (out.alpha > 0) & (out.alpha < 64)
    assert out.rgb[edge].max() < 200
    assert (out.alpha == 255).sum() > 0.8 * (out.alpha > 0).sum()  # only silhouettes are soft


@pytest.mark.blender
def test_alpha_matches_ray_cast_mask(rendered):
    _, _, _, c2w, out = rendered
    for v in range(len(c2w)):
        a, m = out.alpha[v] > 127, out.depth[v] > 0
        iou = (a & m).sum() / (a | m).sum()
        assert iou > 0.97, (v, iou)
        # sub-pixel registration: coverage-weighted centroid vs ray-cast mask centroid
        w = out.alpha[v] / 255.0
        vv, uu = np.mgrid[:SIZE, :SIZE]
        ca = np.array([(w * uu).sum(), (w * vv).sum()]) / w.sum()
        cm = np.array([uu[m].mean(), vv[m].mean()])
        assert np.abs(ca - cm).max() < 0.5, (v, ca, cm)


@pytest.mark.blender
def test_part_labels_are_exact_ray_cast_labels(rendered):
    _, asset, K, c2w, out = rendered
    inter = ray_intersector(asset.mesh)
    for v in range(len(c2w)):
        tri, depth = cast_view(inter, asset.mesh, K, c2w[v], SIZE)
        expected = np.where(tri >= 0, asset.face_part[np.maximum(tri, 0)], -1)
        assert np.array_equal(out.part[v], expected)
        assert np.array_equal(out.depth[v], depth)
    assert set(np.unique(out.part)) == {-1, 0, 1}


@pytest.mark.blender
def test_colours_follow_parts_and_camera_projection(rendered):
    _, asset, K, c2w, out = rendered
    # the toy slab is brown (180, 120, 60), the ball blue (60, 90, 200)
    for v in range(len(c2w)):
        solid = out.alpha[v] == 255
        slab = out.rgb[v][solid & (out.part[v] == 0)].astype(float).mean(0)
        ball = out.rgb[v][solid & (out.part[v] == 1)].astype(float).mean(0)
        assert slab[0] > slab[2] + 30 and ball[2] > ball[0] + 30, (slab, ball)
        # the ball's centre projects inside the Blender silhouette, onto a blue pixel
        centre = asset.mesh.vertices[asset.mesh.faces[asset.face_part == 1]].reshape(-1, 3)
        uv, _ = project(centre.mean(0, keepdims=True), K, c2w[v])
        col, row = np.floor(uv[0]).astype(int)
        assert out.alpha[v][row, col] == 255
        r, g, b = out.rgb[v][row, col].astype(int)
        assert b > r + 30 and b > g + 30


@pytest.mark.blender
def test_texture_and_off_centre_anisotropic_camera():
    renderer = _renderer_or_skip()
    asset = _quad_asset()
    K = np.array([[150.0, 0.0, 56.0], [0.0, 120.0, 70.0], [0.0, 0.0, 1.0]])
    c2w = look_at_c2w(np.array([0.1, 0.15, -1.3]))[None]
    out = renderer.render(asset, K, c2w, SIZE)
    a, m = out.alpha[0] > 127, out.depth[0] > 0
    assert (a & m).sum() / (a | m).sum() > 0.97
    for (u, v), rgb in [((0.25, 0.75), (1, 0, 0)), ((0.75, 0.75), (0, 1, 0)),
                        ((0.25, 0.25), (0, 0, 1)), ((0.75, 0.25), (1, 1, 1))]:
        p = np.array([[-0.3 + 0.6 * u, -0.3 + 0.6 * v, 0.0]])
        col, row = np.floor(project(p, K, c2w[0])[0][0]).astype(int)
        pix = out.rgb[0][row, col].astype(int)
        on, off = pix[np.array(rgb) == 1], pix[np.array(rgb) == 0]
        assert on.min() > 120 and (off.size == 0 or off.max() < 80), (rgb, pix)


@pytest.mark.blender
@pytest.mark.skipif(shutil.which("blender") is None, reason="no `blender` binary on PATH")
def test_blender_binary_path_matches(monkeypatch):
    """The `blender -b --python` launch path (no numpy needed inside Blender) also lines up."""
    monkeypatch.delenv(bb.ENV_PYTHON, raising=False)
    monkeypatch.setenv(bb.ENV_BINARY, os.path.realpath(shutil.which("blender")))
    renderer = _renderer_or_skip()
    assert renderer.launcher.kind == "blender"
    asset = make_toy_asset(2)
    K = intrinsics(SIZE, 51.98)
    c2w = random_hemisphere_poses(CameraRig(n_views=1), 5)
    out = renderer.render(asset, K, c2w, SIZE)
    a, m = out.alpha[0] > 127, out.depth[0] > 0
    assert (a & m).sum() / (a | m).sum() > 0.97
