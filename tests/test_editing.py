"""Part texture swap (pipeline/editing.py) on the tiny trained student."""

from __future__ import annotations

import numpy as np
import pytest

from cache.render_store import RenderStore
from pipeline.editing import swap_texture, swap_texture_with
from pipeline.evaluation.features import NerfRenderer
from tests.test_eval_features import trained_runs


@pytest.fixture(scope="session")
def eval_runs(tiny_stores, tmp_path_factory):
    return trained_runs(tiny_stores, tmp_path_factory.mktemp("eval-runs"))


def changed(result: dict) -> np.ndarray:
    return (result["after"] != result["before"]).any(axis=-1)


def test_swap_changes_only_pixels_inside_the_part_mask(tiny_stores, eval_runs):
    store = RenderStore(tiny_stores[0])
    a, b = store.valid_indices("test")[:2]
    renderer = NerfRenderer.from_checkpoint(eval_runs["student"], store, eval_size=24,
                                            fg_only=False)
    parts = sorted(set(np.unique(store.read("point_part", b)).tolist()) - {-1})
    swapped_any = False
    for label_source in ("b", "a"):
        for part in parts:
            res = swap_texture_with(renderer, a, b, part, view=2, label_source=label_source,
                                    opacity_threshold=0.05)
            assert res["before"].shape == res["after"].shape == (24, 24, 3)
            assert res["mask"].dtype == bool and res["n_pixels"] == res["mask"].sum()
            assert (res["mask"] == (res["labels"] == part)).all()
            assert not changed(res)[~res["mask"]].any()  # nothing outside the mask changes
            swapped_any |= bool(changed(res).any())
    assert swapped_any  # some part was found and recoloured
    with pytest.raises(ValueError, match="no surface points of part"):
        swap_texture_with(renderer, a, b, 99, view=2)


def test_swap_texture_from_paths_writes_a_report(tiny_stores, eval_runs, tmp_path):
    store = RenderStore(tiny_stores[0])
    a, b = (store.object_ids[i] for i in store.valid_indices("test")[:2])
    part = store.attrs["part_names"][int(np.bincount(
        store.read("point_part", store.valid_indices("test")[1]).clip(0)).argmax())]
    res = swap_texture(eval_runs["student"], tiny_stores[0], a, b, part, view=1, size=16,
                       report_dir=tmp_path / "edit")
    assert res["before"].shape == (16, 16, 3) and res["input_a"].shape[0] == store.image_size
    assert not changed(res)[~res["mask"]].any()
    html = (tmp_path / "edit" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 6 and "<script" not in html
