"""The default bundles shipped with medcnn, found by name (no torch import).

Named default bundles live in the package: ``medcnn/bundles/<name>/`` (``bundle.json`` +
``model.safetensors``), found through :mod:`importlib.resources`, so
``load_bundle("cardiac-lv-cine-mri")`` and ``--model cardiac-lv-cine-mri`` work from any
installation. Anything else is taken as a path to a bundle folder or ``.medcnn`` archive.
"""

from __future__ import annotations

from importlib import resources
from os import PathLike
from pathlib import Path

from medcnn.errors import InputFileNotFoundError

__all__ = ["default_bundles_dir", "bundled_names", "resolve_model"]

_BUNDLE_JSON = "bundle.json"


def default_bundles_dir() -> Path | None:
    """Folder of the bundles shipped with medcnn (``medcnn/bundles``), if present."""
    try:
        root = resources.files("medcnn") / "bundles"
    except (ModuleNotFoundError, TypeError):  # pragma: no cover
        return None
    p = Path(str(root))
    return p if p.is_dir() else None


def bundled_names() -> list[str]:
    """Names of the default bundles installed with medcnn (folders holding bundle.json)."""
    root = default_bundles_dir()
    if root is None:
        return []
    return sorted(p.name for p in root.iterdir() if (p / _BUNDLE_JSON).is_file())


def resolve_model(model: str | PathLike[str]) -> Path:
    """Path of a bundle given its default name or a path.

    Raises:
        InputFileNotFoundError: neither a default bundle name nor an existing path.
    """
    text = str(model)
    p = Path(text).expanduser()
    if p.exists():
        return p
    root = default_bundles_dir()
    if root is not None and "/" not in text and "\\" not in text and (root / text / _BUNDLE_JSON).is_file():
        return root / text
    names = bundled_names()
    raise InputFileNotFoundError.expected(
        "a default model name or a bundle folder / .medcnn archive",
        f"{text!r}, which is neither",
        hint=("default models: " + ", ".join(names)) if names else
        "no default models are installed (medcnn/bundles is empty); pass a bundle path")
