"""OBJ / MTL reader: the real ShapeNet v2 sample, dialect quirks, materials and corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import renderers.obj as obj_module
from renderers.asset import AssetError
from renderers.obj import DEFAULT_KD, read_mtl, read_obj
from tests import shapenet_fixtures as fx

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLE_ID = "88382b877be91b2a572f8e1c1caad99e"
SAMPLE_OBJ = (SHARED / "data/keypointnet-sample/ShapeNetCore.v2/03001627" / SAMPLE_ID
              / "models/model_normalized.obj")
needs_sample = pytest.mark.skipif(not SAMPLE_OBJ.is_file(),
                                  reason=f"real ShapeNet sample not found at {SAMPLE_OBJ}")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ real sample


@needs_sample
def test_real_sample_counts_and_frame() -> None:
    m = read_obj(SAMPLE_OBJ)
    assert m.vertices.shape == (814, 3) and m.vertices.dtype == np.float64
    assert m.faces.shape == (3304, 3) and m.faces.dtype == np.int64  # 48 `l` records excluded
    assert m.skipped == {"l": 48}
    assert m.uv.shape == (2608, 2) and m.n_normals == 549
    assert (m.face_uv >= 0).all() and m.has_uv
    np.testing.assert_array_equal(m.face_polygon, np.arange(3304))
    np.testing.assert_array_equal(m.faces[0], [0, 1, 2])  # "f  1/1/1 2/2/1 3/3/1"
    np.testing.assert_array_equal(m.faces[-1], [789, 790, 784])  # last f record, file order
    assert np.abs(m.vertices.mean(axis=0)).max() < 1e-6  # v2: vertex mean at the origin
    diag = np.linalg.norm(np.ptp(m.vertices, axis=0))
    assert abs(diag - 1.0) < 1e-5
    assert len(m.group_names) == 15 and m.group_names[0] == "mesh1_mesh1-geometry"


@needs_sample
def test_real_sample_materials_and_textures() -> None:
    m = read_obj(SAMPLE_OBJ)
    assert m.warnings == []
    assert [x.name for x in m.materials] == [
        "material_0_3_8", "material_1_1_8", "material_2_2_8", "material_3_4_8", "material_4_0"]
    images = SAMPLE_OBJ.parents[1] / "images"
    for i in range(4):
        assert m.materials[i].map_kd == (images / f"texture{i}.jpg").resolve()
        assert m.materials[i].map_kd.is_absolute()
    assert m.materials[4].map_kd is None and m.materials[4].kd.tolist() == [0, 0, 0]
    assert np.bincount(m.face_material).tolist() == [1522, 302, 868, 612]
    assert m.face_material[0] == 0 and (m.face_material >= 0).all()


# --------------------------------------------------------------------------------- dialect


def test_fixture_v2_obj_matches_known_mesh(tmp_path: Path) -> None:
    known = fx.known_mesh()
    m = read_obj(fx.write_v2_model(tmp_path, fx.CHAIR, fx.MODEL_ID, known))
    np.testing.assert_allclose(m.vertices, known.vertices, atol=5e-7)
    np.testing.assert_array_equal(m.faces, known.faces)
    np.testing.assert_array_equal(m.face_material, known.face_material)
    np.testing.assert_array_equal(m.face_group, known.face_group)
    np.testing.assert_allclose(m.uv[m.face_uv], known.corner_uv, atol=1e-5)
    assert m.skipped == {"l": 2} and m.warnings == []
    assert m.materials[1].kd.tolist() == list(fx.PLAIN_KD) and m.materials[1].map_kd is None


def test_polygons_relative_indices_and_corner_forms(tmp_path: Path) -> None:
    obj = _write(tmp_path / "m.obj", (
        "o thing\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\n"
        "vt 0.5\nvt 0.1 0.2 0.0\nvn 0 0 3\ns 1\n"
        "f 1 2 3 4 5\n"             # pentagon -> 3 triangles (fan)
        "f -5/-2/1 -4//1 -3/-1\n"   # relative indices, v//vn, v/vt
        "p 1\nl 1 2 3\n"
        "f 1/1 2/2 \\\n 3/1\n"      # continuation line
    ))
    m = read_obj(obj)
    np.testing.assert_array_equal(
        m.faces, [[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(m.face_polygon, [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(m.face_uv[3], [0, -1, 1])
    np.testing.assert_array_equal(m.uv, [[0.5, 0.0], [0.1, 0.2]])
    assert (m.face_uv[:3] == -1).all()
    assert m.skipped == {"o": 1, "s": 1, "p": 1, "l": 1}
    assert (m.face_material == -1).all() and (m.face_group == -1).all()


def test_groups_and_materials_in_file_order(tmp_path: Path) -> None:
    _write(tmp_path / "m.mtl", "newmtl a\nKd 1 0 0\nd 0.5\nnewmtl b\nKd 0.2\nTr 0.25\n")
    obj = _write(tmp_path / "m.obj", (
        "mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\n"
        "f 1 2 3\ng g1\nusemtl b\nf 1 2 3\ng g2\nusemtl a\nf 1 2 3\ng g1\nusemtl nope\nf 1 2 3\n"
    ))
    m = read_obj(obj)
    assert [x.name for x in m.materials] == ["a", "b", "nope"]
    assert m.face_material.tolist() == [-1, 1, 0, 2]
    assert m.face_group.tolist() == [-1, 0, 1, 0] and m.group_names == ["g1", "g2"]
    assert m.materials[0].opacity == 0.5 and m.materials[1].opacity == 0.75
    assert m.materials[1].kd.tolist() == [0.2, 0.2, 0.2]
    assert not m.materials[2].defined and m.materials[2].kd.tolist() == list(DEFAULT_KD)
    assert any("'nope'" in w for w in m.warnings)


def test_missing_mtl_and_texture_are_warnings(tmp_path: Path) -> None:
    obj = _write(tmp_path / "models/m.obj", "mtllib gone.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\n"
                 "usemtl x\nf  1 2 3\n")
    m = read_obj(obj)
    assert any("gone.mtl" in w and "not found" in w for w in m.warnings)
    assert m.materials[0].kd.tolist() == list(DEFAULT_KD)
    fx.write_v2_model(tmp_path / "root", fx.CHAIR, fx.MODEL_ID, texture=False)
    m = read_obj(tmp_path / "root" / fx.CHAIR / fx.MODEL_ID / "models/model_normalized.obj")
    assert m.materials[0].map_kd is None
    assert m.materials[0].map_kd_missing == "../images/texture0.jpg"
    assert any("texture0.jpg" in w for w in m.warnings)


def test_texture_lookup_options_and_fallback(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "images" / "Tex A.PNG")
    _write(tmp_path / "m.mtl", "newmtl a\nmap_Kd -s 1 1 1 -bm 0.5 ../images/tex a.png\n"
           "newmtl b\nmap_Kd -clamp on Tex A.PNG\n")
    mats = read_mtl(tmp_path / "m.mtl", warnings := [])
    expected = (tmp_path / "images" / "Tex A.PNG").resolve()
    assert mats[0].map_kd == expected and mats[1].map_kd == expected
    assert warnings == []


# --------------------------------------------------------------------------------- corrupt


@pytest.mark.parametrize(("kind", "what"), [
    ("truncated", "face with 2 corners"),
    ("index", "face index 912 out of range (4 vertices)"),
    ("number", "unparseable number 'abc'"),
])
def test_corrupt_obj_names_file_and_line(tmp_path: Path, kind: str, what: str) -> None:
    path = tmp_path / f"{kind}.obj"
    line = fx.write_corrupt_obj(path, kind)
    with pytest.raises(AssetError) as info:
        read_obj(path)
    msg = str(info.value)
    assert f"{path.name}:{line}:" in msg and what in msg
    assert "re-extract" in msg  # says what to do


def test_empty_and_unreadable_models(tmp_path: Path) -> None:
    fx.write_corrupt_obj(tmp_path / "empty.obj", "empty")
    with pytest.raises(AssetError, match=r"empty\.obj: empty model: no faces"):
        read_obj(tmp_path / "empty.obj")
    with pytest.raises(AssetError, match=r"absent\.obj: cannot read"):
        read_obj(tmp_path / "absent.obj")


@pytest.mark.parametrize(("record", "what"), [
    ("f 1 2 0", "index 0 is invalid"),
    ("f 1 2 -9", "relative face vertex index -9 out of range"),
    ("f 1/7 2/1 3/1", "face uv index 7 out of range (1 uv coordinates)"),
    ("f 1/x 2 3", "unparseable face index '1/x'"),
    ("v 1 2", "vertex with 2 coordinates"),
    ("v 1 nan 2", "non-finite vertex coordinate"),
    ("vt 0.1 zz", "unparseable number 'zz'"),
])
def test_bad_records_raise_asset_error(tmp_path: Path, record: str, what: str) -> None:
    path = _write(tmp_path / "bad.obj", f"v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\n{record}\n")
    with pytest.raises(AssetError) as info:
        read_obj(path)
    assert "bad.obj:5:" in str(info.value) and what in str(info.value)


# ----------------------------------------------------------------------- fast == slow path


def test_line_variants_crlf_bom_tabs_and_mixed_records(tmp_path: Path) -> None:
    text = ("\ufeffv 0 0 0\r\n  v 1 0 0 1\r\nv\t0 1 0 0.5 0.5 0.5\r\nvt 0.25 0.5\r\nvt\t1 1\r\n"
            "fo 1/1 2/2 3/1\r\nf 1 2 3\r\n  f -3//1 -2//1 -1//1\r\n")
    m = read_obj(_write(tmp_path / "m.obj", text))
    np.testing.assert_array_equal(m.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(m.faces, [[0, 1, 2]] * 3)
    np.testing.assert_array_equal(m.face_uv, [[0, 1, 0], [-1, -1, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(m.uv, [[0.25, 0.5], [1, 1]])


@pytest.mark.parametrize("source", ["fixture", "sample"])
def test_vectorised_and_per_line_parsers_agree(tmp_path: Path, source: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if source == "sample" and not SAMPLE_OBJ.is_file():
        pytest.skip(f"real ShapeNet sample not found at {SAMPLE_OBJ}")
    path = SAMPLE_OBJ if source == "sample" else fx.write_v2_model(tmp_path, fx.CHAIR, "m")
    fast = read_obj(path)
    monkeypatch.setattr(obj_module, "_fast_table", lambda *a: None)
    monkeypatch.setattr(obj_module, "_fast_corners", lambda *a: None)
    slow = read_obj(path)
    for name in ("vertices", "faces", "uv", "face_uv", "face_material", "face_group",
                 "face_polygon"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)


def test_line_numbers_survive_continuations(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 \\\n 3\nf 1 2 9\n")
    with pytest.raises(AssetError, match=r"c\.obj:6: face index 9 out of range \(3 vertices\)"):
        read_obj(path)
