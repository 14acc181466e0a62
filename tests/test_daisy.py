"""DaisyTeacher: grid placement, background, determinism, and that it matches shifted points."""

import numpy as np
import pytest
from skimage import data
from skimage.feature import daisy
from skimage.transform import resize

from teachers.base import TeacherError, TeacherInput
from teachers.daisy import DaisyTeacher


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """(136, 136, 3) uint8 natural image shipped with scikit-image."""
    img = resize(data.astronaut(), (136, 136), anti_aliasing=True)
    return (img * 255).round().astype(np.uint8)


def _inp(rgb: np.ndarray, alpha: np.ndarray | None = None) -> TeacherInput:
    rgb = rgb if rgb.ndim == 4 else rgb[None]
    if alpha is None:
        alpha = np.full(rgb.shape[:3], 255, np.uint8)
    return TeacherInput(rgb=np.ascontiguousarray(rgb), alpha=alpha, category="chair")


def test_descriptor_centred_on_cells(photo) -> None:
    t = DaisyTeacher(color="none")
    img = photo[:128, :128]
    feat = t(_inp(img))[0]
    assert feat.shape == (32, 32, (2 * 6 + 1) * 8) and t.feature_dim == 104

    gray = img.astype(np.float32) / 255 @ np.array([0.2125, 0.7154, 0.0721], np.float32)
    dense = daisy(
        np.pad(gray, 12, mode="reflect"),
        step=1,
        radius=12,
        rings=2,
        histograms=6,
        orientations=8,
        normalization="daisy",
    )  # dense[y, x] is centred on pixel y, x
    for i, j in [(10, 12), (16, 16), (22, 9)]:  # interior: padding cannot reach the support
        ref = np.sqrt(dense[4 * i + 2, 4 * j + 2])
        np.testing.assert_allclose(feat[i, j], ref / np.linalg.norm(ref), atol=1e-5)
        off = np.sqrt(dense[4 * i, 4 * j])  # the cell's top-left pixel: a different centre
        assert not np.allclose(feat[i, j], off / np.linalg.norm(off), atol=1e-3)


def test_shapes_background_and_determinism(photo) -> None:
    t = DaisyTeacher()
    rgb = np.stack([photo[:96, :96], photo[20:116, 30:126]])  # 96 px, resized to 128
    alpha = np.zeros((2, 96, 96), np.uint8)
    alpha[:, 24:72, 12:60] = 255
    feat = t(_inp(rgb, alpha))
    assert feat.shape == (2, 32, 32, 107) and feat.dtype == np.float32
    fg = np.zeros((32, 32), bool)
    fg[8:24, 4:20] = True  # cell i reads pixel 3 i
    assert np.all(feat[:, ~fg] == 0) and np.all(np.linalg.norm(feat[:, fg], axis=-1) > 0.9)
    np.testing.assert_array_equal(t(_inp(rgb, alpha)), feat)
    np.testing.assert_array_equal(t(_inp(rgb[1:], alpha[1:]))[0], feat[1])
    assert not np.allclose(feat[0], feat[1])

    coarse = DaisyTeacher(grid=(16, 16), channels="rgb", color="rgb")
    assert (
        coarse(_inp(rgb, alpha)).shape
        == (2, 16, 16, 3 * 104 + 3)
        == (2, 16, 16, coarse.feature_dim)
    )


@pytest.mark.parametrize("color", ["none", "lab"])
def test_matches_same_point_after_shift(photo, color: str) -> None:
    """Shift by one cell (4 px): nearest neighbours must find the same physical point."""
    t = DaisyTeacher(color=color)
    a = t(_inp(photo[:128, 4:132]))[0]  # a[:, x] shows the pixel b[:, x + 4]
    b = t(_inp(photo[:128, :128]))[0]
    inner = a[2:-2, 2:-3].reshape(-1, a.shape[-1])
    dist = ((inner[:, None] - b.reshape(1, -1, b.shape[-1])) ** 2).sum(-1)
    ii, jj = np.meshgrid(np.arange(2, 30), np.arange(2, 29), indexing="ij")
    target = (ii * 32 + jj + 1).ravel()
    accuracy = np.mean(dist.argmin(1) == target)
    assert accuracy > 0.9, accuracy
    same = dist[np.arange(len(target)), target].mean()
    rand = dist[np.arange(len(target)), np.random.default_rng(0).permutation(target)].mean()
    assert same < 0.3 * rand


def test_options_and_errors() -> None:
    base = DaisyTeacher().identity()
    assert base["weights_sha256"] == "none" and base["feature_dim"] == 107
    assert DaisyTeacher(radius=8).identity() != base
    assert DaisyTeacher(color_weight=1.0).identity() != base
    with pytest.raises(TeacherError):
        DaisyTeacher(grid=(30, 30))
    with pytest.raises(TeacherError):
        DaisyTeacher(channels="hsv")
