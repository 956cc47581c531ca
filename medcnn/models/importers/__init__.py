"""Translate foreign trained models into ordinary medcnn bundles, once.

``import_model(SOURCE, OUT)`` detects the format of ``SOURCE``:

- an nnU-Net v2 trained-model folder (``plans.json`` + ``dataset.json`` +
  ``fold_N/checkpoint_final.pth``), see :mod:`medcnn.models.importers.nnunet`;
- a MONAI bundle folder (``configs/inference.json|yaml`` + ``models/model.pt``), see
  :mod:`medcnn.models.importers.monai_bundle`;

and writes a bundle (safetensors + ``bundle.json``) that ``Segmenter.from_bundle``,
``medcnn segment/run --model`` and ``medcnn models show`` accept like any other.
Import is the only moment a foreign checkpoint is read (``torch.load(weights_only=True)``);
nothing is unpickled or evaluated when the bundle runs. Every refusal is one
:class:`medcnn.errors.MedcnnError` naming the file, and nothing is written.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

from medcnn.errors import ConfigError, InputFileNotFoundError, UnsupportedFormatError

__all__ = ["import_model", "detect_format", "FORMATS"]

#: Formats :func:`import_model` reads.
FORMATS = ("nnunet-v2", "monai-bundle")


def detect_format(source: str | PathLike[str]) -> str:
    """``"nnunet-v2"`` or ``"monai-bundle"``; :class:`UnsupportedFormatError` otherwise."""
    from medcnn.models.importers.monai_bundle import is_monai_bundle
    from medcnn.models.importers.nnunet import is_nnunet_folder

    p = Path(source)
    if not p.exists():
        raise InputFileNotFoundError.expected("an nnU-Net result folder or a MONAI bundle folder",
                                              "nothing at that path", path=p)
    if is_nnunet_folder(p):
        return "nnunet-v2"
    if is_monai_bundle(p):
        return "monai-bundle"
    raise UnsupportedFormatError.expected(
        "an nnU-Net v2 result folder (plans.json, dataset.json, fold_N/checkpoint_final.pth) or a MONAI bundle "
        "(configs/inference.json|yaml, models/model.pt)", "neither" if p.is_dir() else "a file, not a folder", path=p)


def import_model(
    source: str | PathLike[str],
    out: str | PathLike[str],
    *,
    name: str | None = None,
    folds: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    region_order: Sequence[str] | str | None = None,
    nnunet_postprocessing: bool = False,
) -> Path:
    """Import ``source`` into a medcnn bundle at ``out`` (folder, or ``*.medcnn`` archive).

    Args:
        source: nnU-Net v2 result folder or MONAI bundle folder.
        out: where to write the bundle (must not exist unless ``overwrite``).
        name: a display name recorded in the provenance (default: the source folder name).
        folds: nnU-Net only: the folds to ensemble (default: every ``fold_N`` with a
            ``checkpoint_final.pth``), e.g. ``["0", "1"]`` or ``["all"]``.
        overrides: MONAI only: config values replacing ``$`` expressions or others, by
            dotted key (e.g. ``{"network_def.in_channels": 1}``).
        overwrite: replace an existing bundle at ``out``.
        region_order: MONAI only: the sigmoid output channels (names from ``channel_def``
            or indices) from the outermost region to the innermost, e.g. ``"1,0,2"`` for
            the Model Zoo's BraTS bundle (TC, WT, ET). Default: read from BraTS channel
            names; other region names are refused without it. nnU-Net folders declare
            theirs (``regions_class_order``).
        nnunet_postprocessing: nnU-Net only: also apply the folder's
            ``crossval_results_folds_*/postprocessing.json`` (``nnUNetv2_predict`` does not).

    Returns:
        The bundle path. Nothing is written when the source is refused.
    """
    from medcnn import __version__
    from medcnn.errors import BundleError, ConfigError
    from medcnn.models.bundle import save_bundle

    dest = Path(out)
    if dest.exists() and not overwrite:
        raise BundleError.expected("a new bundle path", "an existing file or folder", path=dest,
                                   hint="Pass --overwrite to replace it")
    fmt = detect_format(source)
    if region_order is not None and fmt != "monai-bundle":
        raise ConfigError.expected("region_order for a MONAI bundle only", f"a {fmt} folder", path=source,
                                   hint="nnU-Net folders declare their regions in dataset.json (regions_class_order)")
    if fmt != "nnunet-v2" and nnunet_postprocessing:
        raise ConfigError.expected("an nnU-Net result folder with --nnunet-postprocessing", f"a {fmt}", path=source)
    if fmt == "nnunet-v2" and overrides:
        raise ConfigError.expected("--set KEY=VALUE with a MONAI bundle only", f"an nnU-Net folder and --set "
                                   f"{next(iter(overrides))}", path=source)
    if fmt == "nnunet-v2":
        from medcnn.models.importers.nnunet import import_nnunet

        kw = import_nnunet(Path(source), folds=folds, postprocessing=nnunet_postprocessing)
    else:
        from medcnn.models.importers.monai_bundle import import_monai_bundle

        kw = import_monai_bundle(Path(source), overrides=overrides or {}, region_order=region_order)
    kw["provenance"]["imported_from"]["name"] = name or Path(source).name
    kw["provenance"]["imported_from"]["medcnn_version"] = __version__
    return save_bundle(kw.pop("model"), dest, overwrite=overwrite, **kw)
