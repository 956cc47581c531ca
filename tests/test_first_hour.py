"""The first-hour walk-through (issue 26): `scripts/first_hour.sh` runs the demo and the CLI
examples of the README and docs on the shared data in a fresh folder and checks their outputs;
the README's demo block must be what the demo prints (issue 26, point 8)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_BLOCK = re.compile(r"<!-- demo-output:start -->\n```text\n(.*?)```\n<!-- demo-output:end -->", re.S)
_NUM = re.compile(r"[-+]?\d+\.\d+")


def readme_demo_lines() -> list[str]:
    m = README_BLOCK.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert m, "README.md has no demo-output block"
    return [ln for ln in m.group(1).splitlines() if ln.strip()]


def test_readme_demo_block_states_the_kind_of_its_figures():
    """The README's demo paragraph says what the demo's figures are, as the demo itself does
    (a training-set regression check when the model trained on the demo's patients, a
    selection figure when they shaped its recipe), matching the bundle's record."""
    from medcnn.cli.demo import _bundle_facts

    text = (REPO / "README.md").read_text(encoding="utf-8")
    block_at = text.index("<!-- demo-output:start -->")
    before = text[max(0, block_at - 1400):block_at]
    lines = readme_demo_lines()
    _, trained_on, shaped = _bundle_facts("cardiac-cine-mri")
    if any(p.startswith("SCD") for p in trained_on):
        assert "training-set regression check" in before and "not a validation" in before
        assert "was trained on these" in lines[1]
    else:
        assert any(p.startswith("SCD") for p in shaped)
        assert "selection" in before and "not an external test" in before
        assert "selection figure, not an external test" in lines[1]
    lines = readme_demo_lines()
    n = int(re.search(r"\((\d+) case\(s\)\)", lines[0]).group(1))
    assert len([ln for ln in lines if re.match(r"  \S+\s+EDV", ln)]) == n


def compare_demo_output(printed: str, readme: list[str], *, tol: float = 0.3) -> list[str]:
    """Differences between the demo's stdout and the README block: same lines, numbers within
    ``tol`` (inference on another CPU may move a volume by a voxel or two)."""
    got = [ln for ln in printed.splitlines() if ln.strip() and not ln.startswith("report:")]
    problems = []
    if len(got) != len(readme):
        return [f"{len(got)} lines printed, {len(readme)} in the README"]
    for a, b in zip(got, readme):
        if _NUM.sub("#", a) != _NUM.sub("#", b):
            problems.append(f"printed {a!r}, README {b!r}")
            continue
        for x, y in zip(_NUM.findall(a), _NUM.findall(b)):
            if abs(float(x) - float(y)) > tol:
                problems.append(f"printed {a!r}, README {b!r}")
                break
    return problems


@pytest.mark.slow
def test_first_hour_walkthrough(shared_data, tmp_path):
    out = tmp_path / "first-hour"
    env = dict(os.environ, PYTHON=sys.executable, MEDCNN_DATA=str(shared_data),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(["bash", str(REPO / "scripts" / "first_hour.sh"), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "FAIL" not in proc.stdout and re.search(r"first hour: \d+ checks passed, 0 failed", proc.stdout)
    problems = compare_demo_output((out / "demo.stdout").read_text(encoding="utf-8"), readme_demo_lines())
    assert not problems, "README demo block differs from what the demo prints:\n" + "\n".join(problems)


def test_demo_counts_cases_not_inputs(shared_data, tmp_path):
    """The demo announces cases: one cine DICOM series + one per manifest row (4 Sunnybrook
    pairs), not the 2 inputs (a folder and a manifest) it hands to the batch."""
    from medcnn.cli.demo import count_cases, demo_cases

    scans = demo_cases(shared_data, tmp_path)
    n_cine = len([p for p in (shared_data / "sunnybrook" / "dicom").iterdir() if p.is_dir()])
    n_pairs = len(list((shared_data / "sunnybrook" / "nifti").glob("*_ES.nii.gz")))
    assert len(scans) == 2 and count_cases(scans) == (n_cine, n_pairs) == (1, 4)


def test_demo_case_line_gives_the_experts_ef_and_a_signed_error():
    from medcnn.cli.demo import case_line

    rec = {"case_id": "P1_pair", "cardiac": {"lv_edv_ml": 200.0, "lv_esv_ml": 150.0, "lv_ef_percent": 25.0},
           "volumes": [{"phase": "ED", "label": 1, "label_name": "lv_blood_pool", "reference_volume_ml": 190.0},
                       {"phase": "ES", "label": 1, "label_name": "lv_blood_pool", "reference_volume_ml": 133.0}]}
    # experts: (190 - 133) / 190 = 30.0 %; model 25.0 %: -5.0 points
    assert "(experts  30.0 %,  -5.0 points)" in case_line(rec)
