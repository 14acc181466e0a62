"""Category table: names, ShapeNet synsets, ShapeNet-Part names and procedural keypoint names.

Left/right follow the object's own view: the object faces -Z with +Y up, so its right is +X
("_r" = +X side, "_l" = -X side).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    name: str
    synset: str
    part_names: tuple[str, ...]
    keypoint_names: tuple[str, ...]


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in [
        Category(
            "chair",
            "03001627",
            ("back", "seat", "leg", "arm"),
            (
                "seat_front_l",
                "seat_front_r",
                "seat_back_l",
                "seat_back_r",
                "leg_front_l",
                "leg_front_r",
                "leg_back_l",
                "leg_back_r",
                "back_top_l",
                "back_top_r",
                "arm_front_l",
                "arm_front_r",
            ),
        ),
        Category(
            "table",
            "04379243",
            ("top", "leg", "support", "drawer"),
            (
                "top_front_l",
                "top_front_r",
                "top_back_l",
                "top_back_r",
                "leg_front_l",
                "leg_front_r",
                "leg_back_l",
                "leg_back_r",
            ),
        ),
        Category(
            "airplane",
            "02691156",
            ("body", "wing", "tail", "engine"),
            (
                "nose",
                "tail_end",
                "wing_tip_l",
                "wing_tip_r",
                "wing_root_l",
                "wing_root_r",
                "vstab_top",
                "hstab_tip_l",
                "hstab_tip_r",
                "engine_front_l",
                "engine_front_r",
            ),
        ),
        Category(
            "car",
            "02958343",
            ("roof", "hood", "wheel", "body"),
            (
                "wheel_front_l",
                "wheel_front_r",
                "wheel_back_l",
                "wheel_back_r",
                "bumper_front",
                "bumper_back",
                "roof_front_l",
                "roof_front_r",
                "roof_back_l",
                "roof_back_r",
                "light_front_l",
                "light_front_r",
            ),
        ),
        Category(
            "motorcycle",
            "03790512",
            ("gas_tank", "seat", "wheel", "handle", "light", "frame"),
            (
                "wheel_front_hub",
                "wheel_back_hub",
                "wheel_front_bottom",
                "wheel_back_bottom",
                "handle_end_l",
                "handle_end_r",
                "seat_front",
                "seat_back",
                "headlight",
                "tank_top",
            ),
        ),
        Category(
            "bottle",
            "02876657",
            ("body", "neck", "cap"),
            (
                "cap_top",
                "neck_front",
                "shoulder_front",
                "shoulder_back",
                "shoulder_l",
                "shoulder_r",
                "base_front",
                "base_back",
                "base_l",
                "base_r",
                "bottom_center",
            ),
        ),
    ]
}

SYNSET_TO_NAME: dict[str, str] = {c.synset: c.name for c in CATEGORIES.values()}

# Other ShapeNetCore synsets a user may render from disk (no procedural family, no part names).
EXTRA_SYNSETS: dict[str, str] = {
    "02773838": "bag",
    "02954340": "cap",
    "03261776": "earphone",
    "03467517": "guitar",
    "03624134": "knife",
    "03636649": "lamp",
    "03642806": "laptop",
    "03797390": "mug",
    "03948459": "pistol",
    "04099429": "rocket",
    "04225987": "skateboard",
    "02808440": "bathtub",
    "02818832": "bed",
    "03513137": "helmet",
    "04530566": "vessel",
    "04256520": "sofa",
}


#: a free category name (imported and mesh-folder sources): lower-case, starts with a letter
FREE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
#: store ``source`` attrs whose category is a free name (the store's own, not the table's)
FREE_SOURCES = ("meshes", "import-")


def resolve_category(name_or_synset: str, *, free: bool = False) -> Category:
    """Return the category for a name (``chair``) or synset id (``03001627``).

    ``free``: an unknown name matching :data:`FREE_NAME` is its own category (no synset, part
    or keypoint names), for imported and mesh-folder sources.

    Raises:
        KeyError: with the list of valid names when the category is unknown (and not free).
    """
    key = name_or_synset.strip().lower()
    if key in CATEGORIES:
        return CATEGORIES[key]
    if key in SYNSET_TO_NAME:
        return CATEGORIES[SYNSET_TO_NAME[key]]
    if key in ("motorbike",):
        return CATEGORIES["motorcycle"]
    if key in EXTRA_SYNSETS or key in EXTRA_SYNSETS.values():
        synset = (
            key if key in EXTRA_SYNSETS else next(s for s, n in EXTRA_SYNSETS.items() if n == key)
        )
        return Category(EXTRA_SYNSETS[synset], synset, (), ())
    if free and FREE_NAME.match(key):
        return Category(key, "", (), ())
    valid = ", ".join(f"{c.name} ({c.synset})" for c in CATEGORIES.values())
    hint = (f"; a free name (imported or mesh-folder data) must match {FREE_NAME.pattern}"
            if free else "")
    raise KeyError(f"unknown category {name_or_synset!r}; valid categories: {valid}{hint}")


def is_free_source(source: str) -> bool:
    """Whether a store ``source`` attr (``meshes``, ``import-srn``, ...) takes free names."""
    return any(source == s or (s.endswith("-") and source.startswith(s)) for s in FREE_SOURCES)


def check_store_category(name: str, attrs: dict, where: str) -> None:
    """A free (unknown) category is only valid for a store of an imported or mesh-folder
    source that was made under that name; raises KeyError naming the store otherwise."""
    if resolve_category(name, free=True).synset:
        return
    source, stored = str(attrs.get("source", "")), str(attrs.get("category", ""))
    if not is_free_source(source):
        resolve_category(name)  # the table's error: procedural / shapenet need a known name
    if stored != name:
        raise KeyError(f"{where} holds category {stored!r}, not {name!r}; pass --category "
                       f"{stored} (or the store made for {name!r})")
