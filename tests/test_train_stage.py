"""Training profiles: official is the released recipe, every other profile lists its deviations,
and the GT-geometry coordinate target is an explicit variant only."""

import pytest

from pipeline.train_stage import (
    PROFILES,
    build_train_config,
    deviations_from_official,
    official_config,
    profile_config,
)


def test_official_profile_is_the_released_recipe():
    cfg = profile_config("official")
    assert deviations_from_official(cfg) == []
    assert cfg.model.density_activation == "relu" and not cfg.model.zero_init_heads
    assert cfg.grad_clip == 0 and not cfg.amp and cfg.lr == 1e-4
    assert cfg.data.n_target_views == 0  # all views, source included
    assert cfg.render.coord_reduce == "mean" and cfg.data.coord_target == "self"
    assert cfg.data.feature_scale == 1.0
    assert (cfg.data.objects_per_step, cfg.data.rays_per_object) == (4, 128)
    assert cfg.model.backbone == "resnet34" and cfg.model.pretrained_encoder
    assert not cfg.model.allow_random_encoder
    assert (cfg.loss.feature, cfg.loss.coord) == (0.25, 0.25)


@pytest.mark.parametrize("profile", PROFILES)
def test_no_profile_uses_ground_truth_geometry(profile):
    assert profile_config(profile).data.coord_target == "self"


def test_paper_profile_lists_each_deviation():
    devs = deviations_from_official(profile_config("paper"))
    keys = {d.split(":")[0] for d in devs}
    assert keys == {"grad_clip", "amp", "model.density_activation", "model.zero_init_heads",
                    "render.coord_reduce", "data.feature_scale", "data.n_target_views"}
    assert "model.density_activation: 'relu' -> 'softplus'" in devs


def test_built_config_records_deviations_and_variants():
    cfg = build_train_config("chair", "effnet", None, None, {"coord_target": "gt-surface"},
                             "paper")
    assert "data.coord_target: 'self' -> 'gt-surface'" in cfg.deviations
    assert cfg.profile == "paper" and cfg.name == "chair-effnet"
    plain = build_train_config("chair", "none", None, None, {}, "official")
    assert plain.loss.feature == plain.loss.coord == 0 and not plain.model.predict_coord
    assert "loss.feature: 0.25 -> 0.0" in plain.deviations
    assert official_config().to_dict()["deviations"] == []


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown training profile"):
        profile_config("fast")


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_rank_zero_writes_the_stage_reports(tmp_path, monkeypatch, rank):
    import json

    import train.trainer as trainer_module
    from pipeline.train_stage import run_train_stage

    summary = {"object_visits": {0: 2, 3: 1}, "steps": 4, "start_step": 0, "wall_s": 1.0,
               "verify_s": 0.1, "rays_per_s": 50.0, "world": 2, "first": {"loss": 1.0},
               "last": {"loss": 0.5}, "mean": {"loss": 0.7}}
    monkeypatch.setattr(trainer_module, "train", lambda cfg, **kw: summary)
    monkeypatch.setenv("RANK", rank)
    cfg = build_train_config("chair", "effnet", "r", None, {"runs_dir": str(tmp_path / "runs")})
    assert run_train_stage(cfg) is summary
    metrics = tmp_path / "reports" / "train" / "r" / "metrics.json"
    visits = tmp_path / "runs" / "r" / "object_visits.json"
    if rank == "1":
        assert not metrics.exists() and not visits.exists()
    else:
        m = json.loads(metrics.read_text())
        assert m["ranks"] == 2 and m["loss_mean"] == {"loss": 0.7} and visits.is_file()


class _Splits:
    """A render store stand-in: ``valid_indices(split)`` from a list of per-object splits."""

    path = "fake.zarr"

    def __init__(self, splits: list[str]):
        self.splits = splits

    def valid_indices(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]


def test_snapshot_objects_prefer_val_then_test_then_train():
    from pipeline.train_stage import snapshot_objects

    assert snapshot_objects(_Splits(["train", "val", "test", "val", "val"]), 2) == ("val", [1, 3])
    assert snapshot_objects(_Splits(["train", "test", "train", "test"]), 2) == ("test", [1, 3])
    assert snapshot_objects(_Splits(["train", "train"]), 5) == ("train", [0, 1])
    # val objects without teacher features (the official data) are passed over
    splits = _Splits(["train", "val", "test", "val", "test"])
    assert snapshot_objects(splits, 2, usable={0, 2, 4}) == ("test", [2, 4])
    with pytest.raises(ValueError, match="no complete objects"):
        snapshot_objects(_Splits([]), 2)


def test_stage_metrics_of_a_run_in_progress_have_no_visit_counts():
    from pipeline.train_stage import stage_metrics

    cfg = profile_config("default")
    running = {"steps": 400, "start_step": 0, "wall_s": 9.0, "verify_s": 0.1, "rays_per_s": 50.0,
               "world": 1, "first": {}, "last": {}, "mean": {}, "report_s": 0.4}
    m = stage_metrics(cfg, running)
    assert m["report_s"] == 0.4 and "objects_trained" not in m
    done = stage_metrics(cfg, {**running, "object_visits": {0: 3, 5: 0}})
    assert (done["objects_trained"], done["objects_never_visited"]) == (2, 1)
    assert (done["object_visits_min"], done["object_visits_max"]) == (0, 3)
