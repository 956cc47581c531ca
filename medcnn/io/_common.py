"""Helpers shared by the readers and writers: paths, atomic writes, label checks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

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


def _name_tokens(path: str | os.PathLike[str]) -> list[str]:
    import re

    name = Path(path).name
    return [t for t in re.split(r"[^a-z0-9]+", (image_stem(name) or name).lower()) if t]


def match_channel_files(files: Sequence[str | os.PathLike[str]], channels: Sequence[str]) -> dict[str, list[Path]]:
    """The files named after each channel (an MRI sequence such as ``T1``, ``T1ce``, ``FLAIR``).

    A file is named after a channel when the channel name is a whole token of the file
    name without its image extension (tokens split at anything but letters and digits,
    case-insensitive): ``case_t1.nii.gz`` is ``T1``, ``case_t1ce.nii.gz`` is ``T1ce`` only.
    A channel no file names as a token falls back to the files whose name contains it
    (``flair2mm.nii.gz``), among those no other channel names as a token.

    Returns:
        ``{channel: [files]}`` in the given channel order (empty: no file for it).
    """
    paths = [Path(f) for f in files]
    tokens = [_name_tokens(f) for f in paths]
    out: dict[str, list[Path]] = {}
    claimed: set[int] = set()
    for ch in channels:
        hits = [i for i, t in enumerate(tokens) if ch.strip().lower() in t]
        claimed.update(hits)
        out[ch] = [paths[i] for i in hits]
    for ch in channels:
        if not out[ch]:
            low = ch.strip().lower()
            out[ch] = [paths[i] for i in range(len(paths)) if i not in claimed and low in paths[i].name.lower()]
    return out


def missing_channels(files: Sequence[str | os.PathLike[str]], channels: Sequence[str]) -> list[str] | None:
    """The channels absent from ``files`` when every file is named after exactly one
    distinct channel (:func:`match_channel_files`), else ``None`` (the files do not say)."""
    found = match_channel_files(files, channels)
    owner: dict[Path, str] = {}
    for ch, hits in found.items():
        for f in hits:
            if f in owner:
                return None
            owner[f] = ch
    if len(owner) != len(files) or any(len(h) > 1 for h in found.values()):
        return None
    return [ch for ch in channels if not found[ch]]


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
