"""``medcnn models list`` / ``show``: the default model bundles installed with medcnn.

``list`` prints one line per model (task, channels -> labels, licence restriction, weights
check); ``show NAME`` the full card: task (or what the bundle lacks), labels, data, licence
(the bundle's own, else inherited from its training data), which cases trained, selected and
tested it, and each recorded figure with its kind, how its averages are formed and signed
errors (predicted - reference). Reads ``bundle.json`` only: no torch import.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Mapping

__all__ = ["register", "run", "format_validation", "licence_text", "DATASET_LICENCES"]


def register(sub) -> None:
    p = sub.add_parser("models", help="list, show or import model bundles (labels, channels, validation, sha256)",
                       description="Default model bundles installed with medcnn (use their names with "
                                   "`medcnn run --model NAME`).")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    lp = msub.add_parser("list", help="list the default bundles")
    lp.add_argument("--json", action="store_true", help="one JSON object per bundle")
    lp.add_argument("--no-verify", dest="verify", action="store_false",
                    help="do not hash the weights files (faster)")
    lp.set_defaults(func=run)
    sp = msub.add_parser("show", help="show one bundle (default name or path)")
    sp.add_argument("model", help="default model name or bundle path")
    sp.add_argument("--json", action="store_true", help="print the whole bundle.json")
    sp.add_argument("--no-verify", dest="verify", action="store_false", help="do not hash the weights file")
    sp.set_defaults(func=run)
    ip = msub.add_parser("import", help="translate an nnU-Net v2 result folder or a MONAI bundle into a medcnn bundle",
                         description="Read a foreign trained model once (checkpoints with torch.load(weights_only="
                                     "True), configs as plain JSON/YAML, no expression evaluated) and write an "
                                     "ordinary medcnn bundle (safetensors + bundle.json) that `medcnn segment/run "
                                     "--model DIR` runs. See docs/import-nnunet.md and docs/import-monai.md.")
    ip.add_argument("source", help="nnU-Net result folder (Trainer__Plans__configuration) or MONAI bundle folder")
    ip.add_argument("--out", required=True, help="bundle folder (or .medcnn archive) to write")
    ip.add_argument("--name", help="display name recorded in the provenance (default: the source folder name)")
    ip.add_argument("--folds", help="nnU-Net: comma-separated folds to ensemble, e.g. 0,1,2 or all "
                                    "(default: every fold_N with checkpoint_final.pth)")
    ip.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="MONAI: replace a config value (e.g. a $ expression) by a JSON value, by dotted key; "
                         "repeatable")
    ip.add_argument("--region-order", metavar="OUTER,...,INNER",
                    help="MONAI: sigmoid output channels (channel_def names or indices) from the outermost region "
                         "to the innermost, e.g. 1,0,2 for the Model Zoo's BraTS bundle (TC, WT, ET); default: "
                         "read from BraTS channel names, others refused")
    ip.add_argument("--nnunet-postprocessing", action="store_true",
                    help="nnU-Net: also apply crossval_results_folds_*/postprocessing.json (what "
                         "nnUNetv2_apply_postprocessing does; nnUNetv2_predict, reproduced by default, does not)")
    ip.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    ip.set_defaults(func=run)


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_value(x) for x in v[:6]) + (", ..." if len(v) > 6 else "") + "]"
    return str(v)


def format_validation(summary: Mapping[str, Any]) -> str:
    """One line from a bundle's validation summary (``key=value``; numbers to 3 digits).

    Per-case detail (lists of records) is summarised as a count; ``medcnn models show
    --json`` prints everything."""
    if not summary:
        return "none recorded"
    parts = []
    for k, v in summary.items():
        if isinstance(v, (list, tuple)) and any(isinstance(x, Mapping) for x in v):
            parts.append(f"{k}: {len(v)} entries")
        elif isinstance(v, Mapping) and any(isinstance(x, (Mapping, list, tuple)) for x in v.values()):
            parts.append(f"{k}: {len(v)} entries")
        else:
            parts.append(f"{k}={_fmt_value(v)}")
    return "; ".join(parts)


def _weights_check(info) -> str:
    from medcnn.report.provenance import file_sha256

    if not info.path.is_dir():
        return "not checked (archive)"
    wfile = (info.json.get("weights") or {}).get("file", "model.safetensors")
    p = info.path / str(wfile)
    if not p.is_file():
        return f"MISSING weights file {wfile}"
    return "ok" if file_sha256(p) == info.sha256 else "MISMATCH (weights modified)"


def _postprocess_text(spec: Mapping[str, Any] | None) -> str:
    """The active rules of a bundle's PostprocessSpec dict, e.g. ``keep_largest`` (``""``: none)."""
    if not spec:
        return ""
    on = [f"keep_largest_groups={spec['keep_largest_groups']}"] if spec.get("keep_largest_groups") else []
    on += [k for k in ("keep_largest", "fill_holes", "fill_holes_per_slice") if spec.get(k)]
    if spec.get("min_component_ml"):
        on.append(f"min_component_ml={spec['min_component_ml']}")
    if spec.get("per_label"):
        on.append(f"per_label={spec['per_label']}")
    return ", ".join(on) + (f" (connectivity {spec.get('connectivity', 26)})" if on else "")


def _entry(info, verify: bool) -> dict[str, Any]:
    d = {"name": info.name, "path": str(info.path), "task": info.task,
         "labels": {str(k): v for k, v in info.labels.items()}, "channels": list(info.channels),
         "validation": info.validation, "sha256": info.sha256,
         "network": (info.json.get("network") or {}).get("name"),
         "roi_size": info.json.get("roi_size"), "target_spacing_mm": info.json.get("target_spacing_mm"),
         "mirror_axes": info.json.get("mirror_axes"), "postprocess": _postprocess_text(info.json.get("postprocess")),
         "tta_default": (info.json.get("inference") or {}).get("tta_axes", "none"),
         "imported_from": (info.json.get("provenance") or {}).get("imported_from")}
    from medcnn.models.bundle import network_spatial_dims, whole_slice_default

    if network_spatial_dims(info.json) == 2:

        ws = info.json.get("whole_slice")
        d["whole_slice"] = {"default": whole_slice_default(info.json),
                            **({k: ws.get(k) for k in ("volumes", "dataset", "voxels_equal_percent_min",
                                                        "voxels_equal_percent_mean", "speedup_median")}
                               if isinstance(ws, Mapping) else {"measured": False})}
    prov = info.json.get("provenance") or {}
    if prov.get("licence"):
        d["licence"] = prov["licence"]
    cv = prov.get("cross_validation") or {}
    if cv.get("mean_over_folds"):
        d["cross_validation"] = {"n_folds": cv.get("n_folds"), "mean_over_folds": cv["mean_over_folds"]}
    d.update(_data_use_entry(prov))
    d["task_recorded"] = bool(info.json.get("task") or prov.get("task"))
    d["description"] = prov.get("description") or info.json.get("description")
    data = ((prov.get("training") or {}).get("config") or {}).get("data") or {}
    d["training_datasets"] = [str(x) for x in [data.get("dataset"), *[e.get("dataset") for e in data.get("extra") or []
                                                                    if isinstance(e, Mapping)]] if x]
    d["figure_numbers"] = {key: _figure_numbers(fig) for key, fig in _figures(prov)}
    if verify:
        d["sha256_check"] = _weights_check(info)
    return d


#: Licences of the datasets the shipped models are trained on (by the dataset folder name of the
#: training config), for bundles that record no licence of their own: a model inherits the
#: restrictions of its training data.
DATASET_LICENCES = {
    "acdc": "ACDC: provided for non-commercial research only",
    "sunnybrook": "Sunnybrook Cardiac Data: CC0 1.0",
    "brats2015": "BRATS 2013/2015: CC BY-NC-SA 3.0 CH (non-commercial, share-alike)",
    "brats2018": "BraTS 2018 data terms: research use only (non-commercial)",
    "hippocampus": "Medical Segmentation Decathlon Task04: CC BY-SA 4.0 (share-alike)",
}


def _figures(prov: Mapping[str, Any]):
    from medcnn.report.data_use import figures

    return figures(prov)


def _task_text(d: Mapping[str, Any]) -> str:
    if d.get("task") and d.get("task_recorded"):
        return str(d["task"])
    if d.get("task"):
        return f"{d['task']} (guessed from the label names: the bundle records no task)"
    return ("not recorded: the bundle has no task and its label names are neither cardiac nor tumour "
            "structures, so `medcnn run` measures label volumes (mode volumes)")


def _dataset_licences(d: Mapping[str, Any]) -> list[str]:
    out = []
    for ds in d.get("training_datasets") or []:
        key = str(ds).replace("\\", "/").split("/")[0]
        out.append(DATASET_LICENCES.get(key, f"{ds}: licence not known to medcnn"))
    return out


def licence_text(d: Mapping[str, Any]) -> str:
    """The model's licence: the bundle's own statement, else its training data's licences."""
    if d.get("licence"):
        return " ".join(str(d["licence"]).split())
    lic = _dataset_licences(d)
    if lic:
        return ("not recorded in the bundle; inherited from its training data: " + "; ".join(lic))
    return "not recorded in the bundle (nor which data trained it)"


def _licence_short(d: Mapping[str, Any]) -> str:
    text = licence_text(d).lower()
    if "non-commercial" in text or "research use only" in text:
        return "non-commercial research only"
    if text.startswith("not recorded in the bundle (nor"):
        return "licence not recorded"
    if d.get("licence"):
        return " ".join(str(d["licence"]).split())[:60]
    return "; ".join(x.split(": ", 1)[-1] for x in _dataset_licences(d))


def _signed(x: float, digits: int = 1) -> str:
    return f"{x:+.{digits}f}"


def _figure_numbers(fig: Mapping[str, Any]) -> list[str]:
    """The numbers of one recorded figure, each with what it averages and its sign convention."""
    lines: list[str] = []
    md = fig.get("mean_dice") or fig.get("mean_dice_over_folds")
    mof = fig.get("mean_over_folds") or {}
    if not md and mof:
        md = {k[5:]: v for k, v in mof.items() if k.startswith("dice.")}
    by_fold = bool(fig.get("mean_over_folds") or fig.get("mean_dice_over_folds"))
    over = f"mean over {fig.get('n_folds') or 'the'} folds of each fold's mean over its cases" if by_fold \
        else "mean over cases"
    if fig.get("regions") and any(f"{r}.dice" in mof for r in fig["regions"]):  # a region model's CV
        for r in fig["regions"]:
            rng = (fig.get("range_over_folds") or {}).get(f"{r}.dice")
            lines.append(f"{r} ({over}): Dice {mof[f'{r}.dice']:.3f}"
                         + (f" (folds {rng[0]:.3f}-{rng[1]:.3f})" if rng else "")
                         + (f", HD95 {mof[f'{r}.hd95_mm']:.1f} mm" if f"{r}.hd95_mm" in mof else "")
                         + (f", |volume error| {mof[f'{r}.abs_volume_error_percent']:.1f} % (|pred - ref| / ref)"
                            if f"{r}.abs_volume_error_percent" in mof else ""))
        return lines
    if md:
        lines.append("per-label Dice (" + over + "; a case whose reference does not annotate a label is left out): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in md.items() if isinstance(v, (int, float))))
    if isinstance(fig.get("mean_foreground_dice"), (int, float)):
        lines.append(f"foreground Dice {fig['mean_foreground_dice']:.3f} (mean over cases of the Dice of the union of "
                     "the annotated labels: not the mean of the per-label Dice)")
    cases = [c for c in fig.get("cases") or [] if isinstance(c, Mapping)]
    signed = [100.0 * (c["foreground_volume_ml"] - c["foreground_ref_volume_ml"]) / c["foreground_ref_volume_ml"]
              for c in cases if c.get("foreground_ref_volume_ml") and c.get("foreground_volume_ml") is not None]
    if isinstance(fig.get("mean_foreground_volume_error_percent"), (int, float)):
        text = f"foreground volume error: mean |error| {fig['mean_foreground_volume_error_percent']:.1f} %"
        if signed:
            spread = (f"; per case {min(signed):+.1f} to {max(signed):+.1f} %" if len(signed) > 1 else "; 1 case")
            text += (f", mean signed error {_signed(float(sum(signed) / len(signed)))} % (predicted - reference, "
                     f"over reference{spread})")
        else:
            text += " (per-case values not kept: the sign is not recorded)"
        lines.append(text)
    for prefix, what in (("", "LV"), ("rv_", "RV")):
        ef = [e for e in fig.get(f"{prefix}ejection_fraction") or [] if isinstance(e, Mapping)]
        if ef and all(e.get("ef_percent") is not None and e.get("ref_ef_percent") is not None for e in ef):
            errs = [(str(e.get("patient")), float(e["ef_percent"]) - float(e["ref_ef_percent"])) for e in ef]
            lines.append(f"{what} EF error (predicted - reference, percentage points): mean |error| "
                         f"{sum(abs(x) for _, x in errs) / len(errs):.1f}; per patient "
                         + ", ".join(f"{p} {_signed(x)}" for p, x in errs))
        elif isinstance(fig.get(f"mean_abs_{prefix}ef_error_points"), (int, float)):
            lines.append(f"{what} EF error: mean |error| {fig[f'mean_abs_{prefix}ef_error_points']:.1f} points")
    for k, what in (("mean_abs_ef_error_points", "LV"), ("mean_abs_rv_ef_error_points", "RV")):
        if k in mof:
            lines.append(f"{what} EF error: mean |error| {mof[k]:.1f} points ({over}; signs not recorded)")
    per_patient = [p for p in fig.get("lv_ef_error_per_patient") or [] if isinstance(p, Mapping)]
    if per_patient:
        lines.append("LV EF error per patient (predicted - reference, points, mean over fold models): "
                     + ", ".join(f"{p.get('patient')} {_signed(float(p['mean_ef_error_points']))}"
                                 for p in per_patient if p.get("mean_ef_error_points") is not None))
    if not lines:  # a figure medcnn does not know the layout of: its scalar values as recorded
        rest = {k: v for k, v in fig.items() if k not in ("kind", "kind_note", "cases", "note")}
        if rest:
            lines.append(format_validation(rest))
    return lines


def _one_line(d: Mapping[str, Any]) -> str:
    """``models list``: one line per model."""
    labels = ", ".join(v for k, v in d["labels"].items() if str(k) != "0")
    task = d.get("task") or "volumes"
    check = f"; weights {d['sha256_check']}" if "sha256_check" in d else ""
    return f"{d['name']:<22} {task:<8} {', '.join(d['channels'])} -> {labels}; {_licence_short(d)}{check}"


def _print(d: Mapping[str, Any]) -> None:
    """``models show``: the full card."""
    print(d["name"])
    print(f"  task        {_task_text(d)}")
    print(f"  labels      {', '.join(f'{k}={v}' for k, v in d['labels'].items())}")
    print(f"  channels    {', '.join(d['channels'])}")
    if d.get("description"):
        print(f"  data        {' '.join(str(d['description']).split())}")
    if d.get("training_datasets"):
        print(f"  datasets    {', '.join(d['training_datasets'])}")
    print(f"  licence     {licence_text(d)}")
    print(f"  network     {d['network']}, roi {d['roi_size']}, target spacing {d['target_spacing_mm']} mm")
    mirror = d.get("mirror_axes")
    print(f"  tta axes    {'not recorded' if mirror is None else (mirror or 'none (trained without mirroring)')}"
          + ("; mirrored by default (--no-tta: off)" if d.get("tta_default") == "trained" else ""))
    print(f"  postprocess {d.get('postprocess') or 'none'}")
    ws = d.get("whole_slice")
    if ws:
        state = "on by default" if ws["default"] else "off by default (--whole-slice: on)"
        if ws.get("measured") is False:
            print(f"  whole slice {state}; agreement with windowed labels not measured")
        else:
            print(f"  whole slice {state}; labels equal to windowed in {ws['voxels_equal_percent_min']} % of "
                  f"voxels in the worst of {ws['volumes']} volumes ({ws['dataset']}; mean "
                  f"{ws['voxels_equal_percent_mean']} %; bar 99.5 % in every volume), x{ws['speedup_median']} faster")
    for line in _data_use_lines(d):
        print(line)
    if not d.get("figures"):
        print("  figures     none recorded in the bundle (no validation, cross-validation or test figure)")
    src = d.get("imported_from")
    if src:
        names = ", ".join(f"{k} {src[k]}" for k in ("trainer", "plans", "configuration", "folds", "network_class")
                          if src.get(k) not in (None, "", []))
        print(f"  imported    {src.get('format')} {src.get('name') or src.get('source')!r}" + (f" ({names})" if names else ""))
        lic = src.get("licence")
        if isinstance(lic, Mapping):
            text = "; ".join(f"{k}: {v}" for k, v in lic.items() if k != "licence_file")
            if lic.get("licence_file"):
                first = str(lic["licence_file"]).strip().splitlines()[0][:80]
                text += ("; " if text else "") + f"LICENSE file: {first!r} ({len(lic['licence_file'])} characters kept)"
            print(f"  source licence {text}")
        elif lic:
            print(f"  source licence {lic}")
        for dev in src.get("deviations") or []:
            print(f"  deviation   {dev}")
        for fname, sha in sorted((src.get("files_sha256") or {}).items()):
            print(f"  source file {fname}  sha256 {sha}")
    print(f"  sha256      {d['sha256']}" + (f"  ({d['sha256_check']})" if "sha256_check" in d else ""))
    print(f"  path        {d['path']}")


# ---------------------------------------------------------------------------- training / selection / test
def _data_use_entry(prov: Mapping[str, Any]) -> dict[str, Any]:
    """``data_use`` (case ids per role, how the checkpoint was chosen) and ``figures`` (each
    recorded figure's kind and case count) of a bundle's provenance, for list/show."""
    from medcnn.report.data_use import figure_case_ids, figures

    out: dict[str, Any] = {}
    if prov.get("data_use"):
        out["data_use"] = dict(prov["data_use"])
    figs = []
    for key, fig in figures(prov):
        n = fig.get("n_cases")
        if n is None and fig.get("folds"):
            n = sum(int(f.get("n_cases", 0)) for f in fig["folds"])
        figs.append({"figure": key, "kind": fig.get("kind", "not recorded"), "n_cases": n,
                     "note": "; ".join(str(fig[k]) for k in ("kind_note", "per_case_results") if fig.get(k)) or None,
                     "case_ids": sorted(figure_case_ids(fig))})
    if figs:
        out["figures"] = figs
    return out


def _ids(ids: list[str], limit: int = 6) -> str:
    if not ids:
        return "none"
    shown = ", ".join(ids[:limit]) + (f", ... ({len(ids)} in all; --json lists every id)" if len(ids) > limit else "")
    return f"{len(ids)}: {shown}" if len(ids) > 1 else shown


def _data_use_lines(d: Mapping[str, Any]) -> list[str]:
    """The training / selection / test statement of ``models show``, one role or figure a line."""
    use = d.get("data_use")
    lines = []
    if not use:
        lines.append("  data use    not recorded (which cases trained, selected and tested this model is unknown)")
    else:
        lines.append(f"  training    {_ids(list(use.get('training') or []))}")
        lines.append(f"  selection   {_ids(list(use.get('selection') or []))}")
        lines.append(f"  test        {_ids(list(use.get('test') or []))}")
        if use.get("external_test"):
            lines.append(f"  external    {_ids(list(use['external_test']))}")
        if use.get("recipe_selection"):
            lines.append(f"  recipe from {_ids(list(use['recipe_selection']))} (results that shaped the recipe)")
        lines.append(f"  checkpoint  {use.get('checkpoint')}")
    numbers = d.get("figure_numbers") or {}
    for f in d.get("figures") or []:
        n = (f"{f['n_cases']} case" + ("s" if f["n_cases"] != 1 else "")) if f.get("n_cases") is not None \
            else "cases not recorded"
        lines.append(f"  figure      {f['figure']}: {f['kind']} ({n})" + (f": {f['note']}" if f.get("note") else ""))
        lines += [f"      {x}" for x in numbers.get(f["figure"]) or []]
    return lines


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    from medcnn.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError.expected("--set KEY=VALUE", repr(item))
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _import(args: argparse.Namespace) -> int:
    from medcnn.models.importers import import_model

    folds = [f.strip() for f in args.folds.split(",") if f.strip()] if args.folds else None
    path = import_model(args.source, args.out, name=args.name, folds=folds,
                        overrides=_parse_overrides(args.overrides), overwrite=args.overwrite,
                        region_order=args.region_order, nnunet_postprocessing=args.nnunet_postprocessing)
    from medcnn.batch.bundles import bundle_info

    info = bundle_info(str(path))
    src = (info.json.get("provenance") or {}).get("imported_from") or {}
    print(f"imported {src.get('format')} model {src.get('name')!r} -> {path}")
    _print(_entry(info, True))
    return 0


def run(args: argparse.Namespace) -> int:
    from medcnn.batch.bundles import bundle_info
    from medcnn.models.defaults import bundled_names, default_bundles_dir
    from medcnn.errors import MedcnnError

    if args.models_command == "import":
        return _import(args)
    if args.models_command == "show":
        info = bundle_info(args.model)
        if args.json:
            print(json.dumps(info.json, indent=2))
        else:
            _print(_entry(info, args.verify))
        return 0
    names = bundled_names()
    if not names:
        where = default_bundles_dir()
        print(f"no default model bundles installed (looked in {where or 'medcnn/bundles'}); "
              "pass a bundle path to `medcnn run --model PATH`")
        return 0
    status = 0
    for name in names:
        try:
            d = _entry(bundle_info(name), args.verify)
        except MedcnnError as exc:
            d = {"name": name, "error": str(exc)}
            status = 2
        if args.json:
            print(json.dumps(d))
        elif "error" in d:
            print(f"{name:<22} error: {d['error']}")
        else:
            print(_one_line(d))
    if not args.json:
        print("(medcnn models show NAME: the full card: data, licence, training / selection / test cases, figures)")
    return status
