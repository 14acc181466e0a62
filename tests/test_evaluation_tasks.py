"""pipeline/evaluation/tasks.py: the NVS pictures' colourings (:func:`colour_nvs`)."""

import numpy as np

from pipeline.evaluation.tasks import NvsResult, colour_nvs
from pipeline.reports.features import ColourBasis, pca_rgb


class _Store:
    def __init__(self, basis):
        self.basis = basis

    def colour_basis(self):
        return self.basis


class _Teacher:
    def __init__(self, basis):
        self.features = _Store(basis)


def _stacks(rng, shared, n_objects=2, channels=16):
    """Per object one (V=2, 6, 6, C) stack with its own statistics; cell (0, 0, 0) = shared."""
    out = []
    for k in range(n_objects):
        stack = rng.normal(size=(2, 6, 6, channels)) * (1 + 4 * k) + 3 * k
        stack[0, 0, 0] = shared
        out.append(stack)
    return out


def test_one_basis_per_method_across_objects_and_the_stored_one_for_the_teacher():
    rng = np.random.default_rng(0)
    internal = _stacks(rng, rng.normal(size=16))
    teacher_maps = _stacks(rng, rng.normal(size=8), channels=8)
    stored = (np.zeros(8), np.eye(8)[:, :3], -np.ones(3), np.ones(3))
    res = NvsResult(["student_internal"], visuals=[{"methods": {"student_internal": {}}}
                                                   for _ in range(2)])
    colour_nvs(res, {"student_internal": internal, "teacher": teacher_maps}, _Teacher(stored))
    first, second = (v["methods"]["student_internal"]["pca"] for v in res.visuals)
    np.testing.assert_array_equal(first[0][0, 0], second[0][0, 0])  # one feature, one colour
    assert np.abs(pca_rgb(internal[0])[0, 0, 0].astype(int)
                  - pca_rgb(internal[1])[0, 0, 0]).max() > 20  # per-object bases would differ
    for visual, maps in zip(res.visuals, teacher_maps, strict=True):
        np.testing.assert_array_equal(np.stack(visual["teacher_pca"]),
                                      pca_rgb(maps, ColourBasis(*stored)))
    assert "feature store's category basis" in res.colour_bases["teacher"]
    assert "all the views shown" in res.colour_bases["student_internal"]


def test_a_teacher_store_without_a_basis_gets_one_fitted_on_all_shown_maps():
    rng = np.random.default_rng(1)
    teacher_maps = _stacks(rng, rng.normal(size=8), channels=8)
    res = NvsResult([], visuals=[{"methods": {}} for _ in range(2)])
    colour_nvs(res, {"teacher": teacher_maps}, _Teacher(None))
    np.testing.assert_array_equal(res.visuals[0]["teacher_pca"][0][0, 0],
                                  res.visuals[1]["teacher_pca"][0][0, 0])
    assert "all the views shown" in res.colour_bases["teacher"]
