"""Import a MONAI bundle (configs/inference.json|yaml, models/model.pt) as a medcnn bundle."""

from __future__ import annotations

from pathlib import Path

__all__ = ["is_monai_bundle"]


def is_monai_bundle(path: Path) -> bool:
    return path.is_dir() and (path / "configs").is_dir() and any(
        (path / "configs" / n).is_file() for n in ("inference.json", "inference.yaml", "inference.yml"))
