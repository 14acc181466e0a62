"""Each "bring your own data" source through the real CLI: import (or render a mesh folder) ->
distill-cache (daisy) -> train (2 steps) -> evaluate, on tiny fixtures in their true layout
(the importer tests' writers). Sources without parts or keypoints must say which tasks
evaluate skipped and why, and print no NaN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trimesh
from click.testing import CliRunner

from pipeline.cli import main
from tests.test_importers_nerf_synthetic import make_blender
from tests.test_importers_srn_dvr import make_dvr, make_srn

SIZE, VIEWS = 32, 5  # training draws 1 input + 4 target views
TRAIN = ("--steps", "2", "--objects-per-step", "2", "--rays", "32", "--backbone", "resnet18",
         "--no-pretrained", "--width", "32", "--n-coarse", "4", "--n-importance", "2",
         "--n-depth", "2", "--device", "cpu", "--loader-workers", "0", "--ckpt-every", "0")
EVALUATE = ("--pairs", "4", "--eval-views", str(VIEWS), "--eval-size", "16", "--nvs-objects", "1",
            "--nvs-views", "1", "--device", "cpu")
IMAGE_TASKS = ("cross_view", "cross_instance", "cross_instance_views", "3d")


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def srn_root(tmp: Path) -> tuple[str, ...]:
    for split, ids in (("train", ("a1", "a2")), ("test", ("t1", "t2"))):
        make_srn(tmp / "srn", "cars", split, ids, n_views=VIEWS, size=SIZE)
    return "import", "--format", "srn", "--root", str(tmp / "srn")


def dvr_root(tmp: Path) -> tuple[str, ...]:
    make_dvr(tmp / "nmr", ids=("m1", "m2", "m3", "m4"), n_views=VIEWS, size=SIZE,
             lists={"train": ["m1", "m2"], "test": ["m3", "m4"]})
    return "import", "--format", "dvr", "--root", str(tmp / "nmr")


def nerf_root(tmp: Path) -> tuple[str, ...]:
    names = ("lego", "ship", "drums", "mic")
    for name in names:
        make_blender(tmp / "captures" / name, n=(3, 2), size=SIZE)
    (tmp / "captures" / "splits.json").write_text(json.dumps({"train": names[:2],
                                                              "test": names[2:]}))
    return ("import", "--format", "nerf-synthetic", "--root", str(tmp / "captures"),
            "--option", f"views={VIEWS}")


def mesh_root(tmp: Path) -> tuple[str, ...]:
    root = tmp / "meshes"
    root.mkdir()
    for i in range(4):
        part = trimesh.creation.box((0.5 + 0.1 * i, 0.3, 0.4))
        part.export(root / f"thing{i}.{'glb' if i % 2 else 'obj'}")
    (root / "splits.json").write_text(json.dumps({"train": ["thing0", "thing1"],
                                                  "test": ["thing2", "thing3"]}))
    return ("render", "--source", "meshes", "--mesh-root", str(root), "--objects", "4",
            "--views", str(VIEWS), "--size", str(SIZE), "--points", "64",
            "--renderer", "raycast")


@pytest.mark.parametrize(("source", "category"), [
    (srn_root, "car"), (dvr_root, "car"), (nerf_root, "capture"), (mesh_root, "gadget")])
def test_source_runs_the_whole_chain_through_the_cli(tmp_path, source, category):
    renders, feats = tmp_path / "renders.zarr", tmp_path / "daisy.zarr"
    report = tmp_path / "evaluate"
    cli(*source(tmp_path), "--category", category, "--out", str(renders),
        "--report-dir", str(tmp_path / "r-in"))
    cli("distill-cache", "--category", category, "--teacher", "daisy", "--renders", str(renders),
        "--out", str(feats), "--input-size", str(SIZE), "--report-dir", str(tmp_path / "r-d"))
    for teacher, name in (("daisy", "student"), ("none", "pixelnerf")):
        cli("train", "--category", category, "--teacher", teacher, "--name", name,
            "--renders", str(renders), "--features", str(feats),
            "--runs-dir", str(tmp_path / "runs"), *TRAIN)
    out = cli("evaluate", "--category", category, "--teacher", "daisy",
              "--run", str(tmp_path / "runs" / "student"),
              "--pixelnerf-run", str(tmp_path / "runs" / "pixelnerf"),
              "--renders", str(renders), "--features", str(feats),
              "--report-dir", str(report), *EVALUATE)
    metrics_text = (report / "metrics.json").read_text()
    html = (report / "index.html").read_text()
    summary = json.loads((report / "summary.json").read_text())
    assert "nan" not in metrics_text.lower() and "nan" not in out.lower()
    assert ">nan<" not in html.lower()  # no NaN table cell in the report
    assert f"{category}.nvs.psnr.student" in json.loads(metrics_text)
    # no source here carries parts or keypoints (the meshes have no sidecars): each image task
    # is skipped with its reason, in the summary, the report and metrics.json
    skipped = {t: summary["skipped"].get(f"task {t}", "") for t in IMAGE_TASKS}
    assert all("no part labels or keypoints" in r for r in skipped.values()), skipped
    assert "no part labels or keypoints" in html
    assert all(f"{category}.skipped.{t}" in metrics_text for t in IMAGE_TASKS)


def dvc_stage_args(stage: str, tmp: Path | None = None, outs: dict[str, str] | None = None,
                   **sections: dict) -> list[str]:
    """Stage ``stage``'s command of dvc.yaml with params.yaml's values (``sections``: per
    params section, e.g. ``render={...}``, the values that override them), as `dvc repro` runs
    it for the first category; ``outs`` flags' paths are moved into ``tmp``."""
    import re
    import shlex

    import yaml

    from tests.conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    values = {k: {**v, **sections.get(k, {})} for k, v in params.items()}
    cmd = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["do"]["cmd"]
    cmd = cmd.replace("${item}", str(values["render"]["categories"][0]))
    cmd = re.sub(r"\$\{(\w+)\.(\w+)\}", lambda m: str(values[m.group(1)][m.group(2)]), cmd)
    args = shlex.split(cmd)[1:]  # without the program name
    for flag, path in (outs or {}).items():
        args[args.index(flag) + 1] = str(Path(tmp or ".") / path)
    return args


def dvc_render_args(tmp: Path, **render: object) -> list[str]:
    """The render stage's command of dvc.yaml with params.yaml's values (``render``
    overrides), as `dvc repro` runs it (outputs moved into ``tmp``)."""
    return dvc_stage_args("render", tmp, {"--out": "renders.zarr", "--report-dir": "report"},
                          render=render)


def test_dvc_render_stage_imports_with_params_only(tmp_path):
    """render.source: import (+ import_format, import_root, import_options): dvc.yaml's render
    command imports instead of rendering; its report is where the stage's outs expect it."""
    from cache.render_store import RenderStore

    root = srn_root(tmp_path)[-1]
    args = dvc_render_args(tmp_path, categories=["car"], source="import", import_format="srn",
                           import_root=root, import_options="views=3 world_scale=rig", size=0)
    cli(*args)
    store = RenderStore(tmp_path / "renders.zarr")
    assert store.attrs["source"] == "import-srn" and store.n_views == 3
    assert store.image_size == SIZE and len(store.object_ids) == 4
    assert (tmp_path / "report" / "index.html").is_file()
    assert (tmp_path / "report" / "metrics.json").is_file()
    camera = store.attrs["camera"]
    assert camera["near_far_source"] == "objects"  # params 0/0: the objects' own

    def import_args(folder: str, near: float, far: float) -> list[str]:
        return dvc_render_args(tmp_path / folder, categories=["car"], source="import",
                               import_format="srn", import_root=root, import_near=near,
                               import_far=far, import_options="views=3 world_scale=rig",
                               size=0)

    for folder, near in (("set", 0.6), ("zero", 0.0)):  # near 0 is a distance (0 and 0: unset)
        cli(*import_args(folder, near, 2.4))
        camera = RenderStore(tmp_path / folder / "renders.zarr").attrs["camera"]
        assert (camera["near"], camera["far"], camera["near_far_source"]) == (
            near, 2.4, "--near/--far")
    result = CliRunner().invoke(main, import_args("half", 0.6, 0.0))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--import-near 0.6 needs --import-far" in result.output
    assert not (tmp_path / "half" / "renders.zarr").exists()


def test_render_refuses_import_near_far_without_an_import(tmp_path):
    result = CliRunner().invoke(main, ["render", "--category", "chair", "--import-near", "0.5",
                                       "--import-far", "2", "--out", str(tmp_path / "r.zarr")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--source import only" in result.output
    assert not (tmp_path / "r.zarr").exists()


def test_dvc_render_stage_default_is_unchanged_by_the_import_flags(tmp_path):
    """The default params (procedural) make the same store as the command without the import
    and mesh flags (tiny sizes; the fingerprint covers the config and every array)."""
    from cache.render_store import RenderStore

    tiny = {"objects": 2, "views": 2, "size": 32, "points": 16, "renderer": "raycast"}
    args = dvc_render_args(tmp_path / "dvc", **tiny)
    cli(*args)
    new_flags = ("--mesh-root", "--import-format", "--import-root", "--import-options",
                 "--import-near", "--import-far")
    plain = [a for k, a in enumerate(args) if a not in new_flags
             and (k == 0 or args[k - 1] not in new_flags)]
    assert len(plain) == len(args) - 2 * len(new_flags)
    plain[plain.index("--out") + 1] = str(tmp_path / "plain.zarr")
    plain[plain.index("--report-dir") + 1] = str(tmp_path / "plain-report")
    cli(*plain)
    dvc, direct = RenderStore(tmp_path / "dvc" / "renders.zarr"), RenderStore(
        tmp_path / "plain.zarr")
    assert dvc.attrs["source"] == "procedural"
    assert dvc.fingerprint == direct.fingerprint
