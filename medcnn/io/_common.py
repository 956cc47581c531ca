"""Helpers shared by the readers and writers: paths, atomic writes, label checks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from medcnn.errors import InputFileNotFoundError, InsufficientMemoryError, InvalidLabelError, UnsupportedFormatError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES

#: A header claiming more than this many bytes of voxel data is refused before reading.
DEFAULT_MAX_BYTES = 32 * 1024**3


def suffix_of(path: Path) -> str:
    """Lower-case format suffix, with ``.nii.gz`` as one suffix."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def image_stem(name: str) -> str | None:
    """File name without its image extension (``.nii.gz`` counts as one); ``None`` when the
    name has no supported image extension (or nothing before it)."""
    sfx = suffix_of(Path(name))
    if sfx in SUPPORTED_SUFFIXES and len(name) > len(sfx):
        return name[: -len(sfx)]
    return None


def check_exists(path: Path) -> None:
    if not path.exists():
        raise InputFileNotFoundError.expected("an existing file or DICOM folder", "nothing at that path", path=path)


def check_suffix(path: Path, *, for_writing: bool = False) -> str:
    sfx = suffix_of(path)
    if sfx not in SUPPORTED_SUFFIXES:
        allowed = ", ".join(SUPPORTED_SUFFIXES) + ("" if for_writing else " or a DICOM folder")
        raise UnsupportedFormatError.expected(f"one of {allowed}", f"{sfx or 'no extension'!r}", path=path)
    return sfx


def check_size(shape: tuple[int, ...], itemsize: int, path: Path, max_bytes: int | None) -> None:
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    n = int(np.prod([int(s) for s in shape], dtype=np.float64) * itemsize)
    if n > limit:
        raise InsufficientMemoryError.expected(
            f"at most {limit / 1024**3:.1f} GiB of voxel data",
            f"a header claiming shape {tuple(shape)} ({n / 1024**3:.1f} GiB)",
            path=path,
            hint="The header is probably corrupt; if the image is really this large, pass max_bytes=...",
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same format suffix; on success it is
    renamed onto ``path`` (atomic on one file system), on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix_of(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{sfx}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates owner-only files; give the result the permissions a plain open() would
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def storable_array(array: np.ndarray) -> np.ndarray:
    """The array in a dtype every writer stores: bool -> uint8, float16 -> float32."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def as_label_array(array: np.ndarray, path: str | None) -> np.ndarray:
    """Validate a label map (finite, non-negative, integer-valued) and return it as the
    smallest unsigned integer dtype that holds it."""
    arr = np.asarray(array)
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InvalidLabelError.expected("finite integer labels", "NaN or infinite values", path=path)
        if not np.array_equal(arr, np.round(arr)):
            bad = arr[arr != np.round(arr)][:3]
            raise InvalidLabelError.expected(
                "integer-valued labels", f"fractional values such as {bad.tolist()}", path=path,
                hint="Is this a probability map? Threshold it first, or read it with kind='probability'")
    elif arr.dtype.kind not in "iu":
        raise InvalidLabelError.expected("a numeric label map", f"dtype {arr.dtype}", path=path)
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise InvalidLabelError.expected("non-negative labels", f"minimum label {lo:g}", path=path)
    for dt in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dt).max:
            return arr.astype(dt, copy=False)
    raise InvalidLabelError.expected("labels below 2**32", f"maximum label {hi:g}", path=path)
