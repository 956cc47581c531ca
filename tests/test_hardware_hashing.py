"""The one CPU-facts reader and the one file hasher, against independent references
(``lscpu``, ``sha256sum``, hashlib on the whole file), and lean enough for the inference core."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import pytest

from medcnn.hardware import SPEED_FLAGS, cpu_facts, cpu_flags, cpu_model
from medcnn.hashing import file_sha256


@pytest.mark.skipif(shutil.which("lscpu") is None, reason="lscpu not installed")
def test_cpu_flags_and_model_agree_with_lscpu():
    out = subprocess.run(["lscpu"], capture_output=True, text=True, env={"LC_ALL": "C"}).stdout
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in out.splitlines() if ":" in ln)}
    if "Flags" not in fields:
        pytest.skip("lscpu prints no Flags line here")
    have = set(fields["Flags"].split())
    assert cpu_flags() == [f for f in SPEED_FLAGS if f in have]
    if "Model name" in fields:
        assert cpu_model() == fields["Model name"]
    line = cpu_facts()
    assert line.startswith(cpu_model()) and "CPUs, flags: " in line


def test_file_sha256_equals_hashlib_and_sha256sum(tmp_path):
    p = tmp_path / "w.bin"
    data = bytes(range(256)) * 9000 + b"tail"  # more than one chunk, not a multiple of it
    p.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert file_sha256(p) == want
    assert file_sha256(p, chunk_bytes=7) == want
    if shutil.which("sha256sum"):
        assert subprocess.run(["sha256sum", str(p)], capture_output=True, text=True).stdout.split()[0] == want


def test_report_and_training_hash_through_the_same_function(tmp_path):
    from medcnn.report.provenance import file_sha256 as report_sha
    from medcnn.train.datasets import file_digest

    p = tmp_path / "x"
    p.write_bytes(b"medcnn")
    assert report_sha is file_sha256
    assert file_digest(p) == file_sha256(p) == hashlib.sha256(b"medcnn").hexdigest()


def test_both_modules_import_nothing_beyond_the_standard_library():
    code = ("import sys; import medcnn; before = set(sys.modules); import medcnn.hashing, medcnn.hardware; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(sorted(new - set(sys.stdlib_module_names) - {'medcnn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
