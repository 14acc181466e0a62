"""Write tiny ShapeNetCore v1 / v2 trees in the exact on-disk layout (formats.md section 1).

The geometry is generated FROM a known mesh (:func:`known_mesh`: a box seat on a cylinder leg,
in the v2 frame, vertex mean 0, bbox diagonal 1) with the documented transforms, so tests can
assert round trips:

* v2 ``models/model_normalized.obj``: the known vertices as is (assimp 3.2 dialect, 6 decimals);
  ``model_normalized.json``: ``orig = v * ORIG_SCALE + ORIG_OFFSET`` (original units).
* v1 ``model.obj``: ``v2_to_v1(v, s)`` with ``s = normalized_json_shift(json)`` (bbox centred,
  unit diagonal, +X front), so ``v1_to_v2`` of it with the same ``s`` gives the known mesh back.

Materials: faces use a textured material (``map_Kd ../images/texture0.jpg``, a real JPEG of one
colour, :data:`TEXTURE_RGB`) and an untextured Kd-only material (:data:`PLAIN_KD`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from renderers.shapenet import normalized_json_shift, v2_to_v1

CHAIR = "03001627"
TABLE = "04379243"
MODEL_ID = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
SHORT_ID = "9ce2ea550b049beee64d5cb52244df5"  # 31 chars: ids are opaque strings
UUID_ID = "udf068a6b-e65b-430b-bc17-611b062e2e34"
ORIG_SCALE = 50.0
ORIG_OFFSET = np.array([84.48248, 50.21447, -111.35764])
TEXTURE_RGB = (200, 40, 40)
PLAIN_KD = (0.1, 0.6, 0.3)
TEXTURED, PLAIN = "material_0_1_8", "material_1_0"
_ASSIMP_HEADER = ("# File produced by Open Asset Import Library (http://www.assimp.sf.net)\n"
                  "# (assimp v3.2.202087883)\n")


@dataclass
class KnownMesh:
    """The ground-truth fixture geometry (v2 frame).

    Attributes:
        vertices: (V, 3) float64, vertex mean 0, bbox diagonal 1.
        faces: (F, 3) int64.
        face_material: (F,) 0 = textured, 1 = Kd-only.
        face_group: (F,) 0 = "mesh1" (box), 1 = "mesh2" (cylinder).
        corner_uv: (F, 3, 2) per-corner texture coordinates (some outside [0, 1]).
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_material: np.ndarray
    face_group: np.ndarray
    corner_uv: np.ndarray


def known_mesh() -> KnownMesh:
    """Box seat + off-centre cylinder leg (so the vertex mean is not the bbox centre)."""
    box = trimesh.creation.box(extents=(0.6, 0.1, 0.5))
    box.apply_translation((0.0, 0.3, 0.0))
    leg = trimesh.creation.cylinder(radius=0.05, height=0.5, sections=10)
    leg.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))
    leg.apply_translation((0.2, 0.0, -0.15))
    v = np.concatenate([box.vertices, leg.vertices])
    v = (v - v.mean(axis=0)) / np.linalg.norm(np.ptp(v, axis=0))
    faces = np.concatenate([box.faces, leg.faces + len(box.vertices)]).astype(np.int64)
    group = np.repeat([0, 1], [len(box.faces), len(leg.faces)])
    material = group.copy()
    material[len(box.faces) + len(leg.faces) // 2:] = 0  # 2nd half of the leg: textured again
    corner_uv = v[faces][..., [0, 2]] * 3.0 - 0.25
    return KnownMesh(v, faces, material, group, corner_uv)


def normalized_json(mesh: KnownMesh, model_id: str) -> dict:
    """``model_normalized.json`` content in original units for the known mesh."""
    orig = mesh.vertices * ORIG_SCALE + ORIG_OFFSET
    return {"max": orig.max(axis=0).tolist(), "min": orig.min(axis=0).tolist(),
            "centroid": orig.mean(axis=0).tolist(), "id": model_id,
            "numVertices": len(orig)}


def write_texture(path: Path, rgb: tuple[int, int, int] = TEXTURE_RGB, size: int = 16) -> Path:
    """A real one-colour JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path, quality=95)
    return path


def _mtl_text(texture_ref: str | None, header: str) -> str:
    tex = f"map_Kd {texture_ref}\n" if texture_ref else ""
    common = "Ka 0 0 0\nKs 0.4 0.4 0.4\nKe 0 0 0\nNs 10\nillum 2\n"
    return (f"{header}\nnewmtl {TEXTURED}\nKd 1 1 1\n{common}{tex}\n"
            f"newmtl {PLAIN}\nKd {PLAIN_KD[0]} {PLAIN_KD[1]} {PLAIN_KD[2]}\n{common}")


def _blocks(mesh: KnownMesh) -> list[tuple[int, int, np.ndarray]]:
    """(group, material, face indices) runs in face order."""
    key = mesh.face_group * 10 + mesh.face_material
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    return [(int(mesh.face_group[s]), int(mesh.face_material[s]), np.arange(s, e))
            for s, e in zip(starts, ends, strict=True)]


def _face_normals(mesh: KnownMesh) -> np.ndarray:
    tri = mesh.vertices[mesh.faces]
    return 0.03 * np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # non-unit, like assimp


def v2_obj_text(mesh: KnownMesh, vertices: np.ndarray | None = None) -> str:
    """The assimp dialect: header, mtllib, counts, 3-comp vt, non-unit vn, g/usemtl, ``f  ``."""
    v = mesh.vertices if vertices is None else vertices
    uv = mesh.corner_uv.reshape(-1, 2)
    vn = _face_normals(mesh)
    out = [_ASSIMP_HEADER, "\nmtllib model_normalized.mtl\n", f"\n# {len(v)} vertex positions\n"]
    out += [f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in v]
    out += [f"\n# {len(uv)} UV coordinates\n"] + [f"vt {a:g} {b:g} 0\n" for a, b in uv]
    out += [f"\n# {len(vn)} vertex normals\n"] + [f"vn {a:g} {b:g} {c:g}\n" for a, b, c in vn]
    for group, material, idx in _blocks(mesh):
        name = f"mesh{group + 1}_mesh{group + 1}-geometry"
        out.append(f"\n# Mesh '{name}' with {len(idx)} faces\ng {name}\n"
                   f"usemtl {(TEXTURED, PLAIN)[material]}\n")
        for f in idx:
            a, b, c = mesh.faces[f] + 1
            t = 3 * f + 1
            out.append(f"f  {a}/{t}/{f + 1} {b}/{t + 1}/{f + 1} {c}/{t + 2}/{f + 1}\n")
    out.append("\nl  1 4\nl  4 2\n")
    return "".join(out)


def v1_obj_text(mesh: KnownMesh, vertices: np.ndarray) -> str:
    """Blender-export style: vertices declared per object block, 2-comp vt, ``s off``."""
    out = ["# Blender v2.79 (sub 0) OBJ File: ''\n# www.blender.org\nmtllib model.mtl\n"]
    blocks, written = _blocks(mesh), 0
    uv = mesh.corner_uv.reshape(-1, 2)
    for group, material, idx in blocks:
        need = int(mesh.faces[idx].max()) + 1
        out.append(f"o mesh{group + 1}\n")
        out += [f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices[written:need]]
        written = max(written, need)
        out += [f"vt {a:.6f} {b:.6f}\n" for a, b in uv[3 * idx[0]:3 * (idx[-1] + 1)]]
        out.append(f"usemtl {(TEXTURED, PLAIN)[material]}\ns off\n")
        for f in idx:
            a, b, c = mesh.faces[f] + 1
            t = 3 * f + 1
            out.append(f"f {a}/{t} {b}/{t + 1} {c}/{t + 2}\n")
    return "".join(out)


def write_taxonomy(root: Path, synsets: dict[str, int]) -> Path:
    """``taxonomy.json``: synsetId, name (comma-separated lemmas), children, numInstances."""
    names = {CHAIR: "chair", TABLE: "table"}
    entries = [{"synsetId": s, "name": names.get(s, "thing") + ",fixture lemma", "children": [],
                "numInstances": n} for s, n in synsets.items()]
    root.mkdir(parents=True, exist_ok=True)
    (root / "taxonomy.json").write_text(json.dumps(entries))
    return root / "taxonomy.json"


def write_v2_model(root: Path, synset: str, model_id: str, mesh: KnownMesh | None = None, *,
                   texture: bool = True, mtl: bool = True) -> Path:
    """One v2 model folder; ``texture=False`` omits the image (mtl still references it)."""
    mesh = mesh or known_mesh()
    d = Path(root) / synset / model_id
    (d / "models").mkdir(parents=True, exist_ok=True)
    obj = d / "models" / "model_normalized.obj"
    obj.write_text(v2_obj_text(mesh))
    if mtl:
        (d / "models" / "model_normalized.mtl").write_text(
            _mtl_text("../images/texture0.jpg", _ASSIMP_HEADER))
    (d / "models" / "model_normalized.json").write_text(json.dumps(normalized_json(mesh,
                                                                                   model_id)))
    if texture:
        write_texture(d / "images" / "texture0.jpg")
    return obj


def write_v1_model(root: Path, synset: str, model_id: str, mesh: KnownMesh | None = None
                   ) -> Path:
    """One v1 model folder (model.obj / model.mtl / images/texture0.jpg) in the v1 frame."""
    mesh = mesh or known_mesh()
    shift = normalized_json_shift(normalized_json(mesh, model_id))
    d = Path(root) / synset / model_id
    d.mkdir(parents=True, exist_ok=True)
    obj = d / "model.obj"
    obj.write_text(v1_obj_text(mesh, v2_to_v1(mesh.vertices, shift)))
    (d / "model.mtl").write_text(_mtl_text("images/texture0.jpg", "# Blender MTL File: ''\n"))
    write_texture(d / "images" / "texture0.jpg")
    return obj


def make_tree(root: Path, version: str = "v2", synset: str = CHAIR,
              ids: tuple[str, ...] = (MODEL_ID, SHORT_ID, UUID_ID)) -> Path:
    """A ShapeNetCore.v1/.v2 root with taxonomy.json and one synset of identical models."""
    root = Path(root)
    write_taxonomy(root, {synset: len(ids)})
    writer = write_v2_model if version == "v2" else write_v1_model
    for mid in ids:
        writer(root, synset, mid)
    return root


# ------------------------------------------------------------------------------------ splits


def write_split_json(path: Path, train: list[str], val: list[str], test: list[str]) -> Path:
    """The official FeatureNeRF split format (``assets/splits/<synset>.json``)."""
    data = {"train": train, "val": val, "test": test,
            "valid_flags_for_test": {m: True for m in test},
            "cross_inst_pairs": [], "cross_view_pairs": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_split_txts(folder: Path, splits: dict[str, list[str]]) -> Path:
    """KeypointNet ``splits/{train,val,test}.txt`` with lines ``<synset>-<model_id>``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, entries in splits.items():
        (folder / f"{name}.txt").write_text("".join(e + "\n" for e in entries))
    return folder


# ----------------------------------------------------------------------------------- corrupt


def write_corrupt_obj(path: Path, kind: str) -> int:
    """Write a broken assimp-style OBJ; return the 1-based line number of the bad record.

    kinds: ``"truncated"`` (last face cut mid-line), ``"index"`` (face index 912 with 4
    vertices), ``"number"`` (non-numeric vertex coordinate), ``"empty"`` (no faces, line 0).
    """
    lines = [_ASSIMP_HEADER.rstrip("\n"), "", "mtllib model_normalized.mtl", "",
             "# 4 vertex positions", "v 0.000000 0.000000 0.000000", "v 1.000000 0.000000 0.000000",
             "v 0.000000 1.000000 0.000000", "v 0.000000 0.000000 1.000000", "",
             "g mesh1_mesh1-geometry", "usemtl material_0", "f  1 2 3", "f  1 3 4"]
    lines = "\n".join(lines).split("\n")  # header is two physical lines
    if kind == "truncated":
        lines.append("f  2 3")
    elif kind == "index":
        lines.append("f  1 2 912")
    elif kind == "number":
        lines.insert(7, "v 0.5 abc 0.25")
    elif kind == "empty":
        lines = [ln for ln in lines if not ln.startswith("f")] + ["l  1 2"]
    else:
        raise ValueError(f"unknown corrupt kind {kind!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    bad = {"truncated": len(lines), "index": len(lines), "number": 8, "empty": 0}
    return bad[kind]
