"""The README's examples run: the ten-line Python API and every CLI command it lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medcnn.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_cli_command_in_the_readme_exists():
    text = README.read_text()
    listed = set(re.findall(r"^\| `medcnn ([a-z-]+)", text, flags=re.M))
    sub = next(a for a in build_parser()._actions if getattr(a, "choices", None))
    assert listed and listed <= set(sub.choices), listed - set(sub.choices)
    assert "make demo" in text and "make test" in text


@pytest.mark.realdata
def test_ten_line_api_example_runs(tmp_path, monkeypatch, capsys):
    from medcnn._testing import require_shared_data

    case = require_shared_data("hippocampus", "imagesTr", "hippocampus_017.nii.gz")
    code = re.search(r"## Python API in 10 lines\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 10
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace('"case01.nii.gz"', repr(str(case))), "README", "exec"), {})
    out = capsys.readouterr().out
    assert "volume_ml" in out and "anterior" in out
    assert (tmp_path / "case01_labels.nii.gz").is_file()
