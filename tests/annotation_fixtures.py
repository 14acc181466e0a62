"""Write KeypointNet, ShapeNet-Part and PartNet files in their exact on-disk layouts, generated
FROM a known part-labelled mesh with the documented transforms (formats.md sections 0, 2-4).

The known mesh (:func:`chair_mesh`) is a chair in the ShapeNet v2 frame (+Y up, -Z front,
vertex mean 0, unit bbox diagonal): back (part 0), seat (1), four legs (2), ONE arm on the +X
side (3) - our chair part order, which is also ShapeNet-Part's. It is left-right asymmetric, so
a mirrored annotation is distinguishable. Parts are separated by small gaps (a few mm at unit
diagonal) so every face has a well-defined nearest part; faces are subdivided (~1.5k faces).

Transforms applied to points sampled on it:

* KeypointNet: identity (``xyz`` = barycentric point on the v2 OBJ, ``pcd`` = samples).
* ShapeNet-Part: ``v2_to_v1(p, s)`` with ``s`` from the fixture ``model_normalized.json``
  (optionally mirrored z -> -z in v1, and/or scaled/offset "≈ v1 units").
* PartNet: ``p_partnet = S·R_p·v2_to_v1(p, s) + t`` with ``R_p = [[0,0,-1],[0,1,0],[1,0,0]]``,
  ``S`` = 1.79246 and ``t`` from the real matrix row quoted in formats.md §0
  (:data:`PARTNET_MATRIX`, row-major v1 -> PartNet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from renderers.shapenet import normalized_json_shift, v2_to_v1
from tests import shapenet_fixtures as fx

CHAIR = fx.CHAIR
MODEL_A = "3c8d1e4f5a6b7c8d9e0f1a2b3c4d5e6f"
MODEL_B = "7e1b5c0d9a8f1e2d3c4b5a69788f9e0"  # 31 chars: ids are opaque
PART_NAMES = ("back", "seat", "leg", "arm")
R_PARTNET = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
PARTNET_SCALE = 1.79246
PARTNET_T = np.array([0.01046, -0.08109, 0.02731])
PARTNET_MATRIX = np.eye(4)
PARTNET_MATRIX[:3, :3] = PARTNET_SCALE * R_PARTNET
PARTNET_MATRIX[:3, 3] = PARTNET_T
LEVEL1 = [(2, "chair/chair_head"), (5, "chair/chair_back"), (16, "chair/chair_arm"),
          (23, "chair/chair_base"), (45, "chair/chair_seat")]
"""The real Chair-level-1.txt entries (formats.md §4.4), in file order."""


@dataclass
class PartMesh:
    """The known mesh plus per-face parts.

    Attributes:
        known: the ShapeNet fixture mesh (vertices, faces, materials, groups = parts, uvs).
        face_part: (F,) int part label (index into :data:`PART_NAMES`).
        face_leg: (F,) 0-3 leg index for leg faces, -1 otherwise (PartNet leaves).
    """

    known: fx.KnownMesh
    face_part: np.ndarray
    face_leg: np.ndarray

    @property
    def trimesh(self) -> trimesh.Trimesh:
        return trimesh.Trimesh(self.known.vertices, self.known.faces, process=False)


def _box(extents: tuple[float, float, float], centre: tuple[float, float, float]
         ) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents).apply_translation(centre)


def _leg(x: float, z: float) -> trimesh.Trimesh:
    leg = trimesh.creation.cylinder(radius=0.025, height=0.40, sections=12)
    leg.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))
    return leg.apply_translation((x, -0.245, z))


def chair_mesh(max_edge: float = 0.06, scale_z: float = 1.0) -> PartMesh:
    """The asymmetric fixture chair (see module docstring); ``scale_z`` stretches it front/back
    (a different model for wrong-model tests)."""
    pieces = [
        (0, _box((0.50, 0.45, 0.05), (0.0, 0.28, 0.23))),            # back (at +Z: front is -Z)
        (1, _box((0.50, 0.05, 0.50), (0.0, 0.0, 0.0))),              # seat
        (2, _leg(0.2, 0.2)), (2, _leg(-0.2, 0.2)), (2, _leg(0.2, -0.2)), (2, _leg(-0.2, -0.2)),
        (3, _box((0.05, 0.04, 0.40), (0.29, 0.20, -0.02))),          # one arm, +X side
    ]
    verts, faces, part, leg = [], [], [], []
    n, leg_no = 0, 0
    for p, m in pieces:
        v, f = trimesh.remesh.subdivide_to_size(m.vertices, m.faces, max_edge=max_edge)
        verts.append(v)
        faces.append(f + n)
        n += len(v)
        part.append(np.full(len(f), p))
        leg.append(np.full(len(f), leg_no if p == 2 else -1))
        leg_no += p == 2
    v = np.concatenate(verts)
    v[:, 2] *= scale_z
    v = (v - v.mean(axis=0)) / np.linalg.norm(np.ptp(v, axis=0))
    f = np.concatenate(faces).astype(np.int64)
    face_part = np.concatenate(part)
    material = face_part % 2
    corner_uv = v[f][..., [0, 1]] * 2.0 + 0.5
    known = fx.KnownMesh(v, f, material, face_part.copy(), corner_uv)
    return PartMesh(known, face_part, np.concatenate(leg))


def write_chair_model(root: Path, model_id: str = MODEL_A, mesh: PartMesh | None = None,
                      synset: str = CHAIR) -> PartMesh:
    """Write the chair as a ShapeNetCore v2 model (``fx.write_v2_model``); faces keep order."""
    mesh = mesh or chair_mesh()
    fx.write_v2_model(Path(root), synset, model_id, mesh.known)
    return mesh


def v1_shift(mesh: PartMesh, model_id: str) -> np.ndarray:
    """The (3,) v1->v2 shift of the fixture's ``model_normalized.json``."""
    return normalized_json_shift(fx.normalized_json(mesh.known, model_id))


def sample(mesh: PartMesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) points on the mesh (v2 frame, float64) and their (n,) face indices."""
    pts, fid = trimesh.sample.sample_surface(mesh.trimesh, n, seed=seed)
    return np.asarray(pts, dtype=np.float64), np.asarray(fid, dtype=np.int64)


def _obj_vertices(mesh: PartMesh) -> np.ndarray:
    """Vertices as the fixture OBJ stores them (6 decimals)."""
    return np.round(mesh.known.vertices, 6)


# -------------------------------------------------------------------------- KeypointNet


KP_FACES_SEED = 3


def keypointnet_record(mesh: PartMesh, model_id: str, pcd: np.ndarray, n_kp: int = 6,
                       seed: int = 0) -> tuple[dict, list[int]]:
    """A KeypointNet json record (identity frame) and the pcd rows its keypoints replace."""
    rng = np.random.default_rng(seed)
    verts = _obj_vertices(mesh)
    faces = rng.choice(len(mesh.known.faces), size=n_kp, replace=False)
    rows = rng.choice(len(pcd), size=n_kp, replace=False)
    kps = []
    for sid, (f, row) in enumerate(zip(faces, rows, strict=True)):
        w = rng.dirichlet((2.0, 2.0, 2.0))
        w = w + rng.normal(0, 1e-5, 3)  # real weights sum to 1 only within ~8e-5
        xyz = w @ verts[mesh.known.faces[f]]
        pcd[row] = np.round(xyz, 6)
        kps.append({"xyz": xyz.tolist(), "rgb": [int(c) for c in rng.integers(0, 256, 3)],
                    "semantic_id": int(sid * 2 + 1), "pcd_info": {"point_index": int(row)},
                    "mesh_info": {"face_index": int(f), "face_uv": w.tolist()}})
    rec = {"class_id": CHAIR, "model_id": model_id, "keypoints": kps,
           "symmetries": {"reflection": [{"kp_indexes": [0, 1]}],
                          "rotation": [{"kp_indexes": [2, 3], "is_circle": False, "circle": {}}]}}
    return rec, rows.tolist()


def pcd_text(xyz: np.ndarray, rgb: np.ndarray) -> str:
    """The KeypointNet ASCII PCD (10-line header, ``x y z rgb`` with packed uint rgb)."""
    n = len(xyz)
    head = ("VERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\n"
            f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA ascii\n")
    packed = (rgb[:, 0].astype(np.int64) << 16) | (rgb[:, 1].astype(np.int64) << 8) | rgb[:, 2]
    body = "".join(f"{x:.6f} {y:.6f} {z:.6f} {c}\n" for (x, y, z), c in zip(xyz, packed,
                                                                            strict=True))
    return head + body


def write_keypointnet(root: Path, models: dict[str, PartMesh], name: str = "chair",
                      synset: str = CHAIR, n_pcd: int = 2048, n_kp: int = 6,
                      mirror_pcd: bool = False) -> Path:
    """``annotations/<name>.json`` + ``pcds/<synset>/<id>.pcd`` + ``splits/*.txt``."""
    root = Path(root)
    records = []
    for i, (mid, mesh) in enumerate(models.items()):
        pcd, _ = sample(mesh, n_pcd, seed=100 + i)
        rec, _ = keypointnet_record(mesh, mid, pcd, n_kp, seed=KP_FACES_SEED + i)
        records.append(rec)
        if mirror_pcd:
            pcd[:, 0] *= -1
        rgb = np.random.default_rng(i).integers(0, 256, (n_pcd, 3))
        (root / "pcds" / synset).mkdir(parents=True, exist_ok=True)
        (root / "pcds" / synset / f"{mid}.pcd").write_text(pcd_text(np.round(pcd, 6), rgb))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations" / f"{name}.json"
    path.write_text(json.dumps(records))
    fx.write_split_txts(root / "splits", {"train": [f"{synset}-{m}" for m in models],
                                          "val": [], "test": []})
    return path


# ------------------------------------------------------------------------ ShapeNet-Part


def shapenet_part_points(mesh: PartMesh, model_id: str, n: int = 2500, seed: int = 1,
                         mirror: bool = False, scale: float = 1.0,
                         offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(points v1, normals v1, local 1-based labels, v2 points) sampled on the mesh."""
    p2, fid = sample(mesh, n, seed)
    p1 = v2_to_v1(p2, v1_shift(mesh, model_id))
    normals = v2_to_v1(mesh.trimesh.face_normals[fid])  # rotation only (no shift)
    if mirror:
        p1[:, 2] *= -1
        normals[:, 2] *= -1
    p1 = p1 * scale + np.asarray(offset)
    return p1, normals, mesh.face_part[fid] + 1, p2


def write_shapenet_part(root: Path, mesh: PartMesh, model_id: str = MODEL_A,
                        release: str = "benchmark", synset: str = CHAIR, n: int = 2500,
                        **kw: object) -> Path:
    """One model in a release layout: ``"v0"`` (PartAnnotation: expert_verified + per-part
    masks), ``"benchmark"`` (points + points_label) or ``"normal"`` (7-column txt, GLOBAL
    labels as floats). Returns the annotation file written."""
    root = Path(root)
    p1, nrm, local, _ = shapenet_part_points(mesh, model_id, n, **kw)
    d = root / synset
    if release == "normal":
        glob = local - 1 + 12  # Chair offset: global 12-15
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"{model_id}.txt"
        f.write_text("".join(f"{a:.6f} {b:.6f} {c:.6f} {x:.6f} {y:.6f} {z:.6f} {g:.6f}\n"
                             for (a, b, c), (x, y, z), g in zip(p1, nrm, glob, strict=True)))
        return f
    (d / "points").mkdir(parents=True, exist_ok=True)
    (d / "points" / f"{model_id}.pts").write_text("".join(f"{a:.5f} {b:.5f} {c:.5f}\n"
                                                          for a, b, c in p1))
    seg_text = "".join(f"{int(v)}\n" for v in local)
    if release == "v0":
        ev = d / "expert_verified" / "points_label"
        ev.mkdir(parents=True, exist_ok=True)
        (ev / f"{model_id}.seg").write_text(seg_text)
        for i, name in enumerate(PART_NAMES):
            (d / "points_label" / name).mkdir(parents=True, exist_ok=True)
            (d / "points_label" / name / f"{model_id}.seg").write_text(
                "".join(f"{int(v == i + 1)}\n" for v in local))
        return ev / f"{model_id}.seg"
    (d / "points_label").mkdir(parents=True, exist_ok=True)
    (d / "points_label" / f"{model_id}.seg").write_text(seg_text)
    return d / "points_label" / f"{model_id}.seg"


def write_shapenet_part_meta(root: Path, splits: dict[str, list[tuple[str, str]]]) -> Path:
    """``synsetoffset2category.txt`` (2 categories) + ``train_test_split/shuffled_*.json``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "synsetoffset2category.txt").write_text("Airplane\t02691156\nChair\t03001627\n")
    (root / "train_test_split").mkdir(exist_ok=True)
    for name in ("train", "val", "test"):
        entries = [f"shape_data/{s}/{m}" for s, m in splits.get(name, [])]
        (root / "train_test_split" / f"shuffled_{name}_file_list.json").write_text(
            json.dumps(entries))
    return root


# ------------------------------------------------------------------------------- PartNet


def to_partnet(points_v2: np.ndarray, shift: np.ndarray, mirror: bool = False) -> np.ndarray:
    """v2 -> v1 -> PartNet with :data:`PARTNET_MATRIX` (mirror: x -> -x in PartNet)."""
    p1 = v2_to_v1(points_v2, shift)
    pp = p1 @ PARTNET_MATRIX[:3, :3].T + PARTNET_MATRIX[:3, 3]
    if mirror:
        pp[:, 0] *= -1
    return pp


def _partnet_tree() -> tuple[list[dict], dict[tuple[int, int], int]]:
    """result.json with leaves back(3), seat(6), legs(10-13), arm(16); (part, leg) -> leaf id."""
    legs = [{"text": "Leg", "name": "leg", "id": 10 + i, "objs": [f"original-{3 + i}"]}
            for i in range(4)]
    root = {"text": "Chair", "name": "chair", "id": 1, "children": [
        {"text": "Chair Back", "name": "chair_back", "id": 2, "children": [
            {"text": "Back Surface", "name": "back_surface", "id": 4, "children": [
                {"text": "Back Single Surface", "name": "back_single_surface", "id": 3,
                 "objs": ["original-1"]}]}]},
        {"text": "Chair Seat", "name": "chair_seat", "id": 5, "children": [
            {"text": "Seat Surface", "name": "seat_surface", "id": 6, "objs": ["original-2"]}]},
        {"text": "Chair Base", "name": "chair_base", "id": 8, "children": [
            {"text": "Regular Leg Base", "name": "regular_leg_base", "id": 9, "children": legs}]},
        {"text": "Chair Arm", "name": "chair_arm", "id": 14, "children": [
            {"text": "Arm Sofa Style", "name": "arm_sofa_style", "id": 15, "children": [
                {"text": "Arm Horizontal Bar", "name": "arm_horizontal_bar", "id": 16,
                 "objs": ["new-0"]}]}]},
    ]}
    leaf = {(0, -1): 3, (1, -1): 6, (3, -1): 16}
    leaf.update({(2, i): 10 + i for i in range(4)})
    return [root], leaf


def write_partnet_stats(stats: Path, anno_ids: dict[str, str]) -> Path:
    """``stats/``: all_valid_anno_info.txt, merging mapping, label ids and level files."""
    stats = Path(stats)
    (stats / "merging_hierarchy_mapping").mkdir(parents=True, exist_ok=True)
    (stats / "after_merging_label_ids").mkdir(parents=True, exist_ok=True)
    (stats / "all_valid_anno_info.txt").write_text(
        "".join(f"{a} 2 Chair {m} fixture_annotator\n" for a, m in anno_ids.items()))
    raw = ["chair", "chair/chair_back", "chair/chair_back/back_surface",
           "chair/chair_back/back_surface/back_single_surface", "chair/chair_seat",
           "chair/chair_seat/seat_surface", "chair/chair_base", "chair/chair_base/regular_leg_base",
           "chair/chair_base/regular_leg_base/leg", "chair/chair_arm",
           "chair/chair_arm/arm_sofa_style", "chair/chair_arm/arm_sofa_style/arm_horizontal_bar"]
    merged = {r: r for r in raw}
    # a real merge: the sofa-style arm's bar becomes a plain arm_horizontal_bar under chair_arm
    merged["chair/chair_arm/arm_sofa_style"] = "chair/chair_arm"
    merged["chair/chair_arm/arm_sofa_style/arm_horizontal_bar"] = \
        "chair/chair_arm/arm_horizontal_bar"
    (stats / "merging_hierarchy_mapping" / "Chair.txt").write_text(
        "".join(f"{r} {m}\n" for r, m in merged.items()))
    level2 = [(6, "chair/chair_back/back_surface"), (20, "chair/chair_arm/arm_horizontal_bar"),
              (24, "chair/chair_base/regular_leg_base"), (46, "chair/chair_seat/seat_surface")]
    d = stats / "after_merging_label_ids"
    (d / "Chair-level-1.txt").write_text("".join(f"{i} {p}\n" for i, p in LEVEL1))
    (d / "Chair-level-2.txt").write_text("".join(f"{i} {p}\n" for i, p in level2))
    (d / "Chair.txt").write_text("".join(f"{i} {p} subcomponents\n" for i, p in LEVEL1 + level2))
    return stats


def write_partnet(root: Path, mesh: PartMesh, model_id: str = MODEL_A, anno_id: str = "38037",
                  n: int = 3000, mirror: bool = False, stats: bool = True) -> Path:
    """``<root>/data_v0/<anno_id>/`` (meta, result.json, objs, point_sample with ``n`` lines)
    and, with ``stats``, ``<root>/stats/`` plus ``<root>/matrices.json``. Returns data_v0."""
    data = Path(root) / "data_v0"
    d = data / anno_id
    (d / "point_sample").mkdir(parents=True, exist_ok=True)
    (d / "objs").mkdir(parents=True, exist_ok=True)
    shift = v1_shift(mesh, model_id)
    p2, fid = sample(mesh, n, seed=7)
    tree, leaf_of = _partnet_tree()
    leaves = np.array([leaf_of[(int(mesh.face_part[f]), int(mesh.face_leg[f]))] for f in fid])
    pp = to_partnet(p2, shift, mirror)
    (d / "meta.json").write_text(json.dumps({"model_id": model_id, "model_cat": "Chair",
                                             "anno_id": anno_id, "version": 2}))
    (d / "result.json").write_text(json.dumps(tree))
    (d / "point_sample" / f"pts-{n}.txt").write_text(
        "".join(f"{a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in pp))
    (d / "point_sample" / f"label-{n}.txt").write_text("".join(f"{int(v)}\n" for v in leaves))
    verts = to_partnet(mesh.known.vertices, shift, mirror)
    for (part, leg), _leaf in leaf_of.items():
        sel = (mesh.face_part == part) & ((mesh.face_leg == leg) if part == 2 else True)
        name = "new-0" if part == 3 else f"original-{1 + part + max(leg, 0)}"
        body = "".join(f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in verts)
        body += "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in mesh.known.faces[sel])
        (d / "objs" / f"{name}.obj").write_text(body)
    if stats:
        write_partnet_stats(Path(root) / "stats", {anno_id: model_id})
        (Path(root) / "matrices.json").write_text(json.dumps(
            {model_id: PARTNET_MATRIX.reshape(-1).tolist()}))
    return data
