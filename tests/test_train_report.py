"""The train report: written by the train stage, answer first, curves, recipe, dvc plot rows."""

from __future__ import annotations

import json

from pipeline.reports.train import loss_rows
from pipeline.train_stage import run_train_stage
from tests.test_trainer import small_config


def test_train_stage_writes_report_and_loss_plot(tiny_stores, tmp_path):
    cfg = small_config(tiny_stores, tmp_path, steps=3)
    cfg.log_every = 1
    run_train_stage(cfg)
    rep = tmp_path / "reports" / "train" / "t"
    html = (rep / "index.html").read_text()
    assert html.index("3 steps") < html.index("Loss curves") < html.index("Recipe")
    assert "encoder weights: random-init" in html and "data:image/png;base64," in html
    rows = json.loads((rep / "plots" / "loss.json").read_text())
    assert {r["step"] for r in rows} == {1, 2, 3} and {"loss", "rgb_fine"} <= {r["term"]
                                                                              for r in rows}


def test_loss_rows_skip_bookkeeping_keys():
    rows = loss_rows([{"step": 10, "steps": 10, "loss": 0.5, "rays_s": 100.0}])
    assert rows == [{"step": 10, "term": "loss", "loss": 0.5}]
