"""Two-process CPU data-parallel training (torchrun, gloo) produces one bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from test_train_loop import make_dataset  # noqa: E402


@pytest.mark.slow  # training in two torchrun processes (~16 s on 2 cores)
def test_torchrun_two_processes_gloo(tmp_path):
    cfg = make_dataset(tmp_path)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "medcnn", "train", "--config", str(cfg), "--out", str(out), "--max-steps", "4", "--device", "cpu",
           "--no-progress", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundles = list(out.rglob("bundle.json"))
    assert len(bundles) == 1
    prov = json.loads(bundles[0].read_text())["provenance"]
    assert prov["training"]["world_size"] == 2
    # rank 0 alone wrote the log: one row per step
    assert len((out / "log.csv").read_text().strip().splitlines()) == 1 + 4
    assert proc.stdout.count("bundle:") == 1
