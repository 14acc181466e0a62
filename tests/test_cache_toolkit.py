"""``fnerf-pipeline cache`` (cache/toolkit.py) over real stores.

The workspace holds copies of the session's tiny real stores (raycast renders of procedural
chairs and their DAISY features): two render stores, each with its feature store. One render
store is then re-rendered with another seed through the CLI, so exactly one feature store is
stale; ls must flag it, gc must list it (dry run), then delete only it.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore
from cache.store_lock import StoreLock, lock_path
from cache.toolkit import (
    human_bytes,
    identity_summary,
    list_stores,
    parse_objects,
    resolve_render_store,
)
from cache.verify import verify_store
from cache.zarr_io import du
from pipeline.cli import main
from tests.test_faults import render_args

try:  # the moto S3 server fixture (module-scoped) of the object-store tests
    from tests.test_object_store import s3  # noqa: F401
    S3_MISSING = ""
except pytest.skip.Exception as exc:  # that module skips itself when moto / s3fs are missing
    s3, S3_MISSING = None, str(exc)


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"a traceback, not a clear error: {result.exception!r}"
    return result


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


def one_line_error(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def point_at(features: Path, renders: str) -> None:
    """Make a copied feature store name ``renders`` as the render store it came from."""
    zarr.open_group(str(features), mode="r+").attrs["render_store"] = renders


@pytest.fixture(scope="module")
def workspace(tiny_stores, tmp_path_factory):
    """``data/`` with renders chair.zarr (re-rendered with seed 1) and chair-b.zarr, and the
    daisy features of each (computed from the seed-0 renders): {name: path}."""
    tmp = tmp_path_factory.mktemp("toolkit")
    data = tmp / "data"
    paths = {"renders": data / "renders" / "chair.zarr",
             "renders_b": data / "renders" / "chair-b.zarr",
             "feat": data / "features" / "daisy" / "chair.zarr",
             "feat_b": data / "features" / "daisy" / "chair-b.zarr"}
    for key in ("renders", "renders_b"):
        shutil.copytree(tiny_stores[0], paths[key])
    for key in ("feat", "feat_b"):
        shutil.copytree(tiny_stores[1], paths[key])
    point_at(paths["feat"], str(paths["renders"]))
    # relative: resolved against the folders above the feature store (not the cwd)
    point_at(paths["feat_b"], "data/renders/chair-b.zarr")
    ok(*render_args(paths["renders"], tmp, "--seed", "1", "--if-stale", "overwrite"))
    paths["tmp"] = tmp
    return paths


def copy_workspace(workspace, tmp_path) -> dict[str, Path]:
    data = tmp_path / "data"
    shutil.copytree(workspace["tmp"] / "data", data)
    out = {k: data / v.relative_to(workspace["tmp"] / "data") for k, v in workspace.items()
           if k != "tmp"}
    point_at(out["feat"], str(out["renders"]))
    return out


def by_path(records: list[dict]) -> dict[str, dict]:
    return {Path(r["path"]).name + ":" + r["kind"]: r for r in records}


def test_ls_lists_every_store_and_flags_exactly_the_stale_one(workspace):
    data = workspace["tmp"] / "data"
    listing = json.loads(ok("cache", "ls", str(data), "--json"))
    stores = by_path(listing["stores"])
    assert sorted(stores) == ["chair-b.zarr:feature", "chair-b.zarr:render",
                              "chair.zarr:feature", "chair.zarr:render"]
    n = RenderStore(workspace["renders_b"]).n_objects
    for record in stores.values():
        assert (record["n_done"], record["n_objects"], record["complete"]) == (n, n, True)
        assert record["size_bytes"] == du(record["path"]) > 0
        assert record["lock"] is None and record["format_version"] == 2
    assert stores["chair.zarr:feature"]["status"] == "stale"
    assert "seed: 0 -> 1" in stores["chair.zarr:feature"]["reason"]
    assert stores["chair-b.zarr:feature"]["status"] == "fresh"
    assert [r["status"] for r in listing["stores"] if r["kind"] == "render"] == ["ok", "ok"]
    feat_b = stores["chair-b.zarr:feature"]
    assert feat_b["teacher"] == "daisy" and feat_b["dim"] == FeatureStore(
        workspace["feat_b"]).dim
    assert feat_b["render_fingerprint"] == RenderStore(workspace["renders_b"]).fingerprint
    assert stores["chair.zarr:render"]["render_fingerprint"] != stores[
        "chair.zarr:feature"]["render_fingerprint"]  # re-rendered since

    text = ok("cache", "ls", str(data))
    rows = [line for line in text.splitlines() if line.startswith(("render", "feature"))]
    assert len(rows) == 4 and text.count("STALE") == 1
    stale_row = next(r for r in rows if "STALE" in r)
    assert str(workspace["feat"]) in stale_row and "daisy" in stale_row
    assert f"{n}/{n}" in stale_row and "16x16" in stale_row
    assert "stale: " + str(workspace["feat"]) in text and "seed: 0 -> 1" in text


def test_gc_dry_run_lists_the_stale_store_and_deletes_nothing(workspace, tmp_path):
    paths = copy_workspace(workspace, tmp_path)
    before = {k: du(p) for k, p in paths.items()}
    out = ok("cache", "gc", str(tmp_path / "data"))
    assert f"would remove: {paths['feat']} (feature store" in out
    assert out.count("would remove") == 1 and "seed: 0 -> 1" in out
    assert f"would reclaim {human_bytes(before['feat'])} ({before['feat']} bytes)" in out
    assert {k: du(p) for k, p in paths.items()} == before


def test_gc_yes_deletes_only_the_stale_store(workspace, tmp_path):
    paths = copy_workspace(workspace, tmp_path)
    report = json.loads(ok("cache", "gc", str(tmp_path / "data"), "--yes", "--json"))
    assert [(i["path"], i["deleted"]) for i in report["items"]] == [(str(paths["feat"]), True)]
    assert not paths["feat"].exists() and not lock_path(paths["feat"]).exists()
    for key in ("renders", "renders_b", "feat_b"):
        assert verify_store(paths[key]).ok
    remaining = by_path(json.loads(ok("cache", "ls", str(tmp_path / "data"), "--json"))["stores"])
    assert sorted(remaining) == ["chair-b.zarr:feature", "chair-b.zarr:render",
                                 "chair.zarr:render"]
    assert "nothing to remove" in ok("cache", "gc", str(tmp_path / "data"), "--yes")


def test_gc_removes_orphans_and_leftovers_but_never_a_locked_store(workspace, tmp_path):
    paths = copy_workspace(workspace, tmp_path)
    daisy = paths["feat_b"].parent
    orphan, locked = daisy / "orphan.zarr", daisy / "locked.zarr"
    for store in (orphan, locked):
        shutil.copytree(paths["feat_b"], store)
        point_at(store, str(tmp_path / "gone.zarr"))
    leftover = Path(f"{paths['feat_b']}.creating")  # a killed creation's half-built copy
    shutil.copytree(paths["feat_b"], leftover)
    dead_lock = daisy / "never-made.zarr.lock"
    dead_lock.write_text(json.dumps({"pid": 2**22 + 1, "host": socket.gethostname(),
                                     "stage": "distill-cache"}))  # its holder died
    with StoreLock(locked, stage="distill-cache"):
        listing = json.loads(ok("cache", "ls", str(tmp_path / "data"), "--json"))
        status = {Path(r["path"]).name: (r["status"], bool(r["lock"]))
                  for r in listing["stores"] if r["kind"] == "feature"}
        assert status == {"chair.zarr": ("stale", False), "chair-b.zarr": ("fresh", False),
                          "orphan.zarr": ("orphaned", False), "locked.zarr": ("orphaned", True)}
        assert sorted((Path(x["path"]).name, x["kind"]) for x in listing["leftovers"]) == [
            ("chair-b.zarr.creating", "creating"), ("never-made.zarr.lock", "lock")]
        assert "LOCKED" in ok("cache", "ls", str(tmp_path / "data"))
        report = json.loads(ok("cache", "gc", str(tmp_path / "data"), "--yes", "--json"))
        assert locked.exists() and not orphan.exists() and not paths["feat"].exists()
    deleted = sorted(Path(i["path"]).name for i in report["items"] if i["deleted"])
    assert deleted == ["chair-b.zarr.creating", "chair.zarr", "never-made.zarr.lock",
                       "orphan.zarr"]
    kept = [i for i in report["items"] if not i["deleted"]]
    assert [Path(i["path"]).name for i in kept] == ["locked.zarr"]
    assert "distill-cache" in kept[0]["skipped"]
    assert not leftover.exists() and not dead_lock.exists() and paths["feat_b"].exists()
    assert verify_store(paths["feat_b"]).ok and verify_store(locked).ok


def test_info_shows_identity_settings_and_objects(workspace):
    store = FeatureStore(workspace["feat_b"])
    text = ok("cache", "info", str(workspace["feat_b"]))
    assert text.startswith(f"{workspace['feat_b']}: feature store, format 2")
    assert f"fingerprint: {store.fingerprint}" in text and "status: fresh" in text
    assert "identity:\n  name: daisy" in text and "teacher: daisy: daisy, 16x16x" in text
    for oid in store.attrs["object_ids"]:
        assert oid in text
    info = json.loads(ok("cache", "info", str(workspace["feat_b"]), "--json"))
    assert info["identity"] == store.attrs["identity"]
    assert info["settings"] == RenderStore(workspace["renders_b"]).attrs["config"]
    assert [o["id"] for o in info["objects"]] == store.attrs["object_ids"]
    assert all(o["done"] for o in info["objects"])
    assert info["summary"]["size_bytes"] == du(workspace["feat_b"])
    assert f"colour_basis: 3 axes of the {store.dim} stored channels, fitted on train " in text
    assert info["details"]["variance_kept"]["full"] == 1.0
    assert info["details"]["variance_kept"]["d3"] == round(store.variance_kept()["d3"], 4)
    renders = json.loads(ok("cache", "info", str(workspace["renders"]), "--json"))
    assert renders["settings"]["seed"] == 1 and renders["identity"] is None
    assert [o["split"] for o in renders["objects"]] == RenderStore(workspace["renders"]).splits
    stale = ok("cache", "info", str(workspace["feat"]))
    assert "status: stale" in stale and "seed: 0 -> 1" in stale


def test_info_of_a_store_without_a_colour_basis(workspace, tmp_path):
    old = tmp_path / "old.zarr"
    shutil.copytree(workspace["feat_b"], old)
    for name in ("colour_mean", "colour_components", "colour_lo", "colour_hi",
                 "colour_variances"):
        shutil.rmtree(old / name)
    info = json.loads(ok("cache", "info", str(old), "--json"))
    assert info["details"]["colour_basis"].startswith("none (an older store")
    assert "variance_kept" not in info["details"]


def test_export_npz_round_trips_the_features_exactly(workspace, tmp_path):
    store = FeatureStore(workspace["feat_b"])
    out = tmp_path / "npz"
    assert "exported 5 object(s)" in ok("cache", "export", str(workspace["feat_b"]),
                                        "--format", "npz", "--out", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identity"] == store.attrs["identity"]
    assert [o["id"] for o in manifest["objects"]] == store.attrs["object_ids"]
    for i, oid in enumerate(store.attrs["object_ids"]):
        with np.load(out / f"{oid}.npz") as npz:
            feat = npz["feat"]
            assert str(npz["object_id"]) == oid and str(npz["split"]) == store.attrs["splits"][i]
        assert feat.dtype == np.float32 and feat.shape == (store.feat.shape[1], store.dim,
                                                           *store.grid)
        back = feat.transpose(0, 2, 3, 1).astype(np.float16)
        assert back.tobytes() == store.read(i).tobytes()  # bit-exact
    ids = store.attrs["object_ids"]
    sub = tmp_path / "sub"
    ok("cache", "export", str(workspace["feat_b"]), "--out", str(sub), "--objects", "1:3")
    assert sorted(p.name for p in sub.glob("*.npz")) == sorted(
        [*(f"{o}.npz" for o in ids[1:3]), "colour.npz"])  # the objects and the fitted basis
    picked = tmp_path / "picked"
    ok("cache", "export", str(workspace["renders_b"]), "--out", str(picked), "--objects",
       f"{ids[4]},0", "--compress")
    with np.load(picked / f"{ids[0]}.npz") as npz:
        assert np.array_equal(npz["rgb"], RenderStore(workspace["renders_b"]).read("rgb", 0))
    assert sorted(p.name for p in picked.glob("*.npz")) == sorted([f"{ids[0]}.npz",
                                                                   f"{ids[4]}.npz"])


def test_export_npz_writes_the_verified_colour_basis(workspace, tmp_path):
    paths = copy_workspace(workspace, tmp_path)
    store = FeatureStore(paths["feat_b"])
    basis = store.colour_basis()
    assert basis is not None  # the distill stage fits one per category
    out = tmp_path / "npz"
    ok("cache", "export", str(paths["feat_b"]), "--out", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["colour_basis"] == "colour.npz"
    with np.load(out / "colour.npz") as npz:
        for name, value in zip(("mean", "components", "lo", "hi"), basis, strict=True):
            assert np.array_equal(npz[name], value), name
        assert npz["variances"].shape == (store.dim,)
    group = zarr.open_group(str(paths["feat_b"]), mode="r+")
    group["colour_mean"][0] = group["colour_mean"][0] + 1.0  # no longer its recorded digest
    line = one_line_error("cache", "export", str(paths["feat_b"]), "--out",
                          str(tmp_path / "damaged"))
    assert "colour_mean" in line and "distill-cache" in line
    assert not (tmp_path / "damaged" / "colour.npz").exists()
    assert not (tmp_path / "damaged" / "manifest.json").exists()


def test_export_refuses_damage_and_bad_selections(workspace, tmp_path):
    paths = copy_workspace(workspace, tmp_path)
    line = one_line_error("cache", "export", str(paths["feat_b"]), "--out", str(tmp_path / "o"),
                          "--objects", "nope")
    assert "no object 'nope'" in line
    shard = next(f for f in sorted((paths["feat_b"] / "feat" / "c" / "2").rglob("*"))
                 if f.is_file())
    shard.unlink()  # reads back as zeros: fails its digest
    line = one_line_error("cache", "export", str(paths["feat_b"]), "--out", str(tmp_path / "o"))
    oid = FeatureStore(paths["feat_b"]).attrs["object_ids"][2]
    assert f"object {oid}" in line and "--repair" in line
    assert "no such folder" in one_line_error("cache", "ls", str(tmp_path / "missing"))


def test_export_official_uses_the_official_exporter(workspace, tmp_path):
    try:
        from cache import export_official  # noqa: F401
    except ImportError:
        pytest.skip("cache/export_official.py (the official-layout exporter) is not there yet")
    out = tmp_path / "official"
    text = ok("cache", "export", str(workspace["feat_b"]), "--format", "official", "--out",
              str(out), "--objects", "0:2")
    assert "exported 2 object(s)" in text and any(out.rglob("*"))
    line = one_line_error("cache", "export", str(workspace["feat"]), "--format", "official",
                          "--out", str(tmp_path / "o2"))
    assert "stale" in line


def test_helpers():
    ids = ["a", "b", "c", "d"]
    assert parse_objects(None, ids) is None and parse_objects("", ids) is None
    assert parse_objects("1:3", ids) == [1, 2] and parse_objects("::2", ids) == [0, 2]
    assert parse_objects("c,0,-1", ids) == [2, 0, 3]
    with pytest.raises(ValueError, match="no object 'x'"):
        parse_objects("x", ids)
    dino = {"name": "dino", "model": "vit_small_patch8_224.dino", "weights": "random",
            "seed": 0, "layer": 9, "facet": "key", "grid": [32, 32], "feature_dim": 384}
    assert identity_summary(dino) == ("vit_small_patch8_224.dino, weights random (seed 0), "
                                      "layer 9, facet key, 32x32x384")
    assert identity_summary(dino, 64, 64).endswith("32x32x64 (PCA of 384)")
    assert resolve_render_store("x/y.zarr", None) is None
    assert resolve_render_store("s3://b/f/x.zarr", "") is None


def test_ls_and_gc_on_object_storage(workspace, tmp_path, request):
    """The same listing from an S3 prefix (a local moto server), with URL render_store refs."""
    if s3 is None:
        pytest.skip(f"object-store tests need moto[server] and s3fs ({S3_MISSING})")
    server = request.getfixturevalue("s3")
    fs, base = server["fs"], f"{server['url']}/toolkit"
    local = copy_workspace(workspace, tmp_path)
    point_at(local["feat_b"], f"{base}/renders/chair-b.zarr")
    point_at(local["feat"], f"{base}/renders/gone.zarr")
    for key, name in (("renders_b", "renders/chair-b.zarr"),
                      ("feat_b", "features/chair-b.zarr"), ("feat", "features/chair.zarr")):
        fs.put(str(local[key]), f"{base}/{name}".removeprefix("s3://"), recursive=True)
    half = f"{base}/features/half.zarr".removeprefix("s3://")  # a killed URL creation
    fs.put(str(local["feat_b"]), half, recursive=True)
    fs.pipe_file(half + ".creating", b"{}")
    listing = json.loads(ok("cache", "ls", base, "--json"))
    assert [(x["path"], x["kind"]) for x in listing["leftovers"]] == [
        (f"s3://{half}.creating", "half-made")]
    status = {r["path"].removeprefix(base + "/"): (r["kind"], r["status"], r["n_done"])
              for r in listing["stores"]}
    assert status == {"renders/chair-b.zarr": ("render", "ok", 5),
                      "features/chair-b.zarr": ("feature", "fresh", 5),
                      "features/chair.zarr": ("feature", "orphaned", 5)}
    report = json.loads(ok("cache", "gc", base, "--yes", "--json"))
    assert [(i["path"], i["deleted"]) for i in report["items"]] == [
        (f"{base}/features/chair.zarr", True), (f"s3://{half}.creating", True)]
    fs.invalidate_cache()
    assert not fs.exists(f"{base}/features/chair.zarr".removeprefix("s3://"))
    assert not fs.exists(half) and not fs.exists(half + ".creating")
    assert fs.exists(f"{base}/features/chair-b.zarr/zarr.json".removeprefix("s3://"))


def test_list_stores_is_the_library_behind_ls(workspace):
    summaries, leftovers = list_stores([str(workspace["feat"])])  # a root may be a store
    assert [(s.kind, s.status) for s in summaries] == [("feature", "stale")] and not leftovers
