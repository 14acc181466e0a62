"""Hand-computed cases for the evaluation metrics (pipeline/evaluation/metrics.py)."""

import numpy as np
import pytest

from pipeline.evaluation import metrics as M

H = W = 16


def one_hot_map(shift: int = 0) -> np.ndarray:
    """(H, W, H*W) map whose pixel (i, j) holds the code of pixel (i, min(j + shift, W - 1))."""
    codes = np.eye(H * W, dtype=np.float32).reshape(H, W, H * W)
    cols = np.minimum(np.arange(W) + shift, W - 1)
    return codes[:, cols]


def kp_uv(cols_rows: list[tuple[float, float]]) -> np.ndarray:
    return np.array(cols_rows, np.float64)


def test_nearest_neighbours_is_cosine_argmax_and_scale_invariant():
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    query = np.array([[10.0, 0.1], [0.0, 0.01], [3.0, 2.9]])
    assert M.nearest_neighbours(query, keys).tolist() == [0, 1, 2]
    assert M.nearest_neighbours(query, keys, chunk=1).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        M.nearest_neighbours(query, keys[:0])


def test_perfect_2d_transfer_gives_pck_one_and_miou_one():
    fmap = one_hot_map()
    part = np.full((H, W), -1)
    part[2:8, 2:14] = 0
    part[8:14, 2:14] = 1
    fg = M.foreground(part)
    uv = kp_uv([(3.5, 3.5), (10.2, 9.7), (5.9, 12.1)])
    counted = np.ones(3, bool)
    kp = M.keypoint_transfer_2d(fmap, fmap, uv, uv, counted, fg)
    assert kp.errors.tolist() == [0.0, 0.0, 0.0]
    assert kp.pck.tolist() == [1.0, 1.0, 1.0, 1.0]
    parts = M.part_transfer_2d(fmap, fmap, part, part, fg, fg)
    assert parts.ious == {0: 1.0, 1: 1.0} and parts.miou == 1.0
    assert (parts.pred == part).all()


def test_right_neighbour_features_give_exactly_one_pixel_error():
    src = one_hot_map(shift=1)  # source pixel (i, j) looks like target pixel (i, j + 1)
    trg = one_hot_map()
    fg = np.ones((H, W), bool)
    uv = kp_uv([(3.5, 3.5), (10.5, 9.5), (0.2, 15.9)])
    kp = M.keypoint_transfer_2d(src, trg, uv, uv, np.ones(3, bool), fg, thresholds=(1.0, 1.01))
    assert kp.errors.tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_array_equal(kp.pred, uv // 1 + [1.5, 0.5])
    assert kp.pck.tolist() == [0.0, 1.0]  # strict <: an error of exactly 1 px fails @1
    assert M.keypoint_transfer_2d(src, trg, uv, uv, np.ones(3, bool), fg).pck[0] == 1.0


def test_nn_is_restricted_to_the_target_foreground():
    fmap = one_hot_map()
    fg = np.zeros((H, W), bool)
    fg[5, 5] = True  # the only candidate
    uv = kp_uv([(1.5, 1.5)])
    kp = M.keypoint_transfer_2d(fmap, fmap, uv, uv, np.ones(1, bool), fg)
    assert kp.pred.tolist() == [[5.5, 5.5]]
    assert kp.errors[0] == pytest.approx(np.hypot(4, 4))


def test_invisible_or_absent_keypoints_are_not_counted():
    src_id = np.array([0, 1, 2, -1])
    trg_id = np.array([0, 1, -1, 3])
    src_vis = np.array([True, False, True, True])
    trg_vis = np.array([True, True, True, True])
    counted = M.counted_keypoints(src_id, trg_id, src_vis, trg_vis)
    assert counted.tolist() == [True, False, False, False]
    src = one_hot_map(shift=3)  # every counted keypoint would be 3 px off
    trg = one_hot_map()
    uv = kp_uv([(2.5, 2.5), (4.5, 4.5), (6.5, 6.5), (8.5, 8.5)])
    kp = M.keypoint_transfer_2d(src, trg, uv, uv, counted, np.ones((H, W), bool))
    assert kp.n_counted == 1 and np.isnan(kp.errors[1:]).all()
    assert kp.pck.tolist() == [0.0, 1.0, 1.0, 1.0]
    none = M.keypoint_transfer_2d(src, trg, uv, uv, np.zeros(4, bool), np.ones((H, W), bool))
    assert np.isnan(none.pck).all()


def test_swapped_labels_give_iou_zero_for_those_labels():
    fmap = one_hot_map()
    trg = np.full((H, W), -1)
    trg[0:4] = 0
    trg[4:8] = 1
    trg[8:12] = 2
    src = trg.copy()
    src[trg == 0], src[trg == 1] = 1, 0
    res = M.part_transfer_2d(fmap, fmap, src, trg, src >= 0, trg >= 0)
    assert res.ious == {0: 0.0, 1: 0.0, 2: 1.0}
    assert res.miou == pytest.approx(1 / 3)


def test_iou_only_over_labels_present_in_both_and_half_overlap():
    fmap = one_hot_map()
    trg = np.full((H, W), -1)
    trg[0:8] = 0
    trg[8:16] = 1
    src = trg.copy()
    src[0:4] = 3  # label 3 only in the source; half of label 0 becomes 3
    res = M.part_transfer_2d(fmap, fmap, src, trg, src >= 0, trg >= 0)
    assert res.ious == {0: 0.5, 1: 1.0}
    assert res.miou == 0.75


def test_foreground_uses_parts_when_labelled_else_alpha():
    part = np.full((4, 4), -1)
    alpha = np.zeros((4, 4))
    alpha[1:3, 1:3] = 255
    assert (M.foreground(part, alpha) == (alpha > 0)).all()
    part[1, 1] = 2
    fg = M.foreground(part, alpha)
    assert fg.sum() == 1 and fg[1, 1]


def test_3d_keypoints_and_parts():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 3))
    feats = rng.normal(size=(50, 8))
    kp = pts[[3, 7, 11]] + [0.01, 0, 0]  # GT keypoints 0.01 from sample points
    counted = np.array([True, True, False])
    res = M.keypoint_transfer_3d(feats[[3, 7, 11]], feats, pts, kp, counted)
    np.testing.assert_allclose(res.errors[:2], 0.01, atol=1e-9)
    assert np.isnan(res.errors[2]) and res.pck.tolist() == [1.0, 1.0, 1.0, 1.0]
    shifted = M.keypoint_transfer_3d(feats[[3, 7, 11]], feats, pts, kp + [0.04, 0, 0], counted)
    assert shifted.pck.tolist() == [0.0, 0.0, 1.0, 1.0]  # error 0.05 is not < 0.05
    labels = rng.integers(0, 3, 50)
    labels[:5] = -1  # unlabelled points are neither candidates nor scored
    perfect = M.part_transfer_3d(feats, labels, feats, labels)
    assert perfect.miou == 1.0 and (perfect.pred[:5] == -1).all()
    swapped = np.where(labels == 0, 1, np.where(labels == 1, 0, labels))
    res = M.part_transfer_3d(feats, swapped, feats, labels)
    assert res.ious[0] == 0.0 and res.ious[1] == 0.0 and res.ious[2] == 1.0


def test_psnr_ssim():
    gt = np.zeros((16, 16, 3))
    gt[4:12, 4:12] = 0.5
    assert M.psnr(gt, gt) == float("inf")
    assert M.psnr(gt + 0.1, gt) == pytest.approx(20.0)
    assert M.ssim(gt, gt) == pytest.approx(1.0)
    assert M.ssim(np.clip(gt + 0.2, 0, 1), gt) < 0.99


def test_mean_over_pairs_skips_unscored_pairs():
    mean, n = M.mean_over_pairs([0.5, np.nan, 1.0])
    assert mean == 0.75 and n == 2
    rows = np.array([[1.0, 0.0], [np.nan, np.nan], [0.0, 1.0]])
    mean, n = M.mean_over_pairs(rows)
    assert mean.tolist() == [0.5, 0.5] and n == 2
    assert np.isnan(M.mean_over_pairs([])[0]) and M.mean_over_pairs([])[1] == 0


def test_source_keypoints_on_background_read_the_nearest_foreground_pixel():
    fg = np.zeros((H, W), bool)
    fg[4:8, 4:8] = True
    assert M.snap_to_foreground(np.array([[2, 5], [5, 5], [9, 9]]), fg).tolist() == [
        [4, 5], [5, 5], [7, 7]]
    fmap = one_hot_map()
    uv = kp_uv([(3.5, 5.5)])  # just left of the object: background pixel (col 3)
    snapped = M.keypoint_transfer_2d(fmap, fmap, uv, uv, np.ones(1, bool), fg, src_fg=fg)
    assert snapped.pred.tolist() == [[4.5, 5.5]] and snapped.errors[0] == 1.0


# ---------------------------------------------------------------- protocols


def test_nearest_neighbours_equals_float64_first_argmax():
    rng = np.random.default_rng(1)
    keys = rng.normal(size=(300, 16)).astype(np.float32)
    keys[50:60] = keys[40:50] * 3  # exact cosine ties with earlier rows
    keys[100] = 0.0  # zero key: cosine 0
    query = np.concatenate([rng.normal(size=(200, 16)), keys[45:55], np.zeros((2, 16))])
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-6)
    k = keys / np.maximum(np.linalg.norm(keys.astype(np.float64), axis=1, keepdims=True), 1e-6)
    expected = M.first_argmax(q @ k.T)
    for chunk in (None, 1, 7):
        np.testing.assert_array_equal(M.nearest_neighbours(query, keys, chunk), expected)
    assert (M.nearest_neighbours(keys[50:60], keys) == np.arange(40, 50)).all()  # first wins
    assert (M.nearest_neighbours(np.zeros((2, 16)), keys) == 0).all()


def test_foreground_per_protocol():
    part = np.full((3, 3), -1)
    alpha = np.zeros((3, 3))
    alpha[1, 1:] = 255
    assert not M.foreground(part, alpha, "official").any()  # released: no labels, no fg
    assert (M.foreground(part, alpha, "project") == (alpha > 0)).all()
    part[0, 0] = 1
    for protocol in M.PROTOCOLS:
        assert M.foreground(part, alpha, protocol).sum() == 1
    with pytest.raises(ValueError, match="protocol must be one of"):
        M.foreground(part, alpha, "paper")


def test_project_2d_snaps_falls_back_to_alpha_and_keeps_partial_scores():
    fmap = one_hot_map()
    part = np.full((H, W), -1)
    part[4:8, 4:8] = 0
    uv = kp_uv([(3.5, 5.5)])  # background pixel next to the object
    one = np.ones(1, bool)
    res = M.pair_2d_protocols(fmap, fmap, part, part, uv, uv, one)
    assert set(res) == {"official", "project"}
    assert res["project"].kp.pred.tolist() == [[4.5, 5.5]]  # snapped, 1 px off
    # official reads the own (bg) pixel, whose code is orthogonal to every target foreground
    # pixel: all cosines tie at 0 and the first foreground pixel (row 4, col 4) wins
    assert res["official"].kp.pred.tolist() == [[4.5, 4.5]]
    assert res["project"].kp.errors[0] == 1.0
    assert res["project"].part.miou == res["official"].part.miou == 1.0
    # unlabelled views: official drops the pair, project uses the alpha foreground
    empty = np.full((H, W), -1)
    alpha = (part >= 0).astype(np.uint8) * 255
    res = M.pair_2d_protocols(fmap, fmap, empty, empty, uv, uv, one, src_alpha=alpha,
                              trg_alpha=alpha)
    assert res["official"].dropped == M.EMPTY_SOURCE_FG
    proj = res["project"]
    assert proj.dropped is None and proj.kp.n_counted == 1
    assert proj.part_dropped == M.NO_SHARED_PART and np.isnan(proj.part.miou)
    # no counted keypoint: official drops the pair, project keeps the part score
    res = M.pair_2d_protocols(fmap, fmap, part, part, uv, uv, np.zeros(1, bool))
    assert res["official"].dropped == M.NO_SHARED_KP
    assert res["project"].kp_dropped == M.NO_SHARED_KP and res["project"].part.miou == 1.0
    # an empty target foreground drops the pair under both protocols
    res = M.pair_2d_protocols(fmap, fmap, part, empty, uv, uv, one)
    assert {p: r.dropped for p, r in res.items()} == {"official": M.EMPTY_TARGET_FG,
                                                       "project": M.EMPTY_TARGET_FG}
    assert M.pair_2d(fmap, fmap, part, part, uv, uv, one, protocol="project").protocol == "project"


def test_project_3d_uses_labelled_points_and_names_what_it_cannot_score():
    feats = np.eye(4)
    labels = np.array([0, 1, -1, -1])
    kp = np.zeros((1, 3))
    one = np.ones(1, bool)
    res = M.pair_3d(feats, labels, feats, labels, feats[:1], feats, np.zeros((4, 3)), kp, one,
                    "project")
    assert res.part.miou == 1.0 and res.part.pred.tolist() == [0, 1, -1, -1]
    off = M.pair_3d(feats, labels, feats, labels, feats[:1], feats, np.zeros((4, 3)), kp, one,
                    "official")
    assert off.part.miou == 1.0 and off.part.pred.tolist() == [0, 1, -1, -1]
    none = np.full(4, -1)
    res = M.pair_3d(feats, none, feats, labels, feats[:1], feats[:0], np.zeros((0, 3)), kp, one,
                    "project")
    assert res.dropped is None and res.part_dropped == M.NO_LABELLED_SOURCE
    assert res.kp_dropped == M.NO_CANDIDATES
    res = M.pair_3d(feats, labels, feats, none, feats[:1], feats, np.zeros((4, 3)), kp,
                    np.zeros(1, bool), "project")
    assert res.part_dropped == M.NO_LABELLED_TARGET and res.kp_dropped == M.NO_SHARED_KP
    off = M.pair_3d(feats, labels, feats, labels, feats[:1], feats[:0], np.zeros((0, 3)), kp,
                    one, "official")
    assert off.dropped == M.NO_CANDIDATES and np.isnan(off.part.miou)


def test_released_mean_propagates_nan():
    assert M.released_mean([0.5, 1.0]) == 0.75
    assert np.isnan(M.released_mean([0.5, np.nan]))
    assert np.isnan(M.released_mean([]))
    np.testing.assert_array_equal(M.released_mean(np.array([[1.0, 0.0], [0.0, 0.0]])),
                                  [0.5, 0.0])
