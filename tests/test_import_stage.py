"""The import stage and its framework: ImportedObject checks, the importer registry, a generic
source without scan_layout (fill values, --size), the official source through the CLI (split
file -> official pairs, features), resume / damage / stale / lock behaviour."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.test_official_format import IDS, SYNSET, make_official_data, official_split


def tiny_object(oid: str = "x", split: str = "train", v: int = 2, h: int = 4, **kw):
    from renderers.importers import ImportedObject

    c2w = np.tile(np.eye(4, dtype=np.float32), (v, 1, 1))
    K = np.tile(np.array([[4, 0, 2], [0, 4, 2], [0, 0, 1]], np.float32), (v, 1, 1))
    base = dict(rgb=np.zeros((v, h, h, 3), np.uint8), alpha=np.zeros((v, h, h), np.uint8),
                K=K, c2w=c2w)
    return ImportedObject(oid, split, **{**base, **kw})


# ----------------------------------------------------------------------------- the framework


def test_imported_object_validate_names_the_object_and_the_array():
    from renderers.importers import ImportFormatError

    obj = tiny_object(part=np.full((2, 4, 4), -1, np.int16))
    assert obj.validate() is obj and obj.annotations() == {
        "depth": False, "parts": False, "keypoints": False, "points": False}
    cases = [
        (dict(rgb=np.zeros((2, 4, 4, 3), np.float32)),
         r"object 'x': array rgb is \(2, 4, 4, 3\) float32; expected \(V, H, W, 3\) uint8"),
        (dict(alpha=np.zeros((3, 4, 4), np.uint8)),
         r"object 'x': array alpha has shape \(3, 4, 4\); expected \(V, H, W\) uint8 with V=2"),
        (dict(kp3d=np.zeros((3, 3), np.float32)), "kp3d and kp_id go together; kp_id"),
        (dict(kp3d=np.zeros((2, 3), np.float32), kp_id=np.array([1, -1], np.int32)),
         "kp_id must be the slot layout"),
        (dict(c2w=np.tile(2 * np.eye(4, dtype=np.float32), (2, 1, 1))),
         "c2w's last rows|not proper rotations"),
        (dict(split="dev"), "split 'dev' is not one of"),
        (dict(part=np.full((2, 4, 4), -2, np.int16)), "part has labels < -1"),
    ]
    for kw, message in cases:
        with pytest.raises(ImportFormatError, match=message):
            tiny_object(**kw).validate()


def test_registry_and_lazy_modules(monkeypatch):
    from pipeline.cli import main
    from renderers.importers import IMPORTERS, ImportFormatError, load_source

    choices = next(p for p in main.commands["import"].params if p.name == "fmt").type.choices
    assert list(choices) == list(IMPORTERS) == ["official", "srn", "dvr", "nerf-synthetic"]
    assert load_source("official").scan_layout is not None
    with pytest.raises(ImportFormatError, match="--format nope: unknown format; choose one of"):
        load_source("nope")
    monkeypatch.setitem(IMPORTERS, "ghost", "renderers.importers.ghost_format:iter_objects")
    with pytest.raises(ImportFormatError, match=r"its importer renderers.importers.ghost_format "
                       r"is not in this checkout \(renderers/importers/ghost_format.py"):
        load_source("ghost")


def test_free_category_names_only_for_imported_and_mesh_stores():
    from renderers.categories import check_store_category, resolve_category

    assert resolve_category("my-scans", free=True).synset == ""
    assert resolve_category("03001627", free=True).name == "chair"  # synsets still resolve
    with pytest.raises(KeyError, match="unknown category 'my-scans'; valid categories: chair"):
        resolve_category("my-scans")
    with pytest.raises(KeyError, match="a free name .* must match"):
        resolve_category("my scans!", free=True)
    check_store_category("my-scans", {"source": "import-srn", "category": "my-scans"}, "s.zarr")
    check_store_category("chair", {"source": "procedural", "category": "chair"}, "s.zarr")
    with pytest.raises(KeyError, match="unknown category 'my-scans'"):
        check_store_category("my-scans", {"source": "procedural", "category": "chair"}, "s.zarr")
    with pytest.raises(KeyError, match="s.zarr holds category 'mugs', not 'my-scans'"):
        check_store_category("my-scans", {"source": "meshes", "category": "mugs"}, "s.zarr")


def fake_module(sizes: dict[str, int], depth: bool = True) -> types.ModuleType:
    """A source without scan_layout or features (like SRN / DVR): 4 views per object."""
    from renderers.cameras import CameraRig, fixed_eval_poses, intrinsics
    from renderers.importers import ImportedObject

    mod = types.ModuleType("fake_importer")

    def list_objects(root, category):
        return [(o, "train" if k == 0 else "test") for k, o in enumerate(sizes)]

    def iter_objects(root, category, split=None, *, objects=None, size=None, tint: int = 0):
        for oid, s in objects or list_objects(root, category):
            n = sizes[oid]
            jj, ii = np.meshgrid(np.arange(n), np.arange(n))
            alpha = ((np.hypot(jj - n / 2, ii - n / 2) < n / 3) * 255).astype(np.uint8)
            alpha = np.repeat(alpha[None], 4, 0)
            rgb = np.stack([alpha // 2 + tint, alpha // 3, alpha // 4], -1).astype(np.uint8)
            K = np.repeat(intrinsics(n, 50.0)[None], 4, 0).astype(np.float32)
            c2w = fixed_eval_poses(CameraRig(image_size=n, n_views=4)).astype(np.float32)
            d = np.where(alpha > 0, 1.25 + ii[None] / 100, 0).astype(np.float32)
            yield ImportedObject(oid, s, rgb, alpha, K, c2w, depth=d if depth else None,
                                 meta={"near": 0.5, "far": 2.5})

    mod.list_objects, mod.iter_objects = list_objects, iter_objects
    return mod


@pytest.fixture
def fake_source(monkeypatch):
    from renderers.importers import IMPORTERS

    def install(sizes, depth=True):
        monkeypatch.setitem(sys.modules, "fake_importer", fake_module(sizes, depth))
        monkeypatch.setitem(IMPORTERS, "fake", "fake_importer:iter_objects")
    return install


def cfg_for(tmp_path: Path, fmt: str, root: Path, **kw):
    from pipeline.import_stage import ImportStageConfig

    return ImportStageConfig(format=fmt, root=str(root), category="chair",
                             out=str(tmp_path / f"{fmt}.zarr"),
                             report_dir=str(tmp_path / f"{fmt}-report"), **kw)


def test_generic_source_gets_fill_values_and_size(tmp_path, fake_source):
    from cache.render_store import RenderStore
    from pipeline.import_stage import run_import_stage

    fake_source({"a": 64, "b": 64, "c": 64})
    res = run_import_stage(cfg_for(tmp_path, "fake", tmp_path, size=32))
    store = RenderStore(res.store)
    assert store.attrs["annotations_present"] == {"depth": True, "parts": False,
                                                  "keypoints": False, "points": False}
    assert store.attrs["annotated_objects"]["depth"] == [0, 1, 2]
    assert store.image_size == 32 and store.n_views == 4
    assert store.attrs["camera"]["near"] == 0.5 and store.attrs["part_names"] == []
    from renderers.cameras import intrinsics

    np.testing.assert_allclose(store.read("K", 0)[0], intrinsics(64, 50.0) * [[.5], [.5], [1]],
                               rtol=1e-6)
    depth = store.read("depth", 1)
    assert depth[0, 16, 16] == np.float32(1.25 + 33 / 100)  # the 64 px pixel (33, 33)
    assert (store.read("part", 0) == -1).all() and (store.read("kp_id", 0) == -1).all()
    assert not store.read("points", 0).any() and (store.read("point_part", 0) == -1).all()
    html = Path(res.report).read_text()
    assert "Annotations the source carries" in html and ">NO<" in html


def test_mixed_sizes_are_an_error_naming_the_object(tmp_path, fake_source):
    from pipeline.import_stage import run_import_stage
    from renderers.importers import ImportFormatError

    fake_source({"a": 64, "b": 32, "c": 64})
    with pytest.raises(ImportFormatError, match=r"object b: 4 views of 32x32 px; the store holds "
                       r"4 views of 64x64 .*pass --size 32"):
        run_import_stage(cfg_for(tmp_path, "fake", tmp_path))
    res = run_import_stage(cfg_for(tmp_path, "fake", tmp_path, size=32, if_stale="overwrite"))
    assert res.metrics["objects"] == 3


def test_options_and_features_are_checked_before_writing(tmp_path, fake_source):
    from pipeline.guards import PreflightError
    from pipeline.import_stage import run_import_stage

    fake_source({"a": 32, "b": 32})
    with pytest.raises(PreflightError, match="unexpected keyword argument 'nope'.*format fake "
                       "accepts tint"):
        run_import_stage(cfg_for(tmp_path, "fake", tmp_path, options={"nope": 1}))
    with pytest.raises(PreflightError, match="--features-out: the fake format ships no cached "
                       "teacher features"):
        run_import_stage(cfg_for(tmp_path, "fake", tmp_path,
                                 features_out=str(tmp_path / "f.zarr")))
    assert not (tmp_path / "fake.zarr").exists()
    res = run_import_stage(cfg_for(tmp_path, "fake", tmp_path, options={"tint": 9}))
    assert res.metrics["objects"] == 2


# ------------------------------------------------------------------------- official, via CLI


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("official") / "data"
    make_official_data(root, n_views=50, size=32)
    return root


def cli(*args: str):
    from pipeline.cli import main

    return CliRunner().invoke(main, ["import", *args], catch_exceptions=False)


def test_cli_import_with_the_official_split_then_official_pairs(data, tmp_path):
    from cache.feature_store import FeatureStore
    from cache.render_store import RenderStore
    from pipeline.evaluation.pairs import make_pairs

    split = official_split(tmp_path / f"{SYNSET}.json")
    out, feats = tmp_path / "chair.zarr", tmp_path / "feat.zarr"
    result = cli("--format", "official", "--root", str(data), "--category", "chair", "--split",
                 str(split), "--out", str(out), "--report-dir", str(tmp_path / "rep"),
                 "--features-out", str(feats))
    assert result.exit_code == 0, result.output
    assert "3 objects (3 now), 150 views at 32 px" in result.output
    assert "annotations: parts, keypoints, points" in result.output
    store = RenderStore(out)
    assert store.object_ids == list(IDS) and store.splits == ["train", "test", "test"]
    assert store.attrs["valid_for_test"] == {IDS[1]: True, IDS[2]: True}
    FeatureStore(feats, renders=store).verify(store.valid_indices())
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["features"]["objects"] == 3 and metrics["annotations_present"]["parts"]
    pairs = make_pairs(store.object_ids, store.valid_indices("test"), store.n_views, 100, 0,
                       split_json=split)
    assert pairs.source == "split-json" and len(pairs.cross_instance) == 2
    assert [(p.src, p.trg, p.view) for p in pairs.cross_instance] == [(1, 2, 3), (2, 1, 48)]
    assert len(pairs.cross_view) == 1
    bad = cli("--format", "official", "--root", str(data), "--category", "chair", "--out",
              str(tmp_path / "o.zarr"), "--report-dir", str(tmp_path / "r2"), "--option",
              "nope=1")
    assert bad.exit_code == 1 and "format official accepts frame" in bad.output


def test_resume_redoes_only_reset_and_damaged_objects(data, tmp_path):
    from cache import integrity
    from cache.render_store import RenderStoreWriter
    from pipeline.import_stage import run_import_stage
    from tests.test_official_format import store_arrays

    cfg = cfg_for(tmp_path, "official", data)
    first = run_import_stage(cfg)
    before = store_arrays(Path(first.store))
    writer = RenderStoreWriter(first.store)
    writer.reset([1])
    shard = integrity.chunk_file(first.store, writer.group["kp_candidates"], 2)
    Path(shard).unlink()  # an importer array of a done object is lost
    again = run_import_stage(cfg)
    m = again.metrics
    assert (m["objects_imported_now"], m["objects_redone_after_damage"]) == (2, 1)
    assert m["fingerprint"] == first.metrics["fingerprint"]
    after = store_arrays(Path(again.store))
    for i in before:
        for name in before[i]:
            np.testing.assert_array_equal(before[i][name], after[i][name], err_msg=name)
    third = run_import_stage(cfg)
    assert third.metrics["objects_imported_now"] == 0
    assert third.metrics["annotations_present"] == first.metrics["annotations_present"]


def test_stale_store_is_refused_then_overwritten_and_the_lock_held(data, tmp_path):
    from cache.store_lock import StoreLock, StoreLocked
    from cache.zarr_io import StoreError
    from pipeline.import_stage import run_import_stage

    run_import_stage(cfg_for(tmp_path, "official", data))
    with pytest.raises(StoreError, match=r"other settings \(.*objects_per_split: \(unset\) -> 1"):
        run_import_stage(cfg_for(tmp_path, "official", data, objects=1))
    res = run_import_stage(cfg_for(tmp_path, "official", data, objects=1, if_stale="overwrite"))
    assert res.metrics["objects"] <= 3 and res.metrics["objects_imported_now"] >= 1
    with StoreLock(tmp_path / "official.zarr", stage="render"):
        with pytest.raises(StoreLocked, match="another render run is writing this store"):
            run_import_stage(cfg_for(tmp_path, "official", data, objects=1))


def test_size_and_frame_options_of_the_official_source(tmp_path):
    from cache.render_store import RenderStore
    from pipeline.import_stage import run_import_stage
    from renderers.conventions import K_from_camera_angle_x
    from tests.test_official_format import ANGLE

    root = tmp_path / "data"
    truth = make_official_data(root, ids=IDS[:2], n_views=4, size=64)
    res = run_import_stage(cfg_for(tmp_path, "official", root, size=32,
                                   options={"frame": "shapenet-v2"}))
    store = RenderStore(res.store)
    assert store.image_size == 32 and store.attrs["camera"]["source_frame"] == "shapenet-v2"
    for i, oid in enumerate(store.object_ids):
        t = truth[oid]
        np.testing.assert_allclose(store.read("c2w", i), t["poses"], atol=1e-6)  # no rotation
        np.testing.assert_allclose(store.read("K", i)[0], K_from_camera_angle_x(ANGLE, 32, 32),
                                   rtol=1e-6)
        np.testing.assert_array_equal(store.read("part", i), t["part"][:, 1::2, 1::2] - 1)
        rows = t["kp2d_rows"][2]
        np.testing.assert_allclose(store.read("kp2d", (i, 2))[rows[:, 2]],
                                   (rows[:, :2] + 0.5) / 2)
    mixed = tmp_path / "mixed"
    make_official_data(mixed, ids=IDS[:1], n_views=4, size=64)
    make_official_data(mixed, ids=IDS[1:2], n_views=4, size=32, seed=1)
    from renderers.importers import ImportFormatError

    with pytest.raises(ImportFormatError, match="come at 32 and 64 px; pass --size 32"):
        run_import_stage(cfg_for(tmp_path / "m", "official", mixed))


def test_imported_store_trains_and_evaluates_on_the_official_pairs(tmp_path):
    """import (renders), import --features-only (what dvc's distill stage would run), a tiny
    student + pixelNeRF, then evaluate --split: the official pairs of the json are used."""
    from pipeline.evaluation.stage import EvaluateConfig, run_evaluate_stage
    from tests.test_eval_features import tiny_train_config
    from train.trainer import train

    root = tmp_path / "data"
    make_official_data(root, n_views=8, size=32)
    split = official_split(tmp_path / f"{SYNSET}.json")
    out, feats = tmp_path / "chair.zarr", tmp_path / "dino" / "chair.zarr"
    common = ("--format", "official", "--category", "chair", "--out", str(out))
    first = cli(*common, "--root", str(root), "--split", str(split), "--report-dir",
                str(tmp_path / "r1"))
    assert first.exit_code == 0, first.output
    other = tmp_path / "other"
    make_official_data(other, ids=IDS[:2], n_views=8, size=32)
    wrong = cli(*common, "--root", str(other), "--features-only", "--features-out", str(feats),
                "--report-dir", str(tmp_path / "r2"))
    assert wrong.exit_code == 1 and "was not imported from" in wrong.output
    second = cli(*common, "--root", str(root), "--features-only", "--features-out", str(feats),
                 "--report-dir", str(tmp_path / "r2"))
    assert second.exit_code == 0 and "features: 3 objects [4, 4]x6" in second.output
    runs = {}
    for name, teacher in (("student", True), ("pixelnerf", False)):
        cfg = tiny_train_config((out, feats), tmp_path, name, teacher)
        cfg.steps = 2
        train(cfg, progress=False)
        runs[name] = cfg.run_dir
    report = tmp_path / "eval"
    run_evaluate_stage(EvaluateConfig(
        category="chair", run=str(runs["student"]), pixelnerf_run=str(runs["pixelnerf"]),
        renders=str(out), features=str(feats), split_json=str(split), n_pairs=10, eval_size=16,
        n_views=2, nvs_objects=1, n_visual=1, device="cpu", report_dir=str(report),
        progress=False))
    pairs = json.loads((report / "summary.json").read_text())["pairs"]
    assert pairs["source"] == "split-json"
    assert (pairs["cross_instance"], pairs["cross_view"]) == (1, 1)  # view 48 of 8: dropped
    assert pairs["dropped"]["view"] == 1


def test_evaluate_reads_an_imports_own_arrays_unpadded_and_verified(data, tmp_path):
    """Object 1 of the fixture has 37 labelled points, stored padded to 40: the 3D task reads
    the 37 (a padded set would count repeated points twice in the part mIoU), and a damaged
    importer array is an error before anything is scored."""
    import zarr

    from cache.render_store import RenderStore
    from cache.zarr_io import StoreError
    from pipeline.evaluation.stage import SourcePoints, verified_points
    from pipeline.import_stage import run_import_stage

    store = RenderStore(run_import_stage(cfg_for(tmp_path, "official", data)).store)
    every = list(range(len(store.object_ids)))
    points = verified_points(store, every)
    assert isinstance(points, SourcePoints)
    assert store.read("points", 1).shape == (40, 3) and points.read("points", 1).shape == (37, 3)
    assert points.read("point_part", 1).shape == (37,) and points.n_views == store.n_views
    pts = np.load(data / "part_3d_anno" / SYNSET / f"{store.object_ids[1]}.npz")["pts"]
    assert len(pts) == 37
    group = zarr.open_group(store.path, mode="r+")
    group["kp_candidates"][1] = group["kp_candidates"][1] + 1.0
    with pytest.raises(StoreError, match="kp_candidates"):
        verified_points(RenderStore(store.path), every)
