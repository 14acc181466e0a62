import json

import numpy as np
import pytest

from cache.render_store import RenderStore, RenderStoreWriter
from cache.zarr_io import StoreError
from pipeline.render_stage import RenderStageConfig, run_render_stage, split_assignment
from renderers.asset import AssetError
from tests.conftest import make_toy_asset


@pytest.fixture
def toy_source(monkeypatch):
    """Replace the shape source by toy assets; object 'proc-chair-000002' is broken."""

    def load(job):
        if job.object_id == "proc-chair-000002":
            raise AssetError(f"{job.object_id}: broken mesh (test)")
        return make_toy_asset(job.seed)

    monkeypatch.setattr("renderers.job.load_asset", load)


def config(tmp_path, **kw) -> RenderStageConfig:
    base = dict(
        category="chair",
        objects=4,
        views=6,
        size=48,
        n_points=64,
        renderer="raycast",
        out=str(tmp_path / "chair.zarr"),
        report_dir=str(tmp_path / "report"),
    )
    base.update(kw)
    return RenderStageConfig(**base)


def test_split_assignment_is_deterministic_with_requested_counts():
    a = split_assignment(20, (0.7, 0.1, 0.2), 0)
    assert a == split_assignment(20, (0.7, 0.1, 0.2), 0)
    assert (a.count("train"), a.count("val"), a.count("test")) == (14, 2, 4)


def test_failure_is_reported_and_not_silently_skipped(tmp_path, toy_source):
    result = run_render_stage(config(tmp_path))
    assert not result.ok
    assert "proc-chair-000002" in result.failures
    assert "broken mesh" in result.failures["proc-chair-000002"]
    html = (tmp_path / "report" / "index.html").read_text()
    assert "broken mesh" in html and "Failures (1)" in html
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["failures"] == 1 and metrics["objects"] == 3
    with pytest.raises(Exception, match="incomplete"):
        RenderStore(tmp_path / "chair.zarr")


def test_skip_lists_skipped_objects_and_store_is_usable(tmp_path, toy_source):
    result = run_render_stage(config(tmp_path, on_error="skip"))
    assert result.ok
    store = RenderStore(tmp_path / "chair.zarr")
    assert store.attrs["skipped"] == {"proc-chair-000002": "proc-chair-000002: broken mesh (test)"}
    assert 2 not in store.valid_indices() and len(store.valid_indices()) == 3


def test_interrupted_run_resumes_and_matches_a_clean_run(tmp_path, toy_source, monkeypatch):
    clean = run_render_stage(config(tmp_path / "clean", on_error="skip"))
    calls = {"n": 0}
    original = RenderStoreWriter.write_object

    def crash_mid_object(self, index, obj):
        calls["n"] += 1
        if calls["n"] == 2:  # die after writing part of the second object's arrays
            self.group["rgb"][index] = obj.views.rgb
            raise KeyboardInterrupt
        original(self, index, obj)

    monkeypatch.setattr(RenderStoreWriter, "write_object", crash_mid_object)
    with pytest.raises(KeyboardInterrupt):
        run_render_stage(config(tmp_path, on_error="skip"))
    partial = RenderStore(tmp_path / "chair.zarr", allow_incomplete=True)
    assert partial.valid_indices() == [0]  # the half-written object does not look complete
    monkeypatch.setattr(RenderStoreWriter, "write_object", original)
    resumed = run_render_stage(config(tmp_path, on_error="skip"))
    assert resumed.metrics["objects_resumed"] == 1
    assert resumed.metrics["objects_rendered_now"] == 2
    assert resumed.metrics["fingerprint"] == clean.metrics["fingerprint"]


def test_store_contents_follow_the_contract(tmp_path, toy_source):
    run_render_stage(config(tmp_path, on_error="skip"))
    store = RenderStore(tmp_path / "chair.zarr")
    attrs = store.attrs
    for key in (
        "category",
        "synset",
        "source",
        "renderer",
        "object_ids",
        "splits",
        "seeds",
        "part_names",
        "keypoint_names",
        "camera",
        "pipeline_version",
        "fingerprint",
    ):
        assert key in attrs, key
    assert attrs["synset"] == "03001627" and attrs["camera"]["distance"] == pytest.approx(1.3)
    i = store.valid_indices()[0]
    assert store.read("rgb", i).shape == (6, 48, 48, 3)
    assert store.read("kp2d", i).shape == (6, 12, 2)
    np.testing.assert_array_equal(store.read("kp_id", i)[[0, 1, 3]], [0, 1, 3])
    assert store.read("seed", i)[0] == attrs["seeds"][i]


def test_real_shapenet_chair_with_keypointnet_annotations(tmp_path):
    from tests.conftest import SHARED

    sample = SHARED / "data" / "keypointnet-sample"
    if not sample.exists():
        pytest.skip(f"real sample not found at {sample}")
    cfg = RenderStageConfig(
        category="chair", source="shapenet", shapenet_root=str(sample / "ShapeNetCore.v2"),
        annotations=("keypointnet",), keypointnet_root=str(sample), renderer="raycast",
        views=8, size=64, n_points=256, out=str(tmp_path / "c.zarr"),
        report_dir=str(tmp_path / "rep"))
    result = run_render_stage(cfg)
    assert result.ok, result.failures
    store = RenderStore(tmp_path / "c.zarr")
    assert store.attrs["keypoint_names"][0] == "kpn_00" and len(store.attrs["keypoint_names"]) == 21
    ids = store.read("kp_id", 0)
    assert (ids >= 0).sum() == 10  # this model's 10 KeypointNet keypoints, slot = semantic id
    align = store.attrs["alignment"]["88382b877be91b2a572f8e1c1caad99e"]["keypointnet"]
    assert align["chamfer"] < 0.02 and align["candidate"] is not None
    assert "Annotation alignment" in (tmp_path / "rep" / "index.html").read_text()


def _gl_broken_renderer(monkeypatch):
    """The process's pyrender renderer with a GL context that fails on every frame."""
    pytest.importorskip("pyrender")
    from OpenGL.error import GLError

    from renderers.base import RendererUnavailable
    from renderers.registry import get_renderer

    try:
        renderer = get_renderer("pyrender")
        offscreen = renderer._offscreen(48)
    except RendererUnavailable as exc:
        pytest.skip(f"pyrender/EGL unavailable: {exc}")

    def broken(*_args, **_kw):
        raise GLError(err=12296, result=0, baseOperation="eglMakeCurrent")

    monkeypatch.setattr(type(offscreen), "render", broken)
    return renderer


def test_broken_gl_context_stops_the_stage_with_one_error(tmp_path, toy_source, monkeypatch):
    _gl_broken_renderer(monkeypatch)
    calls = {"n": 0}
    original = RenderStoreWriter.write_object
    monkeypatch.setattr(RenderStoreWriter, "write_object",
                        lambda *a: (calls.__setitem__("n", calls["n"] + 1), original(*a)))
    with pytest.raises(StoreError) as info:
        run_render_stage(config(tmp_path, renderer="pyrender", on_error="skip"))
    msg = str(info.value)
    assert "\n" not in msg and "render stopped after 0 new object(s)" in msg
    assert "OpenGL context is broken" in msg and "err=12296" in msg
    assert calls["n"] == 0  # nothing rendered, nothing written after the failure
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["failures"] == 1  # the first object, not one failure per object
    assert "OpenGL context is broken" in (tmp_path / "report" / "index.html").read_text()


def test_unavailable_renderer_is_fatal_not_per_object(tmp_path, toy_source, monkeypatch):
    from renderers.base import RendererUnavailable

    def unavailable(name):
        raise RendererUnavailable(f"{name}: no GL here (test)")

    monkeypatch.setattr("renderers.registry.get_renderer", unavailable)
    with pytest.raises(StoreError, match=r"stopped after 0 new .*no GL here \(test\)"):
        run_render_stage(config(tmp_path, on_error="skip"))
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["failures"] == 1 and metrics["objects"] == 0
