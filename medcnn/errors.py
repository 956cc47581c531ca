"""Typed exceptions for medcnn.

Every error raised for bad *user input* is a :class:`MedcnnError`. Each is also the
built-in exception a Python user would expect (``ValueError``, ``OSError``,
``FileNotFoundError``, ``MemoryError``) so ``except ValueError`` keeps working.

Messages follow one shape, built by :func:`format_message`::

    <file>: expected <X>, got <Y>. <how to fix>

The CLI prints ``str(error)`` on one line and exits non-zero; it never shows a traceback
for these.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "MedcnnError",
    "InputFileNotFoundError",
    "UnsupportedFormatError",
    "CorruptFileError",
    "InvalidGeometryError",
    "GeometryMismatchError",
    "DimensionError",
    "InvalidIntensityError",
    "InvalidLabelError",
    "DicomSeriesError",
    "MultipleSeriesError",
    "AnnotationError",
    "BundleError",
    "UnsafeModelFileError",
    "ConfigError",
    "InputModelMismatchError",
    "InsufficientMemoryError",
    "NiftiHeaderWarning",
    "format_message",
]


def format_message(
    expected: str,
    got: str,
    *,
    path: str | PathLike[str] | None = None,
    hint: str | None = None,
) -> str:
    """Build the house-style message ``"<path>: expected X, got Y. hint"``."""
    text = f"expected {expected}, got {got}"
    if path is not None:
        text = f"{path}: {text}"
    if hint:
        text = f"{text}. {hint}"
    return text


class MedcnnError(Exception):
    """Base class of all medcnn input errors.

    Attributes:
        path: the file or folder the problem was found in, when known.
    """

    def __init__(self, message: str, *, path: str | PathLike[str] | None = None) -> None:
        # one line, always: the CLI prints it as the whole error report
        super().__init__(" ".join(str(message).split()))
        self.path = None if path is None else str(path)

    @classmethod
    def expected(
        cls,
        expected: str,
        got: str,
        *,
        path: str | PathLike[str] | None = None,
        hint: str | None = None,
    ):
        """Construct the error with an "expected X, got Y" message."""
        return cls(format_message(expected, got, path=path, hint=hint), path=path)


class InputFileNotFoundError(MedcnnError, FileNotFoundError):
    """A file or folder named by the user does not exist."""


class UnsupportedFormatError(MedcnnError, ValueError):
    """The file extension or content is not a format medcnn reads or writes."""


class CorruptFileError(MedcnnError, OSError):
    """The file exists but cannot be decoded (truncated gzip, broken header...)."""


class InvalidGeometryError(MedcnnError, ValueError):
    """Spacing, origin or direction are not usable (zero, negative, NaN, singular)."""


class GeometryMismatchError(MedcnnError, ValueError):
    """Two volumes that must share a grid do not."""


class DimensionError(MedcnnError, ValueError):
    """The array has the wrong number of dimensions (e.g. 2D where 3D is needed)."""


class InvalidIntensityError(MedcnnError, ValueError):
    """Intensities are unusable (all NaN, infinite, constant where contrast is needed)."""


class InvalidLabelError(MedcnnError, ValueError):
    """A label map holds values that are not the expected non-negative integers."""


class DicomSeriesError(MedcnnError, ValueError):
    """A DICOM folder cannot be assembled into one volume (empty, gaps, mixed)."""


class MultipleSeriesError(DicomSeriesError):
    """A DICOM folder holds several series and none was chosen.

    Attributes:
        series: list of dicts with ``uid``, ``description``, ``n_files``.
    """

    def __init__(self, message: str, *, path=None, series=None) -> None:
        super().__init__(message, path=path)
        self.series = list(series or [])


class AnnotationError(MedcnnError, ValueError):
    """A DICOM annotation (RTSTRUCT, SEG) cannot be turned into a label map: an empty or
    unknown ROI, contours off the slice planes or on missing slices, broken frames."""


class BundleError(MedcnnError, ValueError):
    """A model bundle is incomplete, inconsistent or tampered with."""


class UnsafeModelFileError(BundleError):
    """A model file would need unpickling (arbitrary code execution) to load."""


class ConfigError(MedcnnError, ValueError):
    """A configuration file or value is invalid (unknown key, wrong type)."""


class InputModelMismatchError(MedcnnError, ValueError):
    """An input clearly does not fit the model (a CT series given to an MRI model): refused
    unless the user overrides the check (``--allow-input-mismatch``)."""


class InsufficientMemoryError(MedcnnError, MemoryError):
    """The planned computation would not fit in the memory available."""


class NiftiHeaderWarning(UserWarning):
    """A NIfTI header whose sform, qform and pixdim disagree was read by medcnn's documented
    rule (docs/io.md); the Volume records what was found (``Volume.read_notes``). The CLI
    prints it as one line per file."""
