"""``distill.teacher: official-dino``: with the render stage importing the official data
(``render.source: import``, ``render.import_format: official``), dvc.yaml's distill command
imports the authors' DINO features into the feature store instead of running a teacher, and
train / evaluate run on it unchanged (``--teacher official-dino``). Also: the distill command
of the default params is the command without the import flags, and train checks a free
category name against the render store like evaluate."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests.test_import_chain import EVALUATE, TRAIN, VIEWS, cli, dvc_stage_args, nerf_root
from tests.test_official_format import SYNSET, make_official_data, official_split

SWITCH = {"teacher": "official-dino"}
IMPORT_FLAGS = ("--import-format", "--import-root", "--import-options")


def official_render_params(tmp) -> tuple[dict, dict]:
    """params.yaml ``render`` values importing an official-format fixture, and its truth."""
    root = tmp / "featurenerf" / "data"
    truth = make_official_data(root, n_views=VIEWS, size=32)
    split = official_split(tmp / f"{SYNSET}.json")
    render = {"categories": ["chair"], "source": "import", "import_format": "official",
              "import_root": str(root), "split_file": str(split), "size": 0}
    return render, truth


def test_official_dino_switch_runs_render_distill_train_evaluate(tmp_path, monkeypatch):
    """dvc.yaml's render and distill commands as `dvc repro` runs them (default paths, in
    tmp_path), then train 2 steps and evaluate with --teacher official-dino."""
    from cache.feature_store import FeatureStore
    from cache.render_store import RenderStore

    monkeypatch.chdir(tmp_path)
    render, truth = official_render_params(tmp_path)
    cli(*dvc_stage_args("render", render=render))
    out = cli(*dvc_stage_args("distill", render=render, distill=SWITCH))
    assert "features imported: " in out
    renders = RenderStore("data/renders/chair.zarr")
    store = FeatureStore("data/features/official-dino/chair.zarr", renders=renders)
    identity = store.attrs["identity"]
    assert identity["name"] == "official-dino-cache"
    assert identity["source"] == "FeatureNeRF processed data"
    assert identity["folder"] == "dino_feat_256" and store.attrs["pca_dim"] is None
    for i, oid in enumerate(renders.object_ids):  # (V, C, h, w) float32 -> (V, h, w, C) fp16
        expected = truth[oid]["feats"].transpose(0, 2, 3, 1).astype(np.float16)
        np.testing.assert_array_equal(store.read(i), expected)
    store.verify(renders.valid_indices())
    assert store.colour_basis() is not None  # the distill stage's finishing touches
    report = tmp_path / "reports" / "distill-cache" / "official-dino" / "chair"
    metrics = json.loads((report / "metrics.json").read_text())
    assert (metrics["teacher"], metrics["objects"], metrics["failures"]) == ("official-dino", 3, 0)
    assert metrics["feature_dim"] == 6 and metrics["grid"] == [4, 4]
    assert "official-dino-cache" in (report / "index.html").read_text()
    again = cli(*dvc_stage_args("distill", render=render, distill=SWITCH))  # up to date
    assert "3 objects' features" in again
    cli("train", "--category", "chair", "--teacher", "official-dino", *TRAIN)
    assert (tmp_path / "runs" / "chair-official-dino" / "config.yaml").is_file()
    cli("evaluate", "--category", "chair", "--teacher", "official-dino", "--pixelnerf-run", "",
        "--split", render["split_file"], *EVALUATE)
    result = tmp_path / "reports" / "evaluate" / "chair-official-dino"
    summary = json.loads((result / "summary.json").read_text())
    assert "teacher_2d" not in summary["skipped"]
    scores = {k: v for k, v in json.loads((result / "metrics.json").read_text()).items()
              if k.endswith(".teacher_2d") and isinstance(v, float)}
    assert scores and all(np.isfinite(v) for v in scores.values()), scores


def test_dvc_distill_command_default_and_switch(tmp_path, monkeypatch):
    """The distill command from params: the default (effnet) is the command without the
    --import-* flags; the switch carries the render stage's import settings."""
    seen = []

    def fake_run(cfg):
        seen.append(cfg)
        return {"objects": 0, "objects_computed_now": 0, "images_per_s": 0.0, "source": "x"}

    monkeypatch.setattr("pipeline.distill_stage.run_distill_stage", fake_run)
    args = dvc_stage_args("distill")
    plain = [a for k, a in enumerate(args) if a not in IMPORT_FLAGS
             and (k == 0 or args[k - 1] not in IMPORT_FLAGS)]
    assert len(plain) == len(args) - 2 * len(IMPORT_FLAGS)
    cli(*args)
    cli(*plain)
    dvc, direct = seen
    assert asdict(dvc) == asdict(direct)
    assert (dvc.teacher, dvc.out) == ("effnet", "data/features/effnet/chair.zarr")
    assert (dvc.import_format, dvc.import_root, dvc.import_options) == (None, None, {})

    render = {"source": "import", "import_format": "official", "import_root": str(tmp_path),
              "import_options": "frame=shapenet-v1"}
    cli(*dvc_stage_args("distill", render=render, distill=SWITCH))
    switch = seen[-1]
    assert (switch.teacher, switch.import_format, switch.import_root) == (
        "official-dino", "official", str(tmp_path))
    assert switch.import_options == {"frame": "shapenet-v1"}
    assert switch.out == "data/features/official-dino/chair.zarr"
    assert switch.report_dir == "reports/distill-cache/official-dino/chair"
    assert switch.renders == "data/renders/chair.zarr"


def test_switch_without_an_official_import_is_one_clear_line(tmp_path):
    """official-dino with the default render params: exit 1 naming the params to set."""
    outs = {"--renders": "renders.zarr", "--out": "feat.zarr", "--report-dir": "rep"}
    result = CliRunner().invoke(main, dvc_stage_args("distill", tmp_path, outs, distill=SWITCH))
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert "--teacher official-dino imports the features of the official data" in line
    assert "render.source: import, render.import_format: official" in line
    assert not (tmp_path / "feat.zarr").exists()


def test_train_checks_a_free_category_against_the_render_store(tmp_path):
    from pipeline.train_stage import build_train_config

    renders = tmp_path / "captures.zarr"
    cli(*nerf_root(tmp_path), "--category", "my-captures", "--out", str(renders),
        "--report-dir", str(tmp_path / "r"))
    cfg = build_train_config("my-captures", "none", None, None, {"renders": str(renders)})
    assert cfg.category == "my-captures"
    with pytest.raises(KeyError, match="holds category 'my-captures', not 'scans'; pass "
                                       "--category my-captures"):
        build_train_config("scans", "none", None, None, {"renders": str(renders)})
    result = CliRunner().invoke(main, ["train", "--category", "scans", "--teacher", "none",
                                       "--renders", str(renders), *TRAIN])
    assert result.exit_code == 1 and "holds category 'my-captures'" in result.output
