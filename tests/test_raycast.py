import numpy as np
import trimesh

from renderers.cameras import (
    CameraRig,
    fixed_eval_poses,
    intrinsics,
    look_at_c2w,
    pixel_rays,
)
from renderers.raycast import (
    RaycastRenderer,
    cast_pixels,
    cast_view,
    face_planes,
    first_hit_distance,
    ray_intersector,
)


def test_cast_view_plane_depth_is_exact():
    plane = trimesh.Trimesh(
        [[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]]
    )
    c2w = look_at_c2w(np.array([0.0, 0.0, -2.0]))
    tri, depth = cast_view(ray_intersector(plane), plane, intrinsics(32, 40.0), c2w, 32)
    assert (tri >= 0).all()
    # a plane facing the camera at distance ~2: z-depth is the same for every pixel
    np.testing.assert_allclose(depth, 2.0, atol=1e-5)


def test_first_hit_distance_sees_occluder():
    box = trimesh.creation.box((0.2, 0.2, 0.2))
    inter = ray_intersector(box)
    origins = np.array([[0.0, 0.0, -2.0], [0.0, 0.0, -2.0]])
    targets = np.array([[0.0, 0.0, 0.5], [0.0, 0.0, -0.1]])
    d = first_hit_distance(inter, origins, targets)
    np.testing.assert_allclose(d, [1.9, 1.9], atol=1e-6)


def test_raycast_renderer_labels_and_mask(toy_asset):
    rig = CameraRig(n_views=3)
    K = intrinsics(64, rig.fov_deg)
    out = RaycastRenderer().render(toy_asset, K, fixed_eval_poses(rig), 64)
    assert out.rgb.shape == (3, 64, 64, 3) and out.part.dtype == np.int16
    np.testing.assert_array_equal(out.alpha > 0, out.depth > 0)
    assert set(np.unique(out.part)) <= {-1, 0, 1}
    assert (out.rgb[out.alpha == 0] == 0).all()


def test_cast_view_with_mask_casts_only_masked_pixels(toy_asset):
    rig = CameraRig(n_views=2)
    K = intrinsics(64, rig.fov_deg)
    inter = ray_intersector(toy_asset.mesh)
    for c2w in fixed_eval_poses(rig):
        tri, depth = cast_view(inter, toy_asset.mesh, K, c2w, 64)
        mask = np.zeros((64, 64), bool)
        mask[::2] = True  # every other row
        mtri, mdepth = cast_view(inter, toy_asset.mesh, K, c2w, 64, mask)
        assert (mtri[~mask] == -1).all() and (mdepth[~mask] == 0).all()
        assert (mtri[mask] == tri[mask]).mean() > 0.999
        np.testing.assert_allclose(mdepth[mask], depth[mask], atol=1e-6)
        empty = cast_view(inter, toy_asset.mesh, K, c2w, 64, np.zeros((64, 64), bool))
        assert (empty[0] == -1).all() and (empty[1] == 0).all()


def test_cast_pixels_matches_an_independent_full_image_cast(toy_asset):
    rig = CameraRig(n_views=3)
    K = intrinsics(64, rig.fov_deg)
    inter, planes = ray_intersector(toy_asset.mesh), face_planes(toy_asset.mesh)
    for c2w in fixed_eval_poses(rig):
        # the reference: trimesh over pixel_rays, with its own hit locations (no plane_depth)
        origins, dirs = pixel_rays(K, c2w, 64, 64)
        ref_tri = np.asarray(inter.intersects_first(origins, dirs), np.int64)
        locations, ray_index, _ = inter.intersects_location(origins, dirs, multiple_hits=False)
        ref_depth = np.zeros(64 * 64)
        ref_depth[ray_index] = (locations - origins[ray_index]) @ c2w[:3, 2]  # camera z
        mask = ref_tri >= 0
        mask[::3] = True  # misses too
        pixels = np.flatnonzero(mask)
        ptri, pdepth = cast_pixels(inter, planes, K, c2w, 64, pixels)
        assert (ptri == -1).any() and (ptri >= 0).any()
        np.testing.assert_array_equal(ptri, ref_tri[pixels])
        assert pdepth.dtype == np.float32
        np.testing.assert_allclose(pdepth, ref_depth[pixels], atol=1e-5)
        tri, depth = cast_view(inter, toy_asset.mesh, K, c2w, 64)  # every pixel
        np.testing.assert_array_equal(tri.reshape(-1)[pixels], ptri)
        np.testing.assert_array_equal(depth.reshape(-1)[pixels], pdepth)  # bit for bit
    none_tri, none_depth = cast_pixels(inter, planes, K, c2w, 64, np.zeros(0, np.int64))
    assert none_tri.shape == none_depth.shape == (0,)
