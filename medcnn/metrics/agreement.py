"""Aggregates over cases and agreement statistics for paired measurements.

* :func:`summarize`: n, mean, SD (ddof=1), median, quartiles, IQR and a seeded percentile
  bootstrap confidence interval of the mean. NaN values are left out and counted.
* :func:`bland_altman`: bias = mean of ``pred - ref``, SD of the differences (ddof=1),
  95 % limits of agreement ``bias ± 1.96 SD`` (Bland & Altman, Lancet 1986).
* :func:`pearson_r`: Pearson product-moment correlation.
* :func:`icc`: intraclass correlation from the two-way ANOVA of an ``(n_subjects,
  k_raters)`` table (Shrout & Fleiss, Psychol Bull 1979; McGraw & Wong, Psychol Methods
  1996). Forms:

  - ``"ICC(2,1)"``: two-way random effects, absolute agreement, single measurement
    (McGraw & Wong ICC(A,1)). ``(BMS - EMS) / (BMS + (k-1) EMS + k (JMS - EMS) / n)``.
    The default for method comparison: a constant offset lowers it.
  - ``"ICC(3,1)"``: two-way mixed effects, consistency, single measurement (McGraw &
    Wong ICC(C,1)). ``(BMS - EMS) / (BMS + (k-1) EMS)``; blind to a constant offset.
  - ``"ICC(1,1)"``: one-way random effects. ``(BMS - WMS) / (BMS + (k-1) WMS)``.

  with BMS/JMS/EMS the between-subject, between-rater and residual mean squares and WMS
  the within-subject mean square.
* :func:`lin_ccc`: Lin's concordance correlation coefficient (Biometrics 1989),
  ``2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with 1/n moments.
* :func:`paired_agreement` and :func:`agreement_table`: all of the above for one or many
  paired measurements; the table has the columns of the ACDC challenge report (Bernard
  et al., IEEE TMI 2018): correlation, bias and SD of the differences.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

__all__ = [
    "summarize",
    "bland_altman",
    "pearson_r",
    "icc",
    "icc_anova",
    "lin_ccc",
    "paired_agreement",
    "agreement_table",
    "MIN_AGREEMENT_N",
    "ICC_FORMS",
]

IccForm = Literal["ICC(1,1)", "ICC(2,1)", "ICC(3,1)"]

#: Descriptions written next to ICC values.
ICC_FORMS: dict[str, str] = {
    "ICC(1,1)": "one-way random effects, single measurement (Shrout & Fleiss ICC(1,1))",
    "ICC(2,1)": "two-way random effects, absolute agreement, single measurement "
                "(Shrout & Fleiss ICC(2,1) = McGraw & Wong ICC(A,1))",
    "ICC(3,1)": "two-way mixed effects, consistency, single measurement "
                "(Shrout & Fleiss ICC(3,1) = McGraw & Wong ICC(C,1))",
}


def _clean(values: Iterable[float]) -> tuple[np.ndarray, int]:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()
    keep = ~np.isnan(arr)
    return arr[keep], int(arr.size - keep.sum())


def _paired(pred: Sequence[float], ref: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    r = np.asarray(ref, dtype=np.float64).ravel()
    if p.shape != r.shape:
        raise ValueError(f"expected paired values of equal length, got {p.size} and {r.size}")
    keep = ~(np.isnan(p) | np.isnan(r))
    return p[keep], r[keep]


def summarize(values: Iterable[float], *, confidence: float = 0.95, n_bootstrap: int = 2000,
              seed: int = 0) -> dict[str, float]:
    """Descriptive statistics of one metric over cases.

    Args:
        values: one value per case; NaN values are ignored (counted as ``n_missing``).
        confidence: level of the bootstrap confidence interval of the mean.
        n_bootstrap: bootstrap resamples (0 disables the interval).
        seed: random seed, so the interval is reproducible.

    Returns:
        dict with ``n``, ``n_missing``, ``mean``, ``sd`` (ddof=1), ``median``, ``q1``,
        ``q3``, ``iqr``, ``min``, ``max``, ``ci_low``, ``ci_high`` (NaN where undefined).
    """
    x, missing = _clean(values)
    n = int(x.size)
    out: dict[str, float] = {"n": n, "n_missing": missing}
    if n == 0:
        out.update({k: math.nan for k in ("mean", "sd", "median", "q1", "q3", "iqr", "min", "max",
                                          "ci_low", "ci_high")})
        return out
    q1, med, q3 = (float(v) for v in np.percentile(x, [25, 50, 75]))
    out.update({
        "mean": float(np.mean(x)),
        "sd": float(np.std(x, ddof=1)) if n > 1 else math.nan,
        "median": med, "q1": q1, "q3": q3, "iqr": q3 - q1,
        "min": float(np.min(x)), "max": float(np.max(x)),
    })
    lo = hi = math.nan
    if n_bootstrap > 0 and n > 1 and np.all(np.isfinite(x)):
        rng = np.random.default_rng(seed)
        means = np.empty(n_bootstrap)
        chunk = max(1, 2_000_000 // n)
        for start in range(0, n_bootstrap, chunk):
            stop = min(n_bootstrap, start + chunk)
            means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
        alpha = (1.0 - confidence) / 2.0
        lo, hi = (float(v) for v in np.quantile(means, [alpha, 1.0 - alpha]))
    out["ci_low"], out["ci_high"] = lo, hi
    return out


def bland_altman(pred: Sequence[float], ref: Sequence[float], *, z: float = 1.96) -> dict[str, float]:
    """Bland-Altman bias and limits of agreement of ``pred`` against ``ref``.

    Returns:
        dict with ``n``, ``bias`` (mean of pred - ref), ``sd_diff`` (ddof=1),
        ``loa_lower`` and ``loa_upper`` (bias ∓ z·SD), in the units of the inputs.
    """
    p, r = _paired(pred, ref)
    diff = p - r
    n = int(diff.size)
    bias = float(np.mean(diff)) if n else math.nan
    sd = float(np.std(diff, ddof=1)) if n > 1 else math.nan
    return {"n": n, "bias": bias, "sd_diff": sd, "loa_lower": bias - z * sd, "loa_upper": bias + z * sd}


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient (NaN with fewer than 2 pairs or zero variance)."""
    a, b = _paired(x, y)
    if a.size < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.sum(da * da)) * float(np.sum(db * db)))
    return float(np.sum(da * db)) / denom if denom > 0 else math.nan


def icc_anova(table: Any) -> dict[str, float]:
    """Two-way ANOVA mean squares and ICC(1,1), ICC(2,1), ICC(3,1) of a complete table.

    Args:
        table: ``(n_subjects, k_raters)`` measurements; rows with NaN are dropped.

    Returns:
        dict with ``n``, ``k``, ``bms``, ``jms``, ``ems``, ``wms`` and the three ICCs.
    """
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] < 2:
        raise ValueError(f"expected an (n_subjects, k_raters >= 2) table, got shape {t.shape}")
    t = t[~np.isnan(t).any(axis=1)]
    n, k = t.shape
    nan = {"n": n, "k": k, "bms": math.nan, "jms": math.nan, "ems": math.nan, "wms": math.nan,
           "ICC(1,1)": math.nan, "ICC(2,1)": math.nan, "ICC(3,1)": math.nan}
    if n < 2:
        return nan
    gm = t.mean()
    ss_rows = k * float(np.sum((t.mean(axis=1) - gm) ** 2))
    ss_cols = n * float(np.sum((t.mean(axis=0) - gm) ** 2))
    ss_total = float(np.sum((t - gm) ** 2))
    ss_err = ss_total - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    jms = ss_cols / (k - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    wms = (ss_cols + ss_err) / (n * (k - 1))

    def ratio(num: float, den: float) -> float:
        return num / den if den != 0 else math.nan

    return {
        "n": n, "k": k, "bms": bms, "jms": jms, "ems": ems, "wms": wms,
        "ICC(1,1)": ratio(bms - wms, bms + (k - 1) * wms),
        "ICC(2,1)": ratio(bms - ems, bms + (k - 1) * ems + k * (jms - ems) / n),
        "ICC(3,1)": ratio(bms - ems, bms + (k - 1) * ems),
    }


def icc(table: Any, *, form: IccForm = "ICC(2,1)") -> float:
    """Intraclass correlation of an ``(n_subjects, k_raters)`` table (see module docstring)."""
    if form not in ICC_FORMS:
        raise ValueError(f"expected an ICC form among {', '.join(ICC_FORMS)}, got {form!r}")
    return float(icc_anova(table)[form])


def lin_ccc(x: Sequence[float], y: Sequence[float]) -> float:
    """Lin's concordance correlation coefficient of paired values (1/n moments)."""
    a, b = _paired(x, y)
    if a.size < 2:
        return math.nan
    mx, my = a.mean(), b.mean()
    sxy = float(np.mean((a - mx) * (b - my)))
    den = float(np.mean((a - mx) ** 2) + np.mean((b - my) ** 2)) + float(mx - my) ** 2
    return 2.0 * sxy / den if den > 0 else math.nan


#: Below this many pairs, correlation, limits of agreement, ICC and CCC are withheld (NaN with
#: a ``withheld`` note): with 3 or 4 pairs r and a 1.96-SD interval are noise, not agreement.
MIN_AGREEMENT_N = 5

_WITHHELD_KEYS = ("loa_lower", "loa_upper", "pearson_r", "icc_a1", "icc_c1", "lin_ccc")


def paired_agreement(pred: Sequence[float], ref: Sequence[float], *,
                     min_n: int = MIN_AGREEMENT_N) -> dict[str, Any]:
    """Bland-Altman, Pearson r, ICC(2,1), ICC(3,1) and Lin's CCC of paired values.

    Args:
        pred, ref: paired values (NaN pairs dropped).
        min_n: with fewer pairs, ``loa_lower``/``loa_upper``, ``pearson_r``, ``icc_a1``,
            ``icc_c1`` and ``lin_ccc`` are NaN and ``withheld`` says why (bias and
            ``sd_diff`` stay: they describe the data without claiming agreement).

    Returns:
        dict with ``n``, ``bias``, ``sd_diff``, ``loa_lower``, ``loa_upper``,
        ``pearson_r``, ``icc_a1`` (ICC(2,1)), ``icc_c1`` (ICC(3,1)), ``lin_ccc``,
        ``withheld`` (empty, or the reason) and ``icc_forms`` naming the ICC forms.
    """
    p, r = _paired(pred, ref)
    out: dict[str, Any] = dict(bland_altman(p, r))
    anova = icc_anova(np.stack([r, p], axis=1)) if p.size else {}
    out.update({
        "pearson_r": pearson_r(p, r),
        "icc_a1": float(anova.get("ICC(2,1)", math.nan)),
        "icc_c1": float(anova.get("ICC(3,1)", math.nan)),
        "lin_ccc": lin_ccc(p, r),
        "withheld": "",
        "icc_forms": {"icc_a1": ICC_FORMS["ICC(2,1)"], "icc_c1": ICC_FORMS["ICC(3,1)"]},
    })
    if 0 < out["n"] < min_n:
        out.update({k: math.nan for k in _WITHHELD_KEYS})
        out["withheld"] = (f"n = {out['n']} < {min_n}: correlation, limits of agreement, ICC and CCC not reported")
    return out


def agreement_table(measurements: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                    min_n: int = MIN_AGREEMENT_N) -> list[dict[str, Any]]:
    """ACDC-style agreement table, one row per measurement (e.g. EDV, ESV, EF, mass).

    Args:
        measurements: ``{name: (predicted values, reference values)}``, paired by case.

    Returns:
        list of dicts with ``measurement``, ``n``, ``corr`` (Pearson), ``bias``,
        ``sd`` (SD of differences), ``loa_lower``, ``loa_upper``, ``icc_a1``, ``icc_c1``,
        ``lin_ccc``.
    """
    rows = []
    for name, (pred, ref) in measurements.items():
        a = paired_agreement(pred, ref, min_n=min_n)
        rows.append({
            "measurement": name, "n": a["n"], "corr": a["pearson_r"], "bias": a["bias"], "sd": a["sd_diff"],
            "loa_lower": a["loa_lower"], "loa_upper": a["loa_upper"], "icc_a1": a["icc_a1"],
            "icc_c1": a["icc_c1"], "lin_ccc": a["lin_ccc"], "withheld": a["withheld"],
        })
    return rows
