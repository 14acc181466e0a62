"""DinoTeacher: facet hook vs manual forward, weight files (timm + original DINO layout), errors."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from teachers.base import TeacherError, TeacherInput
from teachers.dino import DinoTeacher

SMALL = {"depth": 3, "embed_dim": 48, "num_heads": 3}  # patch 8, tiny: fast CPU tests


def _batch(b: int = 2, size: int = 64, seed: int = 0) -> TeacherInput:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
    alpha = np.full((b, size, size), 255, np.uint8)
    return TeacherInput(rgb=rgb, alpha=alpha, category="chair")


def _small(**kw) -> DinoTeacher:
    opts = {"weights": "random", "layer": 1, "input_size": 64, "device": "cpu", "seed": 3}
    opts.update(kw)
    return DinoTeacher(model_kwargs=SMALL, **opts)


@pytest.fixture(scope="module")
def vits8() -> DinoTeacher:
    """The real ViT-S/8 architecture (random init), block-9 keys at 256 px."""
    return DinoTeacher(weights="random", device="cpu", seed=0)


def test_real_vits8_block9_keys_match_manual_and_full_forward(vits8: DinoTeacher) -> None:
    batch = _batch(b=1, size=128)
    feat = vits8(batch)
    assert feat.shape == (1, 32, 32, 384) and feat.dtype == np.float32
    ident = vits8.identity()
    assert (ident["layer"], ident["facet"], ident["input_size"], ident["stride"]) == (
        9,
        "key",
        256,
        8,
    )

    m = vits8.model
    x = torch.from_numpy(batch.rgb).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = F.interpolate((x - mean) / std, size=(256, 256), mode="bilinear")  # official order

    with torch.inference_mode():
        # (1) the official DINO path: prepare_tokens with interpolate_pos_encoding (+0.1 trick),
        # blocks 0..8, then norm1 + qkv of block 9, k reordered as features.reshape(b, d*nh, ..)
        n = m.pos_embed.shape[1] - 1
        patch_pe = (
            F.interpolate(
                m.pos_embed[:, 1:].reshape(1, 28, 28, 384).permute(0, 3, 1, 2),
                scale_factor=(32.1 / math.sqrt(n), 32.1 / math.sqrt(n)),
                mode="bicubic",
            )
            .permute(0, 2, 3, 1)
            .reshape(1, -1, 384)
        )
        pe = torch.cat([m.pos_embed[:, :1], patch_pe], dim=1)
        tok = m.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tok = torch.cat([m.cls_token.expand(1, -1, -1), tok], dim=1) + pe
        for blk in m.blocks[:9]:
            tok = blk(tok)
        b9 = m.blocks[9]
        qkv = F.linear(
            F.layer_norm(tok, (384,), b9.norm1.weight, b9.norm1.bias, b9.norm1.eps),
            b9.attn.qkv.weight,
            b9.attn.qkv.bias,
        )
        k = qkv.reshape(1, 1025, 3, 6, 64).permute(2, 0, 3, 1, 4)[1]  # (B, nh, t, d)
        official = k[:, :, 1:, :].permute(0, 1, 3, 2).reshape(1, 64 * 6, 32, 32)
        official = official.permute(0, 2, 3, 1)

        # (2) pos_interp="timm": full timm forward_features with a hook, k = 2nd third of qkv
        seen = {}
        h = b9.attn.qkv.register_forward_hook(lambda _m, _i, o: seen.__setitem__("qkv", o))
        m.forward_features(x)
        h.remove()
        timm_ref = seen["qkv"][:, 1:, 384:768].reshape(1, 32, 32, 384)

    np.testing.assert_allclose(feat, official.numpy(), rtol=1e-4, atol=1e-4)
    vits8.pos_interp = "timm"
    try:
        feat_timm = vits8(batch)
    finally:
        vits8.pos_interp = "dino"
    np.testing.assert_allclose(feat_timm, timm_ref.numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(feat, feat_timm, atol=1e-4)  # the interpolations differ
    # the value facet is a different slice: guards against reading the wrong third
    assert not np.allclose(feat, qkv[:, 1:, 768:].reshape(1, 32, 32, 384).numpy(), atol=1e-3)


@pytest.mark.parametrize("facet", ["query", "value", "token"])
def test_other_facets(facet: str) -> None:
    t = _small(facet=facet, pos_interp="timm")  # reference below uses timm's _pos_embed
    batch = _batch()
    feat = t(batch)
    x = t.preprocess(batch.rgb)
    with torch.inference_mode():
        tok = t.model._pos_embed(t.model.patch_embed(x))
        tok = t.model.blocks[0](tok)
        blk = t.model.blocks[1]
        if facet == "token":
            ref = blk(tok)[:, 1:]
        else:
            i = {"query": 0, "value": 2}[facet]
            ref = blk.attn.qkv(blk.norm1(tok))[:, 1:, 48 * i : 48 * (i + 1)]
    np.testing.assert_allclose(feat, ref.reshape(2, 8, 8, 48).numpy(), rtol=1e-4, atol=1e-5)


def test_shapes_and_background_zeroed() -> None:
    t = _small(input_size=256)  # 128 px in, resized to 256 -> 32x32
    batch = _batch(b=3, size=128)
    batch.alpha[:] = 0
    batch.alpha[:, 32:96, 40:100] = 255
    feat = t(batch)
    assert feat.shape == (3, 32, 32, 48) and t.grid == (32, 32) and t.feature_dim == 48
    fg = np.zeros((32, 32), bool)
    fg[8:24, 10:25] = True  # top-left pixel of cell (i, j) is (4i, 4j)
    assert np.all(feat[:, ~fg] == 0)
    assert np.all(np.abs(feat[:, fg]).sum(-1) > 0)


def test_weight_files_reproduce_in_memory_model(tmp_path) -> None:
    from safetensors.torch import save_file

    ref = _small()
    batch = _batch()
    expected = ref(batch)
    state = {k: v.clone().contiguous() for k, v in ref.model.state_dict().items()}

    timm_file = tmp_path / "vit_small_dino.safetensors"
    save_file(state, str(timm_file))
    torch.save(state, tmp_path / "timm_state.pth")
    # original DINO checkpoint layout: wrapped, prefixed, with a projection head to drop
    dino = {f"module.backbone.{k}": v for k, v in state.items()}
    dino["module.head.mlp.0.weight"] = torch.zeros(8, 48)
    dino["module.head.last_layer.weight_g"] = torch.ones(16, 1)
    dino_file = tmp_path / "dino_deitsmall8_pretrain.pth"
    torch.save({"teacher": dino, "epoch": 100}, dino_file)
    torch.save(state | {"head.weight": torch.zeros(3, 48)}, tmp_path / "plain_dino.pth")

    for path in (timm_file, tmp_path / "timm_state.pth", dino_file, tmp_path / "plain_dino.pth"):
        t = _small(weights=str(path), seed=99)  # other init seed: only the file can match
        np.testing.assert_array_equal(t(batch), expected)
        ident = t.identity()
        assert ident["weights"] == path.name and len(ident["weights_sha256"]) == 64
    assert _small(weights=str(timm_file)).identity() != _small(weights=str(dino_file)).identity()
    assert not np.allclose(_small(seed=99)(batch), expected)


def test_bad_weight_files_raise_teacher_error(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(TeacherError, match="nope.pth"):
        _small(weights=str(missing))

    garbled = tmp_path / "garbled.pth"
    garbled.write_bytes(os.urandom(1000))
    with pytest.raises(TeacherError, match="garbled.pth"):
        _small(weights=str(garbled))
    garbled_st = tmp_path / "garbled.safetensors"
    garbled_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(TeacherError, match="garbled.safetensors"):
        _small(weights=str(garbled_st))

    state = dict(_small().model.state_dict())
    state.pop("blocks.0.attn.qkv.weight")
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(TeacherError, match=r"partial\.pth.*blocks\.0\.attn\.qkv\.weight"):
        _small(weights=str(tmp_path / "partial.pth"))


def test_hub_offline_fails_with_weights_hint() -> None:
    with pytest.raises(TeacherError, match="dino_deitsmall8_pretrain.pth.*--weights") as err:
        DinoTeacher(weights=None, model_kwargs=SMALL, layer=1, device="cpu")
    assert "\n" not in str(err.value)


def test_identity_is_unchanged_by_the_timm_preset(vits8: DinoTeacher) -> None:
    """The identity of the default teacher as before DinoTeacher became a TimmTeacher preset
    (same keys and values, so existing dino caches keep their keys)."""
    assert vits8.identity() == {
        "name": "dino", "version": "1", "grid": [32, 32], "feature_dim": 384,
        "zero_background": True,
        "background_rule": "alpha nearest (top-left pixel of each cell) == 0 -> 0",
        "model": "vit_small_patch8_224.dino", "weights": "random",
        "weights_sha256": "random-init", "layer": 9, "facet": "key",
        "channel_order": "head-major", "input_size": 256, "resize": "bilinear",
        "antialias": False, "stride": 8,
        "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "prefix_tokens": "dropped", "pos_interp": "dino", "dtype": "fp32", "seed": 0,
    }
    with pytest.raises(TeacherError, match="not a timm VisionTransformer"):
        DinoTeacher(model_name="resnet50", weights="random", device="cpu")


def test_identity_tracks_options() -> None:
    base = _small().identity()
    assert _small().identity() == base
    changes = (
        {"layer": 2},
        {"facet": "value"},
        {"input_size": 128},
        {"seed": 4},
        {"pos_interp": "timm"},
        {"antialias": True},
    )
    for change in changes:
        assert _small(**change).identity() != base, change
    with pytest.raises(TeacherError):
        _small(layer=3)  # only 3 blocks
    with pytest.raises(TeacherError):
        _small(facet="attn")
    with pytest.raises(TeacherError, match="unknown timm model"):
        DinoTeacher(model_name="vit_nope_patch8", weights="random", device="cpu")


def test_512px_input_is_resized_without_antialias_by_default() -> None:
    """The released generate_dino_feat.py shrinks with plain bilinear (no antialias)."""
    batch = _batch(b=1, size=512, seed=5)
    x = torch.from_numpy(batch.rgb).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (x - mean) / std
    plain = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False,
                          antialias=False)
    smooth = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False,
                           antialias=True)

    released = _small(input_size=256)
    assert released.identity()["antialias"] is False
    np.testing.assert_allclose(released.preprocess(batch.rgb).numpy(), plain.numpy(), atol=1e-6)
    np.testing.assert_allclose(released(batch)[0], released.forward_tensor(plain)[0].numpy(),
                               rtol=1e-5, atol=1e-5)

    aa = _small(input_size=256, antialias=True)
    assert aa.identity()["antialias"] is True and aa.identity() != released.identity()
    np.testing.assert_allclose(aa.preprocess(batch.rgb).numpy(), smooth.numpy(), atol=1e-6)
    assert not np.allclose(plain.numpy(), smooth.numpy(), atol=1e-2)  # the options differ
    assert not np.allclose(aa(batch), released(batch), atol=1e-3)
    # enlarging (128 -> 256) never antialiases, whatever the option
    small = _batch(b=1, size=128, seed=6)
    np.testing.assert_array_equal(aa.preprocess(small.rgb).numpy(),
                                  released.preprocess(small.rgb).numpy())
