"""One source of defaults: a hand-run command does what `dvc repro` does with params.yaml."""

from __future__ import annotations

import os

import click
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import TRAIN_DEFAULTS, main, network_mode
from pipeline.train_stage import profile_config
from tests.conftest import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())

#: params.yaml key -> (command, the option's parameter name)
ROUTES = {
    "render": {"source": "source", "objects": "objects", "split_fractions": "split_fractions",
               "renderer": "renderer", "views": "views", "size": "size", "seed": "seed",
               "points": "n_points", "workers": "workers"},
    "distill": {"teacher": "teacher", "batch_size": "batch_size"},
    "evaluate": {"protocol": "protocol", "pairs": "n_pairs", "eval_views": "eval_views",
                 "eval_size": "eval_size", "nvs_objects": "nvs_objects", "nvs_views": "n_views",
                 "seed": "seed"},
}
COMMANDS = {"render": "render", "distill": "distill-cache", "evaluate": "evaluate"}


def cli_default(command: str, param: str):
    cmd = main.commands[command]
    return next(p.default for p in cmd.params if p.name == param)


@pytest.mark.parametrize("stage", sorted(ROUTES))
def test_cli_defaults_equal_params_yaml(stage):
    for key, param in ROUTES[stage].items():
        assert str(cli_default(COMMANDS[stage], param)) == str(PARAMS[stage][key]), (stage, key)


def test_train_defaults_are_the_default_profile_and_params_yaml():
    cfg = profile_config("default")
    actual = {"steps": cfg.steps, "objects_per_step": cfg.data.objects_per_step,
              "rays_per_object": cfg.data.rays_per_object, "lr": cfg.lr,
              "feature_weight": cfg.loss.feature, "coord_weight": cfg.loss.coord,
              "backbone": cfg.model.backbone, "width": cfg.model.width,
              "n_coarse": cfg.render.n_coarse, "n_importance": cfg.render.n_importance,
              "n_depth": cfg.render.n_depth, "loader_workers": cfg.data.num_workers,
              "ckpt_every": cfg.ckpt_every, "device": cfg.device, "seed": cfg.seed,
              "runs_dir": cfg.runs_dir}
    assert actual == TRAIN_DEFAULTS
    train = PARAMS["train"]
    assert (train["profile"], train["steps"], train["seed"], train["loader_workers"]) == (
        cli_default("train", "profile"), cfg.steps, cfg.seed, cfg.data.num_workers)


def test_every_option_has_help():
    def walk(group: click.Group):
        for cmd in group.commands.values():
            yield from walk(cmd) if isinstance(cmd, click.Group) else [cmd]

    missing = [f"{cmd.name} {p.opts[0]}" for cmd in walk(main) for p in cmd.params
               if isinstance(p, click.Option) and not p.help]
    assert not missing, missing


def test_teacher_choices_are_the_registry():
    result = CliRunner().invoke(main, ["distill-cache", "--category", "chair", "--teacher",
                                       "nope"])
    assert result.exit_code == 2 and "'effnet'" in result.output and "'dino'" in result.output


def test_network_mode_respects_the_users_variable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert network_mode(None) == "online"
    assert network_mode(False) == "offline" and os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert network_mode(None) == "offline"  # default: no silent waits on an unreachable hub
    assert network_mode(True) == "online"
