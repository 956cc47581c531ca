"""`medcnn models list` is one line per model, `models show` the full card (issue 26, point 9):
task or what the bundle lacks, data, licence (the BraTS-trained model is non-commercial too),
training / selection / test, each figure with its kind, how its Dice averages are formed and
signed errors recomputed here from the per-case records of bundle.json."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from medcnn.cli import main
from medcnn.models.defaults import bundled_names, default_bundles_dir

NAMES = bundled_names()
pytestmark = pytest.mark.skipif(not NAMES, reason="default bundles not installed (medcnn/bundles is empty)")


def _show(name: str, capsys) -> str:
    assert main(["models", "show", name, "--no-verify"]) == 0
    return capsys.readouterr().out


def test_list_is_one_line_per_model_and_differs_from_show(capsys):
    assert main(["models", "list", "--no-verify"]) == 0
    listed = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    models = [ln for ln in listed if not ln.startswith("(")]
    assert [ln.split()[0] for ln in models] == NAMES
    for name, line in zip(NAMES, models):
        shown = _show(name, capsys)
        assert line not in shown and len(shown.splitlines()) > 8


@pytest.mark.parametrize("name", NAMES)
def test_show_never_prints_the_old_confusing_lines(name, capsys):
    out = _show(name, capsys)
    assert "task        unspecified" not in out
    assert "entries" not in out                      # "cases: 1 entries"
    assert "validation  none recorded" not in out    # then a cross-validation line
    assert "(1 cases)" not in out
    assert re.search(r"^  licence     \S", out, re.M)   # every model states a licence line
    assert re.search(r"^  task        \S", out, re.M)


def test_brats_trained_model_is_non_commercial_in_list_and_show(capsys):
    if "brain-tumour-mri" not in NAMES:
        pytest.skip("brain-tumour-mri not installed")
    out = _show("brain-tumour-mri", capsys)
    lic = next(ln for ln in out.splitlines() if ln.startswith("  licence"))
    assert "non-commercial" in lic and "CC BY-NC-SA" in lic
    assert main(["models", "list", "--no-verify"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("brain-tumour-mri"))
    assert "non-commercial" in line


def test_hippocampus_task_says_what_the_bundle_lacks(capsys):
    if "hippocampus-mri" not in NAMES:
        pytest.skip("hippocampus-mri not installed")
    task = next(ln for ln in _show("hippocampus-mri", capsys).splitlines() if ln.startswith("  task"))
    assert "not recorded" in task and "volumes" in task


@pytest.mark.parametrize("name", NAMES)
def test_signed_volume_error_and_dice_averaging_match_the_per_case_records(name, capsys):
    out = _show(name, capsys)
    prov = json.loads((default_bundles_dir() / name / "bundle.json").read_text())["provenance"]
    for key in ("validation", "regression_check"):
        fig = prov.get(key) or {}
        cases = [c for c in fig.get("cases") or [] if c.get("foreground_ref_volume_ml")]
        if not cases:
            continue
        signed = np.mean([100 * (c["foreground_volume_ml"] - c["foreground_ref_volume_ml"])
                          / c["foreground_ref_volume_ml"] for c in cases])
        block = out.split(f"  figure      {key}:")[1].split("\n  figure ")[0]
        assert f"mean signed error {signed:+.1f} % (predicted - reference" in block
        assert f"mean |error| {fig['mean_foreground_volume_error_percent']:.1f} %" in block
        fg = np.mean([c["foreground_dice"] for c in fig["cases"]])
        assert f"foreground Dice {fg:.3f} (mean over cases of the Dice of the union" in block
        assert "per-label Dice (mean over cases" in block


def test_cardiac_ef_errors_are_signed_per_patient_with_their_kind(capsys):
    if "cardiac-cine-mri" not in NAMES:
        pytest.skip("cardiac-cine-mri not installed")
    out = _show("cardiac-cine-mri", capsys)
    prov = json.loads((default_bundles_dir() / "cardiac-cine-mri" / "bundle.json").read_text())["provenance"]
    figures = [(k, prov[k]) for k in ("validation", "regression_check") if k in prov]
    if "external" in prov.get("validation", {}):
        figures.append(("validation.external", prov["validation"]["external"]))
    assert figures
    for key, fig in figures:
        block = out.split(f"  figure      {key}:")[1].split("\n  figure ")[0]
        assert block.splitlines()[0].strip().startswith(fig["kind"]), (key, block.splitlines()[0])
        for e in fig.get("ejection_fraction") or []:
            assert f"{e['patient']} {e['ef_percent'] - e['ref_ef_percent']:+.1f}" in block
