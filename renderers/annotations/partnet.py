"""PartNet (Mo et al., CVPR 2019) ``data_v0``: hierarchy, point samples and level-k labels.

Layout (``shared/reference/formats.md`` section 4)::

    data_v0/<anno_id>/meta.json                    {"model_id", "model_cat", "anno_id", ...}
    data_v0/<anno_id>/result.json                  [root node]; node = {text, name, id,
                                                   children: [...]} or a leaf {..., objs: [...]}
    data_v0/<anno_id>/objs/<original-k|new-k>.obj  part meshes (v/f only; not needed here)
    data_v0/<anno_id>/point_sample/pts-<N>.txt     N lines "x y z" (N = 10000; not hard-coded)
    data_v0/<anno_id>/point_sample/label-<N>.txt   N lines: the LEAF node id in result.json
    stats/all_valid_anno_info.txt                  "anno_id version Category model_id annotator"
    stats/merging_hierarchy_mapping/<Cat>.txt      "<raw path> <merged path>"
    stats/after_merging_label_ids/<Cat>-level-<k>.txt  "<id> <merged path> [...]" per line

Level-k label of a point (formats.md §4.5, followed as written): take its leaf id, walk the
raw name paths from the root to the leaf (``chair``, ``chair/chair_back``, ...), map each prefix
through ``merging_hierarchy_mapping`` (a prefix missing there maps to itself [I]); the deepest
prefix whose merged path is listed in ``<Cat>-level-<k>.txt`` gives the label = its **1-based
line index**; none -> 0 ("other"). A level file entry also matches a path that ends with
``/<entry>`` (entries written without the root name [I]).

Without the ``stats`` folder only level 1 is available, from :data:`LEVEL1_BUILTIN` (the
level-1 files quoted in formats.md §4.4: Chair complete; Table only its ``regular_table`` entries
and Bottle with the root name assumed, so pass ``stats`` for complete labels there).

Our part names (:data:`TO_CATEGORY_PARTS`, by the last path component of the level-1 entry):

* Chair: chair_back -> back, chair_head -> back (headrest, part of the back [I]),
  chair_seat -> seat, chair_base -> **leg** (legs, wheels, pedestal), chair_arm -> arm.
* Table: tabletop -> top, table_base -> leg.
* Bottle: body -> body, lid -> cap (handle has no counterpart and is appended).

Level-1 entries without a counterpart are appended after our names; at ``level`` 2/3 (or
``names="dataset"``) the part names are PartNet's merged paths. Points labelled 0 ("other") get
-1. Frame: PartNet's own (``frame="partnet"``, see :mod:`renderers.annotations.align`); official
v1->PartNet 4x4 matrices (row-major) can be passed per model (``matrices``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from renderers.annotations.align import PartPoints
from renderers.annotations.shapenet_part import map_to_category
from renderers.asset import AssetError
from renderers.categories import resolve_category

PARTNET_TO_OURS: dict[str, str] = {"Chair": "chair", "Table": "table", "Bottle": "bottle"}
"""PartNet category (``model_cat``) -> our category name (others keep PartNet names)."""

LEVEL1_BUILTIN: dict[str, list[str]] = {
    "Chair": ["chair/chair_head", "chair/chair_back", "chair/chair_arm", "chair/chair_base",
              "chair/chair_seat"],
    "Table": ["table/regular_table/tabletop", "table/regular_table/table_base"],
    "Bottle": ["bottle/normal_bottle/body", "bottle/normal_bottle/lid",
               "bottle/normal_bottle/handle", "bottle/jug/body", "bottle/jug/handle"],
}
"""Level-1 entries in file order when no ``stats`` folder is given (formats.md §4.4)."""
LEVEL1_COMPLETE = {"Chair"}

TO_CATEGORY_PARTS: dict[str, dict[str, str]] = {
    "Chair": {"chair_back": "back", "chair_head": "back", "chair_seat": "seat",
              "chair_base": "leg", "chair_arm": "arm"},
    "Table": {"tabletop": "top", "table_base": "leg"},
    "Bottle": {"body": "body", "lid": "cap"},
}
"""Last component of a level-1 path -> our part name, per PartNet category."""

_PTS_RE = re.compile(r"^pts-(\d+)\.txt$")


# ---------------------------------------------------------------------------------- tree


@dataclass
class PartTree:
    """``result.json`` flattened: node id -> raw name path (``chair/chair_back/...``)."""

    paths: dict[int, str]
    leaves: set[int]
    objs: dict[int, list[str]]

    def prefixes(self, node_id: int) -> list[str]:
        """Raw paths from the root to ``node_id`` (inclusive), shortest first."""
        parts = self.paths[node_id].split("/")
        return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _node_error(path: Path, where: str, what: str) -> AssetError:
    return AssetError(f"{path}: node {where} {what}; the PartNet result.json is malformed")


def parse_tree(data: object, path: Path = Path("result.json")) -> PartTree:
    """Flatten the ``result.json`` hierarchy (a list holding one root node)."""
    if not isinstance(data, list) or not data:
        raise AssetError(f"{path}: expected a json list holding the root node")
    paths: dict[int, str] = {}
    leaves: set[int] = set()
    objs: dict[int, list[str]] = {}
    stack: list[tuple[object, str, str]] = [(n, "", f"[{i}]") for i, n in enumerate(data)]
    while stack:
        node, parent, where = stack.pop()
        if not isinstance(node, dict):
            raise _node_error(path, where, "is not an object")
        name, nid = node.get("name"), node.get("id")
        if not isinstance(name, str) or not name:
            raise _node_error(path, where, "field name is missing or not a string")
        if isinstance(nid, bool) or not isinstance(nid, int):
            raise _node_error(path, f"{where} ({name})",
                              f"field id must be an integer, got {nid!r}")
        if nid in paths:
            raise _node_error(path, f"{where} ({name})", f"repeats id {nid}")
        full = f"{parent}/{name}" if parent else name
        paths[nid] = full
        children = node.get("children")
        if children:
            if not isinstance(children, list):
                raise _node_error(path, f"{where} ({name})", "field children is not a list")
            stack += [(c, full, f"{where}.children[{i}]") for i, c in enumerate(children)]
        else:
            leaves.add(nid)
            o = node.get("objs", [])
            objs[nid] = [str(x) for x in o] if isinstance(o, list) else []
    return PartTree(paths, leaves, objs)


# ---------------------------------------------------------------------------------- stats


def read_merging_mapping(path: str | Path) -> dict[str, str]:
    """``merging_hierarchy_mapping/<Cat>.txt`` -> {raw path: merged path}."""
    out = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) < 2:
            raise AssetError(f"{path}:{i}: expected '<raw path> <merged path>', got {line!r}")
        out[tok[0]] = tok[1]
    return out


def read_level_file(path: str | Path) -> list[str]:
    """``<Cat>-level-<k>.txt`` -> merged paths in line order (label = index + 1)."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) < 2 or not tok[0].isdigit():
            raise AssetError(f"{path}:{i}: expected '<id> <merged path> ...', got {line!r}")
        out.append(tok[1])
    return out


def _match(entry_paths: list[str], merged: str) -> int:
    """1-based index of the entry equal to ``merged`` (or a suffix of it after '/'); 0 if none."""
    for i, e in enumerate(entry_paths):
        if merged == e or merged.endswith("/" + e):
            return i + 1
    return 0


def leaf_level_labels(tree: PartTree, entries: list[str], mapping: dict[str, str] | None = None
                      ) -> dict[int, int]:
    """Leaf id -> level label (1-based line index of ``entries``; 0 = other), formats.md §4.5."""
    mapping = mapping or {}
    out = {}
    for leaf in tree.leaves:
        label = 0
        for prefix in reversed(tree.prefixes(leaf)):
            label = _match(entries, mapping.get(prefix, prefix))
            if label:
                break
        out[leaf] = label
    return out


# ---------------------------------------------------------------------------------- files


def _read_numbers(path: Path, cols: int, what: str) -> np.ndarray:
    try:
        rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise AssetError(f"cannot read {what} {path}: {exc}") from None
    for i, r in enumerate(rows, start=1):
        if len(r) < cols:
            raise AssetError(f"{path}:{i}: expected {cols} values ({what}), got {len(r)}")
    try:
        return np.array([r[:cols] for r in rows], dtype=np.float64).reshape(len(rows), cols)
    except ValueError as exc:
        raise AssetError(f"{path}: non-numeric {what} ({exc})") from None


def point_sample_files(anno_dir: Path) -> tuple[Path, Path]:
    """(pts-N.txt, label-N.txt) of an annotation folder (largest N present)."""
    ps = anno_dir / "point_sample"
    found = sorted((int(m.group(1)), p) for p in ps.glob("pts-*.txt")
                   if (m := _PTS_RE.match(p.name)) and (ps / f"label-{m.group(1)}.txt").is_file())
    if not found:
        raise AssetError(f"{ps} has no pts-<N>.txt with a matching label-<N>.txt; re-extract "
                         f"PartNet annotation {anno_dir.name}")
    n, pts = found[-1]
    return pts, ps / f"label-{n}.txt"


def read_meta(anno_dir: Path) -> dict:
    """``meta.json`` with ``model_id`` and ``model_cat`` checked."""
    f = anno_dir / "meta.json"
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise AssetError(f"cannot read {f}: {exc}") from None
    for key in ("model_id", "model_cat"):
        if not isinstance(meta.get(key) if isinstance(meta, dict) else None, str):
            raise AssetError(f"{f}: field {key} is missing or not a string")
    return meta


@dataclass
class PartNetShape:
    """One PartNet annotation: meta, tree and its point sample (PartNet frame)."""

    anno_id: str
    model_id: str
    category: str
    tree: PartTree
    points: np.ndarray
    leaf_ids: np.ndarray
    source: Path


def read_anno(anno_dir: str | Path) -> PartNetShape:
    """Read ``meta.json``, ``result.json`` and ``point_sample/`` of ``data_v0/<anno_id>``."""
    anno_dir = Path(anno_dir)
    meta = read_meta(anno_dir)
    rj = anno_dir / "result.json"
    try:
        tree = parse_tree(json.loads(rj.read_text()), rj)
    except (OSError, ValueError) as exc:
        raise AssetError(f"cannot read {rj}: {exc}") from None
    pts_f, lab_f = point_sample_files(anno_dir)
    pts = _read_numbers(pts_f, 3, "points")
    lab = _read_numbers(lab_f, 1, "leaf ids").reshape(-1)
    if len(lab) != len(pts):
        raise AssetError(f"{lab_f} has {len(lab)} labels but {pts_f} has {len(pts)} points")
    leaf = lab.astype(np.int64)
    unknown = sorted(set(np.unique(leaf).tolist()) - set(tree.paths))
    if unknown:
        raise AssetError(f"{lab_f}: ids {unknown[:5]} are not nodes of {rj}; the label file "
                         "must hold leaf ids of result.json")
    return PartNetShape(str(meta.get("anno_id", anno_dir.name)), meta["model_id"],
                        meta["model_cat"], tree, pts, leaf, lab_f)


# ---------------------------------------------------------------------------------- root


class PartNetRoot:
    """PartNet ``data_v0`` (+ optional ``stats``) with a model id -> anno id index.

    Args:
        data: the ``data_v0`` folder.
        stats: the ``stats`` folder (merging mapping, level files, all_valid_anno_info.txt).
        matrices: official v1->PartNet 4x4 matrices by model id: a dict or a json file
            ``{model_id: 16 numbers | 4x4}`` (row-major) [I].
    """

    def __init__(self, data: str | Path, stats: str | Path | None = None,
                 matrices: dict | str | Path | None = None) -> None:
        self.data = Path(data).expanduser().resolve()
        if not self.data.is_dir():
            raise AssetError(f"PartNet data folder {self.data} does not exist; pass data_v0")
        self.stats = Path(stats).expanduser().resolve() if stats else None
        if self.stats is None and (self.data.parent / "stats").is_dir():
            self.stats = self.data.parent / "stats"
        self.matrices = _read_matrices(matrices)
        self._index: dict[str, list[str]] | None = None

    def index(self) -> dict[str, list[str]]:
        """model id -> anno ids (from all_valid_anno_info.txt, else every meta.json)."""
        if self._index is None:
            idx: dict[str, list[str]] = {}
            info = self.stats / "all_valid_anno_info.txt" if self.stats else None
            if info is not None and info.is_file():
                for line in info.read_text().splitlines():
                    tok = line.split()
                    if len(tok) >= 4:
                        idx.setdefault(tok[3], []).append(tok[0])
            else:
                for d in sorted(self.data.iterdir()):
                    if (d / "meta.json").is_file():
                        idx.setdefault(read_meta(d)["model_id"], []).append(d.name)
            self._index = idx
        return self._index

    def anno_ids(self, model_id: str) -> list[str]:
        return [a for a in self.index().get(model_id, []) if (self.data / a).is_dir()]

    def has(self, model_id: str) -> bool:
        return bool(self.anno_ids(model_id))

    def level_entries(self, category: str, level: int) -> tuple[list[str], dict[str, str]]:
        """(level-k merged paths, raw->merged mapping) of a PartNet category."""
        if self.stats is not None:
            lf = self.stats / "after_merging_label_ids" / f"{category}-level-{level}.txt"
            if lf.is_file():
                mf = self.stats / "merging_hierarchy_mapping" / f"{category}.txt"
                return read_level_file(lf), read_merging_mapping(mf) if mf.is_file() else {}
            if level != 1 or category not in LEVEL1_BUILTIN:
                raise AssetError(f"no {lf}: PartNet {category} has no level {level} (or stats "
                                 "is incomplete)")
        if level != 1 or category not in LEVEL1_BUILTIN:
            raise AssetError(f"PartNet {category} level {level} needs the stats folder "
                             "(after_merging_label_ids/); pass stats=<PartNet>/stats")
        return list(LEVEL1_BUILTIN[category]), {}

    def load(self, model_id: str, level: int = 1, names: str = "category",
             anno_id: str | None = None) -> PartPoints:
        """Labelled points of a model (its first annotation unless ``anno_id`` is given).

        Args:
            model_id: ShapeNet model id.
            level: PartNet semantic level (1 coarse .. 3 fine).
            names: ``"category"`` (our part names at level 1) or ``"dataset"`` (merged paths).
            anno_id: a specific ``data_v0`` folder.
        """
        ids = [anno_id] if anno_id else self.anno_ids(model_id)
        if not ids:
            raise AssetError(f"no PartNet annotation for model {model_id} under {self.data}; "
                             "leave it out of part labels")
        shape = read_anno(self.data / ids[0])
        if shape.model_id != model_id and anno_id is None:
            raise AssetError(f"{self.data / ids[0]}/meta.json is for model {shape.model_id}, "
                             f"not {model_id}; the index is stale")
        entries, mapping = self.level_entries(shape.category, level)
        pts = partnet_points(shape, entries, mapping, level, names)
        m = self.matrices.get(shape.model_id)
        if m is not None:
            pts.matrix = m
        return pts


def partnet_points(shape: PartNetShape, entries: list[str], mapping: dict[str, str],
                   level: int = 1, names: str = "category") -> PartPoints:
    """:class:`PartPoints` of a shape for the given level entries (labels per formats.md §4.5)."""
    per_leaf = leaf_level_labels(shape.tree, entries, mapping)
    lut = np.vectorize(lambda i: per_leaf.get(int(i), 0), otypes=[np.int64])
    sem = lut(shape.leaf_ids) if len(shape.leaf_ids) else np.zeros(0, np.int64)  # 0 = other
    local = sem - 1
    ours = PARTNET_TO_OURS.get(shape.category)
    if names == "category" and level == 1 and ours is not None:
        table = TO_CATEGORY_PARTS.get(shape.category, {})
        short = [e.rsplit("/", 1)[-1] for e in entries]
        labels, part_names = map_to_category(local, short, table,
                                             list(resolve_category(ours).part_names))
    else:
        labels, part_names = local, list(entries)
    unmapped = sorted({shape.tree.paths[int(i)] for i in np.unique(shape.leaf_ids)
                       if per_leaf.get(int(i), 0) == 0})
    return PartPoints(shape.points, labels, part_names, frame="partnet", dataset="partnet",
                      model_id=shape.model_id, source=str(shape.source), source_labels=sem,
                      source_names=["other", *entries],
                      meta={"anno_id": shape.anno_id, "category": shape.category,
                            "level": level, "other_leaves": unmapped[:20],
                            "builtin_level_table": shape.category in LEVEL1_BUILTIN
                            and not mapping})


def _read_matrices(matrices: dict | str | Path | None) -> dict[str, np.ndarray]:
    if matrices is None:
        return {}
    if not isinstance(matrices, dict):
        try:
            matrices = json.loads(Path(matrices).read_text())
        except (OSError, ValueError) as exc:
            raise AssetError(f"cannot read PartNet matrices {matrices}: {exc}") from None
    out = {}
    for k, v in matrices.items():
        a = np.asarray(v, dtype=np.float64)
        if a.size != 16:
            raise AssetError(f"PartNet matrix of {k} has {a.size} numbers, expected 16 (4x4)")
        out[str(k)] = a.reshape(4, 4)
    return out
