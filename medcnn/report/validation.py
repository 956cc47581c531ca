"""Validation report: ``metrics.csv``, ``summary.json``, PNG plots and one ``report.html``.

Input is the list of per-case rows of :func:`medcnn.metrics.evaluate.evaluate_case` (plus
error rows, which carry an ``error`` message) and a summary dict built by
:func:`build_validation_summary`. Files are written atomically (temporary file beside the
target, then ``os.replace``).

Figures (matplotlib Agg canvas, no pyplot state):

* ``bland_altman_volume.png``: per structure, predicted - reference volume against their
  mean, with the bias and the 95 % limits of agreement.
* ``volume_scatter.png``: predicted against reference volume with the identity line.
* ``metric_distributions.png``: per metric (Dice, HD95, ASSD, NSD), one box per
  structure with every case drawn as a point.

With region rows (``structure_kind`` ``region``: BraTS WT / TC / ET, ``medcnn validate
--regions``) ``summary.json`` gets a ``regions`` block (:func:`region_summary`: definitions,
the empty-region rule, empty counts, a per-region table) and the HTML page a regions section.

With an ACDC evaluation (:func:`medcnn.metrics.acdc.acdc_evaluation`) also
``acdc_geometric.csv``, ``acdc_clinical.csv``, ``acdc_subjects.csv`` and ``acdc.json``, and
its tables in the HTML page.

The HTML page embeds the PNGs as base64 ``data:`` URIs and has no external resources.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "build_validation_summary",
    "region_summary",
    "validation_figures",
    "render_validation_html",
    "write_validation_report",
    "VALIDATION_FILES",
]

#: Output file names.
VALIDATION_FILES = {
    "metrics": "metrics.csv",
    "summary": "summary.json",
    "bland_altman": "bland_altman_volume.png",
    "scatter": "volume_scatter.png",
    "distributions": "metric_distributions.png",
    "html": "report.html",
    "acdc_geometric": "acdc_geometric.csv",
    "acdc_clinical": "acdc_clinical.csv",
    "acdc_subjects": "acdc_subjects.csv",
    "acdc": "acdc.json",
}

_DIST_METRICS = ("dice", "hd95_mm", "assd_mm", "nsd")


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _ok(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if not r.get("error")]


def _labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(r["label"]) for r in rows))


def build_validation_summary(rows: Sequence[Mapping[str, Any]], *, settings: Mapping[str, Any],
                             cases: Sequence[Mapping[str, Any]], acdc: Mapping[str, Any] | None = None,
                             n_bootstrap: int = 2000, seed: int = 0, min_n: int | None = None) -> dict[str, Any]:
    """The content of ``summary.json``.

    Args:
        rows: evaluation rows (error rows included; they are counted, not aggregated).
        settings: the evaluation settings (tolerance, percentile, empty policy, ...).
        cases: one dict per case: ``case_id``, ``pred``, ``ref`` (paths), ``pred_sha256``,
            ``ref_sha256``, ``error``.
        acdc: optional ACDC evaluation (:func:`medcnn.metrics.acdc.acdc_evaluation`).
        n_bootstrap, seed: bootstrap settings for the confidence intervals.
        min_n: fewest cases for r, limits of agreement, ICC and CCC (default
            :data:`~medcnn.metrics.agreement.MIN_AGREEMENT_N`).
    """
    from medcnn.metrics.agreement import MIN_AGREEMENT_N

    from medcnn.metrics.evaluate import aggregate, definitions, volume_agreement
    from medcnn.report.provenance import environment_info

    env = environment_info()
    tol = float(settings.get("tolerance_mm", 2.0))
    pct = float(settings.get("percentile", 95.0))
    policy = str(settings.get("empty_policy", "best-worst"))
    errors = [c for c in cases if c.get("error")]
    return {
        "title": "medcnn validation",
        "generated_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "medcnn_version": env.get("medcnn_version"),
        "environment": env,
        "settings": dict(settings),
        "definitions": definitions(tolerance_mm=tol, percentile=pct, empty_policy=policy),
        "bootstrap": {"n_resamples": n_bootstrap, "seed": seed, "interval": "percentile bootstrap 95% CI of the mean"},
        "counts": {"cases": len(cases), "failed_cases": len(errors),
                   "rows": len(rows), "evaluated_rows": len(_ok(rows))},
        "aggregates": aggregate(rows, n_bootstrap=n_bootstrap, seed=seed),
        "volume_agreement": volume_agreement(rows, min_n=MIN_AGREEMENT_N if min_n is None else min_n),
        "min_agreement_n": MIN_AGREEMENT_N if min_n is None else min_n,
        **({"acdc": dict(acdc)} if acdc else {}),
        "cases": [dict(c) for c in cases],
    }


#: Columns of the per-region table (summary.json ``regions.table`` and the HTML page).
REGION_TABLE_METRICS = ("dice", "hd95_mm", "ref_volume_ml", "pred_volume_ml", "volume_diff_ml",
                        "abs_volume_error_ml", "rel_volume_error_percent")


def region_summary(rows: Sequence[Mapping[str, Any]], *, policy: str, diagonals_mm: Iterable[float] = (),
                   spec: Mapping[str, Sequence[int]] | None = None,
                   cases: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any] | None:
    """The ``regions`` block of ``summary.json`` (``None`` without region rows or a spec).

    Args:
        rows: evaluation rows; region rows have ``structure_kind`` ``"region"``.
        policy: the empty policy used (:mod:`medcnn.metrics.policy`).
        diagonals_mm: image diagonals (mm) of the references with region rows: with
            ``best-worst`` the rule equals BraTS's only when they are all 373.13 mm.
        spec: the ``--regions`` regions (reference label values), if given.
        cases: case dicts; their ``regions`` entries (source, label values) are listed.

    Returns:
        ``{"regions", "per_case", "empty_region_rule", "empty_counts", "table", "units"}``:
        region names with their reference label values; each case's source and label values
        when they are not simply ``spec`` in both maps; the BraTS rule in words and numbers,
        the policy used and whether it follows that rule; per region the cases with an empty
        reference and/or prediction; and n, mean, SD and median (no CI: see ``aggregates``)
        of Dice, HD95 (mm), volumes (mL) and volume errors (mL, %).
    """
    from medcnn.metrics.agreement import summarize
    from medcnn.metrics.policy import BRATS_EMPTY_DISTANCE_MM, BRATS_EMPTY_RULE, POLICY_DESCRIPTIONS

    reg = [r for r in rows if r.get("structure_kind") == "region" and not r.get("error")]
    if not reg and spec is None:
        return None
    names = list(dict.fromkeys([*(spec or {}), *(str(r["label"]) for r in reg)]))
    diags = sorted(set(float(d) for d in diagonals_mm))
    on_brats_grid = bool(diags) and all(abs(d - BRATS_EMPTY_DISTANCE_MM) < 1e-3 for d in diags)
    follows = policy == "brats" or (policy == "best-worst" and on_brats_grid)
    if policy == "brats":
        note = "empty regions are scored by the BraTS rule on every grid"
    elif follows:
        note = ("best-worst uses the reference's image diagonal, which is BraTS's 373.13 mm on these 240x240x155 "
                "1 mm references: the same numbers as the BraTS rule")
    else:
        note = (f"empty regions are scored by {policy}, not by the BraTS rule (use --empty-policy brats for "
                "challenge-comparable numbers)")
    counts: dict[str, dict[str, int]] = {}
    table: dict[str, dict[str, Any]] = {}
    hd_cols = [k for k in (reg[0] if reg else {}) if k.startswith("hd") and k.endswith("_mm") and k != "hd_mm"]
    metrics = [m if m != "hd95_mm" or not hd_cols else hd_cols[0] for m in REGION_TABLE_METRICS]
    for name in names:
        sub = [r for r in reg if str(r["label"]) == name and r.get("annotated", True) not in (False, "False")]
        ref_e = [bool(r.get("ref_empty")) for r in sub]
        pred_e = [bool(r.get("pred_empty")) for r in sub]
        counts[name] = {
            "cases": len(sub),
            "reference_empty": sum(ref_e),
            "reference_empty_prediction_empty": sum(a and b for a, b in zip(ref_e, pred_e)),
            "reference_empty_prediction_not_empty": sum(a and not b for a, b in zip(ref_e, pred_e)),
            "reference_not_empty_prediction_empty": sum(b and not a for a, b in zip(ref_e, pred_e)),
        }
        table[name] = {}
        for m in metrics:
            st = summarize([_num(r.get(m)) for r in sub], n_bootstrap=0)
            table[name][m] = {k: st[k] for k in ("n", "mean", "sd", "median")}
    def definitions_of(regs: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
        return {n: [int(v) for v in regs[n]] for n in regs}

    definitions = definitions_of(spec) if spec is not None else {}
    per_case = {}
    for c in cases:
        info = c.get("regions")
        if not info:
            continue
        definitions.update({n: list(v) for n, v in (info.get("reference") or {}).items() if n not in definitions})
        plain = spec is not None and info.get("prediction") == info.get("reference") == definitions_of(spec)
        if not plain:  # label values or source other than --regions in both maps
            per_case[str(c.get("case_id"))] = dict(info)
    return {
        "regions": definitions,
        "per_case": per_case,
        "empty_region_rule": {"brats": dict(BRATS_EMPTY_RULE), "empty_policy": policy,
                              "empty_policy_description": POLICY_DESCRIPTIONS.get(policy, ""),
                              "follows_brats_rule": follows, "reference_diagonals_mm": diags, "note": note},
        "empty_counts": counts,
        "table": table,
        "units": {"hd95_mm": "mm", "volume": "mL", "rel_volume_error_percent": "% of the reference volume"},
    }


# ---------------------------------------------------------------------------------- figures
def _figure(n_panels: int, *, width: float = 4.2, height: float = 3.6, ncols: int | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = ncols or min(n_panels, 3)
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _paired_volumes(rows: Sequence[Mapping[str, Any]], label: str) -> tuple[np.ndarray, np.ndarray]:
    sub = [r for r in rows if str(r["label"]) == label]
    p = np.array([_num(r.get("pred_volume_ml")) for r in sub])
    r = np.array([_num(x.get("ref_volume_ml")) for x in sub])
    keep = np.isfinite(p) & np.isfinite(r)
    return p[keep], r[keep]


def bland_altman_png(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Bland-Altman plot of volumes, one panel per structure (``None`` without data)."""
    from medcnn.metrics.agreement import bland_altman

    good = _ok(rows)
    labels = _labels(good)
    if not labels:
        return None
    fig, axes = _figure(len(labels))
    for ax, label in zip(axes, labels):
        p, r = _paired_volumes(good, label)
        ba = bland_altman(p, r)
        ax.scatter((p + r) / 2, p - r, s=18, color="#0a84ff", alpha=0.8)
        for y, style in ((ba["bias"], "-"), (ba["loa_lower"], "--"), (ba["loa_upper"], "--")):
            if math.isfinite(y):
                ax.axhline(y, color="#c92a2a" if style == "-" else "#868e96", linestyle=style, linewidth=1)
        ax.axhline(0, color="black", linewidth=0.5)
        txt = f"bias {ba['bias']:.2f} mL" + (f"\nLoA [{ba['loa_lower']:.2f}, {ba['loa_upper']:.2f}]"
                                            if math.isfinite(ba["sd_diff"]) else "")
        ax.text(0.02, 0.97, txt, transform=ax.transAxes, va="top", fontsize=8)
        ax.set_title(f"{label}: Bland-Altman (n={ba['n']})", fontsize=10)
        ax.set_xlabel("mean of predicted and reference volume (mL)")
        ax.set_ylabel("predicted - reference (mL)")
    return _png(fig)


def volume_scatter_png(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Predicted against reference volume, one panel per structure."""
    from medcnn.metrics.agreement import pearson_r

    good = _ok(rows)
    labels = _labels(good)
    if not labels:
        return None
    fig, axes = _figure(len(labels))
    for ax, label in zip(axes, labels):
        p, r = _paired_volumes(good, label)
        ax.scatter(r, p, s=18, color="#2b8a3e", alpha=0.8)
        if p.size:
            lo, hi = float(min(p.min(), r.min())), float(max(p.max(), r.max()))
            pad = 0.05 * (hi - lo if hi > lo else 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#868e96", linewidth=1)
        rho = pearson_r(p, r)
        ax.set_title(f"{label}: volume (n={p.size}" + (f", r={rho:.3f})" if math.isfinite(rho) else ")"), fontsize=10)
        ax.set_xlabel("reference volume (mL)")
        ax.set_ylabel("predicted volume (mL)")
    return _png(fig)


def metric_distributions_png(rows: Sequence[Mapping[str, Any]], *,
                             metrics: Sequence[str] = _DIST_METRICS) -> bytes | None:
    """Box plot per metric with one box per structure and every case as a point."""
    good = _ok(rows)
    labels = _labels(good)
    present = [m for m in metrics if any(m in r for r in good)]
    if not labels or not present:
        return None
    fig, axes = _figure(len(present), ncols=2, width=5.0)
    rng = np.random.default_rng(0)
    for ax, m in zip(axes, present):
        data = []
        for label in labels:
            v = np.array([_num(r.get(m)) for r in good if str(r["label"]) == label])
            data.append(v[np.isfinite(v)])
        pos = np.arange(1, len(labels) + 1)
        nonempty = [i for i, d in enumerate(data) if d.size]
        if nonempty:
            ax.boxplot([data[i] for i in nonempty], positions=pos[nonempty], widths=0.5, showfliers=False)
        for i, d in enumerate(data):
            ax.scatter(pos[i] + rng.uniform(-0.12, 0.12, d.size), d, s=12, alpha=0.7, color="#0a84ff")
        ax.set_xticks(pos)
        ax.set_xticklabels(labels)
        unit = " (mm)" if m.endswith("_mm") else ""
        ax.set_title(m.replace("_mm", "").upper() + unit, fontsize=10)
    return _png(fig)


def validation_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    """PNG bytes of the three validation figures, keyed like :data:`VALIDATION_FILES`
    (figures without data are left out)."""
    figs = {"bland_altman": bland_altman_png(rows), "scatter": volume_scatter_png(rows),
            "distributions": metric_distributions_png(rows)}
    return {k: v for k, v in figs.items() if v is not None}


# ---------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1f2933}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:26px 0 8px;border-bottom:2px solid #d9e2ec}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #cbd2d9;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.error td{background:#ffe3e3}img.fig{max-width:100%;border:1px solid #d9e2ec;margin:4px 0}
.muted{color:#616e7c;font-size:12px}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}" if math.isfinite(float(v)) else ""
    return str(v)


def _dash(v: Any) -> Any:
    """A missing number shown as an em dash (not an empty cell, not 0)."""
    return "—" if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(float(v))) else v


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{_e(_f(v))}</td>' if _is_num(v) else f"<td>{_e(_f(v))}</td>"
                        for v in row)
        body.append(f"<tr{rc}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _acdc_html(acdc: Mapping[str, Any], pct: float) -> str:
    hd = f"hd{pct:g}_mm"
    parts = ["<h2>ACDC-style evaluation</h2>",
             f'<p class="muted">As reported by {_e(acdc.get("reference"))}. Structures (evaluated label): '
             + _e(", ".join(f"{k} {v}" for k, v in (acdc.get("structures") or {}).items() if v is not None))
             + ". Mean ± SD over cases; SD with ddof = 1.</p>"]
    groups = list(dict.fromkeys([r["group"] for r in acdc.get("geometric") or []]
                                + [r["group"] for r in acdc.get("clinical") or []]))
    for group in groups:
        geo = [r for r in acdc.get("geometric") or [] if r["group"] == group]
        clin = [r for r in acdc.get("clinical") or [] if r["group"] == group]
        parts.append(f"<h3>{_e('all subjects' if group == 'all' else 'group ' + group)}</h3>")
        if geo:
            parts.append(_table(["structure", "phase", "n", "Dice mean", "Dice SD", f"HD{pct:g} mean (mm)",
                                 f"HD{pct:g} SD (mm)", "HD mean (mm)", "HD SD (mm)"],
                                [[r["structure"], r["phase"], r["n"], r.get("dice_mean"), r.get("dice_sd"),
                                  r.get(f"{hd}_mean"), r.get(f"{hd}_sd"), r.get("hd_mm_mean"), r.get("hd_mm_sd")]
                                 for r in geo]))
        if clin:
            parts.append(_table(["index", "unit", "n", "reference mean", "predicted mean", "Pearson r", "bias",
                                 "SD of differences", "LoA low", "LoA high", "difference unit", "note"],
                                [[r["index"], r["unit"], r["n"], r.get("ref_mean"), r.get("pred_mean"),
                                  _dash(r.get("pearson_r")), r.get("bias"), r.get("sd_diff"), _dash(r.get("loa_lower")),
                                  _dash(r.get("loa_upper")), r.get("diff_unit", r["unit"]), r.get("withheld", "")]
                                 for r in clin]))
    notes = acdc.get("notes") or []
    if notes:
        parts.append('<ul class="muted">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    defs = acdc.get("definitions") or {}
    parts.append('<p class="muted">' + "; ".join(f"{_e(k)}: {_e(v)}" for k, v in defs.items()) + "</p>")
    return "".join(parts)


def _regions_html(block: Mapping[str, Any]) -> str:
    """The regions section: definitions, the per-region table and the empty-region rule."""
    rule = block.get("empty_region_rule") or {}
    brats = rule.get("brats") or {}
    parts = ["<h2>Regions</h2>",
             '<p class="muted">Each region is the union of its labels in the reference (and in the prediction, '
             "with the prediction's own labels where the model that wrote it recorded them).</p>",
             _table(["region", "reference labels"], [[n, ", ".join(map(str, v))]
                                                     for n, v in (block.get("regions") or {}).items()])]
    per_case = block.get("per_case") or {}
    sources = sorted({str(v.get("source")) for v in per_case.values()})
    if sources:
        parts.append('<p class="muted">Source: ' + "; ".join(_e(x) for x in sources) + "</p>")
    table = block.get("table") or {}
    counts = block.get("empty_counts") or {}
    if table:
        body = []
        for name, metrics in table.items():
            hd_key = next((k for k in metrics if k.startswith("hd")), "hd95_mm")
            d, h = metrics.get("dice") or {}, metrics.get(hd_key) or {}
            c = counts.get(name) or {}
            body.append([name, d.get("n"), d.get("mean"), _dash(d.get("sd")), d.get("median"), h.get("mean"),
                         _dash(h.get("sd")), h.get("median"), (metrics.get("ref_volume_ml") or {}).get("mean"),
                         (metrics.get("pred_volume_ml") or {}).get("mean"),
                         (metrics.get("volume_diff_ml") or {}).get("mean"),
                         (metrics.get("abs_volume_error_ml") or {}).get("mean"),
                         _dash((metrics.get("rel_volume_error_percent") or {}).get("mean")),
                         c.get("reference_empty", 0)])
        parts.append(_table(["region", "n", "Dice mean", "Dice SD", "Dice median", "HD95 mean (mm)", "HD95 SD (mm)",
                             "HD95 median (mm)", "reference mean (mL)", "predicted mean (mL)",
                             "volume error mean (mL)", "abs. volume error mean (mL)", "volume error mean (%)",
                             "empty references"], body))
    parts.append(f'<p class="muted"><b>Empty regions.</b> {_e(brats.get("rule"))} '
                 f'({_e(brats.get("worst_distance_is"))}; source: {_e(brats.get("source"))}). '
                 f'This report: empty policy {_e(rule.get("empty_policy"))} &mdash; {_e(rule.get("note"))}.</p>')
    return "".join(parts)


def render_validation_html(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                           figures: Mapping[str, bytes]) -> str:
    """One self-contained HTML page (figures inline as base64 PNG)."""
    s = summary.get("settings") or {}
    counts = summary.get("counts") or {}
    pct = float(s.get("percentile", 95.0))
    hd_key = f"hd{pct:g}_mm"
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(summary.get('title', 'medcnn validation'))}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(summary.get('title', 'medcnn validation'))}</h1>",
        f'<p class="muted">generated {_e(summary.get("generated_utc"))} by medcnn '
        f'{_e(summary.get("medcnn_version"))}</p>',
        f"<p><b>{counts.get('cases', 0)} cases</b>, <b>{counts.get('failed_cases', 0)} failed</b>, "
        f"{counts.get('evaluated_rows', 0)} structure rows evaluated"
        + (f"; {counts['unmatched_references']} reference(s) without a prediction not evaluated"
           if counts.get("unmatched_references") else "") + ".</p>",
        "<h2>Settings</h2>",
        _table(["setting", "value"], [[k, v] for k, v in s.items()]),
    ]
    agg = summary.get("aggregates") or {}
    if agg:
        parts.append("<h2>Aggregates per structure</h2>")
        body = []
        for label, metrics in agg.items():
            for m, st in metrics.items():
                body.append([label, m, st.get("n"), st.get("n_missing"), st.get("mean"), st.get("sd"),
                             st.get("median"), st.get("q1"), st.get("q3"), st.get("ci_low"), st.get("ci_high")])
        parts.append(_table(["structure", "metric", "n", "missing", "mean", "SD", "median", "Q1", "Q3",
                             "95% CI low", "95% CI high"], body))
        parts.append('<p class="muted">CI: seeded percentile bootstrap of the mean '
                     f'({_e((summary.get("bootstrap") or {}).get("n_resamples"))} resamples).</p>')
    va = summary.get("volume_agreement") or {}
    if va:
        parts.append("<h2>Volume agreement (predicted vs reference, mL)</h2>")
        parts.append(_table(["structure", "n", "bias", "SD of diff", "LoA low", "LoA high", "Pearson r",
                             "ICC(2,1)", "ICC(3,1)", "Lin CCC", "note"],
                            [[k, a.get("n"), a.get("bias"), a.get("sd_diff")]
                             + [_dash(a.get(c)) for c in ("loa_lower", "loa_upper", "pearson_r", "icc_a1", "icc_c1",
                                                          "lin_ccc")] + [a.get("withheld", "")]
                             for k, a in va.items()]))
        parts.append('<p class="muted">ICC(2,1): two-way random, absolute agreement, single measurement '
                     "(McGraw &amp; Wong ICC(A,1)); ICC(3,1): two-way mixed, consistency (ICC(C,1)). "
                     "LoA = bias &plusmn; 1.96 SD.</p>")
    regions = summary.get("regions")
    if regions:
        parts.append(_regions_html(regions))
    acdc = summary.get("acdc")
    if acdc:
        parts.append(_acdc_html(acdc, pct))
    titles = {"bland_altman": "Bland-Altman plot of volumes", "scatter": "Predicted vs reference volume",
              "distributions": "Metric distributions per structure"}
    for key in ("bland_altman", "scatter", "distributions"):
        if key in figures:
            data = base64.b64encode(figures[key]).decode("ascii")
            parts.append(f"<h2>{_e(titles[key])}</h2>")
            parts.append(f'<img class="fig" alt="{_e(titles[key])}" src="data:image/png;base64,{data}">')
    errors = [r for r in rows if r.get("error")]
    if errors:
        parts.append("<h2>Errors</h2>")
        parts.append(_table(["case", "error"], [[r.get("case_id"), r.get("error")] for r in errors],
                            row_classes=["error"] * len(errors)))
    shown = [r for r in rows if not r.get("error")]
    if shown:
        parts.append("<h2>Cases</h2>")
        cols = ["case_id", "label", "structure_kind", "dice", "iou", "hd_mm", hd_key, "assd_mm", "nsd", "ref_volume_ml",
                "pred_volume_ml", "rel_volume_error_percent", "lesion_tp", "lesion_fp", "lesion_fn"]
        cols = [c for c in cols if any(c in r for r in shown)]
        body = []
        for r in shown:
            if r.get("annotated", True) in (False, "False"):   # a partial reference: "—", never 0
                head = [r.get(c) for c in cols[:3 if "structure_kind" in cols else 2]]
                body.append(head + ["—"] * (len(cols) - len(head))
                            + [f"not annotated: {r.get('not_annotated_reason') or ''}"])
            else:
                body.append([r.get(c) for c in cols] + [""])
        parts.append(_table(cols + ["note"], body))
    defs = summary.get("definitions") or {}
    if defs:
        parts.append("<h2>Definitions</h2>")
        parts.append(_table(["column", "meaning"], [[k, v] for k, v in defs.items()]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_validation_report(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], out_dir: str | Path, *,
                            columns: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``metrics.csv``, ``summary.json``, the PNG figures and ``report.html``.

    Args:
        rows: evaluation rows (error rows included).
        summary: from :func:`build_validation_summary`; the written file also lists the
            outputs.
        out_dir: output folder (created).
        columns: CSV column order (extra columns follow).

    Returns:
        ``{key: path}`` of the files written (keys of :data:`VALIDATION_FILES`).
    """
    import pandas as pd

    from medcnn.report.tables import write_csv, write_json, write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = list(columns or [])
    cols += [c for r in rows for c in r if c not in cols]
    cols = list(dict.fromkeys(cols))
    figures = validation_figures(rows)
    html_text = render_validation_html(summary, rows, figures)
    paths: dict[str, Path] = {}
    metrics = pd.DataFrame(list(rows), columns=cols)
    paths["metrics"], _ = write_csv(metrics, out / VALIDATION_FILES["metrics"],
                                    title="medcnn validate: one row per case and structure",
                                    descriptions=summary.get("definitions") or summary.get("columns"),
                                    extra={"summary": VALIDATION_FILES["summary"],
                                           "medcnn_version": summary.get("medcnn_version"),
                                           "settings": summary.get("settings"), "cases": summary.get("cases")})
    for key, png in figures.items():
        paths[key] = _write_bytes(out / VALIDATION_FILES[key], png)
    paths["html"] = write_text(out / VALIDATION_FILES["html"], html_text)
    acdc = summary.get("acdc")
    if acdc:
        for key in ("geometric", "clinical", "subjects"):
            paths[f"acdc_{key}"] = write_text(out / VALIDATION_FILES[f"acdc_{key}"],
                                              pd.DataFrame(list(acdc[key]), columns=(acdc.get("columns") or {})
                                                           .get(key)).to_csv(index=False))
        paths["acdc"] = write_json(acdc, out / VALIDATION_FILES["acdc"])
    full = dict(summary)
    full["outputs"] = {k: p.name for k, p in paths.items()} | {"summary": VALIDATION_FILES["summary"]}
    paths["summary"] = write_json(full, out / VALIDATION_FILES["summary"])
    return paths


def _write_bytes(path: Path, data: bytes) -> Path:
    from medcnn.io._common import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
