"""Shared pieces of the importers: safe checkpoint reading, hashes, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from medcnn.errors import BundleError, ConfigError, UnsafeModelFileError

__all__ = ["read_json", "load_checkpoint", "check_state_matches", "refuse_dollar", "NUMPY_GLOBALS"]


def read_json(path: Path) -> Any:
    """Parse a JSON file; a :class:`ConfigError` naming it when it does not parse."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError.expected("a valid JSON file", f"{type(exc).__name__}: {exc}", path=path) from exc


#: The numpy globals a checkpoint may reference beyond torch's own allow-list (nnU-Net keeps
#: numpy scalars such as ``np.float64`` in its training log), by the module path numpy wrote
#: them under: numpy 1.x pickles name ``numpy.core.multiarray``, numpy 2.x ``numpy._core.multiarray``.
#: Both names of the same object are accepted, whichever numpy is installed; nothing else is.
NUMPY_GLOBALS: tuple[str, ...] = (
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.dtype", "numpy.ndarray",
)
#: numpy's dtype classes (``numpy.dtypes``, numpy >= 1.25): not named by a GLOBAL opcode but
#: built by ``numpy.dtype(...)`` during unpickling, so torch checks their type too.
NUMPY_DTYPE_CLASSES: tuple[str, ...] = ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                                        "Int16DType", "Int8DType", "UInt8DType", "BoolDType")


def _numpy_globals() -> list[Any]:
    """``(object, "module.name")`` pairs for :data:`NUMPY_GLOBALS` plus the dtype classes
    (torch's ``safe_globals`` tuple form, torch >= 2.6, keys the allow-list by that name)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 / 1
    objects = {"scalar": core.multiarray.scalar, "_reconstruct": core.multiarray._reconstruct,
               "dtype": np.dtype, "ndarray": np.ndarray}
    out: list[Any] = [(objects[name.rsplit(".", 1)[1]], name) for name in NUMPY_GLOBALS]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in NUMPY_DTYPE_CLASSES if hasattr(dtypes, n)]
    return out


def _refused_global(message: str) -> str:
    """The global torch's weights-only unpickler refused, from its message (``""``: none named).
    torch drops the ``builtins.`` prefix (``GLOBAL eval``); it is put back here."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if not found:
        found = re.search(r"got <class '([\w.]+)'>", message)
    if not found:
        return ""
    name = found.group(1)
    return name if "." in name else f"builtins.{name}"


def load_checkpoint(path: Path) -> Any:
    """Read a PyTorch checkpoint with ``torch.load(weights_only=True)`` (tensors, plain
    Python types and the numpy scalar/dtype globals of :data:`NUMPY_GLOBALS`, under their
    numpy 1.x or 2.x module names: nothing is executed).

    Raises:
        UnsafeModelFileError: the file references any other class or function (named).
        BundleError: not a readable checkpoint, or a torch without ``safe_globals`` (< 2.6).
    """
    import pickle

    import torch

    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5; the (object, name) form needs 2.6 (pyproject's floor)
        raise BundleError.expected("torch >= 2.6 to read foreign checkpoints safely (torch.serialization."
                                   "safe_globals with module names)", f"torch {torch.__version__}", path=path,
                                   hint="pip install 'torch>=2.6'")
    try:
        with safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        bad = _refused_global(str(exc))
        raise UnsafeModelFileError.expected(
            "a checkpoint holding only tensors and plain types (read with torch.load(weights_only=True))",
            f"a reference to {bad or 'a class or function that is not allowed'}", path=path,
            hint="medcnn never unpickles arbitrary objects; re-save the weights with "
                 "torch.save(model.state_dict()) from a trusted environment") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise BundleError.expected("a readable PyTorch checkpoint", f"{type(exc).__name__}: {str(exc)[:200]}",
                                   path=path) from None


def check_state_matches(state: Mapping[str, Any], reference: Mapping[str, Any], *, path: Path, what: str) -> None:
    """Tensor names and shapes of ``state`` equal those of the network built from the plan."""
    missing = [k for k in reference if k not in state]
    extra = [k for k in state if k not in reference]
    wrong = [k for k in reference if k in state and tuple(state[k].shape) != tuple(reference[k].shape)]
    if missing or extra or wrong:
        if wrong:
            k = wrong[0]
            got = f"tensor {k!r} of shape {tuple(state[k].shape)}, the plan builds {tuple(reference[k].shape)}"
        elif missing:
            got = f"no tensor {missing[0]!r} ({len(missing)} missing)"
        else:
            got = f"unexpected tensor {extra[0]!r} ({len(extra)} unexpected)"
        raise BundleError.expected(f"weights matching the network {what} describes", got, path=path,
                                   hint="The checkpoint and the plans belong to different models")


def refuse_dollar(value: Any, *, path: Path, where: str) -> None:
    """Raise a :class:`ConfigError` if ``value`` (anywhere inside) is a ``$`` expression."""
    if isinstance(value, str) and value.startswith("$"):
        raise ConfigError.expected(f"a plain value at {where} (medcnn never evaluates expressions)",
                                   f"the expression {value[:80]!r}", path=path,
                                   hint="Override it with a plain value (--set KEY=VALUE)")
    if isinstance(value, Mapping):
        for k, v in value.items():
            refuse_dollar(v, path=path, where=f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            refuse_dollar(v, path=path, where=f"{where}[{i}]")
