import numpy as np
import pytest
import torch

from cache.feature_store import FeatureStore
from cache.render_store import RenderStore
from cache.zarr_io import StoreError
from train.data import DataConfig, ItemKey, RayBatchDataset, StepSampler, collate, make_loader


def config(stores, **kw) -> DataConfig:
    return DataConfig(renders=str(stores[0]), features=str(stores[1]), objects_per_step=2,
                      rays_per_object=48, n_target_views=3, **kw)


def test_item_shapes_and_targets_match_the_stores(tiny_stores):
    ds = RayBatchDataset(config(tiny_stores))
    item = ds[ItemKey(0, seed=1, step=0, slot=0, use_bbox=True)]
    assert item["images"].shape == (1, 3, 64, 64) and item["origins"].shape == (48, 3)
    assert item["feature"].shape == (48, ds.feature_dim)
    np.testing.assert_allclose(item["dirs"].norm(dim=-1), 1.0, atol=1e-5)
    # surface targets of foreground rays lie on the rendered object (inside the unit box)
    fg = item["fg"]
    assert fg.any() and (item["coord"][fg].abs() < 0.8).all()
    # rgb targets are the store's pixels: foreground rays are not black
    assert (item["rgb"][fg].sum(-1) > 0).all()


def test_same_key_same_item_and_different_steps_differ(tiny_stores):
    ds = RayBatchDataset(config(tiny_stores))
    key = ItemKey(1, 3, 5, 0, True)
    a, b = ds[key], ds[key]
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    c = ds[ItemKey(1, 3, 6, 0, True)]
    assert not torch.equal(a["origins"], c["origins"])


def test_bbox_sampling_hits_the_object_more_often(tiny_stores):
    ds = RayBatchDataset(config(tiny_stores))
    fg_box = np.mean([ds[ItemKey(0, 0, s, 0, True)]["fg"].float().mean()
                      for s in range(6)])
    fg_all = np.mean([ds[ItemKey(0, 0, s, 0, False)]["fg"].float().mean()
                      for s in range(6)])
    assert fg_box > fg_all + 0.1


def test_sampler_is_deterministic_and_ranks_disjoint(tiny_stores):
    cfg = config(tiny_stores)
    s0 = StepSampler(3, cfg, seed=0, start=0, end=4, rank=0, world=2)
    s1 = StepSampler(3, cfg, seed=0, start=0, end=4, rank=1, world=2)
    assert [b for b in s0] == [b for b in StepSampler(3, cfg, 0, 0, 4, 0, 2)]
    for b0, b1 in zip(s0, s1, strict=True):
        assert {k.slot for k in b0}.isdisjoint({k.slot for k in b1})
    resumed = StepSampler(3, cfg, seed=0, start=2, end=4)
    assert list(resumed)[0] == StepSampler(3, cfg, 0, 0, 4).batch(2)


@pytest.mark.parametrize("n, world", [(100, 1), (100, 2), (37, 3), (5, 2)])
def test_sampler_visits_every_object_evenly(n, world):
    """n much larger than objects_per_step x world: every object is drawn, evenly; ranks get
    disjoint objects in every step (when there are enough objects)."""
    cfg = DataConfig(objects_per_step=4)
    b = cfg.objects_per_step
    steps = 30 * max(1, n // (b * world))
    ranks = [StepSampler(n, cfg, seed=3, start=0, end=steps, rank=r, world=world)
             for r in range(world)]
    counts = np.zeros(n, int)
    for batches in zip(*ranks, strict=True):
        picks = [k.position for batch in batches for k in batch]
        np.add.at(counts, picks, 1)
        if n >= b * world:
            assert len(set(picks)) == len(picks)  # disjoint across ranks, no repeats
    assert (counts > 0).all(), f"objects never drawn: {np.flatnonzero(counts == 0)[:10]}"
    assert counts.max() - counts.min() <= max(3, 0.2 * counts.mean())
    np.testing.assert_array_equal(counts, ranks[0].visit_counts())


def test_loader_with_spawned_workers_matches_in_process(tiny_stores):
    cfg = config(tiny_stores)
    ds = RayBatchDataset(cfg)
    sampler = StepSampler(len(ds.objects), cfg, seed=0, start=0, end=2)
    expected = [collate([ds[k] for k in batch]) for batch in sampler]
    got = list(make_loader(ds, sampler, num_workers=1))
    for e, g in zip(expected, got, strict=True):
        for k in e:
            torch.testing.assert_close(e[k], g[k])


def test_stale_feature_store_is_refused(tiny_stores, tmp_path):
    import shutil

    import zarr

    copy = tmp_path / "f.zarr"
    shutil.copytree(tiny_stores[1], copy)
    zarr.open_group(str(copy), mode="r+").attrs["render_fingerprint"] = "other"
    with pytest.raises(StoreError, match="stale"):
        RayBatchDataset(DataConfig(renders=str(tiny_stores[0]), features=str(copy)))
    assert FeatureStore(tiny_stores[1]).attrs["render_fingerprint"] == \
        RenderStore(tiny_stores[0]).fingerprint
