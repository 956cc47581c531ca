"""Report figures that read like a viewer (issue 26, point 5): views named from the scan's own
direction cosines, one radiological display convention (patient's left on the image's right),
ED and ES on the same slices, reference contours in their own colour, the curve legend outside
the data. The world positions of the markers come from nibabel's affine arithmetic, not from
the code under test."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
from conftest import rotation
from matplotlib.colors import to_rgb

from medcnn.report.figures import (REFERENCE_COLOUR, label_colour, orient_slice, overlay_png, overlay_views,
                                   view_names, volume_curve_png)
from medcnn.volume import Geometry, Volume


def _geom(direction, shape=(40, 40, 10), spacing=(1.5, 1.5, 8.0), origin=(12.0, -30.0, 55.0)) -> Geometry:
    return Geometry(shape, spacing, origin, tuple(map(tuple, np.asarray(direction, float))))


# normals of the slice planes: axis K along S (axial), along A (coronal), along R (sagittal)
AXIAL = np.eye(3)
CORONAL = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)   # I->R, J->S, K->A
SAGITTAL = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)   # I->A, J->S, K->R


@pytest.mark.parametrize("direction, acquired", [(AXIAL, "axial"), (CORONAL, "coronal"), (SAGITTAL, "sagittal"),
                                                 (np.diag([-1.0, -1.0, 1.0]), "axial")])
def test_world_aligned_stacks_get_anatomical_names(direction, acquired):
    names = view_names(_geom(direction))
    assert names[2] == acquired
    assert sorted(names) == ["axial", "coronal", "sagittal"]


def test_small_tilt_is_still_axial_a_large_one_is_not():
    assert view_names(_geom(rotation(np.deg2rad(5), 0, 0)))[2] == "axial"
    oblique = view_names(_geom(rotation(np.deg2rad(25), np.deg2rad(-20), 0)))
    assert "axial" not in " ".join(oblique)
    assert oblique[2] == "oblique acquired plane"
    assert oblique[0] == oblique[1] == "perpendicular to the oblique acquired plane"


@pytest.mark.parametrize("case", ["sunnybrook/nifti/SCD0000101_ED.nii.gz", "sunnybrook/nifti/SCD0000201_ED.nii.gz",
                                  "sunnybrook/nifti/SCD0000401_ED.nii.gz"])
def test_real_short_axis_directions_name_short_axis_views(shared_data, case):
    img = nib.load(str(shared_data / case))  # the real, oblique short-axis stack direction
    g = Geometry.from_affine(img.affine, img.shape[:3])
    names = view_names(g, stack_plane="short axis")
    assert names[2] == "short axis"  # the slices are along K (10 mm)
    assert names[0] == names[1] == "perpendicular to the short axis"
    # without being told what the stack is: no anatomical name for an oblique plane
    assert not {"axial", "coronal", "sagittal"} & set(view_names(g))
    # same view, same name, whatever the patient: no "coronal" for one and "axial" for another
    rows = [("ED", Volume(np.zeros(g.shape, np.float32), g), Volume(np.zeros(g.shape, np.uint8), g))]
    assert overlay_views(rows, stack_plane="short axis")[0][0][0].startswith("ED: short axis\nslice k=")


def test_acdc_header_is_axial_but_the_stack_is_short_axis(shared_data):
    img = nib.load(str(shared_data / "acdc/patient001_ED.nii.gz"))
    g = Geometry.from_affine(img.affine, img.shape[:3])
    assert view_names(g)[2] == "axial"
    assert view_names(g, stack_plane="short axis")[2] == "short axis (header: axial)"


def _marker_volume(direction, *, shape=(48, 40, 12), spacing=(1.2, 1.4, 6.0)) -> tuple[Volume, Volume]:
    """A scan and a label map with one marker 30 mm to the patient's LEFT of the grid centre and
    (label 2) one 30 mm ANTERIOR, located through nibabel's apply_affine."""
    g = _geom(direction, shape=shape, spacing=spacing)
    aff = g.affine
    centre_ijk = np.asarray(shape) // 2
    centre = nib.affines.apply_affine(aff, centre_ijk)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = nib.affines.apply_affine(aff, ijk).reshape(*shape, 3)
    lab = np.zeros(shape, np.uint8)
    normal = nib.affines.apply_affine(aff, centre_ijk + [0, 0, 1]) - centre
    normal /= np.linalg.norm(normal)

    def towards(world):  # 30 mm from the centre, within the slice plane, towards a world direction
        w = np.asarray(world, float) - np.dot(world, normal) * normal
        return centre + 30.0 * w / np.linalg.norm(w)

    in_plane = np.abs((xyz - centre) @ normal) < 0.6 * spacing[2]
    lab[(np.linalg.norm(xyz - towards([-1.0, 0, 0]), axis=-1) < 6.0) & in_plane] = 1  # RAS+: left is -x
    lab[(np.linalg.norm(xyz - towards([0, 1.0, 0]), axis=-1) < 6.0) & in_plane] = 2   # anterior is +y
    lab[tuple(centre_ijk)] = 3  # a dot at the centre fixes the slice
    scan = np.random.default_rng(0).normal(100, 5, shape).astype(np.float32)
    return Volume(scan, g), Volume(lab, g)


# SCD0000101's direction cosines (3 decimals in its header dump), re-orthonormalised
_Q, _R = np.linalg.qr(np.array([[0.105, 0.733, 0.672], [-0.346, 0.66, -0.666], [-0.932, -0.163, 0.323]]))
SUNNYBROOK_101 = _Q * np.sign(np.diag(_R))


@pytest.mark.parametrize("direction", [AXIAL, np.diag([-1.0, -1.0, 1.0]), rotation(0.3, -0.2, 0.5),
                                       SUNNYBROOK_101],
                         ids=["ras", "lps", "oblique", "sunnybrook_sax"])
def test_patients_left_is_on_the_images_right(direction):
    scan, lab = _marker_volume(direction)
    k = 2
    sl = lab.array[:, :, lab.shape[2] // 2]
    (img,), _, edges = orient_slice(lab.geometry, k, sl)
    rows, cols = np.nonzero(img == 1)
    assert rows.size > 0
    assert cols.mean() > img.shape[1] / 2 + 3, "the left marker must be on the image's right"
    assert "L" in edges["right"] and "R" in edges["left"]
    if np.abs(direction[2, 2]) > 0.7:  # a plane close to axial: anterior up
        r2, _ = np.nonzero(img == 2)
        assert r2.mean() < img.shape[0] / 2 - 3, "anterior must be up"


def test_left_marker_on_the_right_in_the_png():
    scan, lab = _marker_volume(np.diag([-1.0, -1.0, 1.0]), shape=(48, 48, 12), spacing=(1.4, 1.4, 6.0))
    lab = lab.with_array(np.where(lab.array == 1, 1, 0).astype(np.uint8))
    png = mpimg.imread(io.BytesIO(overlay_png([("scan", scan, lab)])), format="png")[..., :3]
    colour = np.asarray(to_rgb(label_colour(1)))
    panel = png[:, : png.shape[1] // 3]  # the acquired plane comes first
    ys, xs = np.nonzero(np.abs(panel - colour).max(axis=-1) < 0.08)
    assert xs.size > 5
    assert xs.mean() > panel.shape[1] / 2 + 10


def test_ed_and_es_use_the_same_slices():
    g = _geom(np.eye(3), shape=(30, 30, 10), spacing=(1.5, 1.5, 8.0))
    ed = np.zeros(g.shape, np.uint8)
    es = np.zeros(g.shape, np.uint8)
    ed[5:12, 5:12, 2:5] = 1     # the ED structure sits elsewhere than the ES one
    es[18:25, 18:25, 6:9] = 1
    scan = Volume(np.ones(g.shape, np.float32), g)
    views = overlay_views([("ED", scan, Volume(ed, g)), ("ES", scan, Volume(es, g))], stack_plane="short axis")
    assert [(a, i) for _, a, i in views[0]] == [(a, i) for _, a, i in views[1]]
    assert views[0][0][1:] == (2, 3)  # the acquired plane (K) first, through the ED centroid


def _count_colour(png: bytes, colour: str, tol: float = 0.06) -> int:
    arr = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    return int((np.abs(arr - np.asarray(to_rgb(colour))).max(axis=-1) < tol).sum())


def test_reference_contours_drawn_in_their_own_colour():
    g = _geom(np.eye(3), shape=(40, 40, 8), spacing=(1.0, 1.0, 5.0))
    pred = np.zeros(g.shape, np.uint8)
    ref = np.zeros(g.shape, np.uint8)
    pred[10:30, 10:30, 2:6] = 1
    ref[13:27, 12:28, 2:6] = 1
    scan = Volume(np.random.default_rng(1).normal(0, 1, g.shape).astype(np.float32), g)
    without = overlay_png([("ED", scan, Volume(pred, g))])
    with_ref = overlay_png([("ED", scan, Volume(pred, g), Volume(ref, g))])
    assert _count_colour(without, REFERENCE_COLOUR) == 0
    assert _count_colour(with_ref, REFERENCE_COLOUR) > 50


def test_curve_legend_sits_outside_the_data():
    t = np.arange(20) * 40.0
    lv = 150 - 60 * np.sin(np.pi * t / t[-1])
    rv = 170 - 70 * np.sin(np.pi * t / t[-1])
    png = mpimg.imread(io.BytesIO(volume_curve_png(t, {"LV blood pool": lv, "RV blood pool": rv},
                                                   colours={"LV blood pool": "#ff3b30",
                                                            "RV blood pool": "#ffcc00"},
                                                   ed_index=0, es_index=10)), format="png")[..., :3]
    dark = png.mean(axis=-1) < 0.25
    # the axes frame: the rightmost column that is dark over a long vertical run
    runs = dark.sum(axis=0)
    spine = int(np.nonzero(runs > 0.5 * png.shape[0] * 0.6)[0].max())
    for colour in ("#ff3b30", "#ffcc00"):
        ys, xs = np.nonzero(np.abs(png - np.asarray(to_rgb(colour))).max(axis=-1) < 0.08)
        assert (xs > spine).any(), f"the legend entry for {colour} is outside the axes"


def test_contours_sit_on_the_structure_they_outline():
    """The contour (reference, dashed) surrounds the bright structure of the scan drawn under it,
    with the structure off-centre so a vertical or horizontal flip between image and contour shows."""
    g = _geom(np.diag([-1.0, -1.0, 1.0]), shape=(60, 60, 6), spacing=(1.0, 1.0, 6.0))
    lab = np.zeros(g.shape, np.uint8)
    lab[8:22, 10:24, 1:5] = 1       # near one corner of the slice
    scan = Volume(np.where(lab > 0, 1000.0, 0.0).astype(np.float32), g)
    png = mpimg.imread(io.BytesIO(overlay_png([("x", scan, Volume(np.zeros_like(lab), g), Volume(lab, g))])),
                       format="png")[..., :3]
    panel = png[:, : png.shape[1] // 3]
    wy, wx = np.nonzero(panel.min(axis=-1) > 0.97)  # the bright structure (white)
    inside = (wy > 20) & (wy < panel.shape[0] - 40)  # leave out the white page around the axes
    img_rows, img_cols = np.nonzero((np.abs(panel - 0).max(axis=-1) < 0.02))  # black scan background
    assert img_rows.size
    top, bottom, left, right = img_rows.min(), img_rows.max(), img_cols.min(), img_cols.max()
    sel = (wy > top) & (wy < bottom) & (wx > left) & (wx < right) & inside
    r, gr, b = panel[..., 0], panel[..., 1], panel[..., 2]
    cy, cx = np.nonzero((r < 0.5) & (gr > 0.5) & (b > 0.5))  # cyan (REFERENCE_COLOUR), antialiased dashes
    assert sel.sum() > 20 and cy.size > 20
    by, bx = wy[sel], wx[sel]
    for got, want in ((cy.min(), by.min()), (cy.max(), by.max()), (cx.min(), bx.min()), (cx.max(), bx.max())):
        assert abs(int(got) - int(want)) <= 3, (got, want)


def test_a_single_3d_stack_is_not_called_cine():
    """A model whose channel is named "cine" given one 3D stack: the report says "3D stack"."""
    from medcnn.report.html import render_html

    rec = {"case_id": "p1", "status": "ok", "mode": "cardiac", "input_kind": "single scan",
           "inputs": [{"phase": None, "channel": "cine", "path": "p1.nii.gz"}]}
    page = render_html({"cases": [rec]}, image_root=".")
    assert "3D stack p1.nii.gz" in page and "cine p1.nii.gz" not in page
    rec_cine = dict(rec, input_kind="cine series")
    assert "cine p1.nii.gz" in render_html({"cases": [rec_cine]}, image_root=".")
