"""One self-contained HTML report of a batch: no external resources, images inline.

:func:`render_html` turns the batch report dict (the content of ``report.json``: batch
facts + one record per case, see :mod:`medcnn.report.tables`) into a single HTML page:

* a summary table (one row per case, units in every header, QC flags highlighted, failed
  cases in red) and an errors table;
* provenance once per report, after the cases (medcnn version, model name and SHA-256, config hash, device,
  precision, TTA, library versions, how each number was computed: every item that is the
  same for all cases);
* per case: the overlay figure (three views named from the scan's geometry, radiological
  display, reference contours dashed when given; see :mod:`medcnn.report.figures`), the cine
  volume curve, the volume / cardiac / lesion tables, QC flags and the case's own
  provenance (input hash, timings, input grid and whatever else differs from the report's);
* the definitions of every column.

Figures are embedded as ``data:image/png;base64`` URIs, CSS is inline, nothing is fetched.

:func:`render_response_html` turns the document of ``medcnn response`` (``response.json``)
into one page with the same tables, styles and provenance list.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from medcnn.report.figures import DISPLAY_CONVENTION

__all__ = ["render_html", "write_html", "unit_header", "render_response_html"]

_UNITS = (("_l_per_min", "L/min"), ("_ml_per_m2", "mL/m²"), ("_g_per_m2", "g/m²"), ("_m2", "m²"), ("_cm", "cm"),
          ("_kg", "kg"), ("_percent", "%"), ("_ml", "mL"), ("_mm3", "mm³"), ("_mm", "mm"),
          ("_ms", "ms"), ("_bpm", "beats/min"), ("_g", "g"), ("_s", "s"))

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1f2933;
background:#fff;line-height:1.4}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #d9e2ec;padding-bottom:4px}
h3{font-size:16px;margin:22px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #cbd2d9;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.error td{background:#ffe3e3}tr.skipped td.status{color:#52606d}
td.qc,span.qc{background:#fff3c4;color:#8d2b0b;font-weight:600}
span.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;font-weight:600}
span.ok{background:#c6f7e2;color:#014d40}span.skipped{background:#e4e7eb;color:#323f4b}
span.error{background:#ffbdbd;color:#610404}
img.fig{max-width:100%;border:1px solid #d9e2ec;margin:4px 0}
dl.prov{display:grid;grid-template-columns:fit-content(35%) minmax(0,1fr);gap:2px 12px;font-size:12px;
margin:4px 0}
dl.prov dt{font-weight:600;color:#52606d;overflow-wrap:anywhere}dl.prov dd{margin:0;overflow-wrap:anywhere}
dl.prov dd.hash{font-family:ui-monospace,Menlo,monospace;word-break:break-all}
.muted{color:#616e7c;font-size:12px}ul.qc{margin:4px 0 8px}ul.qc li{color:#8d2b0b}
section.case{border-top:1px solid #e4e7eb;margin-top:18px}
div.wide{max-width:100%;overflow-x:auto}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def unit_header(column: str) -> str:
    """Human header with the unit from the column name: ``lv_edv_ml`` -> ``lv edv (mL)``."""
    for suffix, unit in _UNITS:
        if column.endswith(suffix):
            return f"{column[: -len(suffix)].replace('_', ' ')} ({unit})"
    return column.replace("_", " ")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if value != 0 and abs(value) < 0.1:
            return f"{value:.2g}"  # small lesions: 0.004 mL, not 0.00
        return f"{value:.{digits}f}"
    return str(value)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: Sequence[str] | None = None,
           titles: Mapping[str, str] | None = None, row_classes: Sequence[str] | None = None) -> str:
    titles = titles or {}
    head = "".join(f'<th title="{_e(titles.get(h, ""))}">{_e(h)}</th>' for h in headers)
    body = []
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for j, v in enumerate(row):
            c = []
            if cls and cls[j]:
                c.append(cls[j])
            if _is_num(v):
                c.append("num")
            if isinstance(v, tuple) and len(v) == 2 and v[0] == "__html__":
                cells.append(f'<td class="{" ".join(c)}">{v[1]}</td>')
            else:
                cells.append(f'<td class="{" ".join(c)}">{_e(_fmt(v))}</td>')
        body.append(f"<tr{rc}>" + "".join(cells) + "</tr>")
    # a wide table scrolls inside its own box: the page never scrolls sideways on a narrow screen
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="fig" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _summary_columns(rec: Mapping[str, Any]) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    card = rec.get("cardiac")
    if card:
        cols["LV EDV (mL)"] = card.get("lv_edv_ml")
        cols["LV ESV (mL)"] = card.get("lv_esv_ml")
        cols["LV SV (mL)"] = card.get("lv_sv_ml")
        cols["LV EF (%)"] = card.get("lv_ef_percent")
        cols["LV mass (g)"] = card.get("lv_myocardial_mass_g")
        if card.get("rv_edv_ml") is not None:  # None (NaN) when the RV is not labelled: no RV columns
            cols["RV EDV (mL)"] = card.get("rv_edv_ml")
            cols["RV ESV (mL)"] = card.get("rv_esv_ml")
            cols["RV SV (mL)"] = card.get("rv_sv_ml")
            cols["RV EF (%)"] = card.get("rv_ef_percent")
        for side in ("lv", "rv"):
            if card.get(f"{side}_cardiac_output_l_per_min") is not None:
                cols[f"{side.upper()} CO (L/min)"] = card.get(f"{side}_cardiac_output_l_per_min")
        if card.get("bsa_m2") is not None:  # a height and weight were given: BSA-indexed values
            cols["BSA (m²)"] = card.get("bsa_m2")
            cols["LV EDVi (mL/m²)"] = card.get("lv_edvi_ml_per_m2")
            cols["LV ESVi (mL/m²)"] = card.get("lv_esvi_ml_per_m2")
            cols["LV SVi (mL/m²)"] = card.get("lv_svi_ml_per_m2")
            cols["LV mass index (g/m²)"] = card.get("lv_mass_index_g_per_m2")
            if card.get("rv_edvi_ml_per_m2") is not None:
                cols["RV EDVi (mL/m²)"] = card.get("rv_edvi_ml_per_m2")
                cols["RV ESVi (mL/m²)"] = card.get("rv_esvi_ml_per_m2")
        if card.get("ed_frame") is not None:
            cols["ED / ES frame"] = f"{card.get('ed_frame')} / {card.get('es_frame')}"
        return cols
    vols = [v for v in rec.get("volumes") or [] if not v.get("phase")]
    if rec.get("mode") == "tumour" and len(vols) > 1:
        # labels only: region rows (label "1+2+4") are unions of them and would count voxels twice
        cols["tumour volume (mL)"] = float(sum(v.get("volume_ml") or 0.0 for v in vols
                                               if not isinstance(v.get("label"), str)))
    for v in vols:
        cols[f"{v.get('label_name') or v.get('label')} (mL)"] = v.get("volume_ml")
    if rec.get("mode") == "tumour":
        les = rec.get("lesions") or []
        cols["lesions (n)"] = len(les)
        diam = [x.get("max_3d_diameter_mm") for x in les if x.get("max_3d_diameter_mm") is not None]
        cols["largest lesion diameter (mm)"] = max(diam) if diam else None
    return cols


def _qc_text(rec: Mapping[str, Any]) -> str:
    phases: dict[str, list[str]] = {}
    for f in rec.get("qc_flags") or []:
        lst = phases.setdefault(str(f.get("code")), [])
        ph = f.get("phase")
        if ph and ph.split(" ")[0] not in lst:
            lst.append(ph.split(" ")[0])
    return "; ".join(code + (f" ({', '.join(p)})" if p else "") for code, p in phases.items())


def _summary(records: Sequence[Mapping[str, Any]]) -> str:
    per = [_summary_columns(r) for r in records]
    meas_cols: list[str] = list(dict.fromkeys(c for p in per for c in p))
    headers = ["case", "status", "mode", *meas_cols, "QC flags", "time (s)"]
    rows, classes, cell_cls = [], [], ["", "status", "", *[""] * len(meas_cols), "", ""]
    for r, p in zip(records, per):
        status = r.get("status")
        link = ("__html__", f'<a href="#case-{_e(r["case_id"])}">{_e(r["case_id"])}</a>')
        badge = ("__html__", f'<span class="badge {_e(status)}">{_e(status)}</span>')
        qc = _qc_text(r)
        qc_cell = ("__html__", f'<span class="qc">{_e(qc)}</span>') if qc else ""
        rows.append([link, badge, r.get("mode"), *[p.get(c) for c in meas_cols], qc_cell,
                     (r.get("timings_s") or {}).get("total_s")])
        classes.append("error" if status == "error" else ("qc" if qc else ("skipped" if status == "skipped" else "")))
    return _table(headers, rows, cls=cell_cls, row_classes=classes)


#: Provenance items that belong to one case whatever the others say (inputs, timings).
_PER_CASE = ("input hash", "timings (s)", "computed")


def _prov_items(rec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) pairs of one case's provenance, in display order."""
    from medcnn.report.tables import tta_text

    prov = rec.get("provenance") or {}
    model = rec.get("model") or {}
    items = [
        ("medcnn version", prov.get("medcnn_version")),
        ("model", model.get("name")),
        ("model sha256", model.get("sha256")),
        ("model spec sha256 (weights + preprocessing + postprocessing)", model.get("spec_sha256")),
        ("config hash", rec.get("config_hash")),
        ("input hash", rec.get("input_hash")),
        ("input hash method", prov.get("input_hash_method")),
        ("device", prov.get("device")),
        ("precision", prov.get("precision")),
        ("TTA", tta_text(prov)),
        ("deterministic", prov.get("deterministic")),
        ("library versions", ", ".join(f"{k} {v}" for k, v in (prov.get("environment") or {}).items())),
        ("timings (s)", ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in (rec.get("timings_s") or {}).items()
                                  if isinstance(v, (int, float)))),
        ("computed", prov.get("computed_utc")),
    ]
    for name, text in (prov.get("methods") or {}).items():
        items.append((f"method: {name}", text))
    for g in rec.get("input_geometry") or []:
        items.append((f"input grid {g.get('name', '')}".strip(),
                      f"shape {g.get('shape')}, spacing {g.get('spacing_mm')} mm, {g.get('orientation')}"))
    return [(k, v) for k, v in items if v not in (None, "")]


def _dl(items: Sequence[tuple[str, Any]]) -> str:
    def dd(k: str) -> str:
        return '<dd class="hash">' if ("sha256" in k or k.endswith("hash")) else "<dd>"

    return '<dl class="prov">' + "".join(f"<dt>{_e(k)}</dt>{dd(k)}{_e(_fmt(v))}</dd>" for k, v in items) + "</dl>"


def _common_provenance(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    """Provenance items with one value in every computed case (shown once per report)."""
    per = [dict(_prov_items(r)) for r in records if r.get("status") != "error"]
    if not per:
        return []
    return [(k, v) for k, v in per[0].items()
            if k not in _PER_CASE and all(k in p and p[k] == v for p in per[1:])]


def _prov_block(rec: Mapping[str, Any], common: Sequence[tuple[str, Any]] = ()) -> str:
    """One case's provenance: only what differs from the report's common block."""
    shared = dict(common)
    own = [(k, v) for k, v in _prov_items(rec) if k not in shared or shared[k] != v]
    return (f'<details><summary>Provenance of this case (what differs from the report\'s provenance: '
            f'{_e(", ".join(k for k, _ in own))})</summary>{_dl(own)}</details>')


def _channel_text(rec: Mapping[str, Any], channel: Any) -> str:
    """The input's channel name, except a model channel called "cine" given one 3D stack."""
    if channel == "cine" and rec.get("input_kind") and rec.get("input_kind") != "cine series":
        return "3D stack" if rec.get("input_kind") == "single scan" else "3D stack (cine model channel)"
    return str(channel or "")


def _case_section(rec: Mapping[str, Any], image_root: Path, columns: Mapping[str, str],
                  common: Sequence[tuple[str, Any]] = ()) -> str:
    cid = rec["case_id"]
    status = rec.get("status")
    parts = [f'<section class="case" id="case-{_e(cid)}"><h3>{_e(cid)} '
             f'<span class="badge {_e(status)}">{_e(status)}</span></h3>']
    inputs = rec.get("inputs") or []
    if inputs:
        parts.append('<p class="muted">input: ' + "; ".join(
            _e(f"{i['phase']}: " if i.get("phase") else "") + _e(_channel_text(rec, i.get("channel"))) + " "
            + _e(i.get("path")) for i in inputs) + "</p>")
    ids = rec.get("identifiers") or {}
    if ids:
        parts.append('<p class="muted">patient identifiers (included on request): '
                     + "; ".join(f"{_e(k)} {_e(v)}" for k, v in ids.items()) + "</p>")
    if status == "error":
        err = rec.get("error") or {}
        parts.append(f'<p class="qc">{_e(err.get("type"))}: {_e(err.get("message"))}</p></section>')
        return "".join(parts)
    outputs = rec.get("outputs") or {}
    for key, alt in (("overlay", f"{cid}: label contours on three views"),
                     ("curve", f"{cid}: volume over the cardiac cycle")):
        rel = outputs.get(key)
        if rel and (image_root / rel).is_file():
            parts.append(_img(image_root / rel, alt))
    qc = rec.get("qc_flags") or []
    if qc:
        parts.append('<ul class="qc">' + "".join(
            f'<li><span class="qc">{_e(f.get("code"))}</span> {_e(f.get("message"))}</li>' for f in qc) + "</ul>")
    card = rec.get("cardiac")
    if card:
        keys = [k for k in ("lv_edv_ml", "lv_edv_low_ml", "lv_edv_high_ml", "lv_esv_ml", "lv_esv_low_ml",
                            "lv_esv_high_ml", "lv_sv_ml", "lv_ef_percent", "lv_ef_low_percent", "lv_ef_high_percent",
                            "lv_myo_ed_ml", "lv_myo_es_ml",
                            "lv_myocardial_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "rv_ef_percent",
                            "heart_rate_bpm", "lv_cardiac_output_l_per_min", "rv_cardiac_output_l_per_min",
                            "height_cm", "weight_kg", "bsa_m2", "lv_edvi_ml_per_m2", "lv_esvi_ml_per_m2",
                            "lv_svi_ml_per_m2", "rv_edvi_ml_per_m2", "rv_esvi_ml_per_m2", "lv_mass_index_g_per_m2",
                            "ed_frame", "es_frame", "ed_time_ms", "es_time_ms") if card.get(k) is not None]
        parts.append(_table(["measure", "value", "definition"],
                            [[unit_header(k), card.get(k), columns.get(k, "")] for k in keys]))
        if card.get("rv_note"):
            parts.append(f'<p class="muted">{_e(card.get("rv_note"))}</p>')
    vols = rec.get("volumes") or []
    if vols:
        has_ref = any(v.get("reference_volume_ml") is not None for v in vols)
        has_iv = any(v.get("volume_low_ml") is not None for v in vols)
        headers = ["phase", "label", "name", "voxels", "volume (mL)"] + (
            ["interval low (mL)", "interval high (mL)"] if has_iv else []) + (
            ["reference (mL)", "difference (mL)", "Dice"] if has_ref else [])
        rows = [[v.get("phase") or "", v.get("label"), v.get("label_name"), v.get("voxel_count"), v.get("volume_ml")]
                + ([v.get("volume_low_ml"), v.get("volume_high_ml")] if has_iv else [])
                + ([v.get("reference_volume_ml"), v.get("volume_difference_ml"), v.get("dice")] if has_ref else [])
                for v in vols]
        parts.append(_table(headers, rows, titles={"volume (mL)": columns.get("volume_ml", ""),
                                                   "interval low (mL)": columns.get("volume_low_ml", ""),
                                                   "interval high (mL)": columns.get("volume_high_ml", "")}))
    les = rec.get("lesions") or []
    if les:
        shown = les[:20]
        parts.append(_table(
            ["lesion", "label", "volume (mL)", "max 3D diameter (mm)", "in-plane diameter (mm)",
             "perpendicular (mm)", "centroid x, y, z (mm)", "touches border"],
            [[x.get("lesion_id"), x.get("label_name") or x.get("label"), x.get("volume_ml"),
              x.get("max_3d_diameter_mm"), x.get("max_inplane_diameter_mm"), x.get("perpendicular_diameter_mm"),
              ", ".join(_fmt(x.get(k), 1) for k in ("centroid_x_mm", "centroid_y_mm", "centroid_z_mm")),
              x.get("touches_border")] for x in shown]))
        if len(les) > len(shown):
            parts.append(f'<p class="muted">{len(les) - len(shown)} more lesions in lesions.csv</p>')
    parts.append(_prov_block(rec, common))
    parts.append("</section>")
    return "".join(parts)


def _validation_text(summary: Mapping[str, Any]) -> str:
    parts = []
    for k, v in summary.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            parts.append(f"{k} {_fmt(v, 3)}")
        elif isinstance(v, Mapping) and v and all(isinstance(x, (int, float)) for x in v.values()):
            parts.append(f"{k} " + ", ".join(f"{n} {_fmt(x, 3)}" for n, x in v.items()))
    return "; ".join(parts)


def render_html(report: Mapping[str, Any], *, image_root: str | Path) -> str:
    """The HTML page of a batch report.

    Args:
        report: the batch report dict (as written to ``report.json``): ``title``,
            ``generated_utc``, ``model``, ``settings``, ``counts``, ``columns``, ``cases``.
        image_root: folder the records' ``outputs`` paths (PNG figures) are relative to.

    Returns:
        A complete HTML document (UTF-8 text) with every image inline.
    """
    root = Path(image_root)
    records = list(report.get("cases") or [])
    columns = dict(report.get("columns") or {})
    model = report.get("model") or {}
    counts = report.get("counts") or {}
    settings = report.get("settings") or {}
    title = report.get("title") or "medcnn batch report"
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">generated {_e(report.get("generated_utc"))} by medcnn {_e(report.get("medcnn_version"))}'
        f' &middot; model <b>{_e(model.get("name"))}</b> (sha256 {_e(model.get("sha256"))})'
        f' &middot; mode {_e(settings.get("mode"))} &middot; device {_e(settings.get("device"))}'
        f' &middot; precision {_e(settings.get("precision"))} &middot; TTA {_e("on" if settings.get("tta") else "off")}</p>',
        f'<p><b>{counts.get("ok", 0)} ok</b> ({counts.get("skipped", 0)} up to date from an earlier run), '
        f'<b>{counts.get("failed", 0)} failed</b>, {counts.get("total", len(records))} cases.</p>',
        "<h2>Summary</h2>",
        _summary(records),
        '<p class="muted">Volumes are voxel count &times; voxel volume on the input grid (mL); the interval '
        "(low&ndash;high) is a sensitivity band from the model's own probabilities, not a confidence interval "
        "(docs/volume_intervals.md). "
        "Highlighted cells are quality-control flags: check those cases before using their numbers.</p>",
    ]
    if any((r.get("cardiac") or {}).get("bsa_m2") is not None for r in records):
        from medcnn.measure.body import BSA_METHOD

        parts.append(f'<p class="muted">Indexed values (&ldquo;i&rdquo;, per m&sup2;) = value / body surface area; BSA by '
                     f"{_e(BSA_METHOD)}, from the height and weight given for the case (none is guessed: cases "
                     "without them have no indexed values).</p>")
    src = model.get("imported_from") or {}
    if src:
        names = ", ".join(f"{k} {_e(src[k])}" for k in ("trainer", "plans", "configuration", "folds", "bundle_name",
                                                       "bundle_version") if src.get(k) not in (None, "", []))
        lic = src.get("licence") or {}
        lic_text = "; ".join(f"{k}: {v}" for k, v in lic.items() if k != "licence_file") if isinstance(lic, Mapping) \
            else str(lic)
        parts.append(f'<p class="muted">model imported from {_e(src.get("format"))} '
                     f'<b>{_e(src.get("name") or src.get("source"))}</b>' + (f" ({names})" if names else "")
                     + (f" &middot; licence: {_e(lic_text)}" if lic_text else "") + "</p>")
    val = _validation_text(model.get("validation") or {})
    if val:
        kind = (model.get("validation") or {}).get("kind")
        parts.insert(5, f'<p class="muted">model figures recorded in the bundle (kind: {_e(kind or "not recorded")}; '
                        f'`medcnn models show` says which cases trained, selected and tested it): {_e(val)}</p>')
    errors = [r for r in records if r.get("status") == "error"]
    if errors:
        parts.append("<h2>Errors</h2>")
        parts.append(_table(["case", "error", "message"],
                            [[r["case_id"], (r.get("error") or {}).get("type"), (r.get("error") or {}).get("message")]
                             for r in errors], row_classes=["error"] * len(errors)))
    common = _common_provenance(records)
    parts.append("<h2>Cases</h2>")
    parts.append(f'<p class="muted">Figures: {_e(DISPLAY_CONVENTION)} Views are named from the scan\'s own '
                 "direction cosines: axial, coronal or sagittal only when the slices are; a short-axis stack's "
                 "acquired plane is &ldquo;short axis&rdquo; and the others &ldquo;perpendicular to the short "
                 "axis&rdquo;. ED and ES are shown on the same slices; reference contours, when a reference is "
                 "given, are dashed in cyan.</p>")
    parts.extend(_case_section(r, root, columns, common) for r in records)
    if common:
        parts.append('<h2 id="provenance">Provenance</h2>')
        parts.append('<p class="muted">The same for every case of this report; each case lists only what '
                     "differs (its input hash, timings and grid).</p>")
        parts.append(_dl(common))
    if columns:
        parts.append("<h2>Column definitions</h2>")
        parts.append(_table(["column", "meaning and unit"], [[k, v] for k, v in columns.items()]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Mapping[str, Any], path: str | Path, *, image_root: str | Path | None = None) -> Path:
    """Render and write the report atomically; images are read relative to ``image_root``
    (default: the HTML file's folder)."""
    from medcnn.report.tables import write_text

    p = Path(path)
    return write_text(p, render_html(report, image_root=image_root if image_root is not None else p.parent))


def _band_text(low: Any, high: Any) -> str:
    return "" if low is None or high is None else f"{_fmt(low)}\u2013{_fmt(high)}"


def render_response_html(doc: Mapping[str, Any]) -> str:
    """The HTML page of a tumour response document (``response.json`` of ``medcnn response``).

    Args:
        doc: ``timepoints`` (index, inputs, date, interval_days, grid), ``response`` rows
            (one per follow-up and structure, volumes in mL), ``methods``, ``thresholds``,
            ``categories``, ``columns``, ``model``, ``medcnn_version``, ``created_utc``.

    Returns:
        A complete, self-contained HTML document (nothing fetched).
    """
    title = "medcnn tumour response"
    model = doc.get("model") or {}
    cats = doc.get("categories") or {}
    thr = doc.get("thresholds") or {}
    rows = list(doc.get("response") or [])
    tps = list(doc.get("timepoints") or [])
    src = (f"scans segmented with model <b>{_e(model.get('name'))}</b> (sha256 {_e(model.get('sha256'))})"
           if model else "label maps")
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">generated {_e(doc.get("created_utc"))} by medcnn {_e(doc.get("medcnn_version"))} '
        f"&middot; {len(tps)} time points &middot; inputs: {src}</p>",
        "<h2>Time points</h2>",
        _table(["time point", "role", "inputs", "date", "interval (days)", "grid (voxels)", "spacing (mm)",
                "orientation"],
               [[t.get("index"), t.get("role"), "; ".join(i.get("file") or "" for i in t.get("inputs") or []),
                 t.get("date"), t.get("interval_days"),
                 " \u00d7 ".join(map(str, (t.get("grid") or {}).get("shape", []))),
                 " \u00d7 ".join(_fmt(float(v), 3) for v in (t.get("grid") or {}).get("spacing_mm", [])),
                 (t.get("grid") or {}).get("orientation")] for t in tps]),
    ]
    band = any(r.get(f"{w}_volume_{e}_ml") is not None for r in rows for w in ("baseline", "followup")
               for e in ("low", "high"))
    for idx in sorted({r["followup_index"] for r in rows}):
        mine = [r for r in rows if r["followup_index"] == idx]
        first = mine[0]
        when = ", ".join(x for x in (first.get("followup_date") and f"on {first['followup_date']}",
                                     first.get("interval_days") is not None
                                     and f"{_fmt(first['interval_days'], 1)} days after baseline") if x)
        parts.append(f"<h2>Follow-up {idx} against baseline{_e(' (' + when + ')') if when else ''}</h2>")
        headers = ["structure", "kind", "baseline (mL)", "follow-up (mL)", "change (mL)", "change (%)",
                   "doubling time (days)", "category"]
        if band:
            headers += ["baseline band (mL)", "follow-up band (mL)"]
        body = []
        for r in mine:
            cat = str(r.get("category"))
            cell = ("__html__", f'<span class="qc" title="{_e(cats.get(cat, ""))}">{_e(cat)}</span>'
                    if cat in ("PD", "NE") else f'<b title="{_e(cats.get(cat, ""))}">{_e(cat)}</b>')
            line = [f"{r.get('label_name')} ({r.get('label')})", r.get("structure"), r.get("baseline_volume_ml"),
                    r.get("followup_volume_ml"), r.get("change_ml"), r.get("change_percent"), r.get("vdt_days"),
                    cell]
            if band:
                line += [_band_text(r.get("baseline_volume_low_ml"), r.get("baseline_volume_high_ml")),
                         _band_text(r.get("followup_volume_low_ml"), r.get("followup_volume_high_ml"))]
            body.append(line)
        parts.append(_table(headers, body))
    parts.append(
        '<p class="muted">Volumes are voxel count &times; voxel volume on each time point&rsquo;s own grid (mL); '
        "nothing is resampled. An empty doubling time: a volume is 0 or no interval was given. "
        + ("Bands are sensitivity bands from the model&rsquo;s own probabilities, not confidence intervals "
           "(docs/volume_intervals.md). " if band else "")
        + "</p>")
    parts.append("<h2>Categories and thresholds</h2>")
    parts.append(_table(["category", "meaning"], [[k, v] for k, v in cats.items()]))
    if thr:
        parts.append(f'<p class="muted">Thresholds: PR at a volume change &le; '
                     f'{_e(_fmt(thr.get("pr_volume_change_percent"), 1))} % '
                     f'({_e(_fmt(thr.get("pr_diameter_change_percent"), 0))} % diameter), PD at &ge; '
                     f'+{_e(_fmt(thr.get("pd_volume_change_percent"), 1))} % '
                     f'(+{_e(_fmt(thr.get("pd_diameter_change_percent"), 0))} % diameter): RECIST 1.1 diameter '
                     "thresholds converted for a sphere, volume change = (1 + diameter change)&sup3; &minus; 1. "
                     "Each follow-up is compared with the baseline.</p>")
    parts.append('<h2 id="provenance">Methods and provenance</h2>')
    items: list[tuple[str, Any]] = [("medcnn version", doc.get("medcnn_version"))]
    if model:
        items += [("model", model.get("name")), ("model sha256", model.get("sha256")),
                  ("model spec sha256 (weights + preprocessing + postprocessing)", model.get("spec_sha256")),
                  ("device", model.get("device")), ("precision", model.get("precision"))]
    for t in tps:
        for i in t.get("inputs") or []:
            items.append((f"time point {t.get('index')} {i.get('file')} sha256", i.get("sha256")))
    items.append(("input hash method", doc.get("input_hash_method")))
    items += [(f"method: {k}", v) for k, v in (doc.get("methods") or {}).items()]
    parts.append(_dl([(k, v) for k, v in items if v not in (None, "")]))
    cols = doc.get("columns") or {}
    if cols:
        parts.append("<h2>Column definitions (response.csv)</h2>")
        parts.append(_table(["column", "meaning and unit"], [[k, v] for k, v in cols.items()]))
    parts.append("</body></html>")
    return "\n".join(parts)
