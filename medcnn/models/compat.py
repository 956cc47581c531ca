"""Does an input fit the model? Modality, sequence and intensity checks before inference.

A bundle states, in the ``input`` key of its ``bundle.json`` (metadata: not part of the spec
hash), per input channel:

* ``modality``: the DICOM Modality of the scans it was trained on (``MR``, ``CT``, ...);
* ``sequence``: what the channel means (``T1-weighted MRI``, ``short-axis bSSFP cine MRI``);
* ``conflicting_descriptions``: SeriesDescription words that name another sequence
  (``flair``, ``t2``, ``lge`` ...);
* ``intensity``: the range, over the bundle's own training images, of simple statistics of
  the raw intensities (:func:`intensity_statistics`), with ``n_images`` and ``source``.

:func:`check_input` compares a scan with that profile, before the scan reaches the network:

* **clear mismatch** (refused with :class:`~medcnn.errors.InputModelMismatchError` unless
  ``allow_mismatch``): a DICOM Modality other than the channel's (``CT`` for an ``MR``
  model); HU-like intensities (at least :data:`AIR_FRACTION_MIN` of the voxels at or below
  :data:`AIR_HU` and a minimum at or below -900) for a model whose training images never went
  below -500;
* **doubtful** (run, with the QC flag :data:`SUSPECTED_CODE` in every output): a
  SeriesDescription naming a conflicting sequence; signed intensities (more than
  :data:`NEGATIVE_FRACTION_MARGIN` of the voxels below 0) for a model whose training images had
  none (a normalised or subtracted image given to a raw-intensity model).

With ``allow_mismatch`` a clear mismatch becomes the flag :data:`OVERRIDDEN_CODE`. Both flags
travel as read notes of the :class:`~medcnn.volume.Volume` (like ``NIFTI_HEADER_INCONSISTENT``),
so every report row, ``segment_provenance.json``, ``result.json`` and the DICOM SR carry them.

The intensity statistics (:func:`intensity_statistics`) are computed on the whole array (all
frames of a cine): ``body`` = voxels above the image's mean (a scale-free foreground rule that
needs no model); ``body_p01/p50/p99`` = percentiles 1/50/99 of the body voxels;
``negative_fraction`` = fraction of all voxels < 0; ``air_fraction`` = fraction of all voxels
<= -500; ``min_value`` = the minimum. ``scripts/input_profiles.py`` derives each shipped
bundle's profile from its training data in ``../shared/data`` (docs/batch.md).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import InputModelMismatchError

__all__ = [
    "SUSPECTED_CODE", "OVERRIDDEN_CODE", "AIR_HU", "AIR_FRACTION_MIN", "NEGATIVE_FRACTION_MARGIN",
    "CHECK_RULE", "intensity_statistics", "intensity_profile", "input_spec", "check_input", "check_inputs",
]

SUSPECTED_CODE = "INPUT_MODEL_MISMATCH_SUSPECTED"
OVERRIDDEN_CODE = "INPUT_MODEL_MISMATCH_OVERRIDDEN"
#: intensity (HU) at or below which a voxel counts as air
AIR_HU = -500.0
#: fraction of air voxels that makes an image HU-like
AIR_FRACTION_MIN = 0.01
#: fraction of negative voxels, above the training maximum, that makes an input doubtful
NEGATIVE_FRACTION_MARGIN = 0.05
CHECK_RULE = ("input-model check before inference (medcnn.models.compat): DICOM Modality against the channel's "
              "modality, SeriesDescription against conflicting sequence names, and intensity statistics (fraction "
              f"of voxels <= {AIR_HU:g}, fraction < 0) against the range of the bundle's training images")
_STATS = ("body_p01", "body_p50", "body_p99", "negative_fraction", "air_fraction", "min_value")
_MODALITY_ALIASES = {"MRI": "MR", "MR": "MR", "CT": "CT", "PET": "PT", "PT": "PT", "US": "US"}


def intensity_statistics(array: Any) -> dict[str, float]:
    """Simple, scale-free statistics of one scan's raw intensities (module docstring).

    Args:
        array: ``(I, J, K)`` or ``(T, I, J, K)`` intensities, any numeric dtype.

    Returns:
        ``{"body_p01", "body_p50", "body_p99", "negative_fraction", "air_fraction", "min_value"}``.
    """
    a = np.asarray(array, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {k: float("nan") for k in _STATS}
    body = a[a > a.mean()]
    if body.size == 0:
        body = a
    p01, p50, p99 = np.percentile(body, [1, 50, 99])
    return {"body_p01": float(p01), "body_p50": float(p50), "body_p99": float(p99),
            "negative_fraction": float((a < 0).mean()), "air_fraction": float((a <= AIR_HU).mean()),
            "min_value": float(a.min())}


def intensity_profile(arrays: Sequence[Any], *, source: str) -> dict[str, Any]:
    """The ``intensity`` entry of a channel: ``[min, max]`` of each statistic over ``arrays``
    (one per training image), rounded to 4 significant digits, with ``n_images`` and ``source``."""
    stats = [intensity_statistics(a) for a in arrays]
    if not stats:
        raise ValueError("intensity_profile needs at least one image")
    out: dict[str, Any] = {"n_images": len(stats), "source": source}
    for k in _STATS:
        vals = [s[k] for s in stats if np.isfinite(s[k])]
        out[k] = [float(f"{min(vals):.4g}"), float(f"{max(vals):.4g}")] if vals else None
    return out


def input_spec(bundle_json: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{channel name: spec}`` of a bundle (its ``input`` key), or, for bundles without one,
    the modality of ``preprocess.modalities`` when it is ``CT`` or ``MR`` (a normalisation
    rule, so only a CT series for an MR model or the reverse is a clear mismatch; no
    intensity or sequence check; ``none``, as in imported models: no check)."""
    channels = [str(c) for c in bundle_json.get("channels") or []]
    declared = (bundle_json.get("input") or {}).get("channels") or {}
    mods = list((bundle_json.get("preprocess") or {}).get("modalities") or [])
    out = {}
    for i, ch in enumerate(channels):
        spec = dict(declared.get(ch) or {})
        if "modality" not in spec and i < len(mods) and str(mods[i]).upper() in ("CT", "MR"):
            # the normalisation rule, not a statement about the data: only CT <-> MR is a clear mismatch
            spec["modality"] = str(mods[i])
            spec["modality_from_preprocess"] = True
        out[ch] = spec
    return out


def _tokens(text: str) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", text.lower()) if t}


def check_input(volume: Any, spec: Mapping[str, Any], *, channel: str, model: str,
                allow_mismatch: bool = False) -> list[dict[str, str]]:
    """Check one input channel against its spec (module docstring).

    Args:
        volume: the scan (:class:`~medcnn.volume.Volume`; DICOM ``meta`` Modality and
            SeriesDescription used when present).
        spec: the channel's entry of :func:`input_spec`.
        channel: channel name (for messages).
        model: model name (for messages).
        allow_mismatch: turn a clear mismatch into the :data:`OVERRIDDEN_CODE` flag.

    Returns:
        Read notes ``{"code", "message", "rule"}`` (empty when the input fits).

    Raises:
        InputModelMismatchError: a clear mismatch, unless ``allow_mismatch``.
    """
    path = getattr(volume, "source", None)
    meta = getattr(volume, "meta", {}) or {}
    want = _MODALITY_ALIASES.get(str(spec.get("modality") or "").upper(), str(spec.get("modality") or "").upper())
    sequence = spec.get("sequence") or (f"{want} {channel}" if want else channel)
    clear: list[str] = []
    doubtful: list[str] = []
    got_mod = str(meta.get("Modality") or "").upper()
    got_norm = _MODALITY_ALIASES.get(got_mod, got_mod)
    if want and got_mod and got_norm != want and (not spec.get("modality_from_preprocess")
                                                  or {want, got_norm} == {"CT", "MR"}):
        clear.append(f"DICOM Modality {got_mod}")
    desc = str(meta.get("SeriesDescription") or "")
    conflicts = sorted(_tokens(desc) & {str(c).lower() for c in spec.get("conflicting_descriptions") or []})
    if conflicts:
        doubtful.append(f"SeriesDescription {desc!r} names {', '.join(conflicts)}")
    prof = spec.get("intensity") or {}
    if prof and getattr(volume, "array", None) is not None:
        st = intensity_statistics(volume.array)
        train_min = (prof.get("min_value") or [None])[0]
        train_neg = (prof.get("negative_fraction") or [None, None])[1]
        hu_like = st["air_fraction"] >= AIR_FRACTION_MIN and st["min_value"] <= -900
        if hu_like and train_min is not None and train_min > AIR_HU:
            clear.append(f"HU-like intensities ({100 * st['air_fraction']:.0f}% of voxels <= {AIR_HU:g}, minimum "
                         f"{st['min_value']:g}; the training images never went below {train_min:g})")
        elif train_neg is not None and st["negative_fraction"] > train_neg + NEGATIVE_FRACTION_MARGIN:
            doubtful.append(f"{100 * st['negative_fraction']:.0f}% of voxels below 0 (training images: at most "
                            f"{100 * train_neg:.0f}%; a normalised or subtracted image?)")
    where = f"{path}: " if path else ""
    if clear and not allow_mismatch:
        raise InputModelMismatchError(
            f"{where}expected a {sequence} ({want or 'any modality'}) for channel {channel!r} of model {model}, got "
            f"{' and '.join(clear)}; use a model for this input, or pass --allow-input-mismatch to run it anyway "
            f"(outputs flagged {OVERRIDDEN_CODE})", path=path)
    notes = []
    if clear:
        notes.append({"code": OVERRIDDEN_CODE, "rule": CHECK_RULE,
                      "message": f"input does not fit model {model} (expected a {sequence}, got {' and '.join(clear)}); "
                                 "run anyway by --allow-input-mismatch"})
    if doubtful:
        notes.append({"code": SUSPECTED_CODE, "rule": CHECK_RULE,
                      "message": f"input may not fit model {model} (channel {channel!r} expects a {sequence}): "
                                 + "; ".join(doubtful)})
    return notes


def check_inputs(volumes: Sequence[Any], bundle_json: Mapping[str, Any], *, model: str,
                 allow_mismatch: bool = False) -> list[dict[str, str]]:
    """:func:`check_input` for each channel of a case (``volumes`` in the bundle's channel
    order); the notes are also appended to each volume's read notes (``meta["read_notes"]``),
    so they reach every output as QC flags. Returns all notes."""
    spec = input_spec(bundle_json)
    out = []
    for (ch, sp), v in zip(spec.items(), volumes):
        notes = check_input(v, sp, channel=ch, model=model, allow_mismatch=allow_mismatch)
        if notes:
            v.meta.setdefault("read_notes", [])
            v.meta["read_notes"] = list(v.meta["read_notes"]) + notes
        out += notes
    return out
