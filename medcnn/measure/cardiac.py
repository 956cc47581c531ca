"""Cardiac function from short-axis label maps: volumes, EF, mass, output, and QC flags.

Definitions (also in :data:`CARDIAC_COLUMNS`):

* **EDV / ESV (mL)**: blood-pool voxel count x voxel volume (mm^3) / 1000 at end-diastole
  / end-systole (Simpson's method of discs on the label map's own slices: each voxel is a
  disc element). What counts as blood pool (e.g. papillary muscles) is whatever the label
  map says.
* **SV = EDV - ESV (mL)**, **EF = SV / EDV x 100 (%)**.
* **LV myocardial mass (g)** = LV myocardium volume at ED (mL) x 1.05 g/mL, the usual
  myocardial density (SCMR post-processing recommendations). Reported only when the ED
  map contains the myocardium label.
* **Cardiac output (L/min)** = SV (mL) x heart rate (beats/min) / 1000. The heart rate
  comes from, in this order: the ``heart_rate_bpm`` argument; ``60000 / rr_interval_ms``;
  for a cine series only, its frame times assuming the frames span exactly one cardiac
  cycle evenly (RR = last frame time - first frame time + median frame interval), which is
  how retrospectively gated cine is reconstructed. ``heart_rate_source`` says which.
* **Cine**: ED is the frame with the largest LV blood-pool volume and ES the frame with
  the smallest non-zero one (frames are not assumed to start at ED).

Label meanings come from a :class:`CardiacLabels` object, never from constants in the
arithmetic. The slice axis is the array axis with the coarsest spacing
(:func:`medcnn.measure.slice_axis`).

* **RV**: the same definitions on the RV blood-pool label (EDV, ESV, SV, EF, output).
  Without an RV label (``CardiacLabels.rv_blood=None``, or the label absent from both
  maps) every RV number is NaN, never 0, and ``rv_note`` says why.

QC flags (:class:`QCFlag`, ``code`` + ``message``; every code and its tolerance in
:data:`QC_FLAGS`; each code appears once per case in ``qc_codes``, its message once per
phase): ``LV_EMPTY``, ``LV_FEW_SLICES`` (LV on fewer than 3 slices), ``LV_SLICE_GAP``
(slices without LV between LV slices), ``LV_NOT_COVERED`` / ``RV_NOT_COVERED`` (the
ventricle does not taper inside the stack: on *both* end slices of the stack its area is
at least ``EDGE_AREA_FRACTION`` of its largest slice's area, so the apex, or the base, lies
outside the stack; a ventricle merely touching an end slice is normal, short-axis stacks
are planned from the base, where the ventricle is widest), ``MYO_MISSING_ON_LV_SLICES``
(checked only when the myocardium label occurs somewhere in that map), ``ESV_GT_EDV``,
``RV_ESV_GT_EDV``, ``RV_EMPTY`` (RV labelled in one phase only), ``LV_EMPTY_FRAMES``
(cine), ``ED_ES_GRID_DIFFERS``, and the physiological checks

* ``LV_RV_SV_MISMATCH``: ``|LV SV - RV SV| > SV_MISMATCH_FRACTION x max(LV SV, RV SV)``
  (both ventricles eject the same blood over a beat unless a valve leaks or a shunt
  exists);
* ``MYO_ED_ES_MISMATCH``: the myocardium is incompressible, so ``|myo ED - myo ES| >
  MYO_ED_ES_FRACTION x max(myo ED, myo ES)`` points at a segmentation error (checked when
  both phases carry the myocardium label);
* ``MYO_FRAME_OUTLIER`` (cine): frames whose myocardium volume differs from the median over
  the frames by more than ``MYO_FRAME_FRACTION x median``;

and the anatomical plausibility checks of each phase (statistics from
:mod:`medcnn.measure.anatomy`, in plane on the short-axis slices):

* ``LV_NOT_ENCLOSED`` (checked when the map carries the myocardium label): on the median LV
  slice more than ``LV_OPEN_FRACTION`` of the blood pool's in-plane boundary touches
  background, or more than ``LV_DETACHED_FRACTION`` of the blood-pool volume lies in
  components with no myocardium within ``DETACHED_DISTANCE_MM`` (a bright round structure
  away from the heart labelled LV);
* ``RV_NOT_ADJACENT``: the median over the slices holding both of the smallest in-plane
  distance between the RV and the LV (myocardium or blood pool) exceeds ``RV_LV_GAP_MM``, or
  the RV and the LV share no slice.

The tolerances are calibrated on expert contours: on the 80 ACDC reference label maps
(16 per pathology group) each flag fires on at most 2 of the 16 normal (NOR) patients;
the rates per group are in ``docs/metrics.md`` and recomputed by
``tests/test_acdc_pairs.py``. The two plausibility flags fire on none of the 160 ACDC and 8
Sunnybrook expert maps, with a margin (``scripts/calibrate_cardiac_anatomy.py``).

**BSA-indexed values** (given ``height_cm`` and ``weight_kg``, :mod:`medcnn.measure.body`):
Mosteller BSA = sqrt(height_cm x weight_kg / 3600) m^2; LV EDVi, ESVi, SVi, RV EDVi, ESVi
in mL/m^2 and LV mass index in g/m^2 = the value / BSA (:data:`BSA_COLUMNS`). Without a height
and weight there are no indexed values (no columns), never a guessed BSA.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medcnn.errors import ConfigError
from medcnn.measure._common import check_known_labels, count_values, label_array, slice_axis
from medcnn.measure.anatomy import DETACHED_DISTANCE_MM, AnatomyStatistics, anatomy_statistics
from medcnn.measure.body import BSA_COLUMNS, BodySize
from medcnn.volume import Volume

__all__ = [
    "CardiacLabels",
    "QCFlag",
    "CardiacFunction",
    "CineFunction",
    "cardiac_function",
    "cine_function",
    "slice_qc",
    "anatomy_qc",
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "MIN_LV_SLICES",
    "EDGE_AREA_FRACTION",
    "SV_MISMATCH_FRACTION",
    "MYO_ED_ES_FRACTION",
    "MYO_FRAME_FRACTION",
    "LV_OPEN_FRACTION",
    "LV_DETACHED_FRACTION",
    "RV_LV_GAP_MM",
    "CARDIAC_COLUMNS",
    "BSA_COLUMNS",
    "columns_with_bsa",
    "QC_FLAGS",
]

#: Density of myocardium used for LV mass (g/mL).
MYOCARDIAL_DENSITY_G_PER_ML = 1.05
#: Fewer LV slices than this raises ``LV_FEW_SLICES``.
MIN_LV_SLICES = 3
#: ``LV_NOT_COVERED`` / ``RV_NOT_COVERED`` when the ventricle's area on both end slices of the
#: stack is at least this fraction of its largest slice's area (ACDC experts' maps: the
#: apical end slice holds at most 42 % at ED, 57 % at ES in one DCM patient; 34 % in NOR).
EDGE_AREA_FRACTION = 0.5
#: ``LV_RV_SV_MISMATCH`` when |LV SV - RV SV| exceeds this fraction of the larger SV
#: (ACDC experts' maps: median 26 %, NOR up to 36 %; 0.35 fires on 1 of 16 NOR).
SV_MISMATCH_FRACTION = 0.35
#: ``MYO_ED_ES_MISMATCH`` when |myocardium ED - ES| exceeds this fraction of the larger volume
#: (ACDC experts' maps: median 13 %, NOR up to 27 %; 0.25 fires on 1 of 16 NOR).
MYO_ED_ES_FRACTION = 0.25
#: ``MYO_FRAME_OUTLIER`` when a cine frame's myocardium differs from the median by more than
#: this fraction of the median (the ED/ES tolerance: no expert cine contours to calibrate on).
MYO_FRAME_FRACTION = MYO_ED_ES_FRACTION
#: ``LV_NOT_ENCLOSED`` when, on the median LV slice, more than this fraction of the blood pool's
#: in-plane boundary touches background (ACDC and Sunnybrook experts' maps: 0 on every map; the
#: most open single slice of any map 19 %, a basal slice: scripts/calibrate_cardiac_anatomy.py).
LV_OPEN_FRACTION = 0.5
#: ``LV_NOT_ENCLOSED`` also when more than this fraction of the blood-pool volume lies in
#: components with no myocardium within ``DETACHED_DISTANCE_MM`` (experts' maps: 0 on every map).
LV_DETACHED_FRACTION = 0.1
#: ``RV_NOT_ADJACENT`` when the median over the shared slices of the smallest in-plane RV-LV
#: distance exceeds this (mm) (ACDC experts' maps: at most 1.92 mm, one pixel: the RV touches the
#: LV on every slice holding both, in all 160 maps).
RV_LV_GAP_MM = 10.0

CARDIAC_COLUMNS: dict[str, str] = {
    "lv_edv_ml": "LV end-diastolic volume in mL: blood-pool voxel count x voxel volume (mm^3) / 1000 at ED",
    "lv_esv_ml": "LV end-systolic volume in mL (same method, at ES)",
    "lv_sv_ml": "LV stroke volume in mL = EDV - ESV",
    "lv_ef_percent": "LV ejection fraction in % = (EDV - ESV) / EDV x 100",
    "lv_myo_ed_ml": "LV myocardium volume at ED in mL",
    "lv_myo_es_ml": "LV myocardium volume at ES in mL (for the incompressibility check; NaN when ES has no myocardium)",
    "lv_myocardial_mass_g": f"LV myocardial mass in g = myocardium volume at ED (mL) x {MYOCARDIAL_DENSITY_G_PER_ML} g/mL",
    "rv_edv_ml": "RV end-diastolic volume in mL (RV blood-pool label)",
    "rv_esv_ml": "RV end-systolic volume in mL",
    "rv_sv_ml": "RV stroke volume in mL",
    "rv_ef_percent": "RV ejection fraction in % = (RV EDV - RV ESV) / RV EDV x 100",
    "rv_note": "why the RV numbers are NaN (no RV label configured, or the RV label absent from both maps); "
               "empty when the RV was measured",
    "heart_rate_bpm": "heart rate used for cardiac output, beats per minute",
    "heart_rate_source": "where the heart rate came from",
    "lv_cardiac_output_l_per_min": "LV cardiac output in L/min = LV SV (mL) x heart rate (bpm) / 1000",
    "rv_cardiac_output_l_per_min": "RV cardiac output in L/min = RV SV (mL) x heart rate (bpm) / 1000",
    "ed_frame": "cine only: ED frame index (largest LV volume), 0-based",
    "es_frame": "cine only: ES frame index (smallest non-zero LV volume), 0-based",
    "ed_time_ms": "cine only: trigger time of the ED frame in ms",
    "es_time_ms": "cine only: trigger time of the ES frame in ms",
    "qc_codes": "QC flag codes, ';'-separated (empty = no flag)",
    "qc_messages": "QC flag messages, ';'-separated",
}

#: Every QC flag code and what raises it (tolerances included): the methods text of reports.
QC_FLAGS: dict[str, str] = {
    "LV_EMPTY": "no LV blood-pool voxels in a phase",
    "LV_FEW_SLICES": f"LV present on fewer than {MIN_LV_SLICES} slices",
    "LV_SLICE_GAP": "slices without LV between LV slices",
    "LV_NOT_COVERED": f"the LV does not taper inside the stack: its area on both end slices is >= "
                      f"{EDGE_AREA_FRACTION:.0%} of its largest slice (apex or base outside the stack)",
    "RV_NOT_COVERED": f"the RV does not taper inside the stack: its area on both end slices is >= "
                      f"{EDGE_AREA_FRACTION:.0%} of its largest slice (apex or base outside the stack)",
    "MYO_MISSING_ON_LV_SLICES": "LV blood pool without myocardium on some slices (when the map has myocardium)",
    "ESV_GT_EDV": "LV ESV > EDV: ED/ES swapped or segmentation error",
    "RV_ESV_GT_EDV": "RV ESV > EDV",
    "RV_EMPTY": "RV labelled in one phase only",
    "LV_RV_SV_MISMATCH": f"|LV SV - RV SV| > {SV_MISMATCH_FRACTION:.0%} of the larger SV (expected only with "
                         "valve regurgitation or a shunt)",
    "MYO_ED_ES_MISMATCH": f"|myocardium volume ED - ES| > {MYO_ED_ES_FRACTION:.0%} of the larger (the myocardium "
                          "is incompressible)",
    "MYO_FRAME_OUTLIER": f"cine frames whose myocardium volume differs from the median over the frames by more "
                         f"than {MYO_FRAME_FRACTION:.0%} of the median",
    "LV_EMPTY_FRAMES": "cine frames without LV",
    "ED_ES_GRID_DIFFERS": "ED and ES maps on different grids (volumes are still in mL)",
    "LV_NOT_ENCLOSED": f"the LV blood pool is not enclosed by myocardium: on the median LV slice more than "
                       f"{LV_OPEN_FRACTION:.0%} of its in-plane boundary touches background, or more than "
                       f"{LV_DETACHED_FRACTION:.0%} of its volume lies in components with no myocardium within "
                       f"{DETACHED_DISTANCE_MM:g} mm in plane (checked when the map has myocardium)",
    "RV_NOT_ADJACENT": f"the RV is not beside the LV: the median over the slices holding both of the smallest "
                       f"in-plane RV-LV distance is > {RV_LV_GAP_MM:g} mm, or no slice holds both",
}
CARDIAC_COLUMNS["qc_codes"] += " (codes: " + "; ".join(f"{k} = {v}" for k, v in QC_FLAGS.items()) + ")"


@dataclass(frozen=True)
class CardiacLabels:
    """Which label value means which cardiac structure (``None``: not labelled).

    Defaults follow the ACDC/M&Ms-style convention ``1 = LV blood pool, 2 = LV myocardium,
    3 = RV blood pool``; Sunnybrook uses 1 and 2 only (RV label absent -> RV not reported).
    """

    lv_blood: int = 1
    lv_myo: int | None = 2
    rv_blood: int | None = 3

    def __post_init__(self) -> None:
        values = [v for v in (self.lv_blood, self.lv_myo, self.rv_blood) if v is not None]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ConfigError.expected("positive integer label values (0 is background)", f"{v!r}")
        if len(set(values)) != len(values):
            raise ConfigError.expected("distinct label values for LV blood, LV myocardium and RV blood",
                                       f"{self}")

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)

    def names(self) -> dict[int, str]:
        """``{label value: name}`` of the defined structures (``lv_blood_pool``,
        ``lv_myocardium``, ``rv_blood_pool``, the names of the ACDC / Sunnybrook dataset.json)."""
        pairs = ((self.lv_blood, "lv_blood_pool"), (self.lv_myo, "lv_myocardium"), (self.rv_blood, "rv_blood_pool"))
        return {int(v): name for v, name in pairs if v is not None}


def _defined(labels: CardiacLabels) -> list[int]:
    return [v for v in (labels.lv_blood, labels.lv_myo, labels.rv_blood) if v is not None]


@dataclass(frozen=True)
class QCFlag:
    """One quality-control finding: a stable ``code`` and a human ``message``."""

    code: str
    message: str
    phase: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass
class CardiacFunction:
    """Cardiac function of one patient (volumes mL, EF %, mass g, output L/min).

    Numbers that cannot be computed are NaN (e.g. RV without an RV label, output without
    a heart rate); ``rv_note`` says why the RV numbers are missing. ``qc_flags`` lists the
    findings of the QC checks.
    """

    lv_edv_ml: float
    lv_esv_ml: float
    lv_sv_ml: float
    lv_ef_percent: float
    lv_myo_ed_ml: float = math.nan
    lv_myo_es_ml: float = math.nan
    lv_myocardial_mass_g: float = math.nan
    rv_edv_ml: float = math.nan
    rv_esv_ml: float = math.nan
    rv_sv_ml: float = math.nan
    rv_ef_percent: float = math.nan
    rv_note: str = ""
    heart_rate_bpm: float = math.nan
    heart_rate_source: str = "none (no heart rate, RR interval or frame times given)"
    lv_cardiac_output_l_per_min: float = math.nan
    rv_cardiac_output_l_per_min: float = math.nan
    ed_frame: int | None = None
    es_frame: int | None = None
    ed_time_ms: float | None = None
    es_time_ms: float | None = None
    qc_flags: list[QCFlag] = field(default_factory=list)
    labels: CardiacLabels = field(default_factory=CardiacLabels)
    body: BodySize | None = None

    @property
    def qc_codes(self) -> list[str]:
        """Codes of the QC flags, each once (in order of first appearance; a code raised at
        ED and at ES has two messages but one code)."""
        return list(dict.fromkeys(f.code for f in self.qc_flags))

    @property
    def columns(self) -> dict[str, str]:
        """The columns of this result and their meaning: :data:`CARDIAC_COLUMNS`, with the BSA
        columns (:data:`BSA_COLUMNS`) before the QC columns when a height and weight were given."""
        return columns_with_bsa(self.body is not None)

    def indexed(self) -> dict[str, float]:
        """Height, weight, BSA (m^2) and the BSA-indexed values (mL/m^2, g/m^2); empty without
        a body size."""
        if self.body is None:
            return {}
        return self.body.index({k: getattr(self, k) for k in CARDIAC_COLUMNS if k not in ("qc_codes", "qc_messages")})

    def _values(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in CARDIAC_COLUMNS if k not in ("qc_codes", "qc_messages")}
        d.update(self.indexed())
        return d

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict; ``qc_flags`` as a list of dicts, plus ``methods``."""
        d = self._values()
        d["qc_flags"] = [f.to_dict() for f in self.qc_flags]
        d["labels"] = self.labels.to_dict()
        d["methods"] = self.columns
        return d

    def to_row(self) -> dict[str, Any]:
        """Flat dict for one table row (QC flags joined with ';'; the BSA columns only when a
        height and weight were given)."""
        d = self._values()
        d["qc_codes"] = ";".join(self.qc_codes)
        d["qc_messages"] = ";".join(f"{f.phase + ': ' if f.phase else ''}{f.message}" for f in self.qc_flags)
        return d

    def to_frame(self) -> pd.DataFrame:
        cols = self.columns
        df = pd.DataFrame([self.to_row()], columns=list(cols))
        df.attrs["columns"] = cols
        return df


def columns_with_bsa(bsa: bool) -> dict[str, str]:
    """:data:`CARDIAC_COLUMNS`, with :data:`BSA_COLUMNS` inserted before ``qc_codes`` when
    ``bsa`` (the column order of every cardiac table)."""
    if not bsa:
        return dict(CARDIAC_COLUMNS)
    out = {k: v for k, v in CARDIAC_COLUMNS.items() if k not in ("qc_codes", "qc_messages")}
    out.update(BSA_COLUMNS)
    out.update({k: CARDIAC_COLUMNS[k] for k in ("qc_codes", "qc_messages")})
    return out


@dataclass
class CineFunction:
    """Result of :func:`cine_function`: the volume curve and the derived function.

    Attributes:
        curve: DataFrame with ``frame``, ``time_ms``, ``lv_volume_ml``,
            ``lv_myo_volume_ml``, ``rv_volume_ml`` (NaN where not labelled).
        function: :class:`CardiacFunction` at the detected ED/ES frames.
    """

    curve: pd.DataFrame
    function: CardiacFunction

    def to_frame(self) -> pd.DataFrame:
        return self.function.to_frame()


# ---------------------------------------------------------------------- helpers
def _volume_ml(counts: dict[int, int], label: int | None, voxel_ml: float) -> float:
    if label is None:
        return math.nan
    return counts.get(int(label), 0) * voxel_ml


def _counts(arr: np.ndarray) -> dict[int, int]:
    values, counts = count_values(arr)
    return dict(zip(values.tolist(), counts.tolist()))


def _fmt_slices(idx: np.ndarray, limit: int = 12) -> str:
    items = [str(int(i)) for i in idx[:limit]]
    return ", ".join(items) + (", ..." if len(idx) > limit else "")


def slice_qc(volume: Volume, *, labels: CardiacLabels = CardiacLabels(), phase: str | None = None) -> list[QCFlag]:
    """Slice-coverage QC of one 3D cardiac label map (see the module docstring for codes).

    Args:
        volume: label map (I, J, K); the slice axis is the coarsest-spacing axis.
        labels: label meanings.
        phase: name used in the messages ("ED", "ES", "frame 3").
    """
    arr = label_array(volume)
    return _slice_qc(arr, volume, labels, phase)


def _slice_qc(arr: np.ndarray, volume: Volume, labels: CardiacLabels, phase: str | None) -> list[QCFlag]:
    ax = slice_axis(volume.geometry)
    other = tuple(a for a in range(3) if a != ax)
    n_slices = arr.shape[ax]
    where = f" at {phase}" if phase else ""
    lv_on = np.any(arr == labels.lv_blood, axis=other)
    flags: list[QCFlag] = []
    if not lv_on.any():
        return [QCFlag("LV_EMPTY", f"no LV blood-pool voxels (label {labels.lv_blood}){where}", phase)]
    idx = np.flatnonzero(lv_on)
    if len(idx) < MIN_LV_SLICES:
        flags.append(QCFlag("LV_FEW_SLICES",
                            f"LV present on {len(idx)} slice(s){where}, expected at least {MIN_LV_SLICES} "
                            f"(slice axis {ax})", phase))
    gaps = np.setdiff1d(np.arange(idx[0], idx[-1] + 1), idx)
    if len(gaps):
        flags.append(QCFlag("LV_SLICE_GAP", f"no LV on slice(s) {_fmt_slices(gaps)} between LV slices "
                                            f"{idx[0]} and {idx[-1]}{where}", phase))
    for name, label in (("LV", labels.lv_blood), ("RV", labels.rv_blood)):
        flag = _coverage_flag(np.sum(arr == label, axis=other) if label is not None else None, name, where, phase)
        if flag is not None:
            flags.append(flag)
    if labels.lv_myo is not None:
        myo_on = np.any(arr == labels.lv_myo, axis=other)
        if myo_on.any():
            missing = np.flatnonzero(lv_on & ~myo_on)
            if len(missing):
                flags.append(QCFlag("MYO_MISSING_ON_LV_SLICES",
                                    f"LV blood pool without myocardium (label {labels.lv_myo}) on slice(s) "
                                    f"{_fmt_slices(missing)}{where}", phase))
    return flags


def anatomy_qc(volume: Volume, *, labels: CardiacLabels = CardiacLabels(), phase: str | None = None) -> list[QCFlag]:
    """Anatomical plausibility QC of one 3D cardiac label map: ``LV_NOT_ENCLOSED`` and
    ``RV_NOT_ADJACENT`` (module docstring; statistics from
    :func:`medcnn.measure.anatomy.anatomy_statistics`).

    Args:
        volume: label map (I, J, K); the slice axis is the coarsest-spacing axis, distances
            are in mm with the map's in-plane spacing.
        labels: label meanings.
        phase: name used in the messages ("ED", "ES", "frame 3").
    """
    return _anatomy_qc(label_array(volume), volume, labels, phase)


def _anatomy_qc(arr: np.ndarray, volume: Volume, labels: CardiacLabels, phase: str | None) -> list[QCFlag]:
    st: AnatomyStatistics = anatomy_statistics(arr, volume.spacing, lv_blood=labels.lv_blood, lv_myo=labels.lv_myo,
                                               rv_blood=labels.rv_blood)
    where = f" at {phase}" if phase else ""
    flags: list[QCFlag] = []
    reasons = []
    if st.lv_open_fraction > LV_OPEN_FRACTION:
        reasons.append(f"on the median of its {st.lv_slices} slice(s) {st.lv_open_fraction:.0%} of the blood pool's "
                       f"in-plane boundary touches background (tolerance {LV_OPEN_FRACTION:.0%})")
    if st.lv_detached_fraction > LV_DETACHED_FRACTION:
        far = "on slices without myocardium" if math.isinf(st.lv_component_distance_mm) else \
            f"up to {st.lv_component_distance_mm:.1f} mm away"
        reasons.append(f"{st.lv_detached_fraction:.0%} of the blood-pool volume lies in component(s) with no "
                       f"myocardium within {st.detached_mm:g} mm ({far}; tolerance {LV_DETACHED_FRACTION:.0%})")
    if reasons:
        flags.append(QCFlag("LV_NOT_ENCLOSED", f"LV blood pool (label {labels.lv_blood}) not enclosed by myocardium "
                                               f"(label {labels.lv_myo}){where}: " + "; ".join(reasons)
                             + ": a structure outside the heart labelled LV, or the cavity missed", phase))
    if math.isinf(st.rv_lv_distance_mm):
        flags.append(QCFlag("RV_NOT_ADJACENT", f"RV (label {labels.rv_blood}) and LV share no slice{where}: the RV "
                                               "label lies outside the heart or on the wrong slices", phase))
    elif st.rv_lv_distance_mm > RV_LV_GAP_MM:
        flags.append(QCFlag("RV_NOT_ADJACENT",
                            f"RV (label {labels.rv_blood}) not beside the LV{where}: median over {st.rv_shared_slices} "
                            f"shared slice(s) of the smallest in-plane RV-LV distance {st.rv_lv_distance_mm:.1f} mm "
                            f"(tolerance {RV_LV_GAP_MM:g} mm): a structure outside the heart labelled RV", phase))
    return flags


def _phase_qc(arr: np.ndarray, volume: Volume, labels: CardiacLabels, phase: str | None) -> list[QCFlag]:
    """Slice-coverage and anatomical QC of one phase."""
    flags = _slice_qc(arr, volume, labels, phase)
    if any(f.code == "LV_EMPTY" for f in flags):
        return flags
    return flags + _anatomy_qc(arr, volume, labels, phase)


def _coverage_flag(area: np.ndarray | None, name: str, where: str, phase: str | None) -> QCFlag | None:
    """``<name>_NOT_COVERED`` when the structure's voxel count on both end slices of the
    stack (``area``: per slice) is >= ``EDGE_AREA_FRACTION`` of its largest slice's."""
    if area is None or len(area) < 2 or not area.any():
        return None
    largest = float(area.max())
    first, last = float(area[0]) / largest, float(area[-1]) / largest
    if min(first, last) < EDGE_AREA_FRACTION:
        return None
    return QCFlag(f"{name}_NOT_COVERED",
                  f"{name} does not taper inside the stack{where}: first slice {first:.0%}, last slice ({len(area) - 1}) "
                  f"{last:.0%} of its largest slice (tolerance {EDGE_AREA_FRACTION:.0%}): apex or base outside the "
                  "stack, volumes too small", phase)


def _heart_rate(heart_rate_bpm: float | None, rr_interval_ms: float | None,
                frame_times_ms: tuple[float, ...] | None) -> tuple[float, str]:
    if heart_rate_bpm is not None and rr_interval_ms is not None:
        raise ConfigError.expected("heart_rate_bpm or rr_interval_ms, not both",
                                   f"{heart_rate_bpm} bpm and {rr_interval_ms} ms")
    if heart_rate_bpm is not None:
        hr = float(heart_rate_bpm)
        if not (np.isfinite(hr) and 0 < hr < 400):
            raise ConfigError.expected("a heart rate between 0 and 400 bpm", f"{heart_rate_bpm!r}")
        return hr, "heart_rate_bpm argument"
    if rr_interval_ms is not None:
        rr = float(rr_interval_ms)
        if not (np.isfinite(rr) and rr > 0):
            raise ConfigError.expected("an RR interval > 0 ms", f"{rr_interval_ms!r}")
        return 60000.0 / rr, "rr_interval_ms argument (HR = 60000 / RR)"
    if frame_times_ms is not None and len(frame_times_ms) >= 2:
        t = np.asarray(frame_times_ms, dtype=np.float64)
        step = float(np.median(np.diff(t)))
        rr = float(t[-1] - t[0] + step)
        if step > 0 and rr > 0:
            return 60000.0 / rr, (f"frame times, assuming the {len(t)} frames span one cardiac cycle evenly "
                                  f"(RR = last - first + median interval = {rr:.1f} ms)")
    return math.nan, CardiacFunction.heart_rate_source


def _function(ed_counts: dict[int, int], es_counts: dict[int, int], ed_voxel_ml: float, es_voxel_ml: float,
              labels: CardiacLabels, hr: float, hr_source: str, density: float) -> CardiacFunction:
    edv = _volume_ml(ed_counts, labels.lv_blood, ed_voxel_ml)
    esv = _volume_ml(es_counts, labels.lv_blood, es_voxel_ml)
    sv = edv - esv
    ef = sv / edv * 100.0 if edv > 0 else math.nan
    myo = myo_es = math.nan
    if labels.lv_myo is not None and ed_counts.get(labels.lv_myo, 0) > 0:
        myo = _volume_ml(ed_counts, labels.lv_myo, ed_voxel_ml)
    if labels.lv_myo is not None and es_counts.get(labels.lv_myo, 0) > 0:
        myo_es = _volume_ml(es_counts, labels.lv_myo, es_voxel_ml)
    rv_present = labels.rv_blood is not None and (ed_counts.get(labels.rv_blood, 0) + es_counts.get(labels.rv_blood, 0)) > 0
    rv_note = "" if rv_present else (
        "RV not measured: no RV label configured" if labels.rv_blood is None
        else f"RV not measured: RV label {labels.rv_blood} absent from both maps")
    rv_edv = _volume_ml(ed_counts, labels.rv_blood, ed_voxel_ml) if rv_present else math.nan
    rv_esv = _volume_ml(es_counts, labels.rv_blood, es_voxel_ml) if rv_present else math.nan
    rv_sv = rv_edv - rv_esv
    rv_ef = rv_sv / rv_edv * 100.0 if rv_present and rv_edv > 0 else math.nan
    return CardiacFunction(
        lv_edv_ml=edv, lv_esv_ml=esv, lv_sv_ml=sv, lv_ef_percent=ef,
        lv_myo_ed_ml=myo, lv_myo_es_ml=myo_es, lv_myocardial_mass_g=myo * density,
        rv_edv_ml=rv_edv, rv_esv_ml=rv_esv, rv_sv_ml=rv_sv, rv_ef_percent=rv_ef, rv_note=rv_note,
        heart_rate_bpm=hr, heart_rate_source=hr_source,
        lv_cardiac_output_l_per_min=sv * hr / 1000.0, rv_cardiac_output_l_per_min=rv_sv * hr / 1000.0,
        labels=labels)


def _pair_flags(fn: CardiacFunction) -> list[QCFlag]:
    flags = []
    if fn.lv_esv_ml > fn.lv_edv_ml:
        flags.append(QCFlag("ESV_GT_EDV", f"LV ESV {fn.lv_esv_ml:.2f} mL > EDV {fn.lv_edv_ml:.2f} mL: ED/ES swapped "
                                          "or segmentation error"))
    if fn.rv_esv_ml > fn.rv_edv_ml:
        flags.append(QCFlag("RV_ESV_GT_EDV", f"RV ESV {fn.rv_esv_ml:.2f} mL > EDV {fn.rv_edv_ml:.2f} mL"))
    if np.isfinite(fn.rv_edv_ml) and (fn.rv_edv_ml == 0 or fn.rv_esv_ml == 0):
        phase = "ED" if fn.rv_edv_ml == 0 else "ES"
        flags.append(QCFlag("RV_EMPTY", f"RV labelled in one phase only (empty at {phase})", phase))
    elif np.isfinite(fn.rv_sv_ml):
        larger = max(abs(fn.lv_sv_ml), abs(fn.rv_sv_ml))
        if larger > 0 and abs(fn.lv_sv_ml - fn.rv_sv_ml) > SV_MISMATCH_FRACTION * larger:
            flags.append(QCFlag(
                "LV_RV_SV_MISMATCH",
                f"LV SV {fn.lv_sv_ml:.2f} mL and RV SV {fn.rv_sv_ml:.2f} mL differ by "
                f"{abs(fn.lv_sv_ml - fn.rv_sv_ml) / larger:.0%} of the larger (tolerance {SV_MISMATCH_FRACTION:.0%}): "
                "valve regurgitation, a shunt, or a segmentation error"))
    if np.isfinite(fn.lv_myo_ed_ml) and np.isfinite(fn.lv_myo_es_ml):
        larger = max(fn.lv_myo_ed_ml, fn.lv_myo_es_ml)
        if abs(fn.lv_myo_ed_ml - fn.lv_myo_es_ml) > MYO_ED_ES_FRACTION * larger:
            flags.append(QCFlag(
                "MYO_ED_ES_MISMATCH",
                f"myocardium {fn.lv_myo_ed_ml:.2f} mL at ED and {fn.lv_myo_es_ml:.2f} mL at ES differ by "
                f"{abs(fn.lv_myo_ed_ml - fn.lv_myo_es_ml) / larger:.0%} of the larger (tolerance "
                f"{MYO_ED_ES_FRACTION:.0%}); the myocardium is incompressible: segmentation error at one phase"))
    return flags


def _myo_frame_flags(myo_ml: np.ndarray) -> list[QCFlag]:
    """``MYO_FRAME_OUTLIER`` for cine frames whose myocardium volume (mL, NaN = no label)
    differs from the median of the frames with myocardium by > ``MYO_FRAME_FRACTION``."""
    present = myo_ml[np.isfinite(myo_ml) & (myo_ml > 0)]
    if len(present) < 2:
        return []
    med = float(np.median(present))
    dev = np.abs(np.nan_to_num(myo_ml, nan=0.0) - med) / med
    bad = np.flatnonzero(dev > MYO_FRAME_FRACTION)
    if not len(bad):
        return []
    worst = int(bad[np.argmax(dev[bad])])
    return [QCFlag("MYO_FRAME_OUTLIER",
                   f"myocardium volume of frame(s) {_fmt_slices(bad)} differs from the median over the frames "
                   f"({med:.2f} mL) by more than {MYO_FRAME_FRACTION:.0%} (largest: frame {worst}, "
                   f"{float(np.nan_to_num(myo_ml[worst])):.2f} mL, {dev[worst]:.0%}); the myocardium is "
                   "incompressible: segmentation error in those frames")]


# ---------------------------------------------------------------------- public API
def cardiac_function(
    ed: Volume,
    es: Volume,
    *,
    labels: CardiacLabels = CardiacLabels(),
    heart_rate_bpm: float | None = None,
    rr_interval_ms: float | None = None,
    myocardial_density_g_per_ml: float = MYOCARDIAL_DENSITY_G_PER_ML,
    strict_labels: bool = True,
    height_cm: float | None = None,
    weight_kg: float | None = None,
) -> CardiacFunction:
    """LV (and RV) function from an end-diastolic and an end-systolic label map.

    Args:
        ed, es: 3D label maps (I, J, K). They may lie on different grids: every volume is
            computed in mL on its own grid (a ``ED_ES_GRID_DIFFERS`` flag notes it).
        labels: label meanings (:class:`CardiacLabels`).
        heart_rate_bpm / rr_interval_ms: for cardiac output (give at most one).
        myocardial_density_g_per_ml: density for LV mass (default 1.05 g/mL).
        strict_labels: refuse label values that ``labels`` does not define
            (:class:`~medcnn.errors.InvalidLabelError`) instead of ignoring them.
        height_cm / weight_kg: the patient's height (cm) and weight (kg), both or neither:
            adds the Mosteller BSA and the BSA-indexed values (:data:`BSA_COLUMNS`).

    Returns:
        :class:`CardiacFunction` with QC flags of both phases.

    Raises:
        ConfigError: only one of height and weight, or an implausible value
            (:func:`medcnn.measure.body.body_size`), before anything is measured.
    """
    from medcnn.measure.body import body_size

    body = body_size(height_cm, weight_kg)
    ed_arr, es_arr = label_array(ed), label_array(es)
    if strict_labels:
        for vol, arr in ((ed, ed_arr), (es, es_arr)):
            check_known_labels(*count_values(arr), _defined(labels), path=vol.source, what="the cardiac label config")
    hr, source = _heart_rate(heart_rate_bpm, rr_interval_ms, None)
    fn = _function(_counts(ed_arr), _counts(es_arr), ed.voxel_volume_ml, es.voxel_volume_ml, labels, hr, source,
                   myocardial_density_g_per_ml)
    flags = _phase_qc(ed_arr, ed, labels, "ED") + _phase_qc(es_arr, es, labels, "ES") + _pair_flags(fn)
    if not ed.geometry.isclose(es.geometry):
        flags.append(QCFlag("ED_ES_GRID_DIFFERS", "ED and ES maps lie on different grids ("
                            + "; ".join(ed.geometry.differences(es.geometry)) + "); volumes are still in mL"))
    fn.qc_flags = flags
    fn.body = body
    return fn


def cine_function(
    cine: Volume,
    *,
    labels: CardiacLabels = CardiacLabels(),
    heart_rate_bpm: float | None = None,
    rr_interval_ms: float | None = None,
    use_frame_times: bool = True,
    myocardial_density_g_per_ml: float = MYOCARDIAL_DENSITY_G_PER_ML,
    strict_labels: bool = True,
    height_cm: float | None = None,
    weight_kg: float | None = None,
) -> CineFunction:
    """Volume curve over a cine label series and the function at its ED/ES frames.

    Args:
        cine: label series ``(T, I, J, K)`` with ``leading_axis="time"``; optional
            ``frame_times_ms``.
        labels: label meanings.
        heart_rate_bpm / rr_interval_ms: heart rate for cardiac output (at most one).
        use_frame_times: without either, derive the heart rate from the frame times
            assuming one evenly sampled cycle (see the module docstring).
        height_cm / weight_kg: both or neither: BSA and indexed values, as :func:`cardiac_function`.

    Returns:
        :class:`CineFunction`; ED = frame of largest LV volume, ES = frame of smallest
        non-zero LV volume (first frame on ties).
    """
    from medcnn.errors import DimensionError
    from medcnn.measure.body import body_size

    body = body_size(height_cm, weight_kg)
    if cine.leading_axis != "time":
        raise DimensionError.expected("a cine label series (T, I, J, K) with leading_axis='time'",
                                      f"leading_axis={cine.leading_axis!r}, shape {cine.shape}", path=cine.source)
    arr = label_array(cine, allow_time=True)
    if strict_labels:
        check_known_labels(*count_values(arr), _defined(labels), path=cine.source, what="the cardiac label config")
    voxel_ml = cine.voxel_volume_ml
    per_frame = [_counts(a) for a in arr]
    times = cine.frame_times_ms

    def series(label: int | None) -> list[float]:
        """Volume per frame; NaN throughout when the label occurs in no frame (not labelled)."""
        if label is None or not any(c.get(int(label), 0) for c in per_frame):
            return [math.nan] * len(per_frame)
        return [_volume_ml(c, label, voxel_ml) for c in per_frame]

    curve = pd.DataFrame({
        "frame": np.arange(len(arr)),
        "time_ms": list(times) if times else [math.nan] * len(arr),
        "lv_volume_ml": [_volume_ml(c, labels.lv_blood, voxel_ml) for c in per_frame],
        "lv_myo_volume_ml": series(labels.lv_myo),
        "rv_volume_ml": series(labels.rv_blood),
    })
    curve.attrs["columns"] = {
        "frame": "frame index (0-based)", "time_ms": "trigger time in ms",
        "lv_volume_ml": "LV blood-pool volume in mL (voxel count x voxel volume)",
        "lv_myo_volume_ml": "LV myocardium volume in mL (NaN when no frame has the label)",
        "rv_volume_ml": "RV blood-pool volume in mL (NaN when no frame has the label)"}
    lv = curve["lv_volume_ml"].to_numpy()
    flags: list[QCFlag] = []
    nonzero = np.flatnonzero(lv > 0)
    if len(nonzero) == 0:
        ed_t = es_t = 0
    else:
        ed_t = int(np.argmax(lv))
        es_t = int(nonzero[np.argmin(lv[nonzero])])
        empty = np.flatnonzero(lv == 0)
        if len(empty):
            flags.append(QCFlag("LV_EMPTY_FRAMES", f"no LV in frame(s) {_fmt_slices(empty)}; ES chosen among "
                                                   "frames with LV"))
    hr, source = _heart_rate(heart_rate_bpm, rr_interval_ms, times if use_frame_times else None)
    fn = _function(per_frame[ed_t], per_frame[es_t], voxel_ml, voxel_ml, labels, hr, source,
                   myocardial_density_g_per_ml)
    fn.ed_frame, fn.es_frame = ed_t, es_t
    if times:
        fn.ed_time_ms, fn.es_time_ms = float(times[ed_t]), float(times[es_t])
    qc = _phase_qc(arr[ed_t], cine, labels, f"ED (frame {ed_t})")
    if es_t != ed_t:
        qc += _phase_qc(arr[es_t], cine, labels, f"ES (frame {es_t})")
    myo_flags = _myo_frame_flags(curve["lv_myo_volume_ml"].to_numpy(dtype=np.float64))
    fn.qc_flags = flags + qc + _pair_flags(fn) + myo_flags
    fn.body = body
    return CineFunction(curve=curve, function=fn)
