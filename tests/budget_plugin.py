"""A time budget for the test suite, so a slow test is caught by the change that adds it.

CI (``.ci/run``) has 90 minutes on a 2-core machine that may lack native bf16 (where bf16
autocast is emulated and ~10x slower than fp32). This plugin fails the run, naming the
slowest tests, when

* the whole session takes longer than ``MEDCNN_TEST_BUDGET_S`` seconds (default 2700: half the CI limit), or
* any single test (setup + call + teardown, so a module fixture counts against the first
  test that uses it) takes longer than ``MEDCNN_TEST_MAX_S`` seconds (default 420).

Set either variable to ``0`` to switch that check off (e.g. under a debugger).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import pytest

DEFAULT_BUDGET_S = 2700.0
DEFAULT_MAX_S = 420.0
_SHOWN = 10

_durations: dict[str, float] = defaultdict(float)
_state: dict[str, object] = {}


def _limit(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        raise pytest.UsageError(f"{name}: expected a number of seconds, got {raw!r}") from None


def pytest_sessionstart(session):
    _durations.clear()
    _state.clear()
    _state["t0"] = time.perf_counter()
    _state["budget_s"] = _limit("MEDCNN_TEST_BUDGET_S", DEFAULT_BUDGET_S)
    _state["max_s"] = _limit("MEDCNN_TEST_MAX_S", DEFAULT_MAX_S)


def pytest_runtest_logreport(report):
    _durations[report.nodeid] += report.duration


def pytest_sessionfinish(session, exitstatus):
    if "t0" not in _state:
        return
    total = time.perf_counter() - float(_state["t0"])
    budget, max_s = float(_state["budget_s"]), float(_state["max_s"])
    slowest = sorted(_durations.items(), key=lambda kv: -kv[1])[:_SHOWN]
    problems = []
    if budget > 0 and total > budget:
        problems.append(f"the suite took {total:.0f} s, over its budget of {budget:.0f} s (MEDCNN_TEST_BUDGET_S)")
    over = [(n, d) for n, d in _durations.items() if max_s > 0 and d > max_s]
    for n, d in sorted(over, key=lambda kv: -kv[1]):
        problems.append(f"{n} took {d:.0f} s, over the per-test limit of {max_s:.0f} s (MEDCNN_TEST_MAX_S)")
    _state["problems"] = problems
    _state["slowest"] = slowest
    if problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    problems = _state.get("problems") or []
    if not problems:
        return
    tr = terminalreporter
    tr.section("medcnn test time budget exceeded", sep="!", red=True, bold=True)
    for p in problems:
        tr.line(f"TIME BUDGET: {p}", red=True, bold=True)
    tr.line("slowest tests (setup + call + teardown):")
    for n, d in _state.get("slowest") or []:
        tr.line(f"  {d:8.1f} s  {n}")
