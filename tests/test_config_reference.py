"""docs/configuration.md is generated from the config dataclasses and must match the code."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", REPO / "scripts" / "gen_config_reference.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_config_reference"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_configuration_md_is_up_to_date():
    gen = _generator()
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == gen.render(), "docs/configuration.md is stale: run python scripts/gen_config_reference.py"


def test_every_key_of_every_config_class_is_documented_with_a_meaning():
    gen = _generator()
    text = gen.render()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) >= 4 and cells[3] not in ("", "—"), f"no meaning for {cells[0]}"
    # every field of every listed class (and its nested sections) appears as a key
    for target, _ in gen.CONFIG_CLASSES:
        cls = gen._load(target)
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in text or f"`.{f.name}`" in text or f".{f.name}`" in text, f"{cls.__name__}.{f.name}"


def test_train_config_defaults_in_the_document_match_a_fresh_instance():
    """The defaults column is what the dataclass really uses (checked against an instance, not the generator)."""
    from medcnn.train.loop import OptimConfig

    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    o = OptimConfig()
    for f in dataclasses.fields(o):
        assert f"| `optim.{f.name}` |" in text
        line = next(line for line in text.splitlines() if line.startswith(f"| `optim.{f.name}` |"))
        assert f"`{getattr(o, f.name)!r}`" in line


def test_check_mode_reports_a_stale_file(tmp_path):
    gen = _generator()
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert gen.main(["--check", "--output", str(stale)]) == 1
    assert gen.main(["--output", str(stale)]) == 0
    assert gen.main(["--check", "--output", str(stale)]) == 0


def test_stale_supplement_entries_are_refused(monkeypatch):
    gen = _generator()
    monkeypatch.setitem(gen.SUPPLEMENT, "TrainConfig.no_such_key", "x")
    with pytest.raises(SystemExit, match="no_such_key"):
        gen.render()
