"""Body size and body-surface-area (BSA) indexing of cardiac values.

* **BSA (m^2)**, Mosteller's formula: ``sqrt(height_cm x weight_kg / 3600)`` (Mosteller RD,
  N Engl J Med 1987;317:1098), the formula of the SCMR reference values.
* **Indexed value** = value / BSA: volumes in mL/m^2, LV mass in g/m^2.

Height and weight are checked before anything is computed: both or neither, finite, height
30-250 cm and weight 1-400 kg (:data:`HEIGHT_RANGE_CM`, :data:`WEIGHT_RANGE_KG`; a height in
metres or a weight in pounds falls outside or is named in the message). Without them nothing
is indexed: no BSA is ever guessed.

Imports nothing beyond the standard library and :mod:`medcnn.errors`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from os import PathLike
from typing import Any

from medcnn.errors import ConfigError

__all__ = ["BodySize", "body_size", "mosteller_bsa_m2", "HEIGHT_RANGE_CM", "WEIGHT_RANGE_KG", "BSA_METHOD",
           "BSA_COLUMNS", "INDEXED"]

#: Plausible height in cm (inclusive): a newborn to the tallest adults.
HEIGHT_RANGE_CM = (30.0, 250.0)
#: Plausible weight in kg (inclusive).
WEIGHT_RANGE_KG = (1.0, 400.0)
#: How the BSA is computed (the methods text of every report).
BSA_METHOD = "Mosteller: BSA (m^2) = sqrt(height_cm x weight_kg / 3600)"

#: Indexed column -> (the cardiac column it divides by the BSA, unit).
INDEXED: dict[str, tuple[str, str]] = {
    "lv_edvi_ml_per_m2": ("lv_edv_ml", "mL/m^2"),
    "lv_esvi_ml_per_m2": ("lv_esv_ml", "mL/m^2"),
    "lv_svi_ml_per_m2": ("lv_sv_ml", "mL/m^2"),
    "rv_edvi_ml_per_m2": ("rv_edv_ml", "mL/m^2"),
    "rv_esvi_ml_per_m2": ("rv_esv_ml", "mL/m^2"),
    "lv_mass_index_g_per_m2": ("lv_myocardial_mass_g", "g/m^2"),
}

#: Columns added to the cardiac results when a height and weight are given.
BSA_COLUMNS: dict[str, str] = {
    "height_cm": "patient height in cm, as given (command line or manifest column height_cm)",
    "weight_kg": "patient weight in kg, as given (command line or manifest column weight_kg)",
    "bsa_m2": f"body surface area in m^2, {BSA_METHOD}",
    **{k: f"{src} / BSA in {unit} ({BSA_METHOD}); NaN when {src} is NaN" for k, (src, unit) in INDEXED.items()},
}


def mosteller_bsa_m2(height_cm: float, weight_kg: float) -> float:
    """Body surface area in m^2 by Mosteller: ``sqrt(height_cm * weight_kg / 3600)``
    (no range check; see :func:`body_size`)."""
    return math.sqrt(float(height_cm) * float(weight_kg) / 3600.0)


def _number(value: Any, what: str, unit: str, lo: float, hi: float, *, source: Any) -> float:
    """``value`` as a float in ``[lo, hi]``, else ConfigError "expected a <what> in <unit> ..."."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and lo <= x <= hi):
        extra = " (a height in metres? give centimetres)" if what == "height" and 0.3 <= x <= 2.5 else ""
        raise ConfigError.expected(f"a {what} in {unit} between {lo:g} and {hi:g}", f"{value!r}{extra}",
                                   path=source)
    return x


@dataclass(frozen=True)
class BodySize:
    """A patient's height (cm) and weight (kg), checked; ``bsa_m2`` by Mosteller.

    Raises:
        ConfigError: a value that is not a finite number in its plausible range.
    """

    height_cm: float
    weight_kg: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "height_cm", _number(self.height_cm, "height", "cm", *HEIGHT_RANGE_CM,
                                                      source="height_cm"))
        object.__setattr__(self, "weight_kg", _number(self.weight_kg, "weight", "kg", *WEIGHT_RANGE_KG,
                                                      source="weight_kg"))

    @property
    def bsa_m2(self) -> float:
        """Body surface area in m^2 (Mosteller)."""
        return mosteller_bsa_m2(self.height_cm, self.weight_kg)

    def index(self, values: dict[str, Any]) -> dict[str, float]:
        """``height_cm``, ``weight_kg``, ``bsa_m2`` and the indexed columns (:data:`INDEXED`) of a
        cardiac row ``values`` (value / BSA; NaN where the value is missing or NaN)."""
        bsa = self.bsa_m2
        out = {"height_cm": self.height_cm, "weight_kg": self.weight_kg, "bsa_m2": bsa}
        for col, (src, _) in INDEXED.items():
            v = values.get(src)
            out[col] = float(v) / bsa if v is not None and math.isfinite(float(v)) else math.nan
        return out

    def to_dict(self) -> dict[str, float]:
        return {"height_cm": self.height_cm, "weight_kg": self.weight_kg, "bsa_m2": self.bsa_m2}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return False


def body_size(height_cm: Any, weight_kg: Any, *, source: str | PathLike[str] | None = None,
              names: tuple[str, str] = ("height_cm", "weight_kg")) -> BodySize | None:
    """A checked :class:`BodySize`, or ``None`` when both values are absent (``None`` or an
    empty string).

    Args:
        height_cm, weight_kg: numbers or numeric strings (a manifest's cells).
        source: where the values came from, named in the error before the value's name (e.g.
            ``manifest.csv line 3``); ``None`` for the command line.
        names: how the two values are called there (``--height``/``--weight`` on the command
            line, the column names in a manifest).

    Raises:
        ConfigError: only one of them given, a non-number, NaN, or a value outside
            :data:`HEIGHT_RANGE_CM` / :data:`WEIGHT_RANGE_KG`, as "expected X, got Y".
    """
    h_missing, w_missing = _missing(height_cm), _missing(weight_kg)
    if h_missing and w_missing:
        return None
    if h_missing or w_missing:
        given, absent = (names[1], names[0]) if h_missing else names
        raise ConfigError.expected(f"both {names[0]} and {names[1]} (a BSA needs both), or neither",
                                   f"{given} without {absent}", path=source)
    def where(name: str) -> str:
        return f"{source}, {name}" if source is not None else name

    h = _number(height_cm.strip() if isinstance(height_cm, str) else height_cm, "height", "cm", *HEIGHT_RANGE_CM,
                source=where(names[0]))
    w = _number(weight_kg.strip() if isinstance(weight_kg, str) else weight_kg, "weight", "kg", *WEIGHT_RANGE_KG,
                source=where(names[1]))
    return BodySize(h, w)
