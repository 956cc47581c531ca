"""Locating the real annotated scans for tests, benchmarks and notebooks.

This is the *one* helper that knows where the shared data lives: ``$MEDCNN_DATA`` if set,
else ``../shared/data`` beside the repository checkout (and, for a checkout used from
elsewhere, ``../shared/data`` relative to the current directory). The library itself never
reads these paths; only tests, benchmarks, notebooks and the demo command do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

__all__ = ["shared_data_dir", "shared_data_path", "require_shared_data"]

_REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The shared data folder, or ``None`` when it cannot be found."""
    env = os.environ if environ is None else environ
    candidates = []
    if env.get("MEDCNN_DATA"):
        candidates.append(Path(env["MEDCNN_DATA"]))
    candidates += [_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


def shared_data_path(*parts: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Path to ``parts`` inside the shared data, or ``None`` if it (or the data) is absent."""
    root = shared_data_dir(environ)
    if root is None:
        return None
    p = root.joinpath(*parts)
    return p if p.exists() else None


def require_shared_data(*parts: str) -> Path:
    """For pytest: the path, or skip the test with a clear reason."""
    p = shared_data_path(*parts)
    if p is None:
        import pytest

        where = "/".join(parts) or "."
        pytest.skip(f"real data {where!r} not found: set MEDCNN_DATA or place the shared data at ../shared/data")
    return p
