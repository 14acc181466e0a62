"""Teacher registry: build teachers by name and key caches by their identity dict.

A teacher is identified by its identity dict alone (f3rm-style): two teachers with equal
identities produce the same features, so ``teacher_key(teacher.identity())`` names its cache.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from typing import Any

from teachers.base import Teacher, TeacherError

#: name -> (module:class, one-line description)
_CLASSES: dict[str, tuple[str, str]] = {
    "dino": (
        "teachers.dino:DinoTeacher",
        "DINO ViT-S/8 block-9 keys at 256 px -> 32x32x384 (timm; weights from the hub or a file)",
    ),
    "timm": (
        "teachers.timm_teacher:TimmTeacher",
        "any timm ViT (block facet) or ConvNet (stage): --model-id NAME (DINOv2, CLIP, SigLIP, "
        "ResNet...)",
    ),
    "ldm": (
        "teachers.ldm:LdmTeacher",
        "Stable Diffusion UNet up_blocks[2]+[3] at t=100 -> 960 channels (diffusers)",
    ),
    "effnet": (
        "teachers.effnet:EffNetTeacher",
        "ImageNet EfficientNet-Lite0 stride-8 + stride-16 blocks at 256 px -> 32x32x152 (offline)",
    ),
    "daisy": (
        "teachers.daisy:DaisyTeacher",
        "dense DAISY + Lab colour descriptors, no weights, fast on CPU (CI default)",
    ),
    "oracle": (
        "teachers.oracle:OracleTeacher",
        "ground-truth part one-hot + object-frame xyz per cell (diagnostic upper bound)",
    ),
}

#: teachers whose features are imported from a dataset's own cache, not computed:
#: name -> (import format, features folder, one-line description)
IMPORTED_TEACHERS: dict[str, tuple[str, str, str]] = {
    "official-dino": (
        "official",
        "dino_feat_256",
        "the FeatureNeRF authors' DINO features (dino_feat_256/) of the official data, "
        "imported, not computed (render.source: import, render.import_format: official)",
    ),
}

TEACHERS: dict[str, str] = {
    **{name: desc for name, (_, desc) in _CLASSES.items()},
    **{name: desc for name, (_, _, desc) in IMPORTED_TEACHERS.items()},
}


def teacher_label(name: str, model_id: str | None = None) -> str:
    """The teacher's name in default paths and run names (``data/features/<label>/...``,
    ``runs/<category>-<label>``): the registered name, except that the generic ``timm``
    teacher is ``timm-<slug of the model id>`` (its default model's when ``model_id`` is None),
    so that two timm models never share a cache. Presets such as ``dino`` keep their name."""
    if name != "timm":
        return name
    from teachers.timm_teacher import DEFAULT_MODEL

    slug = re.sub(r"[^a-z0-9._-]+", "-", (model_id or DEFAULT_MODEL).lower()).strip("-.")
    return f"timm-{slug}" if slug else "timm"


def teacher_class(name: str) -> type[Teacher]:
    """The Teacher subclass registered as ``name``."""
    if name in IMPORTED_TEACHERS:
        raise TeacherError(f"{name} is not a model: its features are imported from the "
                           f"{IMPORTED_TEACHERS[name][0]} data (distill-cache --teacher {name} "
                           "--import-format ... --import-root ROOT)")
    if name not in _CLASSES:
        valid = ", ".join(sorted(_CLASSES))
        raise TeacherError(f"unknown teacher {name!r}; valid names: {valid}")
    module, cls = _CLASSES[name][0].split(":")
    return getattr(importlib.import_module(module), cls)


def build_teacher(name: str, **options: Any) -> Teacher:
    """Instantiate teacher ``name`` with keyword ``options`` (see each class's Args)."""
    cls = teacher_class(name)
    try:
        return cls(**options)
    except TypeError as err:
        raise TeacherError(f"bad options for teacher {name!r}: {err}") from err


def canonical_json(identity: dict[str, Any]) -> str:
    """Sorted-key, compact JSON of an identity dict (tuples become lists)."""
    try:
        return json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except TypeError as err:
        raise TeacherError(f"teacher identity is not plain JSON data: {err}") from err


def teacher_key(identity: dict[str, Any], length: int = 12) -> str:
    """Short stable cache key ``<name>-<sha256 of canonical JSON>[:length]``."""
    digest = hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()[:length]
    return f"{identity.get('name', 'teacher')}-{digest}"
