"""FeatureNeRF training losses and teacher-feature lookup.

Official total (``train/train.py``): ``L = MSE_rgb_c + MSE_rgb_f + 0.25 (MSE_feat_c + MSE_feat_f)
+ 0.25 (MSE_coord_c + MSE_coord_f)``. A weight of 0 removes a term and skips computing it, so a
plain pixelNeRF run (feature = coord = 0) needs no ``feature`` / ``coord`` outputs or targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LossWeights", "masked_mse", "featurenerf_loss", "sample_feature_targets"]


@dataclass
class LossWeights:
    """Loss weights (official defaults; feature = coord = 0 gives pixelNeRF)."""

    rgb_coarse: float = 1.0
    rgb_fine: float = 1.0
    feature: float = 0.25
    coord: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over rays and channels, optionally over masked rays only.

    Args:
        pred, target: (B, R, C). mask: optional (B, R) bool/float ray weights.

    Returns:
        scalar: ``sum(mask * (pred - target)^2) / (C * sum(mask))`` (0 if the mask is empty);
        without a mask, ``torch.nn.MSELoss`` (mean over everything, official).
    """
    sq = (pred - target.to(pred.dtype)) ** 2
    if mask is None:
        return sq.mean()
    m = mask.to(pred.dtype)[..., None]
    return (sq * m).sum() / (m.sum() * sq.shape[-1]).clamp_min(1.0)


def featurenerf_loss(
    outputs: dict[str, dict[str, Tensor]],
    targets: dict[str, Tensor],
    weights: LossWeights | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total FeatureNeRF loss.

    Args:
        outputs: :func:`train.model.render_rays` output, ``{"coarse": {...}, "fine": {...}}``; a
            pass whose weights are all 0 may be absent.
        targets:
            ``rgb`` (B, R, 3) in [0, 1] on black;
            ``feature`` (B, R, D) teacher values (:func:`sample_feature_targets`), optional
            ``feature_mask`` (B, R) (official: no mask; teacher background is already zero);
            optional ``coord`` (B, R, 3) per-ray object-frame targets (the ``gt-surface``
            variant: ground-truth geometry) with optional ``coord_mask`` (B, R); they are
            scaled by the pass's ``coord_norm`` (its reduction weight) before the MSE.
            Without ``coord`` the self-supervised target ``outputs[pass]["coord_target"]`` is
            used (official: the samples' own object-frame positions, no GT geometry).
        weights: :class:`LossWeights` (default official).

    Returns:
        (total scalar, dict of the *unweighted* terms ``rgb_coarse``, ``rgb_fine``,
        ``feature_coarse``, ``feature_fine``, ``coord_coarse``, ``coord_fine`` that were
        computed). ``total = rgb_c * w_rgb_c + rgb_f * w_rgb_f + w_feat * (feat_c + feat_f)
        + w_coord * (coord_c + coord_f)``.
    """
    lw = weights or LossWeights()
    terms: dict[str, Tensor] = {}
    total: Tensor | None = None

    def add(name: str, value: Tensor, w: float) -> None:
        nonlocal total
        terms[name] = value
        total = value * w if total is None else total + value * w

    for p, w in (("coarse", lw.rgb_coarse), ("fine", lw.rgb_fine)):
        if w != 0:
            add(f"rgb_{p}", masked_mse(outputs[p]["rgb"], targets["rgb"]), w)
    passes = [p for p in ("coarse", "fine") if p in outputs]
    if lw.feature != 0:
        for p in passes:
            loss = masked_mse(
                outputs[p]["feature"], targets["feature"], targets.get("feature_mask")
            )
            add(f"feature_{p}", loss, lw.feature)
    if lw.coord != 0:
        for p in passes:
            tgt = targets.get("coord")
            mask = targets.get("coord_mask") if tgt is not None else None
            if tgt is None:
                tgt = outputs[p]["coord_target"]
            elif "coord_norm" in outputs[p]:  # compare like with like (see render_rays)
                tgt = tgt * outputs[p]["coord_norm"][..., None].detach()
            add(f"coord_{p}", masked_mse(outputs[p]["coord"], tgt, mask), lw.coord)
    if total is None:
        raise ValueError("all loss weights are zero")
    return total, terms


def sample_feature_targets(
    feat_maps: Tensor, uv: Tensor, image_hw: tuple[int, int] = (128, 128)
) -> Tensor:
    """Bilinearly sample teacher feature maps at ray pixel coordinates.

    Convention (area-aligned). ``uv`` are continuous pixel coordinates in the ``H x W`` image with
    pixel centres at +0.5 (pass :func:`train.rays.pixel_centers` of the ray's pixel index). The
    ``h x w`` feature map covers the same image extent, cell ``(a, b)`` covering image area
    ``[b W/w, (b+1) W/w) x [a H/h, (a+1) H/h)``, so its centre is at ``((b+0.5) W/w, (a+0.5) H/h)``:
    ``grid = uv / (W, H) * 2 - 1`` with ``align_corners=False``. At a cell centre the exact cell
    value is returned; 128-px pixel centres and 32-px cell centres are aligned (no shift).
    Outside the outer cell centres the border value is used (``padding_mode="border"``).

    The official code passes the *integer* pixel index ``x`` (not ``x + 0.5``) with
    ``align_corners=False`` (and zero padding), i.e. it samples half an image pixel (1/8 of a
    DINO cell at 128 -> 32) up-left of the pixel centre. We do not reproduce that offset.

    Args:
        feat_maps: (B, h, w, C) channels-last maps (any float dtype; computed in float32).
        uv: (B, R, 2) ``(x, y)`` pixel coordinates in the ``H x W`` image.
        image_hw: (H, W) of the image the coordinates refer to.

    Returns:
        (B, R, C) float32.
    """
    H, W = image_hw
    maps = feat_maps.permute(0, 3, 1, 2).float()  # (B, C, h, w)
    scale = torch.tensor([W, H], dtype=torch.float32, device=uv.device)
    grid = uv.float() / scale * 2.0 - 1.0
    out = F.grid_sample(
        maps, grid[:, :, None, :], mode="bilinear", padding_mode="border", align_corners=False
    )  # (B, C, R, 1)
    return out[..., 0].transpose(1, 2)
