"""teachers.base: input validation, the background rule, helpers."""

import hashlib

import numpy as np
import pytest

from teachers.base import (
    Teacher,
    TeacherError,
    TeacherInput,
    alpha_to_grid,
    resolve_dtype,
    sha256_file,
    zero_background,
)


def test_alpha_rule_matches_torch_nearest() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    alpha = (rng.random((2, 128, 96)) > 0.5).astype(np.uint8) * 255
    for grid in [(32, 32), (32, 24), (20, 13)]:
        ref = (
            torch.nn.functional.interpolate(
                torch.from_numpy(alpha)[:, None].float(), size=grid, mode="nearest"
            )[:, 0].numpy()
            > 0
        )
        np.testing.assert_array_equal(alpha_to_grid(alpha, grid), ref)


def test_zero_background_top_left_pixel() -> None:
    alpha = np.zeros((1, 8, 8), np.uint8)
    alpha[0, 2, 2] = 255  # top-left pixel of cell (1, 1) in a 4x4 grid
    alpha[0, 5, 5] = 255  # not a top-left pixel: its cell (2, 2) stays background
    feat = np.ones((1, 4, 4, 3), np.float32)
    out = zero_background(feat, alpha, (4, 4))
    assert out is feat
    assert feat[0, 1, 1].tolist() == [1, 1, 1] and feat.sum() == 3
    with pytest.raises(TeacherError):
        zero_background(np.ones((1, 2, 2, 3), np.float32), alpha, (4, 4))


def test_teacher_input_validation_and_select() -> None:
    rgb = np.zeros((3, 8, 8, 3), np.uint8)
    alpha = np.zeros((3, 8, 8), np.uint8)
    with pytest.raises(TeacherError, match="rgb"):
        TeacherInput(rgb.astype(np.float32), alpha, "c")
    with pytest.raises(TeacherError, match="alpha"):
        TeacherInput(rgb, alpha[:2], "c")
    with pytest.raises(TeacherError, match="K"):
        TeacherInput(rgb, alpha, "c", K=np.zeros((3, 4, 4)))
    b = TeacherInput(rgb, alpha, "c", depth=np.arange(3 * 64, dtype=np.float32).reshape(3, 8, 8))
    sub = b.select(slice(1, 3))
    assert sub.batch_size == 2 and sub.depth[0, 0, 0] == 64 and sub.part is None


def test_call_checks_shape_and_zeroes_background() -> None:
    class Const(Teacher):
        name = "const"

        def __init__(self, shape_bug: bool = False) -> None:
            self.shape_bug = shape_bug

        feature_dim = 2
        grid = (2, 2)

        def identity(self) -> dict:
            return self._base_identity()

        def _features(self, batch: TeacherInput) -> np.ndarray:
            g = (3, 2) if self.shape_bug else self.grid
            return np.ones((batch.batch_size, *g, 2))

    alpha = np.zeros((1, 4, 4), np.uint8)
    alpha[0, :2, :2] = 255
    batch = TeacherInput(np.zeros((1, 4, 4, 3), np.uint8), alpha, "c")
    out = Const()(batch)
    assert out.dtype == np.float32 and out[0, :, :, 0].tolist() == [[1, 0], [0, 0]]
    with pytest.raises(TeacherError, match="expected"):
        Const(shape_bug=True)(batch)
    assert Const().identity()["name"] == "const"


def test_helpers(tmp_path) -> None:
    p = tmp_path / "w.bin"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert resolve_dtype("auto", "cpu") == "fp32" and resolve_dtype("auto", "cuda") == "fp16"
    with pytest.raises(TeacherError):
        resolve_dtype("int8", "cpu")
