"""Real annotations for ShapeNet models: KeypointNet keypoints, ShapeNet-Part / PartNet parts.

Each dataset has a loader that returns its annotation in its own frame
(:mod:`~renderers.annotations.keypointnet`, :mod:`~renderers.annotations.shapenet_part`,
:mod:`~renderers.annotations.partnet`); :mod:`~renderers.annotations.align` brings it into the
render store's object frame (ShapeNetCore v2 normalized, as :func:`renderers.shapenet.load_model`
returns) with an explicit, chamfer-verified 4x4 matrix and fills a :class:`ShapeAsset`.

For the render job, :class:`AnnotationSources` bundles the roots::

    sources = AnnotationSources(keypointnet="/data/KeypointNet",
                                shapenet_part="/data/shapenetcore_partanno_segmentation_benchmark_v0_normal")
    asset = load_model(shapenet_root, synset, model_id)
    asset = sources.annotate(asset, synset, model_id, sets=("keypointnet", "shapenet-part"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from renderers.annotations.align import (
    CHAMFER_THRESHOLD,
    Alignment,
    Candidate,
    PartPoints,
    align_part_points,
    align_points,
    annotate_asset,
    candidates_for,
    chamfer,
    transfer_point_labels,
)
from renderers.annotations.keypointnet import (
    KeypointNetRoot,
    KeypointRecord,
    keypoints_on_mesh,
    read_pcd,
)
from renderers.annotations.partnet import PartNetRoot
from renderers.annotations.shapenet_part import ShapeNetPartRoot
from renderers.asset import AssetError, ShapeAsset

ANNOTATION_SETS = ("keypointnet", "shapenet-part", "partnet")

__all__ = [
    "ANNOTATION_SETS", "CHAMFER_THRESHOLD", "Alignment", "AnnotationSources", "Candidate",
    "KeypointNetRoot", "KeypointRecord", "PartNetRoot", "PartPoints", "ShapeNetPartRoot",
    "align_part_points", "align_points", "annotate_asset", "candidates_for", "chamfer",
    "keypoints_on_mesh", "read_pcd", "transfer_point_labels",
]


@dataclass
class AnnotationSources:
    """Annotation roots for the render job (any may be None).

    Attributes:
        keypointnet: KeypointNet root (``annotations/``, ``pcds/``).
        shapenet_part: any ShapeNet-Part release root.
        partnet: PartNet ``data_v0`` folder.
        partnet_stats: PartNet ``stats`` folder (default: ``<data_v0>/../stats`` if present).
        partnet_matrices: official v1->PartNet matrices (json file or dict by model id).
        partnet_level: PartNet level (1 maps to our part names).
        threshold: alignment acceptance threshold (see :mod:`renderers.annotations.align`).
    """

    keypointnet: str | Path | None = None
    shapenet_part: str | Path | None = None
    partnet: str | Path | None = None
    partnet_stats: str | Path | None = None
    partnet_matrices: str | Path | dict | None = None
    partnet_level: int = 1
    threshold: float = CHAMFER_THRESHOLD
    _roots: dict = field(default_factory=dict, init=False, repr=False)

    def _root(self, name: str) -> KeypointNetRoot | ShapeNetPartRoot | PartNetRoot:
        if name not in self._roots:
            if name == "keypointnet" and self.keypointnet:
                self._roots[name] = KeypointNetRoot(self.keypointnet)
            elif name == "shapenet-part" and self.shapenet_part:
                self._roots[name] = ShapeNetPartRoot(self.shapenet_part)
            elif name == "partnet" and self.partnet:
                self._roots[name] = PartNetRoot(self.partnet, self.partnet_stats,
                                                self.partnet_matrices)
            else:
                raise AssetError(f"annotation set {name!r} requested but its root is not set; "
                                 f"pass --annotations-root for it (sets: {ANNOTATION_SETS})")
        return self._roots[name]

    def annotate(self, asset: ShapeAsset, synset: str, model_id: str,
                 sets: Sequence[str] = ("keypointnet", "shapenet-part"),
                 on_error: str = "raise") -> ShapeAsset:
        """``asset`` with the requested annotation sets (the first part set found is used).

        Models absent from a set are recorded in ``meta["annotations"]["missing"]``; malformed
        files and failed alignments raise (``on_error="raise"``) or are recorded in
        ``meta["annotations"]["errors"]`` (``"skip"``).
        """
        unknown = [s for s in sets if s not in ANNOTATION_SETS]
        if unknown:
            raise AssetError(f"unknown annotation sets {unknown}; use {ANNOTATION_SETS}")
        missing: list[str] = []
        record = pcd = parts = None
        errors: list[str] = []
        for name in sets:
            try:
                if name == "keypointnet":
                    root = self._root(name)
                    if root.has(synset, model_id):
                        record = root.record(synset, model_id)
                        cloud = root.pcd(synset, model_id)
                        pcd = cloud.xyz if cloud is not None else None
                    else:
                        missing.append(name)
                elif parts is None:
                    root = self._root(name)
                    has = root.has(synset, model_id) if name == "shapenet-part" \
                        else root.has(model_id)
                    if not has:
                        missing.append(name)
                    elif name == "shapenet-part":
                        parts = root.load(synset, model_id)
                    else:
                        parts = root.load(model_id, level=self.partnet_level)
            except AssetError as exc:
                if on_error == "raise":
                    raise
                errors.append(str(exc))
        out = annotate_asset(asset, keypoints=record, keypoint_pcd=pcd, parts=parts,
                             threshold=self.threshold, on_error=on_error)
        out.meta["annotations"]["missing"] = missing
        out.meta["annotations"]["errors"] = errors + out.meta["annotations"]["errors"]
        return out
