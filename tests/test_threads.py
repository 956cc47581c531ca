"""The per-case CPU thread policy (medcnn.inference.threads): decisions by hand-computed
loads, the threads a network really runs with, restoration, and the CLI's wait policy."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medcnn.errors import ConfigError
from medcnn.inference import Segmenter, ThreadPolicy
from medcnn.inference import threads as th
from medcnn.volume import Geometry, Volume


@pytest.fixture
def fake_load(monkeypatch):
    """Drive the load monitor with given /proc/stat tick counts and own CPU times."""
    state = {"ticks": [], "cpu": [], "wall": []}

    def ticks(cpus):
        return state["ticks"].pop(0)

    monkeypatch.setattr(th, "_cpu_ticks", ticks)
    monkeypatch.setattr(th.time, "process_time", lambda: state["cpu"].pop(0))
    monkeypatch.setattr(th.time, "monotonic", lambda: state["wall"].pop(0) if state["wall"] else 1e9)
    monkeypatch.setattr(th.time, "sleep", lambda s: None)
    monkeypatch.setattr(th, "_MONITOR", th._LoadMonitor())
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(th, "_cgroup_cpu_limit", lambda: None)
    return state


@pytest.mark.parametrize("value,expected", [("auto", "auto"), (None, "auto"), ("AUTO", "auto"), (3, 3), ("2", 2)])
def test_parse_threads(value, expected):
    assert th.parse_threads(value) == expected


@pytest.mark.parametrize("value", [0, -1, "x", "1.5", 1.5, ""])
def test_parse_threads_refuses(value):
    with pytest.raises(ConfigError, match="expected threads 'auto' or an integer >= 1"):
        th.parse_threads(value)


def test_auto_takes_the_cores_other_processes_leave_free(fake_load):
    """4 usable cores; between the two samples 1 s passed, the 4 CPUs counted 400 ticks,
    300 of them busy, 1 CPU-second of which was this process: others kept 2 cores busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        fake_load["wall"] += [0.0, 1.0]  # first sample, (0.1 s wait), second sample
        fake_load["cpu"] += [10.0, 11.0]
        fake_load["ticks"] += [(1000.0, 4000.0), (1300.0, 4400.0)]
        choice = ThreadPolicy("auto").choose()
        assert choice.busy_cores == pytest.approx(4 * 300 / 400 - 1.0)  # 2.0 by hand
        assert choice.threads == 2
        assert "2.0 busy" in choice.reason
    finally:
        torch.set_num_threads(before)


def test_auto_on_an_idle_machine_uses_every_core_torch_allows(fake_load):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        fake_load["wall"] += [0.0, 2.0]
        fake_load["cpu"] += [0.0, 1.6]  # our own threads were the only load
        fake_load["ticks"] += [(0.0, 0.0), (80.0, 800.0)]
        assert ThreadPolicy().choose().threads == 4
        torch.set_num_threads(3)  # a caller's (or torch's physical-core) setting caps auto
        fake_load["wall"] += [2.5, 3.0]  # age check, sample: measured from the last sample
        fake_load["cpu"] += [1.6]
        fake_load["ticks"] += [(80.0, 1000.0)]
        assert ThreadPolicy().choose().threads == 3
    finally:
        torch.set_num_threads(before)


def test_auto_shares_cores_among_workers_and_never_drops_below_one(fake_load):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        fake_load["wall"] += [0.0, 1.0]
        fake_load["cpu"] += [0.0, 0.0]
        fake_load["ticks"] += [(0.0, 0.0), (0.0, 400.0)]
        assert ThreadPolicy(workers=2).choose().threads == 2
        fake_load["wall"] += [1.5, 2.0]  # age check, sample
        fake_load["cpu"] += [0.0]
        fake_load["ticks"] += [(400.0, 800.0)]  # everything busy with others
        choice = ThreadPolicy(workers=2).choose()
        assert choice.busy_cores == pytest.approx(4.0) and choice.threads == 1
    finally:
        torch.set_num_threads(before)


def test_load_unknown_means_the_full_share(fake_load):
    fake_load["wall"] += [0.0]
    fake_load["ticks"] += [None]
    choice = ThreadPolicy().choose()
    assert choice.busy_cores is None and "load not measured" in choice.reason
    assert choice.threads == max(1, min(torch.get_num_threads(), 4))


def test_explicit_threads_ignore_the_load(fake_load):
    choice = ThreadPolicy(3).choose()
    assert choice.threads == 3 and choice.reason == "3 thread(s) as requested"


def test_cpu_ticks_reads_this_machine():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat on this OS: the load is then taken as unknown")
    busy, total = th._cpu_ticks(set(os.sched_getaffinity(0)))
    assert 0 <= busy <= total and total > 0


def test_cgroup_quota_caps_usable_cores(monkeypatch):
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(th, "_cgroup_cpu_limit", lambda: 3.0)
    assert th.usable_cores() == 3
    monkeypatch.setattr(th, "_cgroup_cpu_limit", lambda: None)
    assert th.usable_cores() == 16


class _ThreadSpy(torch.nn.Module):
    """Records torch's thread count inside forward; predicts label 1 where x > 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(torch.get_num_threads())
        fg = (x[:, :1] > 0.5).float() * self.w
        return torch.cat([1 - fg, fg], dim=1) * 10


@pytest.mark.parametrize("requested", [1, 2])
def test_segmenter_runs_the_network_with_the_chosen_threads_and_restores(requested):
    before = torch.get_num_threads()
    spy = _ThreadSpy()
    seg = Segmenter(spy, roi_size=(8, 8, 8), in_channels=1, out_channels=2, device="cpu", precision="fp32",
                    threads=requested)
    arr = np.zeros((12, 10, 9), np.float32)
    arr[2:6, 3:7, 1:5] = 1.0
    pred = seg.predict(Volume(arr, Geometry(arr.shape, (1.0, 2.0, 3.0))))
    assert spy.seen and set(spy.seen) == {requested}
    assert pred.info["threads"]["threads"] == requested and pred.info["threads"]["requested"] == requested
    assert int(pred.labels.array.sum()) == 4 * 4 * 4
    assert torch.get_num_threads() == before


def test_cine_frames_share_one_decision():
    spy = _ThreadSpy()
    seg = Segmenter(spy, roi_size=(8, 8, 8), in_channels=1, out_channels=2, device="cpu", precision="fp32")
    calls = []
    real = seg.threads.choose
    seg.threads.choose = lambda: calls.append(1) or real()  # type: ignore[method-assign]
    arr = np.zeros((3, 8, 8, 4), np.float32)
    cine = Volume(arr, Geometry((8, 8, 4), (1.5, 1.5, 8.0)), "intensity", "time", (0.0, 30.0, 60.0))
    pred = seg.predict(cine)
    assert len(calls) == 1 and pred.info["threads"]["requested"] == "auto"
    assert len(set(spy.seen)) == 1


def test_option_errors_name_the_value():
    with pytest.raises(ConfigError, match="got 0"):
        Segmenter(_ThreadSpy(), roi_size=(8, 8, 8), in_channels=1, out_channels=2, device="cpu", threads=0)
    with pytest.raises(ConfigError, match="workers >= 1"):
        ThreadPolicy("auto", workers=0)


def _python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.strip()


def test_cli_leaves_the_wait_policy_to_the_user_and_imports_no_torch_to_parse():
    code = ("import sys, os\nfrom medcnn.cli import build_parser\nbuild_parser()\n"
            "print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    assert _python(code) == "False unset"
    assert _python(code, OMP_WAIT_POLICY="PASSIVE") == "False PASSIVE"


def test_cli_threads_option_is_parsed_and_refused_in_one_line():
    from medcnn.cli import build_parser

    p = build_parser()
    args = p.parse_args(["segment", "x.nii.gz", "--model", "m", "--out", "o", "--threads", "3"])
    assert args.threads == 3
    assert p.parse_args(["run", "x.nii.gz", "--model", "m", "--out", "o"]).threads == "auto"
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["run", "x.nii.gz", "--model", "m", "--out", "o", "--threads", "none"])
    assert exc.value.code == 2
