"""Teacher registry: names, errors and stable cache keys."""

import json

import numpy as np
import pytest

from teachers.base import Teacher, TeacherError, TeacherInput
from teachers.registry import TEACHERS, build_teacher, canonical_json, teacher_key


def test_listing_and_unknown_name() -> None:
    assert set(TEACHERS) == {"effnet", "dino", "ldm", "daisy", "oracle", "timm", "official-dino"}
    assert all(isinstance(d, str) and d for d in TEACHERS.values())
    with pytest.raises(TeacherError, match="daisy, dino, effnet, ldm, oracle"):
        build_teacher("clip")
    with pytest.raises(TeacherError, match="daisy"):
        build_teacher("daisy", not_an_option=1)


def test_build_and_run_cpu_teachers() -> None:
    daisy = build_teacher("daisy", grid=(16, 16))
    oracle = build_teacher("oracle", n_parts=4, grid=(16, 16))
    assert isinstance(daisy, Teacher) and isinstance(oracle, Teacher)
    rgb = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    alpha = np.full((2, 64, 64), 255, np.uint8)
    depth = np.ones((2, 64, 64), np.float32)
    part = np.zeros((2, 64, 64), np.int16)
    K = np.tile(np.array([[50.0, 0, 32], [0, 50, 32], [0, 0, 1]]), (2, 1, 1))
    c2w = np.tile(np.eye(4), (2, 1, 1))
    batch = TeacherInput(rgb, alpha, "chair", part=part, depth=depth, K=K, c2w=c2w)
    assert daisy(batch).shape == (2, 16, 16, daisy.feature_dim)
    assert oracle(batch).shape == (2, 16, 16, 7)


def test_build_dino_by_name() -> None:
    small = {"depth": 2, "embed_dim": 48, "num_heads": 3}
    dino = build_teacher(
        "dino", weights="random", model_kwargs=small, layer=1, input_size=64, device="cpu"
    )
    assert dino.feature_dim == 48 and dino.grid == (8, 8)
    other = build_teacher(
        "dino", weights="random", model_kwargs=small, layer=0, input_size=64, device="cpu"
    )
    assert teacher_key(dino.identity()) != teacher_key(other.identity())
    assert teacher_key(dino.identity()).startswith("dino-")


def test_teacher_key_stable_and_sensitive() -> None:
    ident = build_teacher("daisy").identity()
    key = teacher_key(ident)
    assert key.startswith("daisy-") and len(key) == len("daisy-") + 12
    shuffled = dict(reversed(list(ident.items())))
    assert teacher_key(shuffled) == key
    assert teacher_key(json.loads(canonical_json(ident))) == key  # survives a JSON round trip
    assert teacher_key(build_teacher("daisy", radius=8).identity()) != key
    assert teacher_key(build_teacher("daisy").identity()) == key
    assert teacher_key(build_teacher("oracle").identity()) != teacher_key(
        build_teacher("oracle", n_parts=4).identity()
    )
    with pytest.raises(TeacherError):
        teacher_key({"name": "x", "bad": object()})
