"""Shared pieces of the importers: safe checkpoint reading, hashes, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from medcnn.errors import BundleError, ConfigError, UnsafeModelFileError

__all__ = ["read_json", "load_checkpoint", "check_state_matches", "refuse_dollar"]


def read_json(path: Path) -> Any:
    """Parse a JSON file; a :class:`ConfigError` naming it when it does not parse."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError.expected("a valid JSON file", f"{type(exc).__name__}: {exc}", path=path) from exc


def _numpy_globals() -> list[Any]:
    """The numpy types training logs hold (scalars such as np.float64 in nnU-Net's logging):
    the only globals, beyond torch's own allow-list, a checkpoint may reference."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 / 1
    out: list[Any] = [core.multiarray.scalar, np.dtype, core.multiarray._reconstruct, np.ndarray]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Float16DType", "Int64DType",
                                             "Int32DType", "BoolDType") if hasattr(dtypes, n)]
    return out


def load_checkpoint(path: Path) -> Any:
    """Read a PyTorch checkpoint with ``torch.load(weights_only=True)`` (tensors, plain
    Python types and a few numpy scalar types only: nothing is executed).

    Raises:
        UnsafeModelFileError: the file references any other class or function (named).
    """
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        bad = found.group(1) if found else ""
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
