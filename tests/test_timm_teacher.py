"""TimmTeacher: real timm architectures (random init, tiny inputs) as teachers.

ViTs (DINOv2 + registers, CLIP, SigLIP) and ConvNets (ResNet-50, ConvNeXt): shapes, facets
against timm's own forward, prefix/register tokens dropped, grid alignment, background
zeroing, weight files, offline hub errors, the dino preset's identical features, and three
architectures through distill-cache -> train -> evaluate.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from teachers.base import TeacherError, TeacherInput, sha256_file  # noqa: E402
from teachers.timm_teacher import TimmTeacher  # noqa: E402

DINOV2 = "vit_small_patch14_reg4_dinov2.lvd142m"
CLIP = "vit_base_patch16_clip_224.openai"
SIGLIP = "vit_base_patch16_siglip_224"

#: (model, input size, prefix tokens, patch, mean)
VITS = [
    (DINOV2, 56, 5, 14, (0.485, 0.456, 0.406)),
    (CLIP, 64, 1, 16, (0.48145466, 0.4578275, 0.40821073)),
    (SIGLIP, 64, 0, 16, (0.5, 0.5, 0.5)),
]


def _batch(b: int = 2, size: int = 64, seed: int = 0) -> TeacherInput:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
    return TeacherInput(rgb=rgb, alpha=np.full((b, size, size), 255, np.uint8), category="chair")


def _square(i: int | None, j: int | None, p: int, size: int) -> TeacherInput:
    """A grey image with a bright p x p square on cell (i, j) (None: no square)."""
    rgb = np.full((1, size, size, 3), 40, np.uint8)
    if i is not None and j is not None:
        rgb[0, p * i : p * (i + 1), p * j : p * (j + 1)] = 255
    return TeacherInput(rgb=rgb, alpha=np.full((1, size, size), 255, np.uint8), category="chair")


def _timm(name: str, size: int, **kw) -> TimmTeacher:
    opts = {"weights": "random", "device": "cpu", "input_size": size, "seed": 0}
    return TimmTeacher(name, **(opts | kw))


@pytest.mark.parametrize(("name", "size", "n_prefix", "patch", "mean"), VITS)
def test_vit_facets_match_timm_forward_and_drop_prefix_tokens(name, size, n_prefix, patch, mean):
    key = _timm(name, size, layer=9)  # default facet: key
    tok = _timm(name, size, layer=9, facet="token")
    batch = _batch(size=64)  # 64 px renders -> resized to `size`
    fk, ft = key(batch), tok(batch)
    g = size // patch
    dim = key.model.embed_dim
    assert fk.shape == ft.shape == (2, g, g, dim) and key.grid == (g, g)
    assert key.num_prefix_tokens == key.model.num_prefix_tokens == n_prefix
    assert key.mean == mean and key.identity()["normalize"]["mean"] == list(mean)
    assert key.identity()["num_prefix_tokens"] == n_prefix and key.identity()["family"] == "vit"

    x = key.preprocess(batch.rgb)
    seen = {}
    qkv = key.model.blocks[9].attn.qkv
    handle = qkv.register_forward_hook(lambda _m, _i, o: seen.__setitem__("qkv", o))
    with torch.inference_mode():
        # timm's own intermediates (prefix tokens stripped by timm) and a full forward
        ref_tok = key.model.forward_intermediates(x, indices=[9], intermediates_only=True)[0]
        key.model.forward_features(x)
    handle.remove()
    ref_key = seen["qkv"][:, n_prefix:, dim : 2 * dim].reshape(2, g, g, dim)
    np.testing.assert_allclose(ft, ref_tok.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fk, ref_key.numpy(), rtol=1e-4, atol=1e-4)
    # the prefix tokens really are dropped: tokens [0, n) are not the first output cells
    all_tokens = seen["qkv"][:, :, dim : 2 * dim]
    if n_prefix:
        assert not np.allclose(fk[:, 0, 0], all_tokens[:, 0].numpy(), atol=1e-3)


def test_vit_cell_is_its_patch_and_moves_with_it():
    t = _timm(DINOV2, 56, layer=0)  # block-0 keys: per-token, no attention mixing yet
    base = t(_square(None, None, 14, 56))[0]
    for i, j in ((1, 1), (1, 2), (2, 1), (3, 0)):
        diff = np.abs(t(_square(i, j, 14, 56))[0] - base).sum(-1)
        changed = np.argwhere(diff > 1e-5)
        assert changed.tolist() == [[i, j]], (i, j, changed)


def test_convnet_stage_grid_stride_and_alignment():
    # ConvNeXt: non-overlapping patchify stem and downsamplers -> the response peaks on the
    # square's own cell; stage 1 = stride 8
    cnx = _timm("convnext_tiny", 64, layer=1)
    assert (cnx.stride, cnx.grid, cnx.feature_dim) == (8, (8, 8), 192)
    base = cnx(_square(None, None, 8, 64))[0]
    for i, j in ((1, 1), (1, 2), (2, 1), (4, 5)):
        r = np.linalg.norm(cnx(_square(i, j, 8, 64))[0] - base, axis=-1)
        assert np.unravel_index(r.argmax(), r.shape) == (i, j)

    # ResNet-50 default stage: feature index 3 = layer3, stride 16, 1024 channels
    rn = _timm("resnet50", 64)
    ident = rn.identity()
    assert (rn.layer, rn.stride, rn.grid, rn.feature_dim) == (3, 16, (4, 4), 1024)
    assert (ident["family"], ident["stage_module"], ident["stride"]) == ("convnet", "layer3", 16)
    assert "facet" not in ident
    # stage 2 (stride 8): a square moved by one cell moves the response map by one cell
    rn2 = _timm("resnet50", 64, layer=2)
    base = rn2(_square(None, None, 8, 64))[0]
    resp = {
        ij: np.linalg.norm(rn2(_square(*ij, 8, 64))[0] - base, axis=-1)
        for ij in ((2, 2), (2, 3), (3, 2))
    }
    peak = np.unravel_index(resp[(2, 2)].argmax(), (8, 8))
    assert np.unravel_index(resp[(2, 3)].argmax(), (8, 8)) == (peak[0], peak[1] + 1)
    assert np.unravel_index(resp[(3, 2)].argmax(), (8, 8)) == (peak[0] + 1, peak[1])
    np.testing.assert_allclose(resp[(2, 3)][1:6, 2:7], resp[(2, 2)][1:6, 1:6], rtol=1e-3,
                               atol=1e-4)


@pytest.mark.parametrize(("name", "size", "layer"), [(DINOV2, 56, 9), ("resnet50", 64, 2)])
def test_background_cells_are_zeroed(name, size, layer):
    t = _timm(name, size, layer=layer)
    batch = _batch(b=2, size=size, seed=1)
    batch.alpha[:] = 0
    h = size // 2
    batch.alpha[:, :h, h:] = 255  # top-right quadrant is foreground
    feat = t(batch)
    g = t.grid[0]
    fg = np.zeros((g, g), bool)
    fg[: g // 2, g // 2 :] = True
    assert np.all(feat[:, ~fg] == 0) and np.all(np.abs(feat[:, fg]).sum(-1) > 0)


def test_weight_files_vit_and_convnet(tmp_path):
    from safetensors.torch import save_file

    batch = _batch(size=56, seed=2)
    vit = _timm(DINOV2, 56, layer=3, seed=1)
    state = {k: v.clone().contiguous() for k, v in vit.model.state_dict().items()}
    st = tmp_path / "dinov2.safetensors"
    save_file(state | {"head.weight": torch.zeros(3, 384)}, str(st))
    wrapped = tmp_path / "dinov2.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    for path in (st, wrapped):
        loaded = _timm(DINOV2, 56, layer=3, seed=7, weights=str(path))  # only the file matches
        np.testing.assert_array_equal(loaded(batch), vit(batch))
        ident = loaded.identity()
        assert ident["weights"] == path.name and ident["weights_sha256"] == sha256_file(path)
    assert not np.allclose(_timm(DINOV2, 56, layer=3, seed=7)(batch), vit(batch))

    # a ConvNet file holds the full architecture (later stages, classifier): those are ignored
    rn = _timm("resnet50", 64, layer=1, seed=1)
    rstate = dict(rn.model.state_dict())
    full = rstate | {"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000),
                     "layer4.0.conv1.weight": torch.zeros(512, 1024, 1, 1)}
    torch.save(full, tmp_path / "resnet50.pth")
    loaded = _timm("resnet50", 64, layer=1, seed=5, weights=str(tmp_path / "resnet50.pth"))
    np.testing.assert_array_equal(loaded(_batch()), rn(_batch()))
    torch.save(full | {"nonsense.weight": torch.zeros(2)}, tmp_path / "bad.pth")
    with pytest.raises(TeacherError, match=r"bad\.pth.*unexpected keys \['nonsense\.weight'\]"):
        _timm("resnet50", 64, layer=1, weights=str(tmp_path / "bad.pth"))
    rstate.pop("layer1.0.conv1.weight")
    torch.save(rstate, tmp_path / "partial.pth")
    with pytest.raises(TeacherError, match=r"partial\.pth.*layer1\.0\.conv1\.weight"):
        _timm("resnet50", 64, layer=1, weights=str(tmp_path / "partial.pth"))
    with pytest.raises(TeacherError, match="not found"):
        _timm("resnet50", 64, weights=str(tmp_path / "nope.safetensors"))


@pytest.mark.parametrize("name", [SIGLIP, "resnet50"])
def test_hub_offline_fails_in_seconds_with_one_line(name):
    from teachers.base import hub_cache_sha256
    from teachers.timm_teacher import _probe

    hub = _probe(name, {}).pretrained_cfg["hf_hub_id"]
    if hub_cache_sha256(hub) != "unverified":
        pytest.skip(f"{hub} is in the local HF cache: loading it would succeed offline")
    start = time.monotonic()
    with pytest.raises(TeacherError) as err:
        TimmTeacher(name, weights=None, input_size=64, device="cpu")
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "\n" not in msg and "--weights PATH" in msg and "huggingface.co/timm/" in msg


def test_option_errors_and_identity():
    with pytest.raises(TeacherError, match="multiple of patch"):
        _timm(DINOV2, 64)
    with pytest.raises(TeacherError, match="multiple of stage 3's stride 16"):
        _timm("resnet50", 72)
    with pytest.raises(TeacherError, match="has 12 blocks"):
        _timm(CLIP, 64, layer=12)
    with pytest.raises(TeacherError, match="feature indices 0: stride 2"):
        _timm("resnet50", 64, layer=5)
    with pytest.raises(TeacherError, match="ViTs only"):
        _timm("resnet50", 64, facet="key")
    with pytest.raises(TeacherError, match="CLS-only"):
        _timm(DINOV2, 56, pos_interp="dino")
    with pytest.raises(TeacherError, match="unknown timm model"):
        _timm("vit_nope_patch8", 64)

    small = {"depth": 2, "embed_dim": 48, "num_heads": 3}
    base = _timm(CLIP, 64, model_kwargs=small).identity()
    assert base["name"] == "timm" and base["layer"] == 1 and base["facet"] == "key"
    assert _timm(CLIP, 64, model_kwargs=small).identity() == base
    for change in ({"layer": 0}, {"facet": "value"}, {"input_size": 32}, {"seed": 1},
                   {"pos_interp": "dino"}, {"antialias": False}, {"dtype": "bf16"}):
        assert _timm(CLIP, 64, model_kwargs=small, **change).identity() != base, change


def test_dino_preset_is_the_timm_teacher_bit_for_bit(tmp_path):
    from teachers.dino import DinoTeacher

    batch = _batch(b=1, size=128, seed=3)
    dino = DinoTeacher(weights="random", device="cpu", seed=0)  # real ViT-S/8, block 9 keys
    same = TimmTeacher("vit_small_patch8_224.dino", weights="random", layer=9, facet="key",
                       input_size=256, pos_interp="dino", antialias=False, device="cpu", seed=0)
    fd, fs = dino(batch), same(batch)
    assert fd.shape == (1, 32, 32, 384) and np.array_equal(fd, fs)
    di, si = dino.identity(), same.identity()
    assert di["name"] == "dino" and si["name"] == "timm"
    assert {k: v for k, v in si.items() if k not in ("family", "num_prefix_tokens")} == (
        di | {"name": "timm"})


def test_registry_and_cli_routes():
    from pipeline.distill_stage import cli_options
    from teachers.registry import TEACHERS, build_teacher, teacher_key

    assert "timm" in TEACHERS
    opts = cli_options("timm", {"model_id": "resnet50", "weights": "random", "layer": 2,
                                "input_size": 64, "device": "cpu"})
    assert opts == {"model_name": "resnet50", "weights": "random", "layer": 2, "input_size": 64,
                    "device": "cpu"}
    t = build_teacher("timm", **opts)
    assert teacher_key(t.identity()).startswith("timm-") and t.grid == (8, 8)


def test_three_architectures_distill_train_evaluate(tiny_stores, tmp_path):
    from click.testing import CliRunner

    from cache.feature_store import FeatureStore
    from pipeline.cli import main
    from pipeline.evaluation.stage import EvaluateConfig, run_evaluate_stage
    from tests.test_trainer import small_config
    from train.trainer import checkpoints, load_checkpoint, train

    renders = tiny_stores[0]
    offline = CliRunner().invoke(main, [
        "distill-cache", "--category", "chair", "--teacher", "timm", "--model-id", "resnet50",
        "--renders", str(renders), "--out", str(tmp_path / "hub.zarr"),
        "--report-dir", str(tmp_path / "rep-hub")])
    errors = [line for line in offline.output.splitlines() if line.startswith("Error:")]
    assert offline.exit_code != 0 and len(errors) == 1 and "--weights PATH" in errors[0]
    assert "Traceback" not in offline.output and not (tmp_path / "hub.zarr").exists()
    archs = [(DINOV2, "56", "9", (4, 4), 384), (SIGLIP, "64", "9", (4, 4), 768),
             ("resnet50", "64", "2", (8, 8), 512)]
    for name, size, layer, grid, dim in archs:
        tag = name.split("_")[0] + size
        out = tmp_path / f"{tag}.zarr"
        result = CliRunner().invoke(main, [
            "distill-cache", "--category", "chair", "--teacher", "timm", "--model-id", name,
            "--weights", "random", "--layer", layer, "--input-size", size, "--device", "cpu",
            "--batch-size", "8", "--renders", str(renders), "--out", str(out),
            "--report-dir", str(tmp_path / f"rep-{tag}")])
        assert result.exit_code == 0, result.output
        store = FeatureStore(out)
        ident = store.attrs["identity"]
        assert (ident["name"], ident["model"], ident["grid"], ident["feature_dim"]) == (
            "timm", name, list(grid), dim)

        cfg = small_config((renders, out), tmp_path / tag, name=f"t-{tag}")
        summary = train(cfg, progress=False)
        state = load_checkpoint(checkpoints(tmp_path / tag / "runs" / f"t-{tag}")[-1])
        assert summary["steps"] == 2 and state["teacher_identity"]["model"] == name

        metrics = run_evaluate_stage(EvaluateConfig(
            category="chair", teacher="timm", run=str(tmp_path / tag / "runs" / f"t-{tag}"),
            pixelnerf_run="", renders=str(renders), features=str(out), n_pairs=2,
            eval_size=16, tasks=("cross_instance",), swap_example=False, n_visual=0,
            device="cpu", report_dir=str(tmp_path / f"eval-{tag}"), progress=False))
        for method in ("student_internal", "teacher_2d"):
            v = metrics[f"chair.cross_instance.kp2d.pck@5.{method}"]
            assert v is None or 0.0 <= v <= 1.0


def test_each_timm_model_has_its_own_label_in_train_and_evaluate(tiny_stores, tmp_path,
                                                                  monkeypatch):
    from click.testing import CliRunner

    from pipeline.cli import main
    from teachers.registry import teacher_label
    from teachers.timm_teacher import DEFAULT_MODEL

    assert teacher_label("timm", "vit_base_patch16_clip_224.openai") == (
        "timm-vit_base_patch16_clip_224.openai")
    assert teacher_label("timm", "hf-hub:timm/ViT_X") == "timm-hf-hub-timm-vit_x"
    assert teacher_label("timm") == teacher_label("timm", DEFAULT_MODEL)
    assert teacher_label("dino", "vit_small_patch8_224.dino") == "dino"
    monkeypatch.chdir(tmp_path)  # no stores here: the errors name the default paths
    renders = str(tiny_stores[0])
    for model in ("resnet50", SIGLIP):
        label = f"timm-{model.lower()}"
        train = CliRunner().invoke(main, ["train", "--category", "chair", "--teacher", "timm",
                                          "--model-id", model, "--renders", renders])
        assert train.exit_code != 0 and f"data/features/{label}/chair.zarr" in train.output
        evaluate = CliRunner().invoke(main, ["evaluate", "--category", "chair", "--teacher",
                                             "timm", "--model-id", model, "--renders", renders])
        assert evaluate.exit_code != 0 and f"runs/chair-{label}" in evaluate.output
