"""The paper switches end to end on fixtures in the true on-disk layouts: a ShapeNetCore v2 tree,
KeypointNet and ShapeNet-Part annotations, an official FeatureNeRF split json with its pairs.
Real stages through the CLI at tiny sizes; the evaluation must use the official pairs and give
finite metrics under the official protocol."""

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests import annotation_fixtures as af
from tests import shapenet_fixtures as fx

TRAIN = [f"{i:02d}aa000000000000000000000000000{i % 10}" for i in range(4)]
VAL = ["50bb0000000000000000000000000005"]
TEST = [f"{i:02d}cc000000000000000000000000000{i % 10}" for i in range(6, 9)]
ABSENT = "99dd0000000000000000000000000009"  # listed in the split, not on disk


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paper")
    sn, kpn, sp = root / "ShapeNetCore.v2", root / "KeypointNet", root / "ShapeNetPart"
    meshes = {}
    for i, mid in enumerate(TRAIN + VAL + TEST):
        meshes[mid] = af.write_chair_model(sn, mid, af.chair_mesh(scale_z=0.8 + 0.1 * i))
        af.write_shapenet_part(sp, meshes[mid], mid, "benchmark", n=1500)
    af.write_shapenet_part_meta(sp, {"train": [(af.CHAIR, m) for m in TRAIN + VAL + TEST]})
    af.write_keypointnet(kpn, meshes)
    split = {
        "train": TRAIN, "val": VAL,
        "test": TEST + [ABSENT],
        "valid_flags_for_test": {m: True for m in TEST},
        "cross_inst_pairs": [{"src": a, "trg": b, "view": v} for a in TEST for b in TEST
                             if a != b for v in (0, 3)] + [{"src": ABSENT, "trg": TEST[0],
                                                           "view": 1}],
        "cross_view_pairs": [{"model_id": m, "src_view": 0, "trg_view": 4} for m in TEST],
    }
    path = root / f"{fx.CHAIR}.json"
    path.write_text(json.dumps(split))
    return {"root": root, "sn": sn, "kpn": kpn, "sp": sp, "split": path}


def _run(args: list[str], cwd: Path) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_paper_switches_give_a_valid_official_evaluation(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-empty"))  # no ResNet weights here
    split = str(world["split"])
    _run(["render", "--category", "chair", "--source", "shapenet", "--shapenet-root",
          str(world["sn"]), "--split", split, "--annotations", "keypointnet,shapenet-part",
          "--keypointnet-root", str(world["kpn"]), "--shapenet-part-root", str(world["sp"]),
          "--objects", "3", "--views", "6", "--size", "64", "--points", "256",
          "--renderer", "raycast", "--out", "data/renders/chair.zarr", "--on-error", "skip"],
         tmp_path)
    from cache.render_store import RenderStore

    store = RenderStore("data/renders/chair.zarr")
    assert sorted(store.object_ids[i] for i in store.valid_indices("test")) == sorted(TEST)
    assert len(store.valid_indices("train")) == 3  # the per-split cap, not the first 3 ids
    _run(["distill-cache", "--category", "chair", "--teacher", "daisy", "--input-size", "64",
          "--option", "grid=[16,16]"], tmp_path)
    tiny = ["--steps", "2", "--backbone", "resnet18", "--width", "32", "--n-coarse", "8",
            "--n-importance", "4", "--n-depth", "4", "--rays", "32", "--device", "cpu"]
    with pytest.raises(AssertionError, match="--allow-random-encoder"):
        _run(["train", "--category", "chair", "--teacher", "daisy", "--profile", "official",
              *tiny], tmp_path)
    for teacher in ("daisy", "none"):
        _run(["train", "--category", "chair", "--teacher", teacher, "--profile", "official",
              "--allow-random-encoder", *tiny], tmp_path)
    _run(["evaluate", "--category", "chair", "--teacher", "daisy", "--split", split,
          "--protocol", "official", "--pairs", "20", "--nvs-objects", "1", "--nvs-views", "1",
          "--device", "cpu"], tmp_path)
    out = Path("reports/evaluate/chair-daisy")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"]["source"] == "split-json"
    assert summary["pairs"]["cross_instance"] == 12 and summary["pairs"]["cross_view"] == 3
    assert summary["pairs"]["dropped"]["absent"] == 1
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("chair.cross_instance.kp2d.pck@5.student_internal",
                "chair.cross_instance.part2d.miou.student_internal",
                "chair.cross_view.part2d.miou.pixelnerf_internal",
                "chair.cross_instance.part3d.miou.teacher_2d",
                "chair.cross_instance.kp3d.pck@0.1.student_internal"):
        assert metrics[key] is not None and math.isfinite(metrics[key]), key
    config = (Path("runs/chair-daisy/config.yaml")).read_text()
    assert "profile: official" in config
