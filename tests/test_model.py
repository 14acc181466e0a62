"""FeatureNeRF model and render_rays: shapes, invariances, gradients, renderer bookkeeping."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch

from renderers import cameras
from train.model import FeatureNeRF, ModelConfig, positional_encoding, render_rays
from train.rays import pixel_centers, pixel_rays, project_points
from train.rendering import composite, compositing_weights

SIZE = 32


def _cfg(**kw) -> ModelConfig:
    """Small, fast config (2 CPU cores here); the 512-wide default is checked separately."""
    base = dict(
        backbone="resnet18", pretrained_encoder=False, d_feature=384, predict_coord=True, width=64
    )
    base.update(kw)
    return ModelConfig(**base)


def _randomize(model: FeatureNeRF, seed: int = 0) -> FeatureNeRF:
    """Give every MLP weight (incl. the zero-init fc1) random values so tests can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("encoder"):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
    return model


@functools.cache
def _cached_model(seed: int, items: tuple) -> FeatureNeRF:
    torch.manual_seed(seed)
    return _randomize(FeatureNeRF(_cfg(**dict(items))), seed).eval()


def _model(seed: int = 0, **kw) -> FeatureNeRF:
    """A fresh copy of a randomized model (building a ResNet costs ~1 s on this CPU)."""
    return copy.deepcopy(_cached_model(seed, tuple(sorted(kw.items()))))


def _cams(b: int, v: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    eyes = cameras.spherical_eye(rng.uniform(0, 360, b * v), rng.uniform(10, 70, b * v), 1.3)
    c2w = np.stack([cameras.look_at_c2w(e) for e in eyes]).reshape(b, v, 4, 4)
    K = np.broadcast_to(cameras.intrinsics(SIZE, 51.98), (b, v, 3, 3))
    return torch.tensor(K, dtype=torch.float32), torch.tensor(c2w, dtype=torch.float32)


def _points(b: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xyz = (torch.rand(b, n, 3, generator=g) - 0.5) * 0.8
    d = torch.randn(b, n, 3, generator=g)
    return xyz, d / d.norm(dim=-1, keepdim=True)


def _rot(seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed)))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_positional_encoding_dims_and_order():
    x = torch.tensor([[0.1, -0.2, 0.3]])
    e = positional_encoding(x, 6, 1.5)
    assert e.shape == (1, 39)
    torch.testing.assert_close(e[0, :3], x[0])
    torch.testing.assert_close(e[0, 3:6], torch.sin(1.5 * x[0]))
    torch.testing.assert_close(e[0, 6:9], torch.cos(1.5 * x[0]))
    torch.testing.assert_close(e[0, -3:], torch.cos(1.5 * 32 * x[0]))


@pytest.mark.parametrize("d_feature,coord", [(384, True), (0, False), (16, False), (0, True)])
@pytest.mark.parametrize("n_views", [1, 2])
def test_forward_shapes(d_feature, coord, n_views):
    model = _model(d_feature=d_feature, predict_coord=coord, width=512)
    assert model.d_in == 42
    K, c2w = _cams(2, n_views)
    model.encode(torch.rand(2, n_views, 3, SIZE, SIZE), K, c2w)
    xyz, d = _points(2, 10)
    out = model(xyz, d)
    assert out["sigma"].shape == (2, 10) and (out["sigma"] >= 0).all()
    assert out["rgb"].shape == (2, 10, 3) and ((out["rgb"] > 0) & (out["rgb"] < 1)).all()
    assert out["internal"].shape == (2, 10, 512)  # default width: the 512-d descriptor
    assert ("feature" in out) == (d_feature > 0) and ("coord" in out) == coord
    if d_feature:
        assert out["feature"].shape == (2, 10, d_feature)
    if coord:
        assert out["coord"].shape == (2, 10, 3)


def test_forward_requires_encode():
    with pytest.raises(RuntimeError):
        _model()(*_points(1, 3))


def test_two_identical_views_equal_single_view_and_order_invariance():
    model = _model()
    K, c2w = _cams(1, 2)
    imgs = torch.rand(1, 2, 3, SIZE, SIZE)
    xyz, d = _points(1, 20)
    with torch.no_grad():
        model.encode(imgs[:, :1], K[:, :1], c2w[:, :1])
        one = model(xyz, d)
        model.encode(imgs[:, [0, 0]], K[:, [0, 0]], c2w[:, [0, 0]])
        dup = model(xyz, d)
        model.encode(imgs, K, c2w)
        both = model(xyz, d)
        model.encode(imgs[:, [1, 0]], K[:, [1, 0]], c2w[:, [1, 0]])
        swapped = model(xyz, d)
    for k in one:
        torch.testing.assert_close(dup[k], one[k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(swapped[k], both[k], atol=1e-5, rtol=1e-5)
    assert (both["internal"] - one["internal"]).abs().max() > 1e-3  # second view matters


def test_rotating_world_and_cameras_leaves_outputs_unchanged():
    model = _model()
    K, c2w = _cams(2, 2)
    imgs = torch.rand(2, 2, 3, SIZE, SIZE)
    xyz, d = _points(2, 30)
    Q = _rot(3)
    c2w_r = c2w.clone()
    c2w_r[..., :3, :3] = Q @ c2w[..., :3, :3]
    c2w_r[..., :3, 3] = c2w[..., :3, 3] @ Q.T
    with torch.no_grad():
        model.encode(imgs, K, c2w)
        ref = model(xyz, d)
        model.encode(imgs, K, c2w_r)
        rot = model(xyz @ Q.T, d @ Q.T)
        moved = model(xyz, d)  # same points, rotated cameras: must differ
    for k in ref:
        torch.testing.assert_close(rot[k], ref[k], atol=1e-4, rtol=1e-4)
    assert (moved["internal"] - ref["internal"]).abs().max() > 1e-2


def test_projection_matches_rays_module():
    model = _model()
    K, c2w = _cams(2, 2)
    model.encode(torch.rand(2, 2, 3, SIZE, SIZE), K, c2w)
    xyz, _ = _points(2, 15)
    xyz_rot, uv = model.project(xyz)
    for v in range(2):
        uv_ref, _ = project_points(xyz, K[:, v], c2w[:, v])
        torch.testing.assert_close(uv[:, v], uv_ref, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(xyz_rot[:, v], xyz @ c2w[:, v, :3, :3])
    # a point on the ray through pixel (5, 9) projects back to that pixel centre
    px = pixel_centers(torch.tensor([[[5, 9]]])).expand(2, 1, 2)
    o, dr = pixel_rays(K[:, 0], c2w[:, 0], px)
    _, uv = model.project(o + 1.2 * dr)
    torch.testing.assert_close(uv[:, 0], px, atol=1e-4, rtol=1e-5)


def test_pixel_aligned_latent_is_used():
    """Changing the input image where a point projects changes that point's output only."""
    model = _model(encoder_layers=1)  # conv1 only: 7x7 receptive field
    K, c2w = _cams(1, 1)
    img = torch.rand(1, 1, 3, SIZE, SIZE)
    px = pixel_centers(torch.tensor([[[4, 4], [27, 27]]]))
    o, dr = pixel_rays(K[:, 0], c2w[:, 0], px)
    xyz = o + 1.3 * dr
    with torch.no_grad():
        model.encode(img, K, c2w)
        a = model(xyz, dr)["internal"]
        img2 = img.clone()
        img2[..., :8, :8] = 1.0 - img2[..., :8, :8]  # top-left corner only
        model.encode(img2, K, c2w)
        b = model(xyz, dr)["internal"]
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-3
    torch.testing.assert_close(a[0, 1], b[0, 1])


def test_gradients_reach_every_parameter():
    model = _model(d_feature=8).train()
    K, c2w = _cams(2, 1)
    model.encode(torch.rand(2, 1, 3, SIZE, SIZE), K, c2w)
    out = model(*_points(2, 50))
    loss = sum((out[k] ** 2).mean() for k in ("sigma", "rgb", "feature", "coord"))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_default_init_gradients_flow_to_heads_and_encoder():
    """Official init (fc1 = 0): blocks are identities, still every head and the encoder learn."""
    torch.manual_seed(0)
    model = FeatureNeRF(_cfg(d_feature=8)).train()
    K, c2w = _cams(2, 1)
    model.encode(torch.rand(2, 1, 3, SIZE, SIZE), K, c2w)
    out = model(*_points(2, 50))
    sum(out[k].mean() for k in ("sigma", "rgb", "feature", "coord")).backward()
    names = [
        "density_head.weight",
        "rgb_head.weight",
        "feature_head.weight",
        "coord_head.weight",
        "lin_in.weight",
        "lin_z.0.weight",
        "lin_z.2.weight",
        "blocks.4.fc1.weight",
        "encoder.conv1.weight",
        "encoder.layers.2.0.conv1.weight",
    ]
    params = dict(model.named_parameters())
    for n in names:
        assert params[n].grad.abs().sum() > 0, n


def test_parameter_count_of_default_model():
    model = FeatureNeRF(ModelConfig(pretrained_encoder=False))
    mlp = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder"))
    enc = sum(p.numel() for p in model.encoder.parameters())
    w = 512
    heads = (w + 1) * (1 + 3 + 384 + 3)
    expected_mlp = (42 * w + w) + 3 * (w * w + w) + 5 * 2 * (w * w + w) + heads
    assert mlp == expected_mlp  # ~3.64 M (reference: "about 3.6 M")
    assert 8.0e6 < enc < 8.3e6  # ResNet-34 trunk up to layer3


def test_config_roundtrip():
    cfg = _cfg(d_feature=960)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"nope": 1})


def _rays(model: FeatureNeRF, b: int = 2, r: int = 12):
    K, c2w = _cams(b, 1)
    model.encode(torch.rand(b, 1, 3, SIZE, SIZE), K, c2w)
    g = torch.Generator().manual_seed(5)
    px = pixel_centers(torch.randint(0, SIZE, (b, r, 2), generator=g))
    return pixel_rays(K[:, 0], c2w[:, 0], px)


def test_render_rays_shapes_and_fine_reuse_is_exact():
    model = _model(d_feature=8)
    o, d = _rays(model)
    with torch.no_grad():
        out = render_rays(
            model,
            o,
            d,
            0.8,
            1.8,
            n_coarse=16,
            n_importance=4,
            n_depth=4,
            train=True,
            generator=torch.Generator().manual_seed(0),
        )
    c, f = out["coarse"], out["fine"]
    assert c["weights"].shape == (2, 12, 16) and f["weights"].shape == (2, 12, 24)
    for p in (c, f):
        assert p["rgb"].shape == (2, 12, 3) and p["feature"].shape == (2, 12, 8)
        assert p["coord"].shape == p["coord_target"].shape == (2, 12, 3)
        assert p["internal"].shape == (2, 12, 64)
        assert p["depth"].shape == p["opacity"].shape == (2, 12)
        assert (p["opacity"] <= 1 + 1e-6).all()
        assert (p["t"][..., 1:] >= p["t"][..., :-1]).all()
        assert (p["t"] >= 0.8).all() and (p["t"] <= 1.8).all()
    # the coarse samples are a subset of the fine ones
    assert torch.isin(c["t"], f["t"]).all()
    # re-evaluating the model on the fine samples gives the same render (gather is correct)
    pts = o[..., None, :] + f["t"][..., None] * d[..., None, :]
    with torch.no_grad():
        q = model(pts.reshape(2, -1, 3), d[:, :, None].expand(-1, -1, 24, -1).reshape(2, -1, 3))
    q = {k: v.reshape(2, 12, 24, *v.shape[2:]) for k, v in q.items()}
    w = compositing_weights(q["sigma"], f["t"], 1.8)
    torch.testing.assert_close(f["weights"], w, atol=1e-5, rtol=1e-4)
    for k in ("rgb", "feature", "internal", "coord"):
        torch.testing.assert_close(f[k], composite(w, q[k]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(f["coord_target"], composite(w, pts), atol=1e-5, rtol=1e-4)


def test_render_rays_chunking_and_determinism():
    model = _model(d_feature=4)
    o, d = _rays(model, r=10)
    with torch.no_grad():
        full = render_rays(model, o, d, n_coarse=16, n_importance=4, n_depth=4, train=False)
        chunked = render_rays(
            model, o, d, n_coarse=16, n_importance=4, n_depth=4, train=False, chunk=3
        )
    for p in full:
        for k in full[p]:
            torch.testing.assert_close(chunked[p][k], full[p][k], atol=1e-5, rtol=1e-5)


def test_render_rays_coord_mean_is_official_residual_mean():
    model = _model(d_feature=0)
    o, d = _rays(model)
    with torch.no_grad():
        out = render_rays(
            model,
            o,
            d,
            n_coarse=16,
            train=False,
            coord_reduce="mean",
            return_internal=False,
            n_importance=0,
            n_depth=0,
        )
    c = out["coarse"]
    assert "fine" not in out and "internal" not in c and "feature" not in c
    pts = o[..., None, :] + c["t"][..., None] * d[..., None, :]
    with torch.no_grad():
        q = model(pts.reshape(2, -1, 3), d[:, :, None].expand(-1, -1, 16, -1).reshape(2, -1, 3))
    residual = q["coord"] - pts.reshape(2, -1, 3)  # what the official model returns
    official = residual.reshape(2, 12, 16, 3).mean(-2)
    torch.testing.assert_close(c["coord"] - c["coord_target"], official, atol=1e-5, rtol=1e-4)


def test_render_rays_backward_and_coord_weights_detached():
    model = _model(d_feature=4).train()
    kw = dict(n_coarse=16, n_importance=4, n_depth=4, generator=torch.Generator().manual_seed(0))
    o, d = _rays(model, r=6)
    out = render_rays(model, o, d, **kw)
    out["fine"]["coord"].sum().backward()
    assert model.density_head.weight.grad is None or model.density_head.weight.grad.abs().sum() == 0
    assert model.coord_head.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    o, d = _rays(model, r=6)  # re-encode: the previous graph was freed by backward()
    out = render_rays(model, o, d, coord_weights_grad=True, **kw)
    (out["fine"]["coord"].sum() + out["coarse"]["feature"].sum()).backward()
    assert model.density_head.weight.grad.abs().sum() > 0


def test_density_activation_options():
    relu = _model(d_feature=0, density_activation="relu")
    soft = copy.deepcopy(relu)
    soft.config = ModelConfig(**{**relu.config.to_dict(), "density_activation": "softplus"})
    K, c2w = _cams(1, 1)
    img = torch.rand(1, 1, 3, SIZE, SIZE)
    xyz, d = _points(1, 40)
    with torch.no_grad():
        torch.nn.init.constant_(relu.density_head.bias, -100.0)  # every pre-activation < 0
        torch.nn.init.constant_(soft.density_head.bias, -10.0)
    relu.encode(img, K, c2w)
    soft.encode(img, K, c2w)
    s_relu, s_soft = relu(xyz, d)["sigma"], soft(xyz, d)["sigma"]
    assert torch.equal(s_relu, torch.zeros_like(s_relu))  # official relu: dead
    assert (s_soft > 0).all()
    s_soft.sum().backward()
    assert soft.density_head.bias.grad.abs() > 0  # softplus keeps a gradient
    with pytest.raises(ValueError):
        FeatureNeRF(_cfg(density_activation="exp"))


def test_inference_path_with_projected_maps_equals_the_training_path():
    """no_grad queries sample lin_z-projected latent maps; values equal the per-point path."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_feature=5, backbone="resnet18", pretrained_encoder=False, width=32,
                      n_blocks=3, combine_layer=2)
    model = FeatureNeRF(cfg).eval()
    images = torch.rand(2, 1, 3, 32, 32)
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]).expand(2, 1, 3, 3)
    c2w = torch.eye(4).expand(2, 1, 4, 4).clone()
    c2w[..., 2, 3] = -1.5
    xyz = torch.rand(2, 50, 3) - 0.5
    dirs = torch.nn.functional.normalize(torch.randn(2, 50, 3), dim=-1)
    model.encode(images, K, c2w)
    with torch.enable_grad():
        ref = model(xyz, dirs)
    with torch.no_grad():
        got = model(xyz, dirs)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k].detach(), atol=2e-5, rtol=1e-4)
