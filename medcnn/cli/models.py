"""``medcnn models list``: the default model bundles installed with medcnn.

Shows each bundle's labels, input channels, validation summary and weights SHA-256
(checked against the file). Reads ``bundle.json`` only: no torch import.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Mapping

__all__ = ["register", "run", "format_validation"]


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
    prov = info.json.get("provenance") or {}
    if prov.get("licence"):
        d["licence"] = prov["licence"]
    cv = prov.get("cross_validation") or {}
    if cv.get("mean_over_folds"):
        d["cross_validation"] = {"n_folds": cv.get("n_folds"), "mean_over_folds": cv["mean_over_folds"]}
    d.update(_data_use_entry(prov))
    if verify:
        d["sha256_check"] = _weights_check(info)
    return d


def _print(d: Mapping[str, Any]) -> None:
    print(d["name"])
    print(f"  task        {d['task'] or 'unspecified'}")
    print(f"  labels      {', '.join(f'{k}={v}' for k, v in d['labels'].items())}")
    print(f"  channels    {', '.join(d['channels'])}")
    print(f"  network     {d['network']}, roi {d['roi_size']}, target spacing {d['target_spacing_mm']} mm")
    mirror = d.get("mirror_axes")
    print(f"  tta axes    {'not recorded' if mirror is None else (mirror or 'none (trained without mirroring)')}"
          + ("; mirrored by default (--no-tta: off)" if d.get("tta_default") == "trained" else ""))
    print(f"  postprocess {d.get('postprocess') or 'none'}")
    print(f"  validation  {format_validation({k: v for k, v in (d['validation'] or {}).items() if k != 'kind_note'})}")
    for line in _data_use_lines(d):
        print(line)
    cv = d.get("cross_validation")
    if cv:
        m = cv["mean_over_folds"]
        parts = [f"{k[5:]} Dice {v:.3f}" for k, v in m.items() if k.startswith("dice.")]
        parts += [f"{what} {m[k]:.1f} points" for k, what in (("mean_abs_ef_error_points", "|LV EF error|"),
                                                               ("mean_abs_rv_ef_error_points", "|RV EF error|"))
                  if k in m]
        print(f"  cross-val   mean over {cv['n_folds']} folds: " + ", ".join(parts))
    if d.get("licence"):
        print(f"  licence     {' '.join(str(d['licence']).split())}")
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
            print(f"  licence     {text}")
        elif lic:
            print(f"  licence     {lic}")
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
    for f in d.get("figures") or []:
        n = f"{f['n_cases']} cases" if f.get("n_cases") is not None else "cases not recorded"
        lines.append(f"  figure      {f['figure']}: {f['kind']} ({n})" + (f": {f['note']}" if f.get("note") else ""))
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
    for i, name in enumerate(names):
        try:
            d = _entry(bundle_info(name), args.verify)
        except MedcnnError as exc:
            d = {"name": name, "error": str(exc)}
            status = 2
        if args.json:
            print(json.dumps(d))
        elif "error" in d:
            print(f"{name}\n  error       {d['error']}")
        else:
            if i:
                print()
            _print(d)
    return status
