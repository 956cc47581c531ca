"""Finding model bundles by name or path, and reading their facts without torch.

Named default bundles live in the package: ``medcnn/bundles/<name>/`` (``bundle.json`` +
``model.safetensors``), found through :mod:`importlib.resources`, so ``--model
cardiac-lv-cine-mri`` works from any installation. Anything else is taken as a path to a
bundle folder or ``.medcnn`` archive.

Reading ``bundle.json`` here does not import torch (``medcnn models list`` stays fast);
:func:`medcnn.models.load_bundle` does the full verification when the model is run.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

from medcnn.errors import BundleError, InputFileNotFoundError
from medcnn.models import defaults as _defaults
from medcnn.models.defaults import bundled_names, default_bundles_dir, resolve_model

__all__ = ["BundleInfo", "bundled_names", "resolve_model", "bundle_info", "list_bundles", "default_bundles_dir"]

_BUNDLE_JSON = "bundle.json"


@dataclass(frozen=True)
class BundleInfo:
    """Facts from ``bundle.json`` (no weights loaded).

    Attributes:
        name: default-bundle name, or the folder / archive name.
        path: where the bundle is.
        labels: label value -> name.
        channels: input channel names, in order.
        sha256: SHA-256 of the weights as recorded in bundle.json (load_bundle checks it).
        json: the whole parsed bundle.json.
    """

    name: str
    path: Path
    labels: dict[int, str]
    channels: tuple[str, ...]
    sha256: str
    json: Mapping[str, Any] = field(repr=False)

    @property
    def spec_sha256(self) -> str:
        """Hash of everything that decides the predictions (weights, preprocessing,
        postprocessing, ...): :func:`medcnn.models.bundle.bundle_spec_sha256`."""
        from medcnn.models.bundle import bundle_spec_sha256

        return bundle_spec_sha256(self.json)

    @property
    def regions(self) -> dict[str, list[int]] | None:
        """The model's regions ``{name: [label values]}`` (bundle.json ``regions.regions``),
        reported as unions after the labels; ``None`` for a model without regions."""
        regions = (self.json.get("regions") or {}).get("regions") if isinstance(self.json.get("regions"),
                                                                                 Mapping) else None
        return {str(k): [int(v) for v in vs] for k, vs in regions.items()} if regions else None

    @property
    def input_description(self) -> dict[str, Any]:
        """What the model expects of its input (bundle.json ``channels``, ``preprocess`` and
        ``input``: modality, channel meaning, intensity profile), as
        :func:`medcnn.models.compat.check_inputs` reads it."""
        return {k: self.json.get(k) for k in ("channels", "preprocess", "input")}

    @property
    def task(self) -> str | None:
        """``"cardiac"``, ``"tumour"`` or ``None``: from bundle.json ``task`` (or
        ``provenance.task``), else guessed from the label names."""
        for src in (self.json, self.json.get("provenance") or {}):
            t = src.get("task") if isinstance(src, Mapping) else None
            if isinstance(t, str):
                t = t.lower()
                if "card" in t or "heart" in t or "lv" in t.split("-"):
                    return "cardiac"
                if "tum" in t or "lesion" in t or "glioma" in t:
                    return "tumour"
        names = " ".join(self.labels.values()).lower()
        if any(w in names for w in ("ventric", "lv ", "lv_", "myocard", "blood pool", "blood_pool")) or \
                any(v.lower().startswith(("lv", "rv")) for v in self.labels.values()):
            return "cardiac"
        if any(w in names for w in ("tumour", "tumor", "oedema", "edema", "enhanc", "necro", "lesion")):
            return "tumour"
        return None

    @property
    def validation(self) -> dict[str, Any]:
        """Validation summary recorded at training time (``provenance.validation`` or
        ``provenance.metrics``), possibly empty."""
        prov = self.json.get("provenance") or {}
        for key in ("validation", "metrics", "validation_summary"):
            v = prov.get(key) if isinstance(prov, Mapping) else None
            if v:
                return dict(v) if isinstance(v, Mapping) else {"summary": v}
        v = self.json.get("validation")
        return dict(v) if isinstance(v, Mapping) else {}


def _read_json_bytes(p: Path) -> bytes:
    if p.is_dir():
        j = p / _BUNDLE_JSON
        if not j.is_file():
            raise BundleError.expected(f"a bundle folder holding {_BUNDLE_JSON}", f"no {_BUNDLE_JSON}", path=p)
        return j.read_bytes()
    try:
        with zipfile.ZipFile(p) as zf:
            return zf.read(_BUNDLE_JSON)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise BundleError.expected("a bundle folder or .medcnn archive holding bundle.json",
                                   f"{type(exc).__name__}: {exc}", path=p) from None


def bundle_info(model: str | PathLike[str]) -> BundleInfo:
    """Read a bundle's ``bundle.json`` (by default name or path) without loading weights."""
    p = resolve_model(model)
    try:
        meta = json.loads(_read_json_bytes(p).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError.expected(f"valid JSON in {_BUNDLE_JSON}", str(exc), path=p) from None
    if not isinstance(meta, dict):
        raise BundleError.expected(f"a JSON object in {_BUNDLE_JSON}", type(meta).__name__, path=p)
    try:
        labels = {int(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        channels = tuple(str(c) for c in meta.get("channels") or ())
        sha = str((meta.get("weights") or {}).get("sha256") or "")
    except (TypeError, ValueError, AttributeError) as exc:
        raise BundleError.expected("labels, channels and weights.sha256 in bundle.json", str(exc), path=p) from None
    if not channels:
        raise BundleError.expected("a non-empty 'channels' list in bundle.json", "none", path=p)
    if not sha:
        raise BundleError.expected("weights.sha256 in bundle.json", "none", path=p)
    root = _defaults.default_bundles_dir()
    name = p.name[: -len(".medcnn")] if p.name.endswith(".medcnn") else p.name
    if root is not None and p.parent.resolve() == root.resolve():
        name = p.name
    return BundleInfo(name=name, path=p, labels=labels, channels=channels, sha256=sha.lower(), json=meta)


def list_bundles() -> list[BundleInfo]:
    """Every default bundle installed with medcnn (unreadable ones are skipped)."""
    out = []
    for n in bundled_names():
        try:
            out.append(bundle_info(n))
        except BundleError:
            continue
    return out
