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


@pytest.mark.parametrize("views", [[3], [0, 1, 2], [5, 1, 2, 3, 7], [7, 6], []])
def test_read_views_matches_orthogonal_indexing(tiny_stores, views):
    """One read per run of consecutive views, stacked in the order asked."""
    renders, feats = RenderStore(tiny_stores[0]), FeatureStore(tiny_stores[1])

    def oindex(arr, obj):  # zarr's oindex refuses an empty list
        return arr.oindex[obj, views] if views else arr[obj, 0:0]

    for name in ("rgb", "alpha", "depth"):
        expected = oindex(renders.array(name), 1)
        got = renders.read_views(name, 1, np.array(views, dtype=int))
        assert got.shape == expected.shape and np.array_equal(got, expected), name
    got = feats.read_views(2, np.array(views, dtype=int))
    assert got.shape == oindex(feats.feat, 2).shape
    assert np.array_equal(got, oindex(feats.feat, 2))


def test_read_views_of_a_damaged_shard_is_a_store_error(tiny_stores, tmp_path):
    import shutil

    copy = tmp_path / "r.zarr"
    shutil.copytree(tiny_stores[0], copy)
    shards = sorted((copy / "rgb").rglob("*"))
    shard = [p for p in shards if p.is_file() and p.name != "zarr.json"][1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    store = RenderStore(copy)
    with pytest.raises(StoreError, match="fails to decode"):
        for obj in range(store.group["rgb"].shape[0]):
            store.read_views("rgb", obj, np.arange(store.n_views))


def test_feature_scale_is_cheap_and_deterministic(tiny_stores, monkeypatch):
    from train.data import estimate_feature_scale

    feats = FeatureStore(tiny_stores[1])
    objects = RenderStore(tiny_stores[0]).valid_indices("train")
    reads = []
    original = FeatureStore.read_views
    monkeypatch.setattr(FeatureStore, "read_views",
                        lambda self, i, v: reads.append(len(v)) or original(self, i, v))
    monkeypatch.setattr(FeatureStore, "read", lambda *a: pytest.fail("whole-object read"))
    scale = estimate_feature_scale(feats, objects)
    assert reads == [4] * min(4, len(objects))  # 4 views of at most 4 objects
    assert scale == estimate_feature_scale(FeatureStore(tiny_stores[1]), objects)
    # close to the all-views float64 value
    full = np.concatenate([feats.feat[o].astype(np.float64).reshape(-1, feats.dim)
                           for o in objects])
    fg = full[np.abs(full).sum(1) > 0]
    assert scale == pytest.approx(1 / np.sqrt((fg**2).mean()), rel=0.25)
