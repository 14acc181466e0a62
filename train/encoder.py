"""pixelNeRF / FeatureNeRF multi-scale ResNet image encoder and pixel-aligned feature lookup.

Official recipe (``src/model/encoder.py``, ``SpatialEncoder``): torchvision ResNet-34, input
normalised from [0, 1] to [-1, 1] (mean 0.5, std 0.5, *not* ImageNet statistics), features from
conv1+bn+relu (64 ch, H/2), layer1 after the max-pool (64 ch, H/4), layer2 (128 ch, H/8) and
layer3 (256 ch, H/16), each bilinearly upsampled (align_corners=True) to H/2 and concatenated:
512 channels at 64x64 for a 128x128 image. The encoder is trained jointly (BatchNorm included).

ImageNet weights are used only when asked for *and* already present in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``); nothing is downloaded. ``weights_source`` records which
("imagenet" | "random-init") for the run record.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

__all__ = ["ResNetEncoder", "index", "normalize_images"]

_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}


def normalize_images(images: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> [-1, 1] (mean 0.5, std 0.5, as the official code)."""
    return (images - 0.5) / 0.5


def _cached_weights_path(backbone: str) -> str | None:
    """Path of the torchvision ImageNet checkpoint in the local hub cache, or ``None``."""
    enum = getattr(torchvision.models, _WEIGHTS.get(backbone, ""), None)
    if enum is None:
        return None
    url = enum.DEFAULT.url
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return path if os.path.isfile(path) else None


def _out_channels(layer: nn.Module) -> int:
    """Output channels of a ResNet stage (its last Conv2d)."""
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def index(latent: Tensor, uv: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Pixel-aligned bilinear lookup of a latent map at continuous image coordinates.

    Convention. ``uv`` are continuous pixel coordinates of the *input image* (``H x W``) with
    pixel centres at +0.5 (as :func:`train.rays.project_points`). They are first shifted to the
    pixelNeRF convention (pixel centres at integers: ``uv - 0.5``) and then scaled exactly as
    pixelNeRF's ``SpatialEncoder.index`` (``uv * (w / (w - 1) * 2) / W - 1``, grid_sample with
    ``align_corners=True``, border padding). Net effect: image pixel-centre coordinate
    ``u = j + 0.5`` reads latent position ``j * w / W`` (in cell-centre units), i.e.

    * a latent of the image's size (``w == W``) returns exactly ``latent[..., i, j]`` at the
      centre of pixel ``(i, j)``;
    * the H/2 latent's cell ``k`` is read exactly at the centre of image pixel ``2k``, which is the
      centre of conv1's receptive field (kernel 7, stride 2, padding 3).

    The official code projects with ``c = W/2`` and pixel ``i`` at coordinate ``i``; our rays and
    projections put pixel ``i`` at ``i + 0.5`` with ``cx = W/2`` (image centre), so after the
    ``-0.5`` shift both index the latent identically for the same pixel.

    Args:
        latent: (B, C, h, w) feature map.
        uv: (B, N, 2) ``(x, y)`` pixel coordinates in the ``H x W`` input image.
        image_hw: (H, W) of the input image.

    Returns:
        (B, N, C) sampled features.
    """
    h, w = latent.shape[-2:]
    H, W = image_hw
    lat_wh = torch.tensor([w, h], dtype=uv.dtype, device=uv.device)
    img_wh = torch.tensor([W, H], dtype=uv.dtype, device=uv.device)
    pos = (uv - 0.5) * (lat_wh / img_wh)  # latent position in cell-centre (index) units
    grid = pos / (lat_wh - 1).clamp_min(1) * 2.0 - 1.0
    out = F.grid_sample(
        latent,
        grid[:, :, None, :].to(latent.dtype),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )  # (B, C, N, 1)
    return out[..., 0].transpose(1, 2)


class ResNetEncoder(nn.Module):
    """Multi-scale ResNet encoder (pixelNeRF ``SpatialEncoder``).

    Args:
        backbone: torchvision ResNet name ("resnet34" official, "resnet18" for fast tests).
        pretrained: try the ImageNet weights from the local torch hub cache (no download).
        num_layers: 4 = conv1 + layer1..3 (official); 1..5 as pixelNeRF.

    Attributes:
        latent_dim: channels of the concatenated map (512 for resnet18/34 with 4 layers).
        weights_source: "imagenet" or "random-init".
        weights_path: checkpoint file used, or ``None``.
    """

    def __init__(self, backbone: str = "resnet34", pretrained: bool = True, num_layers: int = 4):
        super().__init__()
        if not 1 <= num_layers <= 5:
            raise ValueError(f"num_layers must be in 1..5, got {num_layers}")
        net = getattr(torchvision.models, backbone)(weights=None)
        self.weights_source = "random-init"
        self.weights_path: str | None = None
        if pretrained:
            path = _cached_weights_path(backbone)
            if path is None:
                warnings.warn(
                    f"ImageNet weights for {backbone} not in the torch hub cache; "
                    "using random init (recorded as weights_source='random-init')",
                    stacklevel=2,
                )
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
                net.load_state_dict(state)
                self.weights_source = "imagenet"
                self.weights_path = path
        self.backbone_name = backbone
        self.num_layers = num_layers
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        stages = [net.layer1, net.layer2, net.layer3, net.layer4][: num_layers - 1]
        self.layers = nn.ModuleList(stages)
        self.latent_dim = net.conv1.out_channels + sum(_out_channels(s) for s in stages)

    def forward(self, images: Tensor) -> Tensor:
        """Encode images.

        Args:
            images: (B, 3, H, W) in [0, 1].

        Returns:
            (B, latent_dim, H/2, W/2) concatenated multi-scale features.
        """
        x = self.relu(self.bn1(self.conv1(normalize_images(images))))
        feats = [x]
        for i, layer in enumerate(self.layers):
            if i == 0:
                x = self.maxpool(x)
            x = layer(x)
            feats.append(x)
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in feats[1:]
        ]
        return torch.cat(feats, dim=1)

    @staticmethod
    def index(latent: Tensor, uv: Tensor, image_hw: tuple[int, int]) -> Tensor:
        """See :func:`index`: (B, C, h, w), (B, N, 2) pixel coords -> (B, N, C)."""
        return index(latent, uv, image_hw)
