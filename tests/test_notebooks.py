"""The research notebooks run top to bottom and give the right numbers.

Each notebook in ``notebooks/`` is executed with nbclient in a kernel that runs *this*
interpreter (a kernelspec written to a temporary folder, so nothing depends on what is
installed system-wide and no network is needed). Its last cell, tagged ``results``, prints
a JSON dict of key numbers; the tests below check them against independent references:
files read with nibabel and counted with numpy, the data's own reference tables, hand
calculations of the published formulas.

The committed notebooks must carry no outputs (``scripts/strip_notebooks.py``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NOTEBOOK_NAMES = ("01_quickstart", "02_cardiac_function", "03_tumour_volumetry", "04_validation")

nbformat = pytest.importorskip("nbformat")


def _strip_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("strip_notebooks", REPO / "scripts" / "strip_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------- fast checks
def test_every_expected_notebook_exists():
    present = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    missing = [n for n in NOTEBOOK_NAMES if n not in present]
    assert not missing, f"missing notebooks: {missing}"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebook_is_stripped_and_valid(path):
    strip = _strip_module()
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert strip.is_stripped(nb) == [], f"{path.name}: run python scripts/strip_notebooks.py"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    tagged = [c for c in nb.cells if "results" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and nb.cells[-1] is tagged[0], f"{path.name}: the last cell must be the 'results' cell"


def test_strip_script_removes_outputs(tmp_path):
    strip = _strip_module()
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    cell = new_code_cell("print(1)", execution_count=3, outputs=[new_output("stream", name="stdout", text="1\n")])
    cell.metadata["execution"] = {"iopub.status.busy": "x"}
    p = tmp_path / "x.ipynb"
    nbformat.write(new_notebook(cells=[cell], metadata={"widgets": {}}), p)
    assert strip.main(["--check", str(p)]) == 1
    assert strip.main([str(p)]) == 0
    nb = nbformat.read(p, as_version=4)
    assert nb.cells[0].outputs == [] and nb.cells[0].execution_count is None
    assert "execution" not in nb.cells[0].metadata and "widgets" not in nb.metadata
    assert nb.cells[0].source == "print(1)"
    assert strip.main(["--check", str(p)]) == 0


# ---------------------------------------------------------------------------- execution
@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory):
    """A kernelspec that starts this interpreter (the project venv) with ipykernel."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / "medcnn-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "medcnn test kernel", "language": "python"}))
    scratch = root / "tmp"  # the notebooks' tempfile outputs land here, inside pytest's tmp folder
    scratch.mkdir()
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "TMPDIR")}
    os.environ["JUPYTER_PATH"] = str(root) + (os.pathsep + saved["JUPYTER_PATH"] if saved["JUPYTER_PATH"] else "")
    os.environ["TMPDIR"] = str(scratch)
    yield "medcnn-test"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_RUNS: dict[str, dict] = {}


def run_notebook(name: str, kernel: str) -> dict:
    """Execute ``notebooks/<name>.ipynb`` once per session; return its parsed results."""
    if name in _RUNS:
        return _RUNS[name]
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from medcnn._testing import require_shared_data

    require_shared_data()
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    env_backup = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    t0 = time.perf_counter()
    try:
        NotebookClient(nb, timeout=600, kernel_name=kernel,
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{str(exc)[-3000:]}")
    finally:
        if env_backup is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backup
    wall = time.perf_counter() - t0
    cell = nb.cells[-1]
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    results = json.loads(text)
    results["_wall_s"] = wall
    _RUNS[name] = results
    return results


# ---------------------------------------------------------------------------- 03 tumour
REGIONS = {"whole tumour (1+2+3+4)": [1, 2, 3, 4], "tumour core (1+3+4)": [1, 3, 4], "enhancing tumour (4)": [4]}


@pytest.mark.realdata
def test_03_tumour_volumes_match_an_independent_count(kernel_name):
    import nibabel as nib

    res = run_notebook("03_tumour_volumetry", kernel_name)
    from medcnn._testing import require_shared_data

    img = nib.load(require_shared_data("brats2015", res["case"], "OTMultiClass.nii.gz"))
    raw = np.asarray(img.dataobj)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    assert res["voxel_volume_ml"] == pytest.approx(voxel_ml)
    for name, values in REGIONS.items():
        n = int(np.isin(raw, values).sum())
        assert res["region_voxel_count"][name] == n
        assert res["region_volume_ml"][name] == pytest.approx(n * voxel_ml, abs=1e-9)
    # nested regions: ET within TC within WT
    v = res["region_volume_ml"]
    assert v["enhancing tumour (4)"] < v["tumour core (1+3+4)"] < v["whole tumour (1+2+3+4)"]
    assert res["largest_lesion_ml"] <= v["whole tumour (1+2+3+4)"]
    if res["model_available"]:  # the four-sequence region model on a BraTS 2018 case
        m = res["model_regions"]
        case = require_shared_data("brats2018", m["case"])
        ref = np.asarray(nib.load(case / f"{m['case']}_seg.nii.gz").dataobj)
        pred_img = nib.load(m["labels_file"])
        pred = np.asarray(pred_img.dataobj)
        assert pred.shape == ref.shape  # on the input grid
        vox = float(np.prod(pred_img.header.get_zooms()[:3])) / 1000.0
        for name, values in {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}.items():
            r = m["regions"][name]
            assert r["ref_volume_ml"] == pytest.approx(np.isin(ref, values).sum() * vox, abs=1e-9)
            assert r["pred_volume_ml"] == pytest.approx(np.isin(pred, values).sum() * vox, abs=1e-9)
            p, q = np.isin(pred, values), np.isin(ref, values)
            assert r["dice"] == pytest.approx(2 * (p & q).sum() / (p.sum() + q.sum()))
        # aligned with the scan (quality is measured by the cross-validation, not here)
        assert m["regions"]["WT"]["dice"] > 0.5
        assert set(np.unique(pred)) <= {0, 1, 2, 4}  # BraTS's label convention
        assert m["cv_mean_over_folds"]["whole_tumour.dice"] > 0
    else:
        assert res["model_regions"] is None


@pytest.mark.realdata
def test_03_response_categories_and_doubling_times_by_hand(kernel_name):
    res = run_notebook("03_tumour_volumetry", kernel_name)
    days = res["interval_days"]
    expected = {"shrunk 8 mm": "PR", "shrunk 2 mm": "SD", "grown 1 mm": "SD",
                "grown 1 mm + new 6 mm lesion": "PD", "grown 5 mm": "PD"}
    assert set(res["scenarios"]) == set(expected)
    pr, pd_ = (0.7 ** 3 - 1) * 100, (1.2 ** 3 - 1) * 100  # RECIST 1.1 diameters -> sphere volumes
    for name, row in res["scenarios"].items():
        b, f = row["baseline_volume_ml"], row["followup_volume_ml"]
        assert b == pytest.approx(res["region_volume_ml"]["whole tumour (1+2+3+4)"])
        assert row["change_percent"] == pytest.approx((f - b) / b * 100)
        assert row["vdt_days"] == pytest.approx(days * math.log(2) / math.log(f / b))
        hand = "PD" if (row["n_new"] > 0 or row["change_percent"] >= pd_) else (
            "PR" if row["change_percent"] <= pr else "SD")
        assert row["category"] == hand == expected[name], name
    s = res["scenarios"]
    assert s["shrunk 8 mm"]["followup_volume_ml"] < s["shrunk 2 mm"]["followup_volume_ml"] < \
        s["grown 1 mm"]["followup_volume_ml"] < s["grown 5 mm"]["followup_volume_ml"]
    # the new lesion is a ball of radius 6 mm on a 1 mm grid: about 4/3 pi 6^3 = 0.905 mL
    added = s["grown 1 mm + new 6 mm lesion"]["followup_volume_ml"] - s["grown 1 mm"]["followup_volume_ml"]
    assert added == pytest.approx(4 / 3 * math.pi * 6 ** 3 / 1000, rel=0.05)


# ---------------------------------------------------------------------------- 02 cardiac
def _cyclic_distance(a: int, b: int, n: int) -> int:
    d = abs(int(a) - int(b)) % n
    return min(d, n - d)


@pytest.mark.realdata
@pytest.mark.slow  # segments 20 cine frames with the default model: ~40-70 s on 2 CPU cores
def test_02_reference_function_reproduces_the_published_reference(kernel_name):
    import nibabel as nib

    from medcnn._testing import require_shared_data

    res = run_notebook("02_cardiac_function", kernel_name)
    root = require_shared_data("sunnybrook")
    ref = {r["patient_id"]: r for r in json.loads((root / "reference.json").read_text())}[res["patient"]]
    # reference.json (computed by the data's authors from the filled contours)
    assert res["reference_function"]["edv_ml"] == pytest.approx(ref["ED"]["LV_bloodpool_mL"], rel=1e-5)
    assert res["reference_function"]["esv_ml"] == pytest.approx(ref["ES"]["LV_bloodpool_mL"], rel=1e-5)
    assert res["reference_function"]["ef_percent"] == pytest.approx(ref["EF_percent_from_contours"], rel=1e-5)
    # and a count of our own with nibabel
    for phase, key in (("ED", "edv_ml"), ("ES", "esv_ml")):
        img = nib.load(root / "nifti" / f"{res['patient']}_{phase}_gt.nii.gz")
        n = int((np.asarray(img.dataobj) == 1).sum())
        assert res["reference_function"][key] == pytest.approx(n * np.prod(img.header.get_zooms()[:3]) / 1000,
                                                                rel=1e-5)
    assert res["n_frames"] == ref["n_phases"] == len(res["frame_times_ms"])
    assert np.all(np.diff(res["frame_times_ms"]) > 0)


@pytest.mark.realdata
@pytest.mark.slow  # segments 20 cine frames with the default model: ~40-70 s on 2 CPU cores
def test_02_cine_function_finds_ed_es_and_consistent_numbers(kernel_name):
    from medcnn._testing import require_shared_data

    res = run_notebook("02_cardiac_function", kernel_name)
    root = require_shared_data("sunnybrook")
    ref = {r["patient_id"]: r for r in json.loads((root / "reference.json").read_text())}[res["patient"]]
    f = res["function"]
    curve = np.asarray(res["curve_lv_volume_ml"])
    # ED/ES are the extremes of the curve; SV and EF follow from EDV and ESV
    assert f["edv_ml"] == pytest.approx(curve.max()) and f["ed_frame"] == int(np.argmax(curve))
    assert f["esv_ml"] == pytest.approx(curve[curve > 0].min())
    assert f["sv_ml"] == pytest.approx(f["edv_ml"] - f["esv_ml"])
    assert f["ef_percent"] == pytest.approx((f["edv_ml"] - f["esv_ml"]) / f["edv_ml"] * 100)
    # heart rate from the frame times: 20 frames spanning one R-R interval
    t = np.asarray(res["frame_times_ms"])
    rr = t[-1] - t[0] + np.median(np.diff(t))
    assert f["heart_rate_bpm"] == pytest.approx(60000 / rr)
    assert f["cardiac_output_l_per_min"] == pytest.approx(f["sv_ml"] * 60000 / rr / 1000)
    n = res["n_frames"]
    if res["model_available"]:
        # the default model: ED/ES within 2 frames of the experts' choice, EF within 10 points
        # of the reference on the slices the experts contoured, LV Dice > 0.8 there
        assert _cyclic_distance(f["ed_frame"], ref["ED"]["phase_0based"], n) <= 2
        assert _cyclic_distance(f["es_frame"], ref["ES"]["phase_0based"], n) <= 2
        assert abs(res["function_contoured_slices"]["ef_percent"] - ref["EF_percent_from_contours"]) < 10
        assert res["dice_lv_ed"] > 0.8 and res["dice_lv_es"] > 0.8
    else:
        # fallback: the reference contours at their frames give back the reference exactly
        assert (f["ed_frame"], f["es_frame"]) == (ref["ED"]["phase_0based"], ref["ES"]["phase_0based"])
        assert f["ef_percent"] == pytest.approx(ref["EF_percent_from_contours"], rel=1e-9)
        assert res["dice_lv_ed"] == res["dice_lv_es"] == 1.0
        assert "LV_EMPTY_FRAMES" in res["qc_codes"]


# ---------------------------------------------------------------------------- 01 quickstart
@pytest.mark.realdata
def test_01_quickstart_volumes_and_overlap(kernel_name):
    import nibabel as nib

    from medcnn._testing import require_shared_data

    res = run_notebook("01_quickstart", kernel_name)
    img = nib.load(require_shared_data("hippocampus", "labelsTr", f"{res['case']}.nii.gz"))
    raw = np.asarray(img.dataobj)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000
    assert res["voxel_volume_ml"] == pytest.approx(voxel_ml)
    for label in ("1", "2"):
        assert res["reference_volume_ml"][label] == pytest.approx((raw == int(label)).sum() * voxel_ml)
    assert res["saved_geometry_matches"] is True
    if res["model_available"]:
        # the default model on a case its training did not see
        assert res["case_in_training_set"] is False
        for label in ("1", "2"):
            assert res["dice"][label] > 0.7, res["dice"]
            assert res["volume_ml"][label] == pytest.approx(res["reference_volume_ml"][label], rel=0.3)
    else:
        assert res["dice"] == {"1": 1.0, "2": 1.0}
        assert res["volume_ml"] == res["reference_volume_ml"]


# ---------------------------------------------------------------------------- 04 validation
def _icc_by_hand(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """ICC(2,1) and ICC(3,1) of two raters from the two-way ANOVA (Shrout & Fleiss 1979)."""
    t = np.c_[x, y]
    n, k = t.shape
    gm = t.mean()
    msr = k * ((t.mean(1) - gm) ** 2).sum() / (n - 1)
    msc = n * ((t.mean(0) - gm) ** 2).sum() / (k - 1)
    mse = (((t - gm) ** 2).sum() - msr * (n - 1) - msc * (k - 1)) / ((n - 1) * (k - 1))
    return ((msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n), (msr - mse) / (msr + (k - 1) * mse))


@pytest.mark.realdata
def test_04_toy_spheres_and_spacing_match_closed_forms(kernel_name):
    import nibabel as nib

    from medcnn._testing import require_shared_data

    res = run_notebook("04_validation", kernel_name)
    R, D = 10.0, 2.0
    lens = math.pi * (4 * R + D) * (2 * R - D) ** 2 / 12
    assert res["toy"]["dice"] == pytest.approx(lens / (4 / 3 * math.pi * R ** 3), rel=0.01)
    assert res["toy"]["hd_mm"] == pytest.approx(D, abs=0.5)       # 0.5 mm grid
    assert res["toy"]["nsd_3mm"] == 1.0 and res["toy"]["nsd_1mm"] < 1.0
    img = nib.load(require_shared_data("sunnybrook", "nifti", "SCD0000101_ED_gt.nii.gz"))
    zooms = img.header.get_zooms()[:3]
    assert res["shift"]["in_plane"]["hd_mm"] == pytest.approx(zooms[0], rel=1e-5)
    assert res["shift"]["through_plane"]["hd_mm"] == pytest.approx(zooms[2], rel=1e-5)
    assert res["shift"]["through_plane"]["dice"] < res["shift"]["in_plane"]["dice"]


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # surface-distance uses scipy.ndimage.morphology
def test_04_surface_metrics_agree_with_deepmind_surface_distance(kernel_name):
    import nibabel as nib

    sd = pytest.importorskip("surface_distance")
    from medcnn._testing import require_shared_data

    res = run_notebook("04_validation", kernel_name)
    rows = {(r["case_id"], r["label"]): r for r in res["per_case"]}
    assert len(rows) == 2 * res["n_cases"]
    assert res["cli_rows_matching_python"] == len(rows)  # `medcnn validate` gave the same numbers
    for case_id in res["case_ids"][:6]:
        ref_img = nib.load(require_shared_data("hippocampus", "labelsTr", f"{case_id}.nii.gz"))
        ref = np.asarray(ref_img.dataobj)
        pred = np.asarray(nib.load(Path(res["prediction_dir"]) / f"{case_id}_pred.nii.gz").dataobj)
        spacing = tuple(float(s) for s in ref_img.header.get_zooms()[:3])
        for name, value in (("anterior", 1), ("posterior", 2)):
            row = rows[(case_id, name)]
            r, p = ref == value, pred == value
            assert row["ref_volume_ml"] == pytest.approx(r.sum() * np.prod(spacing) / 1000)
            assert row["dice"] == pytest.approx(2 * (r & p).sum() / (r.sum() + p.sum()))
            d = sd.compute_surface_distances(r, p, spacing)
            assert row["hd_mm"] == pytest.approx(sd.compute_robust_hausdorff(d, 100), abs=1e-6)
            assert row["hd95_mm"] == pytest.approx(sd.compute_robust_hausdorff(d, 95), abs=1e-6)
            assert row["nsd"] == pytest.approx(sd.compute_surface_dice_at_tolerance(d, 1.0), abs=1e-6)
            a, b = sd.compute_average_surface_distance(d)
            ga, pa = d["surfel_areas_gt"].sum(), d["surfel_areas_pred"].sum()
            assert row["assd_mm"] == pytest.approx((a * ga + b * pa) / (ga + pa), abs=1e-6)


@pytest.mark.realdata
def test_04_agreement_statistics_by_hand(kernel_name):
    from scipy import stats

    res = run_notebook("04_validation", kernel_name)
    for name in ("anterior", "posterior"):
        rows = [r for r in res["per_case"] if r["label"] == name]
        ref = np.array([r["ref_volume_ml"] for r in rows])
        pred = np.array([r["pred_volume_ml"] for r in rows])
        a = res["agreement"][name]
        diff = pred - ref
        assert a["bias"] == pytest.approx(diff.mean())
        assert a["sd_diff"] == pytest.approx(diff.std(ddof=1))
        assert a["loa_upper"] == pytest.approx(diff.mean() + 1.96 * diff.std(ddof=1))
        assert a["pearson_r"] == pytest.approx(stats.pearsonr(pred, ref)[0])
        icc2, icc3 = _icc_by_hand(ref, pred)
        assert a["icc_a1"] == pytest.approx(icc2) and a["icc_c1"] == pytest.approx(icc3)
        ccc = 2 * np.cov(pred, ref, ddof=0)[0, 1] / (pred.var() + ref.var() + (pred.mean() - ref.mean()) ** 2)
        assert a["lin_ccc"] == pytest.approx(ccc)
        assert a["bias"] > 0  # the simulated method over-segments on average
    # a constant offset: correlation and consistency unchanged, absolute agreement drops
    o = res["offset"]
    m, moved = o["method"], o["method + 0.3 mL"]
    assert moved["pearson_r"] == pytest.approx(m["pearson_r"])
    assert moved["ICC(3,1) consistency"] == pytest.approx(m["ICC(3,1) consistency"])
    assert moved["ICC(2,1) agreement"] < m["ICC(2,1) agreement"] and moved["lin_ccc"] < m["lin_ccc"]
    assert moved["bias_ml"] == pytest.approx(m["bias_ml"] + 0.3)
    # empty-structure policies: the image diagonal vs NaN
    e = res["empty_policy"]
    assert e["best-worst"]["dice"] == 0 and e["best-worst"]["hd95_mm"] == pytest.approx(res["diagonal_mm"])
    assert math.isnan(e["best-nan"]["hd95_mm"])


# ---------------------------------------------------------------------------- docs/api.md
def _api_snippet() -> str:
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    start = text.index("```python\n") + len("```python\n")
    return text[start:text.index("```", start)]


def test_api_doc_snippet_uses_real_names():
    """Every name the ten-line example imports exists (no torch import needed to check)."""
    import ast
    import importlib

    tree = ast.parse(_api_snippet())
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert imports
    for node in imports:
        if node.module == "medcnn.inference":
            pytest.importorskip("torch")
        mod = importlib.import_module(node.module)
        for alias in node.names:
            assert hasattr(mod, alias.name), f"{node.module}.{alias.name}"


@pytest.mark.realdata
def test_api_doc_snippet_runs(tmp_path):
    from medcnn.batch import bundled_names
    from medcnn._testing import require_shared_data

    if "hippocampus-mri" not in bundled_names():
        pytest.skip("default bundle hippocampus-mri not installed")
    scan = require_shared_data("hippocampus", "imagesTr", "hippocampus_017.nii.gz")
    code = _api_snippet().replace('"case01.nii.gz"', repr(str(scan))).replace(
        '"case01_labels.nii.gz"', repr(str(tmp_path / "labels.nii.gz")))
    namespace: dict = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    assert (tmp_path / "labels.nii.gz").exists()
    assert namespace["pred"].labels.geometry.isclose(namespace["scan"].geometry)
