import pytest
import torch
import yaml

from train.config import RenderConfig, TrainConfig
from train.data import DataConfig
from train.losses import LossWeights
from train.model import ModelConfig
from train.trainer import checkpoints, load_checkpoint, model_from_checkpoint, train


def small_config(stores, tmp_path, **kw) -> TrainConfig:
    cfg = TrainConfig(
        name="t", steps=2, runs_dir=str(tmp_path / "runs"), ckpt_every=1, device="cpu",
        data=DataConfig(renders=str(stores[0]), features=str(stores[1]), objects_per_step=2,
                        rays_per_object=32, n_target_views=2),
        model=ModelConfig(backbone="resnet18", pretrained_encoder=False, width=64, n_blocks=3,
                          combine_layer=2),
        render=RenderConfig(n_coarse=8, n_importance=4, n_depth=4),
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_two_step_smoke_writes_config_and_checkpoint(tiny_stores, tmp_path):
    cfg = small_config(tiny_stores, tmp_path)
    summary = train(cfg, progress=False)
    assert summary["steps"] == 2 and summary["rays_per_s"] > 0
    run = tmp_path / "runs" / "t"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert TrainConfig.from_dict(saved).to_dict() == cfg.to_dict()
    state = load_checkpoint(checkpoints(run)[-1])
    assert state["step"] == 2 and state["teacher_identity"]["name"] == "daisy"
    model = model_from_checkpoint(state)
    assert model.config.d_feature == state["config"]["model"]["d_feature"] > 0
    for key in ("feature_coarse", "coord_fine", "rgb_fine"):
        assert key in summary["last"]


def test_resume_continues_bit_identically(tiny_stores, tmp_path):
    straight = small_config(tiny_stores, tmp_path / "a", steps=4)
    train(straight, progress=False)
    split = small_config(tiny_stores, tmp_path / "b", steps=2)
    train(split, progress=False)
    split.steps = 4
    resumed = train(split, progress=False)
    assert resumed["start_step"] == 2
    a = load_checkpoint(checkpoints(tmp_path / "a" / "runs" / "t")[-1])
    b = load_checkpoint(checkpoints(tmp_path / "b" / "runs" / "t")[-1])
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_pixelnerf_setting_needs_no_features(tiny_stores, tmp_path):
    cfg = small_config(tiny_stores, tmp_path, loss=LossWeights(feature=0.0, coord=0.0))
    cfg.data.features = None
    cfg.model.predict_coord = False
    summary = train(cfg, progress=False)
    assert set(summary["last"]) == {"loss", "rgb_coarse", "rgb_fine"}
    state = load_checkpoint(checkpoints(tmp_path / "runs" / "t")[-1])
    assert state["config"]["model"]["d_feature"] == 0 and state["teacher_identity"] is None


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "step-0000001.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(bad)


def test_overfit_one_object_drops_rgb_and_feature_loss(tiny_stores, tmp_path):
    cfg = small_config(tiny_stores, tmp_path, steps=150, lr=1e-3, ckpt_every=0)
    cfg.data.objects_per_step = 1
    cfg.data.rays_per_object = 128
    cfg.data.n_target_views = 4
    cfg.data.split = "train"
    from train.data import RayBatchDataset

    one = RayBatchDataset(cfg.data).objects[:1]
    import train.trainer as trainer_module

    original = trainer_module.RayBatchDataset
    trainer_module.RayBatchDataset = lambda data_cfg: original(data_cfg, one)
    try:
        summary = train(cfg, progress=False)
    finally:
        trainer_module.RayBatchDataset = original
    first, recent = summary["first"], summary["recent"]

    def mean(key, windows):  # the logged windows are step means; weight them by their steps
        return sum(w[key] * w["steps"] for w in windows) / sum(w["steps"] for w in windows)

    # start: the first step (zero-initialised heads: the "predict nothing" loss); end: the mean
    # of the last two log windows, 19 steps (rays differ per step, so single steps are noisy)
    rgb0, rgb1 = first["rgb_fine"], mean("rgb_fine", recent[-2:])
    f0, f1 = first["feature_fine"], mean("feature_fine", recent[-2:])
    # measured on this CPU: rgb 0.105 -> 0.027 (3.9x), feature 0.34 -> 0.11 (3.1x)
    assert rgb1 < rgb0 / 3, (rgb0, rgb1)
    assert f1 < f0 / 2.5, (f0, f1)


def test_changed_config_is_stale_unless_restart(tiny_stores, tmp_path):
    train(small_config(tiny_stores, tmp_path), progress=False)
    other = small_config(tiny_stores, tmp_path, lr=1e-3, steps=3)
    with pytest.raises(ValueError, match=r"lr: 0.0001 -> 0.001"):
        train(other, progress=False)
    summary = train(other, progress=False, if_stale="restart")
    assert summary["start_step"] == 0
    longer = small_config(tiny_stores, tmp_path, lr=1e-3, steps=4)  # schedule may grow
    assert train(longer, progress=False)["start_step"] == 3


def test_loss_log_keeps_first_last_mean_and_a_bounded_ring():
    from train.trainer import LossLog

    log = LossLog(world=1, keep=3)
    values = [float(v) for v in range(10)]
    for i, v in enumerate(values):
        log.add({"loss": torch.tensor(v), "rgb_fine": torch.tensor(2 * v)})
        if i % 2 == 1 or i == 0:  # windows [0], [1], [2, 3], ... [8, 9]
            window, rays = log.flush(i + 1, 10.0)
    assert log.first == {"loss": 0.0, "rgb_fine": 0.0}
    assert log.last == {"loss": 9.0, "rgb_fine": 18.0} and rays == 10.0
    assert window == {"loss": 8.5, "rgb_fine": 17.0}
    assert log.mean == {"loss": 4.5, "rgb_fine": 9.0}
    assert [w["step"] for w in log.recent] == [6, 8, 10]  # bounded: the last 3 windows
    assert all(w["steps"] == 2 for w in log.recent)


def test_log_frequency_changes_no_value_and_first_last_are_exact_steps(tiny_stores, tmp_path):
    """Losses stay on the device between log steps; the summary is the same whether every step
    is logged or only the first and the last."""
    every = train(small_config(tiny_stores, tmp_path / "a", steps=3, log_every=1), progress=False)
    sparse = train(small_config(tiny_stores, tmp_path / "b", steps=3, log_every=100),
                   progress=False)
    assert "history" not in every and len(every["recent"]) == 3
    assert [w["steps"] for w in sparse["recent"]] == [1, 2]  # step 1, then steps 2-3
    assert every["first"] == sparse["first"] and every["last"] == sparse["last"]
    last = {k: v for k, v in every["recent"][-1].items() if k not in ("step", "steps", "rays_s")}
    assert every["last"] == last
    for k, v in every["mean"].items():
        assert v == pytest.approx(sparse["mean"][k], rel=1e-12)
        assert v == pytest.approx(sum(w[k] for w in every["recent"]) / 3, rel=1e-12)


def test_loader_workers_may_change_on_resume():
    """Batches are identical for any worker count, so it is no recipe change."""
    from train.trainer import config_changes

    saved = TrainConfig().to_dict()
    current = TrainConfig().to_dict()
    current["data"]["num_workers"] = 2
    assert config_changes(saved, current) == []
    current["data"]["rays_per_object"] = 7
    assert config_changes(saved, current) == ["data.rays_per_object"]


def test_report_hook_runs_on_schedule_and_leaves_training_bit_identical(tiny_stores, tmp_path):
    """A hostile hook (draws from every global RNG, renders stochastically) changes nothing:
    it runs without gradients in eval mode and every RNG state is restored after it."""
    import random

    import numpy as np

    from train.model import render_rays
    from train.trainer import param_digest

    calls = []

    def hook(step, model, summary):
        calls.append((step, summary["done"], summary["finished"], model.training,
                      torch.is_grad_enabled()))
        torch.rand(7), np.random.rand(3), random.random()
        o = torch.zeros(1, 4, 3)
        d = torch.nn.functional.normalize(torch.ones(1, 4, 3), dim=-1)
        model.encode(torch.rand(1, 1, 3, 64, 64), torch.eye(3)[None, None] * 64,
                     torch.eye(4)[None, None])
        render_rays(model, o, d, n_coarse=4, n_importance=2, n_depth=2, train=True)

    def final_state(root, on_report):
        cfg = small_config(tiny_stores, root, steps=5, report_every=2)
        train(cfg, progress=False, on_report=on_report)
        return load_checkpoint(checkpoints(root / "runs" / "t")[-1])["model"]

    plain = final_state(tmp_path / "a", None)
    hooked = final_state(tmp_path / "b", hook)
    assert [c[:3] for c in calls] == [(2, 2, False), (4, 4, False), (5, 5, True)]
    assert all(not training and not grad for *_, training, grad in calls)
    # parameters and buffers (BatchNorm statistics) alike
    assert param_digest(plain.items()) == param_digest(hooked.items())


def test_report_gating_is_rank_zero_only_and_defaults_to_a_quarter_of_the_run():
    from train.trainer import report_due, report_interval

    assert report_interval(TrainConfig(steps=400)) == 100
    assert report_interval(TrainConfig(steps=400, report_every=None)) == 100
    assert report_interval(TrainConfig(steps=3)) == 1
    assert report_interval(TrainConfig(steps=400, report_every=30)) == 30
    due = [d for d in range(1, 401) if report_due(d, 100, 400, main=True)]
    assert due == [100, 200, 300]  # the end (400) reports once, after the loop
    assert not any(report_due(d, 100, 400, main=False) for d in range(1, 401))


def test_failing_report_hook_warns_and_training_goes_on(tiny_stores, tmp_path, capsys):
    def broken(step, model, summary):
        raise RuntimeError("disk full")

    summary = train(small_config(tiny_stores, tmp_path, steps=2), progress=False,
                    on_report=broken)
    assert summary["steps"] == 2 and checkpoints(tmp_path / "runs" / "t")
    err = capsys.readouterr().err
    assert "warning: train report at step 2 failed (RuntimeError: disk full)" in err


def test_run_report_hook_restores_every_rng_and_train_mode():
    import random

    import numpy as np

    from train.trainer import run_report_hook

    model = torch.nn.Linear(2, 2)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    seen = run_report_hook(lambda step, m, s: (torch.rand(5), np.random.rand(5), random.random()),
                           3, model, {})
    assert seen >= 0 and model.training
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
