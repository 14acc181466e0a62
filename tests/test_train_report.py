"""The train report: written by the train stage during training (snapshots of fixed hold-out
objects) and at the end, answer first, curves, recipe, dvc plot rows."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
from PIL import Image

from pipeline.reports.features import ColourBasis, fit_colour_basis
from pipeline.reports.train import (
    FixedViews,
    Snapshot,
    draw_snapshot,
    load_snapshots,
    loss_rows,
    prune_snapshots,
    save_snapshot,
    snapshot_steps,
)
from pipeline.train_stage import TrainReportHook, run_train_stage
from tests.test_trainer import small_config
from train.trainer import checkpoints, load_checkpoint, param_digest, train


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


def png_sizes(html: str) -> list[tuple[int, int]]:
    """(width, height) of every inlined PNG of the snapshot tables (each must decode)."""
    section = html[html.index("Novel views"):html.index("Loss curves")]
    return [Image.open(io.BytesIO(base64.b64decode(b))).size
            for b in re.findall(r'<td><img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', section)]


def test_report_is_rewritten_during_training_with_snapshots(tiny_stores, tmp_path, monkeypatch):
    """In progress after the first snapshot, finished at the end; every step's panels of both
    fixed objects are in the final report; and training is bit-identical to a run without."""
    written = []
    call = TrainReportHook.__call__

    def spy(self, step, model, summary):
        call(self, step, model, summary)
        written.append((step, (self.report_dir / "index.html").read_text()))

    monkeypatch.setattr(TrainReportHook, "__call__", spy)
    cfg = small_config(tiny_stores, tmp_path / "a", steps=4, report_every=2)
    cfg.snapshot.size = 16
    summary = run_train_stage(cfg)
    assert [step for step, _ in written] == [2, 4]
    first, final = written[0][1], written[1][1]
    def answer(html: str) -> str:  # the report opens with it, right under the title
        return html.split("</h1>", 1)[1].split("</p>", 1)[0]

    assert answer(first).startswith("<p>in progress: 2 of 4 steps (resumed from 0)")
    assert answer(final).startswith("<p>finished: 4 of 4 steps (resumed from 0), final loss")
    assert "rays/s" in answer(first) and first.index("Novel views") < first.index("Loss curves")
    # the tiny store has no val objects: the first two test objects, 6 panels at 2x16 px
    assert final.count("(test object ") == 2
    assert png_sizes(first) == [(32, 32)] * 2 * 1 * 6
    assert png_sizes(final) == [(32, 32)] * 2 * 2 * 6
    rep = tmp_path / "a" / "reports" / "train" / "t"
    assert snapshot_steps(rep / "snapshots") == [2, 4]
    assert summary["report_s"] > 0
    assert json.loads((rep / "metrics.json").read_text())["report_s"] == summary["report_s"]

    plain = small_config(tiny_stores, tmp_path / "b", steps=4, report_every=2)
    train(plain, progress=False)
    a = load_checkpoint(checkpoints(tmp_path / "a" / "runs" / "t")[-1])["model"]
    b = load_checkpoint(checkpoints(tmp_path / "b" / "runs" / "t")[-1])["model"]
    assert param_digest(a.items()) == param_digest(b.items())


def fixed_views(n: int = 2, size: int = 8, dim: int = 5, seed: int = 0) -> FixedViews:
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(n, size, size, dim)).astype(np.float32)
    teacher[:, :2] = 0  # background rows
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return FixedViews(list(range(n)), [f"obj{i}" for i in range(n)], "val", 0, 4, images,
                      images, teacher)


def test_rendered_features_are_coloured_in_teacher_space_with_one_basis():
    """Student features = teacher x feature_scale are coloured exactly as the teacher; the
    same basis (lo/hi included) gives the same colours at every step; background is black."""
    fixed = fixed_views()
    basis = fit_colour_basis(fixed.teacher)
    assert isinstance(basis, ColourBasis) and basis.lo is not None
    scale = 3.5
    opacity = np.ones((8, 8), np.float32)
    opacity[:2] = 0.1
    maps = [{"rgb": np.full((8, 8, 3), 0.5, np.float32), "opacity": opacity,
             "depth": np.full((8, 8), 1.2, np.float32), "feature": t * scale}
            for t in fixed.teacher]
    snap = draw_snapshot(10, maps, fixed, basis, feature_scale=scale)
    assert set(snap.panels) == {"source", "target", "rgb", "depth", "feature", "teacher"}
    assert snap.panels["feature"].shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(snap.panels["feature"], snap.panels["teacher"])
    assert snap.panels["teacher"][:, 2:].any()
    assert not snap.panels["feature"][:, :2].any() and not snap.panels["depth"][:, :2].any()
    # a later step with other (half-strength) features keeps the colour scale: darker, not
    # re-stretched as a per-call fit would
    later = draw_snapshot(20, [{**m, "feature": m["feature"] * 0.5} for m in maps], fixed,
                          basis, feature_scale=scale)
    assert not np.array_equal(later.panels["feature"], snap.panels["feature"])
    np.testing.assert_array_equal(later.panels["teacher"], snap.panels["teacher"])
    unscaled = draw_snapshot(10, maps, fixed, basis, feature_scale=1.0)
    assert not np.array_equal(unscaled.panels["feature"], snap.panels["teacher"])
    assert snap.psnr.shape == (2,) and np.isfinite(snap.psnr).all()


def test_snapshot_files_round_trip_and_stay_bounded(tmp_path):
    fixed = fixed_views(size=4)
    panel = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    for step in (10, 20, 30, 40, 50, 60):
        save_snapshot(tmp_path, Snapshot(step, {"rgb": panel + step}, np.array([1.0, 2.0]),
                                         fixed.object_ids))
    prune_snapshots(tmp_path, keep=3)
    assert snapshot_steps(tmp_path) == [10, 50, 60]  # the first and the newest keep - 1
    loaded = load_snapshots(tmp_path, fixed.object_ids)
    assert [s.step for s in loaded] == [10, 50, 60]
    np.testing.assert_array_equal(loaded[1].panels["rgb"], panel + 50)
    assert load_snapshots(tmp_path, ["other", "objects"]) == []
    prune_snapshots(tmp_path, keep=3, after=50)  # a run resumed from step 50
    assert snapshot_steps(tmp_path) == [10, 50]


def test_loss_rows_skip_bookkeeping_keys():
    rows = loss_rows([{"step": 10, "steps": 10, "loss": 0.5, "rays_s": 100.0}])
    assert rows == [{"step": 10, "term": "loss", "loss": 0.5}]
