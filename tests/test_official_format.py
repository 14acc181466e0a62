"""FeatureNeRF's processed-data layout: import, export, round trip, independent reader, errors.

The fixtures are written here in the true on-disk layout of formats.md section 8 (and the
released FeatureNeRFDataset / eval scripts), with geometry from this file's own formulas:
``transform_matrix`` is an OpenCV camera-to-world in ShapeNet v1 axes, ``u = f x / z + W/2``
with ``f = W / (2 tan(camera_angle_x / 2))``, 2D keypoint labels are ``floor(u)``, part label 0
is background. The independent reader at the end is written from the same text, not from
``renderers.importers.official`` or ``cache.export_official``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renderers.shapenet import V1_TO_V2

SYNSET = "03001627"
ANGLE = 0.9072  # camera_angle_x, radians (51.98 deg)
IDS = ("1a2b3c4d5e6f708192a3b4c5d6e7f809", "2b3c4d5e6f708192a3b4c5d6e7f8091a",
       "3c4d5e6f708192a3b4c5d6e7f8091a2b")


def look_at_opencv(eye: np.ndarray) -> np.ndarray:
    """OpenCV c2w (x right, y down, z forward) looking at the origin, world +Y up."""
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def pinhole(points: np.ndarray, c2w: np.ndarray, size: int, angle: float = ANGLE
            ) -> tuple[np.ndarray, np.ndarray]:
    """The eval scripts' projection: continuous (u, v) = f (x, y) / z + W/2, and z."""
    f = size / (2 * np.tan(angle / 2))
    cam = (np.linalg.inv(c2w) @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    return f * cam[:, :2] / cam[:, 2:3] + size / 2, cam[:, 2]


def write_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def make_official_data(root: Path, ids=IDS, n_views: int = 50, size: int = 32, seed: int = 0,
                       feat_dim: int = 6, grid: int = 4, parts: bool = True,
                       keypoints: bool = True, features: bool = True,
                       n_points: tuple[int, ...] = (40, 37, 40)) -> dict:
    """Write objects in the official layout; returns the ground truth per object id."""
    rng = np.random.default_rng(seed)
    truth = {}
    for k, oid in enumerate(ids):
        radius = 0.25 + 0.05 * k
        el = np.deg2rad(rng.uniform(10, 60, n_views))
        az = rng.uniform(0, 2 * np.pi, n_views)
        eyes = 1.3 * np.stack([np.cos(el) * np.cos(az), np.sin(el), np.cos(el) * np.sin(az)], 1)
        poses = np.stack([look_at_opencv(e) for e in eyes])
        frames, rgba_all, part_all, kp2d_rows, uv_all = [], [], [], [], []
        kp_ids = np.array([0, 2, 5, 7])
        dirs = rng.normal(size=(4, 3))
        kp_xyz = radius * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        for v in range(n_views):
            name = f"{v:04d}.png"
            frames.append({"file_path": name, "transform_matrix": poses[v].tolist()})
            (cu, cv), = pinhole(np.zeros((1, 3)), poses[v], size)[0]
            f = size / (2 * np.tan(ANGLE / 2))
            r_px = f * radius / 1.3
            jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
            d = np.hypot(jj - cu, ii - cv)
            alpha = np.clip((r_px - d + 0.5) * 255, 0, 255).astype(np.uint8)  # soft edge
            rgba = np.concatenate([rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                                   alpha[..., None]], -1)
            rgba_all.append(rgba)
            path = root / "img" / SYNSET / oid / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgba, "RGBA").save(path)
            part = np.where(d < r_px, np.where(ii < cv, 1, 2), 0)
            part[(d < r_px) & (jj < cu - r_px / 2)] = 0  # an unlabelled sliver
            part_all.append(part)
            uv, _ = pinhole(kp_xyz, poses[v], size)
            uv_all.append(uv)
            facing = (kp_xyz * (eyes[v] - kp_xyz)).sum(1) > 0
            inside = (uv >= 0).all(1) & (uv < size).all(1)
            keep = facing & inside
            kp2d_rows.append(np.c_[np.floor(uv[keep]).astype(np.int64), kp_ids[keep]])
        cam = root / "camera" / SYNSET / f"{oid}.json"
        cam.parent.mkdir(parents=True, exist_ok=True)
        cam.write_text(json.dumps({"camera_angle_x": ANGLE, "frames": frames}))
        n = n_points[k % len(n_points)]
        pts = rng.uniform(-0.3, 0.3, (n, 3))
        pt_labels = rng.integers(0, 3, n)
        cand = rng.uniform(-0.3, 0.3, (30 + k, 3))
        if parts:
            write_npz(root / "part_2d_anno" / SYNSET / f"{oid}.npz",
                      labels=np.stack(part_all).astype(np.int64))
            write_npz(root / "part_3d_anno" / SYNSET / f"{oid}.npz", pts=pts, labels=pt_labels)
        if keypoints:
            per_view = np.empty(n_views, dtype=object)
            for v, rows in enumerate(kp2d_rows):
                per_view[v] = rows
            write_npz(root / "kp_2d_anno" / SYNSET / f"{oid}.npz", labels=per_view)
            write_npz(root / "kp_3d_anno" / SYNSET / f"{oid}.npz",
                      labels=np.c_[kp_xyz, kp_ids].astype(np.float32), pts=cand)
        feats = rng.normal(size=(n_views, feat_dim, grid, grid)).astype(np.float32)
        if features:
            write_npz(root / "dino_feat_256" / SYNSET / f"{oid}.npz", feats=feats)
        truth[oid] = {"poses": poses, "rgba": np.stack(rgba_all), "part": np.stack(part_all),
                      "kp_xyz": kp_xyz, "kp_ids": kp_ids, "kp2d_rows": kp2d_rows,
                      "uv": np.stack(uv_all), "pts": pts, "pt_labels": pt_labels, "cand": cand,
                      "feats": feats}
    return truth


def official_split(path: Path, train=(IDS[0],), test=IDS[1:], pairs: bool = True) -> Path:
    data = {"train": list(train), "val": [], "test": list(test),
            "valid_flags_for_test": {o: True for o in test},
            "cross_inst_pairs": [{"src": test[0], "trg": test[1], "view": 3},
                                 {"src": test[1], "trg": test[0], "view": 48}] if pairs else [],
            "cross_view_pairs": [{"model_id": test[0], "src_view": 1, "trg_view": 7}]
            if pairs else []}
    path.write_text(json.dumps(data))
    return path


def run_import(root: Path, out: Path, **kw):
    from pipeline.import_stage import ImportStageConfig, run_import_stage

    kw.setdefault("report_dir", str(out.parent / f"{out.stem}-report"))
    return run_import_stage(ImportStageConfig(format="official", root=str(root),
                                              category="chair", out=str(out), **kw))


def store_arrays(path: Path) -> dict[int, dict[str, np.ndarray]]:
    from cache.render_store import CONTENT_ARRAYS, RenderStore

    store = RenderStore(path)
    names = list(CONTENT_ARRAYS) + [n for n in store.attrs.get("import_arrays", [])]
    return {i: {n: store.read(n, i) for n in names} for i in store.valid_indices()}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("official") / "data"
    return root, make_official_data(root)


@pytest.fixture(scope="module")
def imported(official, tmp_path_factory):
    root, truth = official
    tmp = tmp_path_factory.mktemp("imported")
    res = run_import(root, tmp / "chair.zarr", features_out=str(tmp / "feat.zarr"))
    return res, truth


# ------------------------------------------------------------------------------------ import


def test_import_follows_the_official_conventions(imported):
    from cache.feature_store import FeatureStore
    from cache.render_store import RenderStore
    from renderers.cameras import project

    res, truth = imported
    store = RenderStore(res.store)
    feats = FeatureStore(res.features, renders=store)
    assert store.attrs["annotations_present"] == {"depth": False, "parts": True,
                                                  "keypoints": True, "points": True}
    assert sorted(store.object_ids) == sorted(IDS) and store.n_views == 50
    assert store.image_size == 32
    r = V1_TO_V2[:3, :3]
    f = 32 / (2 * np.tan(ANGLE / 2))
    for i, oid in enumerate(store.object_ids):
        t = truth[oid]
        a = {n: store.read(n, i) for n in ("rgb", "alpha", "K", "c2w", "part", "kp3d", "kp_id",
                                           "kp2d", "kp_visible", "points", "point_part",
                                           "depth", "kp_candidates", "point_count")}
        alpha = t["rgba"][..., 3].astype(np.float32) / 255
        want_rgb = (t["rgba"][..., :3] * alpha[..., None]).astype(np.uint8)
        np.testing.assert_array_equal(a["rgb"], want_rgb)
        np.testing.assert_array_equal(a["alpha"], t["rgba"][..., 3])
        np.testing.assert_allclose(a["K"][7], [[f, 0, 16], [0, f, 16], [0, 0, 1]], rtol=1e-6)
        np.testing.assert_allclose(a["c2w"], V1_TO_V2 @ t["poses"], atol=1e-6)
        np.testing.assert_array_equal(a["part"], t["part"] - 1)
        assert not a["depth"].any()
        ids = t["kp_ids"]
        np.testing.assert_array_equal(np.flatnonzero(a["kp_id"] >= 0), ids)
        np.testing.assert_allclose(a["kp3d"][ids], t["kp_xyz"] @ r.T, atol=1e-6)
        for v in (0, 13, 49):  # our K, c2w and the project-frame keypoints: the same pixels
            uv, _ = project(a["kp3d"][ids].astype(np.float64), a["K"][v], a["c2w"][v])
            np.testing.assert_allclose(uv, t["uv"][v], atol=2e-3)
            rows = t["kp2d_rows"][v]
            np.testing.assert_array_equal(np.flatnonzero(a["kp_visible"][v]), np.sort(rows[:, 2]))
            np.testing.assert_array_equal(a["kp2d"][v, rows[:, 2]], rows[:, :2] + 0.5)
            hidden = np.setdiff1d(ids, rows[:, 2])
            np.testing.assert_allclose(a["kp2d"][v, hidden], t["uv"][v][np.isin(ids, hidden)],
                                       atol=2e-3)
        n = len(t["pts"])
        assert a["point_count"] == n
        np.testing.assert_allclose(a["points"][:n], t["pts"] @ r.T, atol=1e-6)
        np.testing.assert_array_equal(a["point_part"][:n], t["pt_labels"] - 1)
        np.testing.assert_array_equal(a["points"][n:], a["points"][: len(a["points"]) - n])
        m = len(t["cand"])
        np.testing.assert_allclose(a["kp_candidates"][:m], t["cand"] @ r.T, atol=1e-6)
        np.testing.assert_array_equal(feats.read(i), t["feats"].transpose(0, 2, 3, 1)
                                      .astype(np.float16))
    assert feats.attrs["identity"]["name"] == "official-dino-cache"
    assert feats.attrs["render_fingerprint"] == store.fingerprint
    checks = store.attrs["import_checks"]
    assert checks["kp2d_vs_projected_kp3d_px_max"] < 0.75  # labels are floor(projection)
    assert checks["mean_camera_up"][1] > 0.9


# -------------------------------------------------------------------------------- round trip


def test_export_then_import_gives_identical_arrays(imported, tmp_path):
    from cache.export_official import export_official
    from cache.feature_store import FeatureStore
    from cache.render_store import RenderStore

    res, truth = imported
    out = tmp_path / "export"
    result = export_official(res.store, out, feature_store=res.features)
    assert result.not_exported == ["seed"]  # no depth in this source
    assert result.rgb_inexact_pixels == 0
    again = run_import(out, tmp_path / "again.zarr", features_out=str(tmp_path / "again-f.zarr"))
    a, b = store_arrays(Path(res.store)), store_arrays(Path(again.store))
    ia, ib = RenderStore(res.store), RenderStore(again.store)
    assert ia.object_ids == ib.object_ids and ia.splits == ib.splits
    for i in a:
        assert set(a[i]) == set(b[i])
        for name in a[i]:
            np.testing.assert_array_equal(a[i][name], b[i][name], err_msg=name)
    fa, fb = FeatureStore(res.features), FeatureStore(again.features)
    for i in a:
        np.testing.assert_array_equal(fa.read(i), fb.read(i))
    assert ia.attrs["part_names"] == ib.attrs["part_names"]
    assert ia.attrs["keypoint_names"] == ib.attrs["keypoint_names"]
    # against the original files: labels and integer keypoints exactly, cameras to float32
    for oid in IDS:
        t = truth[oid]
        cam = json.loads((out / "camera" / SYNSET / f"{oid}.json").read_text())
        assert cam["camera_angle_x"] == pytest.approx(ANGLE, rel=1e-6)
        np.testing.assert_allclose([fr["transform_matrix"] for fr in cam["frames"]], t["poses"],
                                   atol=1e-6)
        with np.load(out / "part_2d_anno" / SYNSET / f"{oid}.npz") as z:
            np.testing.assert_array_equal(z["labels"], t["part"])
        with np.load(out / "kp_2d_anno" / SYNSET / f"{oid}.npz", allow_pickle=True) as z:
            for v, rows in enumerate(z["labels"]):
                order = np.argsort(t["kp2d_rows"][v][:, 2])
                np.testing.assert_array_equal(rows, t["kp2d_rows"][v][order])
        with np.load(out / "part_3d_anno" / SYNSET / f"{oid}.npz") as z:
            np.testing.assert_array_equal(z["labels"], t["pt_labels"])
            np.testing.assert_allclose(z["pts"], t["pts"], atol=1e-6)
        with np.load(out / "kp_3d_anno" / SYNSET / f"{oid}.npz") as z:
            np.testing.assert_allclose(z["pts"], t["cand"], atol=1e-6)


def test_exported_default_store_reads_back_with_an_independent_reader(tiny_stores, tmp_path):
    """Our procedural renders in the official layout, read with a reader written from
    formats.md section 8: same images, cameras, labels, keypoints and features."""
    from cache.export_official import export_official
    from cache.feature_store import FeatureStore
    from cache.render_store import RenderStore

    renders, features = tiny_stores
    out = tmp_path / "official"
    result = export_official(renders, out, feature_store=features)
    assert result.rgb_inexact_pixels == 0 and result.not_exported == ["depth", "seed"]
    store, feats = RenderStore(renders), FeatureStore(features)
    synset = store.attrs["synset"]
    split = json.loads((out / "splits" / f"{synset}.json").read_text())
    assert split["test"] == [o for o, s in zip(store.object_ids, store.splits, strict=True)
                             if s == "test"]
    assert split["cross_inst_pairs"] and split["cross_view_pairs"]
    for i in store.valid_indices():
        oid = store.object_ids[i]
        frames = json.loads((out / "camera" / synset / f"{oid}.json").read_text())
        pngs = sorted((out / "img" / synset / oid).glob("*.png"))
        assert len(pngs) == len(frames["frames"]) == store.n_views
        H = store.image_size
        focal = H / (2 * np.tan(frames["camera_angle_x"] / 2))
        np.testing.assert_allclose(focal, store.read("K", i)[:, 0, 0], rtol=1e-5)
        labels = np.load(out / "part_2d_anno" / synset / f"{oid}.npz")["labels"]
        kp2d = np.load(out / "kp_2d_anno" / synset / f"{oid}.npz", allow_pickle=True)["labels"]
        kp3d = np.load(out / "kp_3d_anno" / synset / f"{oid}.npz")["labels"]
        part3d = np.load(out / "part_3d_anno" / synset / f"{oid}.npz")
        feat = np.load(out / "dino_feat_256" / synset / f"{oid}.npz")["feats"]
        assert feat.dtype == np.float32 and feat.shape[0] == store.n_views
        np.testing.assert_array_equal(feat, feats.read(i).astype(np.float32)
                                      .transpose(0, 3, 1, 2))
        kp_ids = kp3d[:, 3].astype(int)
        for v, frame in enumerate(frames["frames"]):
            rgba = np.asarray(Image.open(out / "img" / synset / oid / frame["file_path"]))
            a = rgba[..., 3].astype(np.float32) / 255.0
            rgb = (rgba[..., :3] * a[..., None] + (1.0 - a[..., None]) * 0).astype(np.uint8)
            np.testing.assert_array_equal(rgb, store.read("rgb", (i, v)))
            np.testing.assert_array_equal(rgba[..., 3], store.read("alpha", (i, v)))
            np.testing.assert_array_equal(labels[v], store.read("part", (i, v)) + 1)
            pose = np.asarray(frame["transform_matrix"])  # OpenCV c2w, ShapeNet v1 axes
            uv, z = pinhole(kp3d[:, :3].astype(np.float64), pose, H, frames["camera_angle_x"])
            ours = store.read("kp2d", (i, v))[kp_ids]
            np.testing.assert_allclose(uv, ours, atol=2e-3)
            vis = store.read("kp_visible", (i, v))[kp_ids]
            rows = kp2d[v]
            np.testing.assert_array_equal(rows[:, 2], kp_ids[vis])
            np.testing.assert_array_equal(rows[:, :2], np.floor(ours[vis]).astype(int))
        np.testing.assert_allclose(kp3d[:, :3] @ V1_TO_V2[:3, :3].T,
                                   store.read("kp3d", i)[kp_ids], atol=1e-6)
        np.testing.assert_array_equal(part3d["labels"], store.read("point_part", i) + 1)
        np.testing.assert_allclose(part3d["pts"] @ V1_TO_V2[:3, :3].T, store.read("points", i),
                                   atol=1e-6)
    # and back: every array but depth, seed and the sub-pixel part of visible 2D keypoints
    back = run_import(out, tmp_path / "back.zarr", features_out=str(tmp_path / "back-f.zarr"))
    again, fagain = RenderStore(back.store), FeatureStore(back.features)
    assert again.object_ids == store.object_ids and again.splits == store.splits
    assert again.attrs["keypoint_names"] == store.attrs["keypoint_names"]
    assert again.attrs["part_names"] == store.attrs["part_names"]
    for i in store.valid_indices():
        for name in ("rgb", "alpha", "K", "c2w", "part", "kp3d", "kp_id", "kp_visible",
                     "points", "point_part"):
            np.testing.assert_array_equal(again.read(name, i), store.read(name, i), name)
        vis, ours = store.read("kp_visible", i), store.read("kp2d", i)
        np.testing.assert_array_equal(again.read("kp2d", i)[vis], np.floor(ours[vis]) + 0.5)
        np.testing.assert_allclose(again.read("kp2d", i)[~vis], ours[~vis], atol=2e-3)
        assert store.read("depth", i).any() and not again.read("depth", i).any()
        assert not again.read("seed", i).any()
        np.testing.assert_array_equal(fagain.read(i), feats.read(i))


def test_export_refuses_cameras_the_layout_cannot_hold(tmp_path):
    from cache.export_official import ExportError, camera_json

    K = np.tile(np.array([[40.0, 0, 16], [0, 40, 16], [0, 0, 1]], np.float32), (2, 1, 1))
    c2w = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    assert camera_json("x", K, c2w, 32, "shapenet-v2")["camera_angle_x"] > 0
    off = K.copy()
    off[1, 0, 2] = 15.0
    with pytest.raises(ExportError, match="object x: .*principal point"):
        camera_json("object x", off, c2w, 32, "shapenet-v2")


# -------------------------------------------------------------------------------- bad inputs


def _broken(tmp_path: Path, **kw) -> tuple[Path, dict]:
    root = tmp_path / "data"
    return root, make_official_data(root, ids=IDS[:2], n_views=4, size=32, **kw)


def test_missing_image_names_the_file_and_the_fix(tmp_path):
    from renderers.importers import ImportFormatError
    from renderers.importers.official import read_object

    root, _ = _broken(tmp_path)
    (root / "img" / SYNSET / IDS[0] / "0002.png").unlink()
    with pytest.raises(ImportFormatError, match=r"0002\.png: image file is missing \(frame 2 "
                       r".*re-extract"):
        read_object(root, "chair", IDS[0], "train")
    res = run_import(root, tmp_path / "s.zarr", on_error="skip")  # the other object imports
    assert res.metrics["objects"] == 1 and IDS[0] in res.failures


def test_camera_file_with_a_wrong_shape_names_the_frame(tmp_path):
    from renderers.importers import ImportFormatError
    from renderers.importers.official import read_object

    root, _ = _broken(tmp_path)
    cam = root / "camera" / SYNSET / f"{IDS[1]}.json"
    data = json.loads(cam.read_text())
    data["frames"][1]["transform_matrix"] = data["frames"][1]["transform_matrix"][:3]
    cam.write_text(json.dumps(data))
    with pytest.raises(ImportFormatError, match=rf"{IDS[1]}\.json: frames\[1\]\.transform_matrix "
                       r"has shape \(3, 4\); expected a 4x4"):
        read_object(root, "chair", IDS[1], "test")
    cam.unlink()
    with pytest.raises(ImportFormatError, match="camera file is missing"):
        read_object(root, "chair", IDS[1], "test")


def test_feats_npz_with_a_wrong_shape_names_the_file(tmp_path):
    from pipeline.import_stage import ImportStageConfig, run_import_stage
    from renderers.importers import ImportFormatError
    from renderers.importers.official import read_features

    root, _ = _broken(tmp_path)
    bad = root / "dino_feat_256" / SYNSET / f"{IDS[1]}.npz"
    write_npz(bad, feats=np.zeros((4, 6, 16), np.float32))
    with pytest.raises(ImportFormatError, match=rf"{IDS[1]}\.npz: feats has shape \(4, 6, 16\)"):
        read_features(root, "chair", IDS[1])
    write_npz(bad, feats=np.zeros((4, 6, 5, 5), np.float32))  # a grid unlike the others'
    cfg = ImportStageConfig(format="official", root=str(root), category="chair",
                            out=str(tmp_path / "r.zarr"), features_out=str(tmp_path / "f.zarr"),
                            report_dir=str(tmp_path / "rep"))
    with pytest.raises(ImportFormatError, match=rf"features of {IDS[1]} have shape "
                       r"\(4, 6, 5, 5\); the store holds \(4, 6, 4, 4\)"):
        run_import_stage(cfg)


def test_unknown_split_id_names_the_split_file_and_the_fix(tmp_path):
    from renderers.importers import ImportFormatError

    root, _ = _broken(tmp_path)
    split = official_split(tmp_path / f"{SYNSET}.json", train=(IDS[0], "deadbeef" * 4),
                           test=(IDS[1],), pairs=False)
    with pytest.raises(ImportFormatError, match=rf"{SYNSET}\.json: 1 of its ids are not objects "
                       r"of .*deadbeef.*\(train\).*--objects N.*--on-error skip"):
        run_import(root, tmp_path / "u.zarr", split_file=str(split))
    res = run_import(root, tmp_path / "u.zarr", split_file=str(split), on_error="skip")
    assert res.metrics["objects"] == 2 and "deadbeef" * 4 in res.failures
    wrong = official_split(tmp_path / "02691156.json")
    with pytest.raises(ImportFormatError, match="is for synset 02691156, not 03001627"):
        run_import(root, tmp_path / "w.zarr", split_file=str(wrong))


def test_png_without_alpha_and_bad_label_files_are_named(tmp_path):
    from renderers.importers import ImportFormatError
    from renderers.importers.official import read_object

    root, _ = _broken(tmp_path)
    png = root / "img" / SYNSET / IDS[0] / "0001.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8), "RGB").save(png)
    with pytest.raises(ImportFormatError, match=r"0001\.png \(frame 1\): a RGB image without an "
                       "alpha channel"):
        read_object(root, "chair", IDS[0], "train")
    write_npz(root / "part_2d_anno" / SYNSET / f"{IDS[1]}.npz",
              labels=np.zeros((3, 32, 32), np.int64))
    with pytest.raises(ImportFormatError, match=r"part_2d_anno/03001627/.*labels has shape "
                       r"\(3, 32, 32\); expected \(4, H, H\)"):
        read_object(root, "chair", IDS[1], "test")


def test_kp_2d_pickles_are_loaded_without_running_code(tmp_path):
    """kp_2d_anno holds an object array (a pickle): only numpy's array constructors may run."""
    from fractions import Fraction

    from renderers.importers import ImportFormatError
    from renderers.importers.official import load_object_array, read_object

    root, truth = _broken(tmp_path)
    path = root / "kp_2d_anno" / SYNSET / f"{IDS[0]}.npz"
    rows = load_object_array(path, "labels")
    assert rows.dtype == object and len(rows) == 4
    for v in range(4):
        np.testing.assert_array_equal(rows[v], truth[IDS[0]]["kp2d_rows"][v])
    evil = np.empty(4, dtype=object)
    evil[:] = [Fraction(1, 3)] * 4
    write_npz(path, labels=evil)
    with pytest.raises(ImportFormatError, match="labels is a pickle that calls "
                       "fractions.Fraction, not an array of arrays; refusing"):
        read_object(root, "chair", IDS[0], "train")
