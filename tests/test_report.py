"""Report building blocks: provenance hashes, figure orientation, tables, HTML (no browser)."""

from __future__ import annotations

import io
import re

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest

from medcnn.io import read_volume, write_volume
from medcnn.report import build_tables, config_hash, overlay_png, render_html, volume_curve_png, volume_hash
from medcnn.report.figures import display_arrays, structure_centroid
from medcnn.report.html import unit_header
from medcnn.volume import Geometry, Volume


def _vol(geometry: Geometry, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(size=geometry.shape).astype(np.float32), geometry)


def test_volume_hash_follows_pixels_and_geometry_not_the_file(awkward_geometry, tmp_path):
    v = _vol(awkward_geometry)
    h = volume_hash(v)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    # same voxels and grid through two file formats -> same hash
    write_volume(v, tmp_path / "a.nii.gz")
    write_volume(v, tmp_path / "a.nrrd")
    assert volume_hash(read_volume(tmp_path / "a.nii.gz")) == h
    assert volume_hash(read_volume(tmp_path / "a.nrrd")) == h
    # any change of pixels or geometry changes it
    arr = v.array.copy()
    arr.flat[7] += 1e-3
    g = awkward_geometry
    changed = [
        Volume(arr, g),
        Volume(v.array, Geometry(g.shape, (g.spacing[0] * 1.001, *g.spacing[1:]), g.origin, g.direction)),
        Volume(v.array, Geometry(g.shape, g.spacing, (g.origin[0] + 0.01, *g.origin[1:]), g.direction)),
        Volume(v.array, Geometry(g.shape, g.spacing, g.origin, tuple(map(tuple, -np.asarray(g.direction))))),
        Volume(v.array.astype(np.float64), g),
    ]
    hashes = {volume_hash(c) for c in changed}
    assert h not in hashes and len(hashes) == len(changed)


def test_volume_hash_byte_order_and_layout_do_not_matter():
    g = Geometry((4, 5, 6), (1.0, 2.0, 3.0))
    a = np.arange(120, dtype="<i2").reshape(4, 5, 6)
    assert volume_hash(Volume(a, g)) == volume_hash(Volume(a.astype(">i2"), g))
    assert volume_hash(Volume(np.asfortranarray(a), g)) == volume_hash(Volume(a, g))
    cine = Volume(np.stack([a, a]), g, leading_axis="time", frame_times_ms=(0.0, 40.0))
    assert volume_hash(cine) != volume_hash(Volume(np.stack([a, a]), g, leading_axis="time",
                                                   frame_times_ms=(0.0, 41.0)))


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1.0, 2]}) == config_hash({"b": [1.0, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_display_orientation_matches_nibabel_canonical(awkward_geometry):
    """Independent reference: nibabel's closest-canonical (RAS) reorientation."""
    v = _vol(awkward_geometry, seed=3)
    (shown,), spacing = display_arrays(awkward_geometry, v.array)
    canon = nib.as_closest_canonical(nib.Nifti1Image(v.array, awkward_geometry.affine))
    np.testing.assert_array_equal(shown, np.asarray(canon.dataobj))
    np.testing.assert_allclose(spacing, canon.header.get_zooms()[:3], rtol=1e-5)


def _decode(png: bytes) -> np.ndarray:
    return mpimg.imread(io.BytesIO(png), format="png")


def test_overlay_goes_through_the_structure_and_draws_its_contour():
    g = Geometry((40, 30, 12), (1.0, 1.2, 4.0), (5.0, -3.0, 2.0))
    scan = _vol(g)
    lab = np.zeros(g.shape, np.uint8)
    lab[25:32, 5:12, 7:10] = 1  # far from the grid centre; centre (28, 8, 8) by hand
    labels = Volume(lab, g, kind="label")
    assert structure_centroid(lab) == (28, 8, 8)
    img = _decode(overlay_png([("case", scan, labels)], label_names={1: "LV blood pool"}))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
    rgb = img[..., :3]
    red = (rgb[..., 0] > 0.9) & (rgb[..., 1] < 0.4) & (rgb[..., 2] < 0.35)  # label 1 colour #ff3b30
    assert red.sum() > 50
    # an empty label map still gives a figure (grid centre, "no structure found")
    empty = _decode(overlay_png([("e", scan, labels.with_array(np.zeros_like(lab)))]))
    assert empty.shape[0] > 100 and empty[..., :3].std() > 0.05
    with pytest.raises(Exception, match="scan and label map"):
        overlay_png([("x", scan, Volume(lab, Geometry(g.shape, (2, 2, 2)), kind="label"))])


def test_volume_curve_png_decodes():
    img = _decode(volume_curve_png([0, 40, 80, 120], {"LV blood pool": [100, 80, 60, 90]}, ed_index=0, es_index=2))
    assert img.shape[0] > 100 and img[..., :3].std() > 0.05


def test_unit_headers():
    assert unit_header("lv_edv_ml") == "lv edv (mL)"
    assert unit_header("lv_ef_percent") == "lv ef (%)"
    assert unit_header("max_3d_diameter_mm") == "max 3d diameter (mm)"
    assert unit_header("lv_cardiac_output_l_per_min") == "lv cardiac output (L/min)"
    assert unit_header("voxel_volume_mm3") == "voxel volume (mm³)"


def _records():
    ok = {"case_id": "c1", "status": "ok", "mode": "cardiac", "inputs": [{"phase": None, "channel": "MRI",
                                                                         "path": "/x/c1"}],
          "volumes": [{"phase": "ED", "frame": 3, "label": 1, "label_name": "LV", "voxel_count": 10,
                       "voxel_volume_mm3": 8.0, "volume_ml": 0.08, "method": "count"}],
          "lesions": [], "cardiac": {"lv_edv_ml": 120.0, "lv_esv_ml": 50.0, "lv_sv_ml": 70.0,
                                     "lv_ef_percent": 58.3, "lv_myocardial_mass_g": None},
          "curve": [{"frame": 0, "time_ms": 0.0, "lv_volume_ml": 120.0}],
          "qc_flags": [{"code": "LV_ON_FIRST_SLICE", "message": "LV on the first slice", "phase": "ED"}],
          "timings_s": {"total_s": 1.5}, "outputs": {}, "model": {"name": "m", "sha256": "ab" * 32},
          "provenance": {"medcnn_version": "0.1.0", "device": "cpu", "precision": "fp32", "tta": False,
                         "methods": {"volume_ml": "voxel count x voxel volume"}}}
    bad = {"case_id": "<script>alert(1)</script>", "status": "error", "mode": "cardiac", "inputs": [],
           "error": {"type": "CorruptFileError", "message": "x.nii.gz: expected a readable header, got junk"},
           "qc_flags": [], "timings_s": {"total_s": 0.1}}
    return [ok, bad]


def test_tables_have_units_and_separate_errors():
    t = build_tables(_records())
    assert t["cases"]["status"].tolist() == ["ok", "error"]
    assert t["cases"].loc[0, "qc_codes"] == "LV_ON_FIRST_SLICE"
    assert t["volumes"]["case_id"].tolist() == ["c1"] and "volume_ml" in t["volumes"].columns
    assert {"lv_edv_ml", "lv_ef_percent", "lv_myocardial_mass_g"} <= set(t["cardiac"].columns)
    assert t["errors"]["error_type"].tolist() == ["CorruptFileError"]
    assert t["lesions"].empty and "max_3d_diameter_mm" in t["lesions"].columns


def test_html_is_self_contained_and_escaped(tmp_path):
    html = render_html({"title": "T", "cases": _records(), "model": {"name": "m", "sha256": "ab" * 32},
                        "counts": {"ok": 1, "failed": 1, "total": 2}}, image_root=tmp_path)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "LV EF (%)" in html and "LV EDV (mL)" in html
    assert 'class="qc"' in html and '<tr class="error">' in html
    assert "1 ok</b>" in html and "1 failed</b>" in html
