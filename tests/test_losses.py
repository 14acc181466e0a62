"""FeatureNeRF losses and teacher-feature lookup."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import LossWeights, featurenerf_loss, masked_mse, sample_feature_targets


def _outputs(b: int = 2, r: int = 5, d: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def one() -> dict:
        return {
            "rgb": torch.rand(b, r, 3, generator=g),
            "feature": torch.randn(b, r, d, generator=g),
            "coord": torch.randn(b, r, 3, generator=g),
            "coord_target": torch.randn(b, r, 3, generator=g),
        }

    return {"coarse": one(), "fine": one()}


def test_zero_when_prediction_equals_target():
    out = _outputs()
    for p in ("coarse", "fine"):
        out[p]["rgb"] = out["coarse"]["rgb"]
        out[p]["feature"] = out["coarse"]["feature"]
        out[p]["coord"] = out[p]["coord_target"]
    tgt = {"rgb": out["coarse"]["rgb"].clone(), "feature": out["coarse"]["feature"].clone()}
    total, terms = featurenerf_loss(out, tgt, LossWeights())
    assert total.item() == 0.0
    assert set(terms) == {
        f"{k}_{p}" for k in ("rgb", "feature", "coord") for p in ("coarse", "fine")
    }


def test_total_is_weighted_sum_of_mse_terms():
    out = _outputs()
    g = torch.Generator().manual_seed(9)
    tgt = {"rgb": torch.rand(2, 5, 3, generator=g), "feature": torch.randn(2, 5, 6, generator=g)}
    w = LossWeights(rgb_coarse=0.5, rgb_fine=2.0, feature=0.25, coord=0.1)
    total, terms = featurenerf_loss(out, tgt, w)
    mse = torch.nn.functional.mse_loss
    ref = {
        "rgb_coarse": mse(out["coarse"]["rgb"], tgt["rgb"]),
        "rgb_fine": mse(out["fine"]["rgb"], tgt["rgb"]),
        "feature_coarse": mse(out["coarse"]["feature"], tgt["feature"]),
        "feature_fine": mse(out["fine"]["feature"], tgt["feature"]),
        "coord_coarse": mse(out["coarse"]["coord"], out["coarse"]["coord_target"]),
        "coord_fine": mse(out["fine"]["coord"], out["fine"]["coord_target"]),
    }
    for k, v in ref.items():
        torch.testing.assert_close(terms[k], v)
    expected = (
        0.5 * ref["rgb_coarse"]
        + 2.0 * ref["rgb_fine"]
        + 0.25 * (ref["feature_coarse"] + ref["feature_fine"])
        + 0.1 * (ref["coord_coarse"] + ref["coord_fine"])
    )
    torch.testing.assert_close(total, expected)


def test_zero_weight_removes_term_and_needs_no_outputs():
    out = _outputs()
    for p in out:
        del out[p]["feature"], out[p]["coord"], out[p]["coord_target"]
    tgt = {"rgb": torch.rand(2, 5, 3)}
    total, terms = featurenerf_loss(out, tgt, LossWeights(feature=0.0, coord=0.0))
    assert set(terms) == {"rgb_coarse", "rgb_fine"}
    torch.testing.assert_close(total, terms["rgb_coarse"] + terms["rgb_fine"])
    del out["fine"]
    total, terms = featurenerf_loss(out, tgt, LossWeights(rgb_fine=0.0, feature=0.0, coord=0.0))
    assert set(terms) == {"rgb_coarse"}
    with pytest.raises(KeyError):
        featurenerf_loss(out, tgt, LossWeights(rgb_fine=0.0, coord=0.0))
    with pytest.raises(ValueError):
        featurenerf_loss(out, tgt, LossWeights(0.0, 0.0, 0.0, 0.0))


def test_explicit_coord_target_and_masks():
    out = _outputs()
    coord = torch.randn(2, 5, 3)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, :2] = True
    tgt = {
        "rgb": torch.rand(2, 5, 3),
        "feature": torch.randn(2, 5, 6),
        "coord": coord,
        "coord_mask": mask,
        "feature_mask": mask,
    }
    _, terms = featurenerf_loss(out, tgt)
    c = out["coarse"]["coord"]
    torch.testing.assert_close(terms["coord_coarse"], ((c[0, :2] - coord[0, :2]) ** 2).mean())
    f = out["fine"]["feature"]
    torch.testing.assert_close(
        terms["feature_fine"], ((f[0, :2] - tgt["feature"][0, :2]) ** 2).mean()
    )


def test_masked_mse_empty_mask_is_zero_and_gradients_flow():
    pred = torch.randn(2, 3, 4, requires_grad=True)
    assert masked_mse(pred, torch.zeros(2, 3, 4), torch.zeros(2, 3)).item() == 0.0
    total, _ = featurenerf_loss(
        {"coarse": {"rgb": pred[..., :3]}},
        {"rgb": torch.zeros(2, 3, 3)},
        LossWeights(rgb_fine=0, feature=0, coord=0),
    )
    total.backward()
    assert pred.grad[..., :3].abs().sum() > 0


def test_sample_feature_targets_exact_at_cell_centres():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 32, 32, 7, generator=g).half()
    a, b = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    uv = torch.stack([(b + 0.5) * 4, (a + 0.5) * 4], -1).reshape(1, -1, 2).expand(2, -1, -1)
    out = sample_feature_targets(feat, uv, (128, 128))
    assert out.shape == (2, 1024, 7) and out.dtype == torch.float32
    torch.testing.assert_close(out, feat.float().reshape(2, 1024, 7))


def test_sample_feature_targets_pixel_centres_and_linear_map():
    # feature linear in the continuous *image* coordinate of each cell centre -> exact anywhere
    # between cell centres; checks the area alignment of 128-px pixels and 32-px cells.
    a, b = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cx, cy = (b + 0.5) * 4, (a + 0.5) * 4
    feat = torch.stack([cx, cy, 2 * cx - cy], -1)[None]
    px = torch.randint(2, 126, (1, 200, 2), generator=torch.Generator().manual_seed(1))
    uv = px.float() + 0.5
    out = sample_feature_targets(feat, uv, (128, 128))
    ref = torch.stack([uv[..., 0], uv[..., 1], 2 * uv[..., 0] - uv[..., 1]], -1)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
    # the official integer-index lookup would be half a pixel off
    off = sample_feature_targets(feat, px.float(), (128, 128))
    assert math.isclose((ref - off)[..., 0].mean().item(), 0.5, abs_tol=1e-4)


def test_sample_feature_targets_non_square():
    feat = torch.randn(1, 4, 6, 3)  # h=4, w=6 for a 40 x 60 image (10 px cells)
    uv = torch.tensor([[[5.0, 5.0], [55.0, 35.0], [15.0, 25.0]]])
    out = sample_feature_targets(feat, uv, (40, 60))
    torch.testing.assert_close(out[0], torch.stack([feat[0, 0, 0], feat[0, 3, 5], feat[0, 2, 1]]))


def test_gt_surface_target_is_scaled_by_the_reduction_weight():
    """Weighted coordinates on a partly opaque ray: a head predicting the true point at every
    sample (c_i = y) gives coord = opacity * y; compared with opacity * y the loss is 0, while the
    unscaled target would push c towards y / opacity."""
    out = _outputs()
    y = torch.randn(2, 5, 3)
    op = torch.rand(2, 5) * 0.8 + 0.1
    for p in ("coarse", "fine"):
        out[p]["coord"] = op[..., None] * y
        out[p]["coord_norm"] = op
    tgt = {"rgb": torch.rand(2, 5, 3), "feature": torch.randn(2, 5, 6), "coord": y}
    _, terms = featurenerf_loss(out, tgt)
    assert terms["coord_coarse"].item() < 1e-12 and terms["coord_fine"].item() < 1e-12
    del out["coarse"]["coord_norm"]
    _, terms = featurenerf_loss(out, tgt)
    assert terms["coord_coarse"].item() > 1e-3
