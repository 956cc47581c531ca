"""The suite's time-budget guard (tests/budget_plugin.py) fails a run that is too slow and
names the slow test; within budget it changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_sleepy.py").write_text(
        "import time\n\ndef test_quick():\n    pass\n\ndef test_sleepy_one():\n    time.sleep(0.6)\n")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCNN_TEST_")}
    full_env.update(env, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "budget_plugin", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_sleepy.py")],
                          capture_output=True, text=True, env=full_env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("env, what", [({"MEDCNN_TEST_MAX_S": "0.3"}, "per-test limit"),
                                       ({"MEDCNN_TEST_BUDGET_S": "0.3"}, "over its budget")])
def test_a_slow_test_fails_the_run_and_is_named(tmp_path, env, what):
    proc = _run(tmp_path, **env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "2 passed" in out, "the tests themselves passed; the budget failed the run"
    assert "TIME BUDGET" in out and what in out, out
    assert "test_sleepy_one" in out.split("slowest tests")[1].splitlines()[1], "slowest test listed first"


def test_within_budget_the_run_passes(tmp_path):
    proc = _run(tmp_path, MEDCNN_TEST_MAX_S="30", MEDCNN_TEST_BUDGET_S="60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TIME BUDGET" not in proc.stdout


def test_a_malformed_budget_is_a_usage_error(tmp_path):
    proc = _run(tmp_path, MEDCNN_TEST_MAX_S="ten")
    assert proc.returncode == 4 and "MEDCNN_TEST_MAX_S" in proc.stdout + proc.stderr
