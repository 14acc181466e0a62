"""ShapeNet-Part (Yi et al., SIGGRAPH Asia 2016): the three on-disk releases.

Layouts (``shared/reference/formats.md`` section 3)::

    (a) shapenetcore_partanno_v0 ("PartAnnotation"), and the segmentation benchmark
        shapenetcore_partanno_segmentation_benchmark_v0:
        <root>/<synset>/points/<id>.pts                        "x y z" per line
        <root>/<synset>/expert_verified/points_label/<id>.seg  local label 1..K per line (v0)
        <root>/<synset>/points_label/<id>.seg                  local label 1..K per line (bench)
        <root>/<synset>/points_label/<part>/<id>.seg           0/1 mask per part (v0) [I]
    (b) shapenetcore_partanno_segmentation_benchmark_v0_normal:
        <root>/<synset>/<id>.txt     "x y z nx ny nz label", label = GLOBAL part id 0-49 as float
    (c) <root>/train_test_split/shuffled_{train,val,test}_file_list.json
        flat list of "shape_data/<synset>/<id>"; <root>/synsetoffset2category.txt "Name\\tsynset"

Label tables. Global id = ``offset[cat] + (local - 1)``, categories in alphabetical order with
accumulated offsets [V: ``seg_classes`` of yanx27/Pointnet_Pointnet2_pytorch
``data_utils/ShapeNetDataLoader.py``; formats.md §3.3]: Airplane 0-3, Bag 4-5, Cap 6-7, Car 8-11,
Chair 12-15, Earphone 16-18, Guitar 19-21, Knife 22-23, Lamp 24-27, Laptop 28-29,
Motorbike 30-35, Mug 36-37, Pistol 38-40, Rocket 41-43, Skateboard 44-46, Table 47-49.

Part names in local order (:data:`PART_NAMES`). No official file names the local ids; the order
below is the one of ``cat2part`` / ``id2part2cat`` in yangyangyang127/PointCLIP_V2
``zeroshot_seg/data.py`` (commit 04779d3), whose zero-shot part segmentation is scored against
these very label ids, and agrees with formats.md §3.3 except for Table's third part ("drawer"
there, "support" in formats.md [I]; we follow PointCLIP V2 and keep it overridable). So
Chair 12 = back, 13 = seat, 14 = leg, 15 = arm. Treat the order as third-party evidence [I+].

Mapping to our category part names (:data:`TO_CATEGORY_PARTS`, renderers/categories.py): names
that exist in our category keep their label; dataset parts without a counterpart (table
"drawer") are appended after our names (so all tables share ``top, leg, support, drawer``).

Frame: the points are in the ShapeNetCore **v1** frame (+X front, ±Z left/right), roughly
bbox-centred unit-diagonal [I, formats.md §3.4]; :class:`~renderers.annotations.align.PartPoints`
carries ``frame="v1"`` and :mod:`renderers.annotations.align` fits the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from renderers.annotations.align import PartPoints
from renderers.asset import AssetError
from renderers.categories import resolve_category

SHAPENET_PART: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Airplane", "02691156", ("body", "wing", "tail", "engine")),
    ("Bag", "02773838", ("handle", "body")),
    ("Cap", "02954340", ("panels", "peak")),
    ("Car", "02958343", ("roof", "hood", "wheel", "body")),
    ("Chair", "03001627", ("back", "seat", "leg", "arm")),
    ("Earphone", "03261776", ("earphone", "headband", "data_wire")),
    ("Guitar", "03467517", ("head", "neck", "body")),
    ("Knife", "03624134", ("blade", "handle")),
    ("Lamp", "03636649", ("base", "shade", "canopy", "tube")),
    ("Laptop", "03642806", ("keyboard", "screen")),
    ("Motorbike", "03790512", ("gas_tank", "seat", "wheel", "handle", "light", "frame")),
    ("Mug", "03797390", ("handle", "body")),
    ("Pistol", "03948459", ("barrel", "handle", "trigger")),
    ("Rocket", "04099429", ("body", "fin", "nose")),
    ("Skateboard", "04225987", ("wheel", "deck", "belt")),
    ("Table", "04379243", ("top", "leg", "drawer")),
)
"""(ShapeNet-Part name, synset, part names in local label order 1..K)."""
SYNSET_TO_NAME: dict[str, str] = {s: n for n, s, _ in SHAPENET_PART}
NAME_TO_SYNSET: dict[str, str] = {n: s for n, s, _ in SHAPENET_PART}
PART_NAMES: dict[str, tuple[str, ...]] = {n: p for n, _, p in SHAPENET_PART}
OFFSETS: dict[str, int] = {}
_acc = 0
for _name, _, _parts in SHAPENET_PART:
    OFFSETS[_name] = _acc
    _acc += len(_parts)
N_GLOBAL = _acc  # 50
SEG_CLASSES: dict[str, list[int]] = {
    n: list(range(OFFSETS[n], OFFSETS[n] + len(p))) for n, _, p in SHAPENET_PART}
"""Global part ids per category (the PointNet++ ``seg_classes`` dict)."""

TO_CATEGORY_PARTS: dict[str, dict[str, str]] = {
    "Chair": {"back": "back", "seat": "seat", "leg": "leg", "arm": "arm"},
    "Table": {"top": "top", "leg": "leg"},
    "Airplane": {"body": "body", "wing": "wing", "tail": "tail", "engine": "engine"},
    "Car": {"roof": "roof", "hood": "hood", "wheel": "wheel", "body": "body"},
    "Motorbike": {"gas_tank": "gas_tank", "seat": "seat", "wheel": "wheel", "handle": "handle",
                  "light": "light", "frame": "frame"},
}
"""ShapeNet-Part part name -> our category part name; unlisted parts are appended as is."""

SPLIT_FILES = {s: f"shuffled_{s}_file_list.json" for s in ("train", "val", "test")}


def category_name(category: str) -> str:
    """ShapeNet-Part category name (``"Chair"``) for a synset, our name or theirs."""
    key = str(category).strip()
    if key in SYNSET_TO_NAME:
        return SYNSET_TO_NAME[key]
    for name in NAME_TO_SYNSET:
        if name.lower() == key.lower():
            return name
    try:
        synset = resolve_category(key).synset
    except KeyError:
        synset = ""
    if synset not in SYNSET_TO_NAME:
        raise AssetError(f"ShapeNet-Part has no category {category!r}; it has "
                         f"{', '.join(NAME_TO_SYNSET)}")
    return SYNSET_TO_NAME[synset]


def global_label(category: str, local: np.ndarray | int) -> np.ndarray:
    """Global part id(s) 0-49 from 1-based local label(s): ``offset + local - 1``."""
    name = category_name(category)
    return OFFSETS[name] + np.asarray(local, dtype=np.int64) - 1


def local_label(global_id: int) -> tuple[str, int]:
    """(category name, 1-based local label) of a global part id."""
    for name, ids in SEG_CLASSES.items():
        if int(global_id) in ids:
            return name, int(global_id) - OFFSETS[name] + 1
    raise AssetError(f"global part id {global_id} is outside 0-{N_GLOBAL - 1}")


def map_to_category(labels: np.ndarray, src_names: list[str] | tuple[str, ...],
                    table: dict[str, str], target_names: list[str] | tuple[str, ...]
                    ) -> tuple[np.ndarray, list[str]]:
    """Relabel (N,) 0-based ``labels`` over ``src_names`` into ``target_names`` (+ extras).

    ``table`` maps a source name to a target name; a source name missing from ``table`` (or
    mapped to a name not in ``target_names``) is appended to the output names. -1 stays -1.
    """
    names = list(target_names)
    lut = np.full(len(src_names), -1, dtype=np.int64)
    for i, src in enumerate(src_names):
        dst = table.get(src, src)
        if dst not in names:
            names.append(dst)
        lut[i] = names.index(dst)
    labels = np.asarray(labels, dtype=np.int64)
    out = np.where(labels >= 0, lut[np.clip(labels, 0, max(len(lut) - 1, 0))], -1)
    return out, names


# -------------------------------------------------------------------------------- readers


def _read_table(path: Path, cols: int | None, what: str) -> np.ndarray:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AssetError(f"cannot read {what} {path}: {exc}") from None
    rows = [ln.split() for ln in text.splitlines() if ln.strip()]
    for i, r in enumerate(rows, start=1):
        if cols is not None and len(r) != cols:
            raise AssetError(f"{path}:{i}: expected {cols} numbers per line ({what}), got "
                             f"{len(r)}; the file is malformed")
    try:
        a = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise AssetError(f"{path}: non-numeric value in {what} ({exc})") from None
    return a.reshape(len(rows), -1) if cols is not None else a.reshape(-1)


def read_pts(path: str | Path) -> np.ndarray:
    """(N, 3) float64 points of a ``.pts`` file."""
    return _read_table(Path(path), 3, "points").reshape(-1, 3)


def read_seg(path: str | Path) -> np.ndarray:
    """(N,) int64 labels of a ``.seg`` file (local, 1-based; or 0/1 masks)."""
    path = Path(path)
    v = _read_table(path, 1, "part labels").reshape(-1)
    if not np.all(v == np.round(v)):
        raise AssetError(f"{path}: labels must be integers")
    return v.astype(np.int64)


def read_normal_txt(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_normal`` release file -> (N, 3) points, (N, 3) normals, (N,) int64 GLOBAL labels."""
    path = Path(path)
    a = _read_table(path, 7, "points with normals and label")
    lab = a[:, 6]
    if not np.all(lab == np.round(lab)) or (len(lab) and (lab.min() < 0 or lab.max() >= N_GLOBAL)):
        raise AssetError(f"{path}: column 7 must hold global part ids 0-{N_GLOBAL - 1}")
    return a[:, :3].copy(), a[:, 3:6].copy(), lab.astype(np.int64)


def read_split_json(path: str | Path) -> list[tuple[str, str]]:
    """``shuffled_*_file_list.json`` -> [(synset, model_id)] (strings ``shape_data/<s>/<id>``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AssetError(f"cannot read split file {path}: {exc}") from None
    if not isinstance(data, list):
        raise AssetError(f"{path}: expected a json list of 'shape_data/<synset>/<id>' strings")
    out = []
    for i, s in enumerate(data):
        parts = s.split("/") if isinstance(s, str) else []
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise AssetError(f"{path}: entry {i} {s!r} is not 'shape_data/<synset>/<id>'")
        out.append((parts[1], parts[2]))
    return out


def read_synsetoffset2category(path: str | Path) -> dict[str, str]:
    """``synsetoffset2category.txt`` -> {ShapeNet-Part name: synset}."""
    path = Path(path)
    out = {}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != 2:
            raise AssetError(f"{path}:{i}: expected 'Name<TAB>synset', got {line!r}")
        out[tok[0]] = tok[1]
    return out


# ---------------------------------------------------------------------------------- root


class ShapeNetPartRoot:
    """Any of the three ShapeNet-Part releases; :meth:`load` finds a model's files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise AssetError(f"ShapeNet-Part root {self.path} does not exist; pass the "
                             "shapenetcore_partanno_* folder")

    def split(self, split: str) -> list[tuple[str, str]]:
        """(synset, model_id) pairs of ``train``/``val``/``test``."""
        if split not in SPLIT_FILES:
            raise AssetError(f"unknown split {split!r}; use train, val or test")
        return read_split_json(self.path / "train_test_split" / SPLIT_FILES[split])

    def files(self, synset: str, model_id: str) -> dict[str, Path]:
        """Existing files of a model: keys ``normal`` / ``pts`` / ``seg`` / ``masks`` (dir)."""
        d = self.path / synset
        found: dict[str, Path] = {}
        if (d / f"{model_id}.txt").is_file():
            found["normal"] = d / f"{model_id}.txt"
        if (d / "points" / f"{model_id}.pts").is_file():
            found["pts"] = d / "points" / f"{model_id}.pts"
        for seg in (d / "expert_verified" / "points_label" / f"{model_id}.seg",
                    d / "points_label" / f"{model_id}.seg"):
            if seg.is_file():
                found["seg"] = seg
                break
        if "seg" not in found and (d / "points_label").is_dir():
            found["masks"] = d / "points_label"
        return found

    def has(self, category: str, model_id: str) -> bool:
        """Whether a model has annotation files (False for categories ShapeNet-Part lacks)."""
        try:
            f = self.files(NAME_TO_SYNSET[category_name(category)], model_id)
        except AssetError:
            return False
        return "normal" in f or ("pts" in f and ("seg" in f or "masks" in f))

    def load(self, category: str, model_id: str, names: str = "category") -> PartPoints:
        """Labelled points of one model (``_normal`` release first, then ``.pts`` + ``.seg``).

        Args:
            category: synset, our name or the ShapeNet-Part name.
            model_id: ShapeNet model id.
            names: ``"category"`` (our part names, see :data:`TO_CATEGORY_PARTS`) or
                ``"dataset"`` (ShapeNet-Part names).
        """
        cat = category_name(category)
        synset = NAME_TO_SYNSET[cat]
        f = self.files(synset, model_id)
        src_names = list(PART_NAMES[cat])
        if "normal" in f:
            pts, _, glob = read_normal_txt(f["normal"])
            local = glob - OFFSETS[cat]
            if len(local) and (local.min() < 0 or local.max() >= len(src_names)):
                raise AssetError(f"{f['normal']}: global labels {sorted(set(glob.tolist()))} are "
                                 f"outside {cat}'s range {SEG_CLASSES[cat]}; wrong synset folder?")
            release, source = "normal", f["normal"]
        elif "pts" in f and "seg" in f:
            pts, local = read_pts(f["pts"]), read_seg(f["seg"]) - 1
            _check_count(f["pts"], f["seg"], pts, local)
            if len(local) and (local.min() < -1 or local.max() >= len(src_names)):
                raise AssetError(f"{f['seg']}: local labels must be 1..{len(src_names)} for {cat}")
            release, source = "pts+seg", f["seg"]
        elif "pts" in f and "masks" in f:
            pts = read_pts(f["pts"])
            local = _labels_from_masks(f["masks"], model_id, src_names, len(pts))
            release, source = "pts+part masks", f["pts"]
        else:
            raise AssetError(f"no ShapeNet-Part annotation for {synset}/{model_id} under "
                             f"{self.path} (looked for <synset>/<id>.txt, points/<id>.pts + "
                             "points_label/<id>.seg); leave this model out of part labels")
        if names == "category":
            ours = _our_names(cat)
            labels, part_names = map_to_category(local, src_names, TO_CATEGORY_PARTS.get(cat, {}),
                                                 ours)
        else:
            labels, part_names = local.copy(), src_names
        return PartPoints(pts, labels, part_names, frame="v1", dataset="shapenet-part",
                          model_id=model_id, synset=synset, source=str(source),
                          source_labels=local, source_names=src_names,
                          meta={"release": release, "category": cat})


def _our_names(cat: str) -> list[str]:
    try:
        return list(resolve_category(NAME_TO_SYNSET[cat]).part_names)
    except KeyError:
        return []


def _check_count(pts_path: Path, seg_path: Path, pts: np.ndarray, lab: np.ndarray) -> None:
    if len(pts) != len(lab):
        raise AssetError(f"{seg_path} has {len(lab)} labels but {pts_path} has {len(pts)} points;"
                         " the annotation files do not match")


def _labels_from_masks(folder: Path, model_id: str, src_names: list[str], n: int) -> np.ndarray:
    """(N,) 0-based labels from per-part 0/1 mask files ``points_label/<part>/<id>.seg``."""
    labels = np.full(n, -1, dtype=np.int64)
    used = False
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        f = sub / f"{model_id}.seg"
        if not f.is_file():
            continue
        name = sub.name.lower().replace(" ", "_")
        if name not in src_names:
            raise AssetError(f"{f}: unknown part folder {sub.name!r}; expected one of {src_names}")
        mask = read_seg(f)
        if len(mask) != n:
            raise AssetError(f"{f} has {len(mask)} values for {n} points")
        labels[mask > 0] = src_names.index(name)
        used = True
    if not used:
        raise AssetError(f"no part masks for {model_id} under {folder}")
    return labels
