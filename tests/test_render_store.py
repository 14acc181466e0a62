import numpy as np
import pytest
import zarr

from cache.render_store import ARRAYS, RenderStore, RenderStoreWriter, StoreLayout
from cache.zarr_io import StoreError
from renderers.base import RenderedViews
from renderers.cameras import CameraRig
from renderers.job import RenderedObject, RenderJob

LAYOUT = StoreLayout(n_objects=3, n_views=4, image_size=16, n_keypoints=5, n_points=32)
ATTRS = {
    "object_ids": ["a", "b", "c"],
    "splits": ["train", "train", "test"],
    "config": {"renderer": "x"},
}


def fake_object(index: int, value: int = 1) -> RenderedObject:
    V, H, P, S = 4, 16, 5, 32
    job = RenderJob(
        index,
        "chair",
        "abc"[index],
        "train",
        "procedural",
        index,
        index,
        CameraRig(n_views=V, image_size=H),
        P,
        S,
    )
    views = RenderedViews(
        np.full((V, H, H, 3), value, np.uint8),
        np.full((V, H, H), 255, np.uint8),
        np.full((V, H, H), 1.5, np.float32),
        np.zeros((V, H, H), np.int16),
    )
    return RenderedObject(
        job,
        views,
        np.zeros((V, 3, 3), np.float32),
        np.tile(np.eye(4, dtype=np.float32), (V, 1, 1)),
        np.zeros((P, 3), np.float32),
        np.arange(P, dtype=np.int32),
        np.zeros((V, P, 2), np.float32),
        np.ones((V, P), bool),
        np.zeros((S, 3), np.float32),
        np.zeros(S, np.int16),
        {},
        {},
    )


def test_layout_chunks_per_view_and_shards_per_object(tmp_path):
    w = RenderStoreWriter.create_or_resume(tmp_path / "s.zarr", LAYOUT, ATTRS)
    rgb = w.group["rgb"]
    assert rgb.shape == (3, 4, 16, 16, 3) and rgb.chunks == (1, 1, 16, 16, 3)
    assert rgb.shards == (1, 4, 16, 16, 3)
    assert w.group["part"].fill_value == -1 and w.group["part"].dtype == np.int16
    assert set(ARRAYS) <= set(w.group.array_keys())
    assert zarr.open_group(str(tmp_path / "s.zarr")).metadata.zarr_format == 3


def test_done_flag_marks_complete_objects_and_reader_refuses_incomplete(tmp_path):
    path = tmp_path / "s.zarr"
    w = RenderStoreWriter.create_or_resume(path, LAYOUT, ATTRS)
    w.write_object(1, fake_object(1))
    np.testing.assert_array_equal(w.done_mask(), [False, True, False])
    w.finalize({})
    with pytest.raises(StoreError, match="incomplete .1/3"):
        RenderStore(path)
    store = RenderStore(path, allow_incomplete=True)
    assert store.valid_indices() == [1]
    assert (store.read("rgb", (1, 0)) == 1).all()


def test_resume_keeps_done_objects_and_stale_config_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    w = RenderStoreWriter.create_or_resume(path, LAYOUT, ATTRS)
    w.write_object(0, fake_object(0))
    again = RenderStoreWriter.create_or_resume(path, LAYOUT, ATTRS)
    np.testing.assert_array_equal(again.done_mask(), [True, False, False])
    stale = {**ATTRS, "config": {"renderer": "y"}}
    with pytest.raises(StoreError, match="other settings"):
        RenderStoreWriter.create_or_resume(path, LAYOUT, stale)
    fresh = RenderStoreWriter.create_or_resume(path, LAYOUT, stale, if_stale="overwrite")
    assert not fresh.done_mask().any()


def test_fingerprint_changes_with_content(tmp_path):
    fps = []
    for value in (1, 2):
        w = RenderStoreWriter.create_or_resume(tmp_path / f"s{value}.zarr", LAYOUT, ATTRS)
        for i in range(3):
            w.write_object(i, fake_object(i, value))
        fps.append(w.finalize({}))
    assert fps[0] != fps[1]
    assert RenderStore(tmp_path / "s1.zarr").fingerprint == fps[0]


def test_wrong_shape_is_a_clear_error(tmp_path):
    w = RenderStoreWriter.create_or_resume(tmp_path / "s.zarr", LAYOUT, ATTRS)
    obj = fake_object(0)
    obj.points = np.zeros((7, 3), np.float32)
    with pytest.raises(StoreError, match="points has shape"):
        w.write_object(0, obj)
    assert not w.done_mask()[0]


def test_missing_array_and_missing_store_errors(tmp_path):
    with pytest.raises(StoreError, match="run `fnerf-pipeline render` first"):
        RenderStore(tmp_path / "nope.zarr")
    w = RenderStoreWriter.create_or_resume(tmp_path / "s.zarr", LAYOUT, ATTRS)
    for i in range(3):
        w.write_object(i, fake_object(i))
    w.finalize({})
    del w.group["kp2d"]
    with pytest.raises(StoreError, match=r"lacks arrays \['kp2d'\]"):
        RenderStore(tmp_path / "s.zarr")


def test_corrupt_chunk_is_reported_with_store_and_array(tmp_path):
    path = tmp_path / "s.zarr"
    w = RenderStoreWriter.create_or_resume(path, LAYOUT, ATTRS)
    for i in range(3):
        w.write_object(i, fake_object(i))
    w.finalize({})
    shard = next((path / "depth" / "c").rglob("*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    shard.write_bytes(b"garbage" * 10)
    store = RenderStore(path)
    with pytest.raises(StoreError, match="depth.*corrupt"):
        store.read("depth", (int(shard.parts[-4]), 0))


def test_a_process_reuses_its_writer_until_the_store_is_made_with_other_settings(tmp_path):
    path = tmp_path / "s.zarr"
    RenderStoreWriter.create_or_resume(path, LAYOUT, ATTRS)
    first = RenderStoreWriter.in_this_process(path)
    first.write_object(0, fake_object(0))
    assert RenderStoreWriter.in_this_process(path) is first  # arrays opened once per store
    stale = {**ATTRS, "config": {"renderer": "y"}}
    RenderStoreWriter.create_or_resume(path, LAYOUT, stale, if_stale="overwrite")
    second = RenderStoreWriter.in_this_process(path)
    assert second is not first
    second.write_object(2, fake_object(2, value=7))
    store = RenderStore(path, allow_incomplete=True)
    assert store.valid_indices() == [2]  # the old store's object is gone with it
    assert (store.read("rgb", (2, 0)) == 7).all()
