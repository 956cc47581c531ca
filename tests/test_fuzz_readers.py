"""Property-based fuzzing of the readers: any damaged file gives a MedcnnError, nothing else."""

from __future__ import annotations

import gzip
import io as _io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcnn.errors import MedcnnError
from medcnn.io import read_volume, write_volume
from medcnn.volume import Geometry, Volume

_G = Geometry((6, 5, 4), (0.9, 1.1, 3.0), (10.0, -4.0, 2.5))
_ARR = np.arange(120, dtype=np.int16).reshape(6, 5, 4)


def _valid_bytes(fmt: str, tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("src")
    return write_volume(Volume(_ARR, _G), d / f"v{fmt}").read_bytes()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return {fmt: _valid_bytes(fmt, tmp_path_factory) for fmt in (".nii", ".nii.gz", ".nrrd", ".mha")}


def _check(path):
    try:
        v = read_volume(path)
    except MedcnnError as exc:
        msg = str(exc)
        assert str(path) in msg and "expected" in msg and "\n" not in msg
        return None
    # if it reads, the result must be a coherent Volume
    assert v.array.shape[-3:] == v.geometry.shape
    return v


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from([".nii", ".nii.gz", ".nrrd", ".mha"]), cut=st.floats(0.0, 0.999))
def test_truncated_files(tmp_path, sources, fmt, cut):
    data = sources[fmt]
    p = tmp_path / f"t{fmt}"
    p.write_bytes(data[: int(len(data) * cut)])
    _check(p)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from([".nii", ".nrrd", ".mha"]),
       flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupted_header_bytes(tmp_path, sources, fmt, flips):
    data = bytearray(sources[fmt])
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    p = tmp_path / f"c{fmt}"
    p.write_bytes(bytes(data))
    _check(p)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=0, max_size=600), fmt=st.sampled_from([".nii", ".nii.gz", ".nrrd", ".mha"]))
def test_random_bytes(tmp_path, payload, fmt):
    p = tmp_path / f"r{fmt}"
    p.write_bytes(gzip.compress(payload) if fmt.endswith(".gz") else payload)
    _check(p)
