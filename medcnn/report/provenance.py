"""Provenance: what produced a number, from which pixels, with which model and settings.

* :func:`volume_hash` -- SHA-256 of a volume's pixels **and** geometry, so that the same
  scan re-saved in another format (same voxels, same grid) hashes the same, while a
  resampled, flipped or re-windowed scan does not.
* :func:`config_hash` -- SHA-256 of a canonical JSON dump of a settings mapping.
* :func:`file_sha256` -- SHA-256 of a file's bytes (model weights; :mod:`medcnn.hashing`).
* :func:`environment_info` -- versions of medcnn and the libraries that shaped the result.
* :func:`display_path`, :func:`redact_paths` -- input paths as reports show them: the file
  (or folder) name only unless ``include_paths`` (folder names often hold patient names).
* :func:`portable_path`, :func:`portable_command`, :func:`portable_paths` -- absolute paths
  made relative for records that travel (a bundle's training provenance): no build-machine
  folder in a shipped file.

Imports numpy only (no torch): library versions are read from package metadata.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from os import PathLike
from typing import Any, Mapping

import numpy as np

from medcnn.hashing import file_sha256
from medcnn.volume import Volume

__all__ = [
    "volume_hash",
    "config_hash",
    "file_sha256",
    "environment_info",
    "HASH_METHOD",
    "display_path",
    "redact_paths",
    "PATHS_METHOD",
    "portable_path",
    "portable_command",
    "portable_paths",
]

#: One sentence for reports: how input paths are shown.
PATHS_METHOD = ("input paths are reduced to the file (or DICOM folder) name; pass --include-paths to keep full "
                "paths")

#: One sentence describing :func:`volume_hash`, for reports.
HASH_METHOD = ("input hash = SHA-256 of a JSON header (dtype as little-endian, array shape, leading axis, "
               "frame times in ms, RAS+ spacing and origin in mm rounded to 1e-6 mm, direction cosines rounded "
               "to 1e-9) followed by the voxel bytes in C order")

_CHUNK_BYTES = 1 << 26


def _r(value: float, digits: int) -> str:
    """Rounded decimal text; float noise of a file round trip (1e-15) does not change it."""
    return repr(round(float(value), digits) + 0.0)


def volume_hash(volume: Volume) -> str:
    """SHA-256 (hex) of a volume's pixels and geometry.

    The hash covers: dtype (normalised to little-endian), array shape ``(I, J, K)`` or
    ``(T|C, I, J, K)``, leading axis, frame times (ms), spacing (mm) and origin (mm) of the
    RAS+ grid rounded to 1e-6 mm and its direction cosines rounded to 1e-9 (so the float
    noise of a file round trip does not change the hash), then the voxel bytes in C order.
    It does not cover the file name, format or any metadata, so it identifies *what the
    model saw*. Memory: hashes slab by slab, never copying the whole array.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"expected a medcnn.volume.Volume, got {type(volume).__name__}")
    arr = volume.array
    dtype = arr.dtype.newbyteorder("<")
    g = volume.geometry
    header = {
        "dtype": dtype.str,
        "shape": [int(s) for s in arr.shape],
        "leading_axis": volume.leading_axis,
        "frame_times_ms": None if volume.frame_times_ms is None else [_r(t, 6) for t in volume.frame_times_ms],
        "spacing_mm": [_r(v, 6) for v in g.spacing],
        "origin_mm": [_r(v, 6) for v in g.origin],
        "direction": [_r(v, 9) for v in np.ravel(g.direction)],
        "world": "RAS+",
    }
    h = hashlib.sha256()
    h.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    h.update(b"\0")
    if arr.size:
        flat_first = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(1, -1)
        per_row = max(1, flat_first.shape[1] * arr.itemsize)
        step = max(1, _CHUNK_BYTES // per_row)
        for start in range(0, flat_first.shape[0], step):
            chunk = np.ascontiguousarray(flat_first[start:start + step], dtype=dtype)
            h.update(memoryview(chunk).cast("B"))
    return h.hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, PathLike):
        return str(value)
    return value


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``config`` dumped as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment_info() -> dict[str, Any]:
    """Versions of medcnn, Python and the libraries behind a result (no host or user names)."""
    from medcnn import __version__

    info: dict[str, Any] = {"medcnn_version": __version__, "python": platform.python_version(),
                            "platform": f"{platform.system()} {platform.machine()}"}
    for dist in ("torch", "monai", "numpy", "scipy", "SimpleITK", "nibabel", "pydicom", "connected-components-3d"):
        v = _version(dist)
        if v is not None:
            info[dist.lower().replace("-", "_")] = v
    return info


def display_path(path: str | PathLike[str] | None, *, include_paths: bool = False) -> str | None:
    """How a report shows an input path: the path as given with ``include_paths``, else
    only its last component (the file name, or a DICOM folder's name).

    Folder names in hospitals often hold patient names (``/data/DOE^JOHN/ct.nii.gz``);
    the case id (from the file name or the manifest) and the file name identify the input
    within a report without them.
    """
    if path is None:
        return None
    text = str(path)
    if include_paths:
        return text
    stripped = text.rstrip("/\\")
    name = stripped.replace("\\", "/").rsplit("/", 1)[-1]
    return name or text


def redact_paths(text: Any, paths: Any, *, include_paths: bool = False) -> Any:
    """``text`` with every occurrence of the given input ``paths`` (as given and resolved)
    replaced by :func:`display_path`, and their parent folders removed (error messages
    name the file they are about). Non-strings pass through unchanged."""
    import os

    if include_paths or not isinstance(text, str) or not text:
        return text
    full: dict[str, str] = {}
    parents: set[str] = set()
    for p in paths or ():
        if p is None:
            continue
        forms = {str(p), str(p).rstrip("/\\")}
        try:
            forms.add(os.path.abspath(str(p)))
            forms.add(os.path.realpath(str(p)))
        except (OSError, ValueError):
            pass
        for f in forms:
            if f and f not in (".", os.sep):
                full[f] = display_path(f) or f
                parent = os.path.dirname(f)
                while parent and parent not in (os.sep, ".") and parent != os.path.dirname(parent):
                    parents.add(parent)
                    parent = os.path.dirname(parent)
    for f in sorted(full, key=len, reverse=True):
        text = text.replace(f, full[f])
    for d in sorted(parents, key=len, reverse=True):
        text = text.replace(d + os.sep, "").replace(d, "<folder>")
    return text


def _is_absolute(text: str) -> bool:
    import re

    return text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", text) is not None


def portable_path(path: str | PathLike[str], base: str | PathLike[str]) -> str:
    """``path`` relative to the folder ``base`` (``/`` separators) when it is absolute;
    a relative path is returned unchanged."""
    import os

    text = str(path)
    if not _is_absolute(text):
        return text
    return os.path.relpath(os.path.abspath(text), os.path.abspath(str(base))).replace(os.sep, "/")


def portable_command(command: str | None, base: str | PathLike[str]) -> str | None:
    """A shell command line with every absolute path argument (also ``--opt=/path``) made
    relative to ``base`` (the folder the command ran in)."""
    import shlex

    if not command:
        return command
    out = []
    for arg in shlex.split(command):
        if arg.startswith("-") and "=" in arg:
            opt, _, value = arg.partition("=")
            arg = f"{opt}={portable_path(value, base)}"
        else:
            arg = portable_path(arg, base)
        out.append(shlex.quote(arg))
    return " ".join(out)


def portable_paths(value: Any, base: str | PathLike[str]) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every string that is an absolute
    path made relative to ``base`` (:func:`portable_path`)."""
    if isinstance(value, Mapping):
        return {k: portable_paths(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_paths(v, base) for v in value]
    if isinstance(value, str) and _is_absolute(value) and "\n" not in value:
        return portable_path(value, base)
    return value
