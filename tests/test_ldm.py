"""LdmTeacher on a tiny random SD-shaped model saved with save_pretrained (offline)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util
import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from teachers.base import TeacherError, TeacherInput
from teachers.ldm import DEFAULT_GRID, LdmTeacher

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
BLOCKS_OUT = (8, 16, 16, 24)  # up_blocks[i] outputs reversed(...)[i] = 24, 16, 16, 8 channels


def _write_clip(folder) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *[c + "</w>" for c in letters]]
    tok = folder / "tokenizer"  # the files of a CLIP BPE tokenizer, read by from_pretrained
    tok.mkdir()
    (tok / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    (tok / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    cfg = CLIPTextConfig(
        vocab_size=len(tokens),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(1)
    CLIPTextModel(cfg).save_pretrained(str(folder / "text_encoder"))


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    folder = tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=BLOCKS_OUT,
        norm_num_groups=4,
        cross_attention_dim=32,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    ).save_pretrained(str(folder / "unet"))
    AutoencoderKL(
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    ).save_pretrained(str(folder / "vae"))
    DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    ).save_pretrained(str(folder / "scheduler"))
    if HAS_TRANSFORMERS:
        _write_clip(folder)
    return folder


def _teacher(folder, **kw) -> LdmTeacher:
    opts = {"text_encoder": "none", "input_size": 32, "device": "cpu"}
    opts.update(kw)
    return LdmTeacher(str(folder), **opts)


def _batch(b: int = 3, size: int = 48, seed: int = 0) -> TeacherInput:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
    alpha = np.zeros((b, size, size), np.uint8)
    alpha[:, 8:40, 12:44] = 255
    return TeacherInput(rgb=rgb, alpha=alpha, category="chair")


def test_shapes_channels_and_manual_reference(tiny_sd) -> None:
    from diffusers import DDPMScheduler, UNet2DConditionModel

    t = _teacher(tiny_sd, timestep=250)
    batch = _batch()
    feat = t(batch)
    # VAE x2: latent 16; up_blocks[2], [3] are 16x16 with 16 + 8 channels
    assert feat.shape == (3, 16, 16, 24) and t.feature_dim == 16 + 8 and t.grid == (16, 16)
    fg = np.zeros((16, 16), bool)
    fg[3:14, 4:15] = True  # cell i reads pixel 3 i: rows 8..39, cols 12..43 are fg
    assert np.all(feat[:, ~fg] == 0) and np.all(np.abs(feat[:, fg]).sum(-1) > 0)

    # independent reference: diffusers' scheduler.add_noise + a full UNet pass with hooks
    x = torch.from_numpy(batch.rgb).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True) * 2 - 1
    sched = DDPMScheduler.from_pretrained(str(tiny_sd), subfolder="scheduler")
    unet = UNet2DConditionModel.from_pretrained(str(tiny_sd), subfolder="unet").eval()
    outs = {}
    hooks = [
        unet.up_blocks[i].register_forward_hook(lambda _m, _i, o, i=i: outs.__setitem__(i, o))
        for i in (2, 3)
    ]
    with torch.inference_mode():
        lat = t.vae.encode(x).latent_dist.mean * t.vae.config.scaling_factor
        eps = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
        noisy = sched.add_noise(lat, eps.expand_as(lat), torch.full((3,), 250))
        unet(noisy, torch.full((3,), 250), encoder_hidden_states=torch.zeros(3, 77, 32))
    for h in hooks:
        h.remove()
    ref = torch.cat([outs[2], outs[3]], dim=1).permute(0, 2, 3, 1).numpy()
    ref[:, ~fg] = 0
    np.testing.assert_allclose(feat, ref, rtol=1e-4, atol=1e-5)


def test_grid_and_block_selection(tiny_sd) -> None:
    t = _teacher(tiny_sd, blocks=(1,), grid=None)  # None: the hooked map, 8x8, 16 channels
    assert t.grid == (8, 8) and t.feature_dim == 16
    assert t(_batch(b=1)).shape == (1, 8, 8, 16)
    assert _teacher(tiny_sd, blocks=(1,)).grid == DEFAULT_GRID  # the default is fixed
    t = _teacher(tiny_sd, blocks=(0, 3), grid=(4, 4))  # 24 + 8 channels, resized to 4x4
    assert t(_batch(b=1)).shape == (1, 4, 4, 32)
    with pytest.raises(TeacherError, match="out of range"):
        _teacher(tiny_sd, blocks=(4,))
    with pytest.raises(TeacherError, match="multiple of 16"):
        _teacher(tiny_sd, input_size=40)


def test_determinism_seed_and_batch_independence(tiny_sd) -> None:
    batch = _batch(b=2)
    t = _teacher(tiny_sd)
    a = t(batch)
    np.testing.assert_array_equal(a, _teacher(tiny_sd)(batch))  # a fresh instance: same noise
    single = t(batch.select(slice(1, 2)))
    np.testing.assert_allclose(single[0], a[1], rtol=1e-4, atol=1e-5)
    other_seed = _teacher(tiny_sd, noise_seed=1)
    assert not np.allclose(other_seed(batch), a, atol=1e-4)
    assert other_seed.identity() != t.identity()
    ens = _teacher(tiny_sd, ensemble=2)(batch.select(slice(0, 1)))
    assert ens.shape == a[:1].shape and not np.allclose(ens, a[:1], atol=1e-4)


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed (CLIP path)")
def test_prompt_conditions_features(tiny_sd) -> None:
    t = _teacher(tiny_sd, text_encoder="clip")
    batch = _batch(b=2)
    chair = t(batch)
    np.testing.assert_array_equal(chair, t(batch))
    batch.category = "car"
    assert not np.allclose(t(batch), chair, atol=1e-5)
    other = _teacher(tiny_sd, text_encoder="clip", prompt_template="a {category}")
    assert other.identity()["prompt_template"] == "a {category}"
    assert other.identity() != t.identity()
    assert len(t.identity()["weights_sha256"]["text_encoder"]) == 64


def test_clip_missing_is_a_clear_error(tiny_sd, tmp_path) -> None:
    if HAS_TRANSFORMERS:
        broken = tmp_path / "no_text"
        broken.mkdir()
        for sub in ("unet", "vae"):
            (broken / sub).symlink_to(tiny_sd / sub)
        with pytest.raises(TeacherError, match="text_encoder"):
            LdmTeacher(str(broken), text_encoder="clip", input_size=32, device="cpu")
    else:
        with pytest.raises(TeacherError, match="transformers"):
            _teacher(tiny_sd, text_encoder="clip")


def test_hub_offline_and_bad_folder_fail_fast(tmp_path) -> None:
    start = time.monotonic()
    with pytest.raises(TeacherError, match="save_pretrained"):
        LdmTeacher("nobody-has/this-model-xyz", text_encoder="none", device="cpu")
    assert time.monotonic() - start < 30
    (tmp_path / "unet").mkdir()
    with pytest.raises(TeacherError, match="vae"):
        LdmTeacher(str(tmp_path), text_encoder="none", device="cpu")
    with pytest.raises(TeacherError, match="not found"):
        LdmTeacher(str(tmp_path / "missing" / "folder"), text_encoder="none", device="cpu")


def test_identity_contents(tiny_sd) -> None:
    ident = _teacher(tiny_sd).identity()
    assert ident["model"] == tiny_sd.name and ident["blocks"] == [2, 3]
    assert ident["timestep"] == 100 and ident["input_size"] == 32 and ident["grid"] == [16, 16]
    assert len(ident["weights_sha256"]["unet"]) == 64
    assert ident["scheduler"]["beta_schedule"] == "scaled_linear"
    json.dumps(ident)
    for change in ({"timestep": 50}, {"blocks": (3, 2)}, {"grid": (8, 8)}, {"input_size": 64}):
        assert _teacher(tiny_sd, **change).identity() != ident, change


def test_default_grid_fits_the_cache_budget() -> None:
    # SD-1.x up_blocks[2] + [3]: 640 + 320 channels; float16 store, 50 views per object
    per_object = DEFAULT_GRID[0] * DEFAULT_GRID[1] * (640 + 320) * 2 * 50
    assert per_object <= 40e6, per_object
    assert 64 * 64 * 960 * 2 * 50 > 390e6  # the paper grid (grid=None) is ~10x over it
