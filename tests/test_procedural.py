"""Tests of the procedural shape families (renderers/procedural): validity, annotation,
orientation, geometry quality, determinism and variation."""

from __future__ import annotations

import json
import time
from functools import cache

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from renderers.asset import ShapeAsset, validate_asset
from renderers.categories import CATEGORIES
from renderers.procedural import FAMILIES, generate
from renderers.procedural import common as c

CATS = sorted(CATEGORIES)
SEEDS = range(6)  # every family cycles its primary style with a period <= 5
N_VAR = 20  # instances per category for the variation statistics


@cache
def asset(category: str, seed: int) -> ShapeAsset:
    return generate(category, seed)


def kp(a: ShapeAsset) -> dict[str, np.ndarray]:
    """Keypoint name -> (3,) position."""
    names = CATEGORIES[a.category].keypoint_names
    pairs = zip(a.keypoint_ids, a.keypoints, strict=True)
    return {names[i]: p.astype(np.float64) for i, p in pairs}


def part_faces(a: ShapeAsset, part: str) -> np.ndarray:
    """(F', 3, 3) triangles labelled ``part``."""
    return a.mesh.triangles[a.face_part == a.part_names.index(part)]


# --------------------------------------------------------------------------- registry


def test_families_cover_every_category():
    assert set(FAMILIES) == set(CATEGORIES)


def test_unknown_category_lists_valid_names():
    with pytest.raises(KeyError, match="chair"):
        generate("sofa", 0)


# --------------------------------------------------------------------------- validity


@pytest.mark.parametrize("category", CATS)
@pytest.mark.parametrize("seed", SEEDS)
def test_valid_asset(category: str, seed: int):
    a = asset(category, seed)
    assert isinstance(a, ShapeAsset)
    assert a.object_id == f"proc-{category}-{seed:06d}"
    assert a.category == category and a.seed == seed
    assert a.part_names == list(CATEGORIES[category].part_names)
    m = a.mesh
    assert 0 < len(m.faces) < 20_000
    # normalized frame: bbox centred, unit diagonal
    lo, hi = m.bounds
    assert abs(np.linalg.norm(hi - lo) - 1.0) < 1e-6
    assert np.abs((lo + hi) / 2).max() < 1e-6
    # every face labelled with a valid part
    assert a.face_part.dtype == np.int16 and a.face_part.shape == (len(m.faces),)
    assert a.face_part.min() >= 0 and a.face_part.max() < len(a.part_names)
    # no degenerate faces, outward orientation overall
    assert m.area_faces.min() > 0
    assert m.volume > 0
    # per-face RGBA colours, with some pattern/part variety
    fc = m.visual.face_colors
    assert fc.dtype == np.uint8 and fc.shape == (len(m.faces), 4)
    assert len(np.unique(fc, axis=0)) >= 2
    # meta: JSON-serialisable, names the generator
    meta = json.loads(json.dumps(a.meta))
    assert meta["generator"] == f"procedural/{category}" and meta["version"]
    validate_asset(a)  # what run_job checks before rendering


@pytest.mark.parametrize("category", CATS)
@pytest.mark.parametrize("seed", SEEDS)
def test_keypoints_on_surface_sorted_and_sided(category: str, seed: int):
    a = asset(category, seed)
    names = CATEGORIES[category].keypoint_names
    ids = a.keypoint_ids
    assert a.keypoints.dtype == np.float32 and a.keypoints.shape == (len(ids), 3)
    assert len(ids) > 0 and ids.min() >= 0 and ids.max() < len(names)
    assert np.all(np.diff(ids) > 0), "keypoint ids must be sorted and unique"
    _, dist, _ = trimesh.proximity.closest_point(a.mesh, a.keypoints.astype(np.float64))
    assert dist.max() < 1e-5
    pts = kp(a)
    for name, p in pts.items():
        if name.endswith("_l"):
            assert p[0] < 0, name
            mate = pts.get(name[:-2] + "_r")
            if mate is not None:  # left/right keypoints are mirror images
                assert np.abs(p * [-1, 1, 1] - mate).max() < 0.01, name
        if name.endswith("_r"):
            assert p[0] > 0, name


# --------------------------------------------------------------------------- semantics


def expected_parts_and_keypoints(a: ShapeAsset) -> tuple[set[str], set[str]]:
    """Parts and keypoints an instance must have, given its style choices in ``meta``."""
    cat, meta = CATEGORIES[a.category], a.meta
    parts, kps = set(cat.part_names), set(cat.keypoint_names)
    if a.category == "chair":
        if not meta["has_arms"]:
            parts.discard("arm")
            kps -= {"arm_front_l", "arm_front_r"}
        if meta["base"] == "disc":
            kps -= {k for k in kps if k.startswith("leg_")}
    elif a.category == "table":
        parts.discard("drawer")  # a ShapeNet-Part label; procedural tables have no drawers
        if meta["support"] == "none":
            parts.discard("support")
        if meta["foot"] == "disc":
            kps -= {k for k in kps if k.startswith("leg_")}
    elif a.category == "airplane" and meta["n_engines"] == 0:
        parts.discard("engine")
        kps -= {"engine_front_l", "engine_front_r"}
    return parts, kps


@pytest.mark.parametrize("category", CATS)
@pytest.mark.parametrize("seed", SEEDS)
def test_parts_and_keypoints_match_style(category: str, seed: int):
    a = asset(category, seed)
    parts, kps = expected_parts_and_keypoints(a)
    present = {a.part_names[i] for i in np.unique(a.face_part)}
    assert present == parts
    assert set(kp(a)) == kps


def check_chair(a: ShapeAsset, k: dict, lo: np.ndarray, hi: np.ndarray) -> None:
    seat, back, leg = (part_faces(a, p).reshape(-1, 3) for p in ("seat", "back", "leg"))
    assert back[:, 2].mean() > seat[:, 2].mean()  # back behind (+Z) the seat
    assert back[:, 1].max() > seat[:, 1].max() + 0.1  # and above it
    assert abs(leg[:, 1].min() - lo[1]) < 1e-6  # legs reach the floor
    assert k["seat_front_l"][2] < k["seat_back_l"][2]
    assert k["back_top_l"][1] > k["seat_back_l"][1]
    for name in ("leg_front_l", "leg_front_r", "leg_back_l", "leg_back_r"):
        if name in k:
            assert k[name][1] < lo[1] + 0.05, name
    if "leg_front_l" in k:
        assert k["leg_front_l"][2] < k["leg_back_l"][2]
    if "arm_front_l" in k:
        assert k["arm_front_l"][1] > k["seat_front_l"][1]


def check_table(a: ShapeAsset, k: dict, lo: np.ndarray, hi: np.ndarray) -> None:
    top, leg = part_faces(a, "top").reshape(-1, 3), part_faces(a, "leg").reshape(-1, 3)
    assert abs(top[:, 1].max() - hi[1]) < 1e-6  # the top is the highest part
    assert abs(leg[:, 1].min() - lo[1]) < 1e-6  # legs stand on the floor
    assert k["top_front_l"][2] < k["top_back_l"][2]
    assert all(k[n][1] > hi[1] - 0.01 for n in k if n.startswith("top_"))
    assert all(k[n][1] < lo[1] + 0.03 for n in k if n.startswith("leg_"))


def check_airplane(a: ShapeAsset, k: dict, lo: np.ndarray, hi: np.ndarray) -> None:
    assert k["nose"][2] < lo[2] + 0.01  # the nose is the front-most point (-Z)
    body = part_faces(a, "body").reshape(-1, 3)
    assert abs(k["tail_end"][2] - body[:, 2].max()) < 1e-6  # rear-most point of the fuselage
    assert k["wing_tip_l"][0] < k["wing_root_l"][0] < 0 < k["wing_root_r"][0] < k["wing_tip_r"][0]
    assert k["wing_root_l"][2] < k["tail_end"][2]
    assert k["vstab_top"][1] > max(k["nose"][1], k["wing_tip_l"][1], k["tail_end"][1])
    assert abs(k["hstab_tip_l"][0]) < abs(k["wing_tip_l"][0])
    if "engine_front_l" in k:
        assert k["engine_front_l"][2] < k["tail_end"][2]


def check_car(a: ShapeAsset, k: dict, lo: np.ndarray, hi: np.ndarray) -> None:
    wheel, roof = part_faces(a, "wheel").reshape(-1, 3), part_faces(a, "roof").reshape(-1, 3)
    hood = part_faces(a, "hood").reshape(-1, 3)
    assert k["bumper_front"][2] < lo[2] + 0.01  # front bumper at -Z
    assert k["bumper_back"][2] > hi[2] - 0.01
    assert abs(wheel[:, 1].min() - lo[1]) < 1e-6  # wheels on the ground
    assert abs(roof[:, 1].max() - hi[1]) < 1e-6  # roof on top
    assert hood[:, 2].mean() < roof[:, 2].mean()  # hood in front of the roof
    assert k["wheel_front_l"][2] < k["wheel_back_l"][2]
    assert k["roof_front_l"][2] < k["roof_back_l"][2]
    assert k["light_front_l"][2] < k["wheel_front_l"][2]


def check_motorcycle(a: ShapeAsset, k: dict, lo: np.ndarray, hi: np.ndarray) -> None:
    wheel = part_faces(a, "wheel").reshape(-1, 3)
    assert abs(wheel[:, 1].min() - lo[1]) < 1e-6
    assert k["wheel_front_hub"][2] < k["wheel_back_hub"][2]
    assert k["wheel_front_bottom"][1] < lo[1] + 0.01
    assert k["headlight"][2] < k["tank_top"][2] < k["seat_back"][2]
    assert k["seat_front"][2] < k["seat_back"][2]
    assert k["handle_end_l"][1] > k["wheel_front_hub"][1]


def check_bottle(a: ShapeAsset, k: dict, lo: np.ndarray, hi: np.ndarray) -> None:
    cap, neck = part_faces(a, "cap").reshape(-1, 3), part_faces(a, "neck").reshape(-1, 3)
    body = part_faces(a, "body").reshape(-1, 3)
    assert abs(cap[:, 1].max() - hi[1]) < 1e-6  # cap on top
    assert neck[:, 1].mean() > body[:, 1].mean()
    assert k["bottom_center"][1] < lo[1] + 1e-6
    assert k["cap_top"][1] > k["neck_front"][1] > k["shoulder_front"][1] > k["base_front"][1]
    assert k["neck_front"][2] < 0 < k["shoulder_back"][2]


CHECKS = {
    "chair": check_chair,
    "table": check_table,
    "airplane": check_airplane,
    "car": check_car,
    "motorcycle": check_motorcycle,
    "bottle": check_bottle,
}


@pytest.mark.parametrize("category", CATS)
@pytest.mark.parametrize("seed", SEEDS)
def test_orientation_and_semantics(category: str, seed: int):
    a = asset(category, seed)
    lo, hi = a.mesh.bounds
    CHECKS[category](a, kp(a), lo, hi)


def fibonacci_sphere(n: int) -> np.ndarray:
    """(n, 3) roughly uniform unit directions."""
    i = np.arange(n) + 0.5
    phi, theta = np.arccos(1 - 2 * i / n), np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.cos(phi), np.sin(theta) * np.sin(phi)], 1)


@pytest.mark.parametrize("category", CATS)
@pytest.mark.parametrize("seed", SEEDS)
def test_keypoints_visible(category: str, seed: int):
    # every keypoint is seen (first ray hit) from >= 3 of 50 cameras on a sphere of radius 1.5
    # (measured over seeds 0-79: no keypoint below 3 views); a keypoint buried inside another
    # part would never appear in a rendered view and could not be transferred.
    a = asset(category, seed)
    cams = fibonacci_sphere(50) * 1.5
    names = CATEGORIES[category].keypoint_names
    for kid, p in zip(a.keypoint_ids, a.keypoints.astype(np.float64), strict=True):
        d = p - cams
        dist = np.linalg.norm(d, axis=1)
        hit, ray, _ = a.mesh.ray.intersects_location(cams, d / dist[:, None], multiple_hits=False)
        seen = np.abs(np.linalg.norm(hit - cams[ray], axis=1) - dist[ray]) < 2e-3
        assert seen.sum() >= 3, names[kid]


# --------------------------------------------------------------------------- geometry quality


def thin_area_fraction(mesh: trimesh.Trimesh, min_thickness: float) -> float:
    """Worst, over connected components, area fraction thinner than ``min_thickness``.

    Thickness at a face = distance an inward ray travels inside its own component (so parts
    that merely interpenetrate others do not count as thin). The components are spread far
    apart and cast against in one scene (one BVH per instance, not one per component).
    """
    m = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    m.merge_vertices(digits_vertex=8)
    comps = m.split(only_watertight=False)
    side = int(np.ceil(len(comps) ** (1 / 3)))  # 3D grid keeps coordinates small (float32 BVH)
    cells = np.stack(np.unravel_index(np.arange(len(comps)), (side,) * 3), axis=1) * 1.2
    spread = trimesh.util.concatenate(
        [comp.copy().apply_translation(cell) for comp, cell in zip(comps, cells, strict=True)]
    )
    owner = np.concatenate([np.full(len(comp.faces), i) for i, comp in enumerate(comps)])
    n, area = spread.face_normals, spread.area_faces
    origin = spread.triangles_center - n * 1e-5
    hit, ray, _ = spread.ray.intersects_location(origin, -n, multiple_hits=False)
    depth = np.full(len(n), np.inf)
    depth[ray] = np.linalg.norm(hit - origin[ray], axis=1)
    thin = np.bincount(owner, weights=area * (depth < min_thickness), minlength=len(comps))
    return float((thin / np.bincount(owner, weights=area, minlength=len(comps))).max())


@pytest.mark.parametrize("category", CATS)
def test_parts_are_not_paper_thin(category: str):
    # min thickness ~1% of the diagonal; measured worst fraction over seeds 0-59: 0.015 (motorcycle)
    worst = max(thin_area_fraction(asset(category, s).mesh, 0.008) for s in range(4))
    assert worst < 0.03


@pytest.mark.parametrize(
    "piece",
    [
        c.box([0, 1, 0], [1, 2, 3], c.rotation([1, 2, 3], 0.7), cell=0.3),
        c.beam([0, 0, 0], [0.3, 1, 0.2], 0.1, 0.2),
        c.tube([0, 0, 0], [0.3, 1, 0.2], 0.1, 0.05),
        c.capsule([0, 0, 0], [0.3, 1, 0.2], 0.1),
        c.sweep(c.round_corners([[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0.3]], 0.2), 0.05),
        c.torus([0, 0, 0], [1, 0, 0], 1.0, 0.2, 0.3),
        c.revolve([[0, 0], [1, 0], [1, 1], [0.3, 1.5], [0.3, 2], [0, 2]], scale_z=0.5, n=4.0),
        c.ellipsoid([0, 0, 0], [1, 2, 3]),
        c.loft(
            np.stack(
                [
                    c.airfoil_ring([0, 0, 0], [0, 0, 1], [0, 1, 0], 1, 0.12, 9, 0.05),
                    c.airfoil_ring([1, 0, 0.3], [0, 0, 1], [0, 1, 0], 0.5, 0.06, 9, 0.05),
                ]
            )
        ),
    ],
    ids=["box", "beam", "tube", "capsule", "sweep", "torus", "revolve", "ellipsoid", "wing"],
)
def test_primitives_closed_and_outward(piece):
    m = trimesh.Trimesh(*piece, process=True)
    m.update_faces(m.nondegenerate_faces())
    assert m.is_watertight and m.is_winding_consistent
    assert m.volume > 0 and c.signed_volume(piece) > 0


# --------------------------------------------------------------------------- determinism, speed


@pytest.mark.parametrize("category", CATS)
def test_deterministic(category: str):
    a, b = generate(category, 11), generate(category, 11)
    np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
    np.testing.assert_array_equal(a.mesh.faces, b.mesh.faces)
    np.testing.assert_array_equal(a.mesh.visual.face_colors, b.mesh.visual.face_colors)
    np.testing.assert_array_equal(a.face_part, b.face_part)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.keypoint_ids, b.keypoint_ids)
    assert a.meta == b.meta


def test_generation_is_fast():
    # measured ~8-20 ms CPU per instance (motorcycle slowest); budget 50 ms, 2x margin here
    for category in CATS:
        t0 = time.process_time()
        for s in range(100, 105):
            generate(category, s)
        assert (time.process_time() - t0) / 5 < 0.1, category


# --------------------------------------------------------------------------- variation

STYLE_KEYS = {
    "chair": ("seat_shape", "back_style", "leg_style", "has_arms"),
    "table": ("top_shape", "base", "support"),
    "airplane": ("wing_style", "wing_pos", "tail", "n_engines"),
    "car": ("style",),
    "motorcycle": ("style", "variant"),
    "bottle": ("style", "section"),
}


def pairwise_keypoint_displacement(assets: list[ShapeAsset]) -> np.ndarray:
    """Mean distance between same-id keypoints, for every pair of instances."""
    kps = [kp(a) for a in assets]
    out = []
    for i in range(len(kps)):
        for j in range(i + 1, len(kps)):
            common = set(kps[i]) & set(kps[j])
            out.append(np.mean([np.linalg.norm(kps[i][n] - kps[j][n]) for n in common]))
    return np.asarray(out)


def chamfer(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * (cKDTree(q).query(p)[0].mean() + cKDTree(p).query(q)[0].mean())


@pytest.mark.parametrize("category", CATS)
def test_instances_vary(category: str):
    assets = [asset(category, s) for s in range(N_VAR)]
    # discrete styles: every style key takes >= 2 values and >= 4 combinations appear
    combos = {tuple(a.meta[k] for k in STYLE_KEYS[category]) for a in assets}
    for i, key in enumerate(STYLE_KEYS[category]):
        assert len({cmb[i] for cmb in combos}) >= 2, key
    assert len(combos) >= 4
    # continuous proportions: normalized bbox extents spread out (measured max std 0.03-0.12)
    ext = np.array([np.ptp(a.mesh.vertices, axis=0) for a in assets])
    assert ext.std(axis=0).max() > 0.02
    # cross-instance keypoint transfer is not a copy: same-id keypoints move between instances.
    # Measured over the 190 pairs (unit-diagonal units): 5th percentile 0.020 (motorcycle) to
    # 0.040 (chair), median 0.050 (motorcycle) to 0.16 (table).
    disp = pairwise_keypoint_displacement(assets)
    assert np.quantile(disp, 0.05) > 0.012
    assert np.median(disp) > 0.035
    # shapes differ beyond sampling noise: median chamfer distance over 30 pairs vs. the
    # chamfer between two samplings of one instance (measured ratio 1.7 car .. 5.7 table;
    # copies of one shape would give ~1.0)
    pts = [trimesh.sample.sample_surface(a.mesh, 1500, seed=s)[0] for s, a in enumerate(assets)]
    rng = np.random.default_rng(0)
    pairs = [rng.choice(N_VAR, 2, replace=False) for _ in range(30)]
    d = np.median([chamfer(pts[i], pts[j]) for i, j in pairs])
    noise = chamfer(pts[0], trimesh.sample.sample_surface(assets[0].mesh, 1500, seed=99)[0])
    assert d > 1.3 * noise
    # appearance varies too: the dominant face colour is not always the same (measured 9-18)
    dominant = {tuple(np.median(a.mesh.visual.face_colors[:, :3], axis=0) // 32) for a in assets}
    assert len(dominant) >= 4
