"""The embedded default dataset: procedural, part-annotated shape families (no download).

Each family draws a varied, part-labelled, keypoint-annotated instance of its category from a
seed; ``generate("chair", 7)`` always returns the same ``ShapeAsset`` with object id
``proc-chair-000007``. The family's primary style (chair legs, table base, wing planform, car
silhouette, motorcycle type, bottle profile) cycles with the seed, so any run of consecutive
seeds covers every style; all other choices and proportions come from
``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Callable

from renderers.asset import ShapeAsset
from renderers.procedural import airplane, bottle, car, chair, motorcycle, table

FAMILIES: dict[str, Callable[[int], ShapeAsset]] = {
    "chair": chair.generate,
    "table": table.generate,
    "airplane": airplane.generate,
    "car": car.generate,
    "motorcycle": motorcycle.generate,
    "bottle": bottle.generate,
}


def generate(category: str, seed: int) -> ShapeAsset:
    """Draw instance ``seed`` of ``category`` (a name from ``renderers.categories``).

    Raises:
        KeyError: for a category without a procedural family; the message lists valid names.
    """
    try:
        family = FAMILIES[category]
    except KeyError:
        valid = ", ".join(sorted(FAMILIES))
        raise KeyError(
            f"no procedural family for {category!r}; valid categories: {valid}"
        ) from None
    return family(int(seed))


__all__ = ["FAMILIES", "generate"]
