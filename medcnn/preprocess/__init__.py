"""Invertible preprocessing: reorient, crop, normalise, resample — each step recorded.

The network sees a float32 ``(C, X, Y, Z)`` array on a *model grid*; every spatial step
that produced it (lossless reorientation, foreground crop, resampling) is written into a
:class:`PreprocessRecord`, whose :meth:`~PreprocessRecord.to_input_grid` brings labels or
probabilities back onto **exactly** the input's geometry.

Typical use::

    spec = PreprocessSpec(orientation="RAS", target_spacing=(1.0, 1.0, 1.0), modalities=("MR",))
    x, record = Preprocessor(spec).forward(image)           # x: (1, X, Y, Z) float32
    probs = model(x)                                        # (C, X, Y, Z) on record.model_geometry
    back = record.to_input_grid(probs, kind="probability")  # Volume on image.geometry

This package imports numpy, scipy and medcnn only (no torch).
"""

from __future__ import annotations

from medcnn.preprocess._intensity import (MODALITIES, MR_FOREGROUNDS, border_background, check_finite, check_modality,
                                         ct_statistics, describe_mr_foreground, mr_foreground_mask, normalise)
from medcnn.preprocess._orient import Reorient, check_orientation_code, plan_reorient, reorient
from medcnn.preprocess._pipeline import (
    CHANNEL_ATOL_MM,
    PreprocessRecord,
    Preprocessor,
    PreprocessSpec,
    check_same_grid,
    foreground_box,
)
from medcnn.preprocess._resample import anisotropic_axis, default_order, resample, resample_to, resampled_geometry

__all__ = [
    "PreprocessSpec",
    "Preprocessor",
    "PreprocessRecord",
    "Reorient",
    "reorient",
    "plan_reorient",
    "check_orientation_code",
    "resample",
    "resample_to",
    "resampled_geometry",
    "anisotropic_axis",
    "default_order",
    "normalise",
    "check_finite",
    "check_modality",
    "ct_statistics",
    "check_same_grid",
    "foreground_box",
    "CHANNEL_ATOL_MM",
    "MODALITIES",
    "MR_FOREGROUNDS",
    "describe_mr_foreground",
    "border_background",
    "mr_foreground_mask",
]
