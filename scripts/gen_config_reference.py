#!/usr/bin/env python
"""Generate ``docs/configuration.md`` from medcnn's configuration dataclasses.

Every key, its type, its default and its meaning come from the code itself
(:func:`medcnn.config.describe_fields`, which reads ``field(metadata={"help": ...})``);
where a field has no ``help`` text, the meaning is taken from the ``Attributes:``
section of the class docstring. Nested dataclasses (``TrainConfig.data`` ...) are
listed as their own sections with dotted YAML keys.

Usage::

    python scripts/gen_config_reference.py            # rewrite docs/configuration.md
    python scripts/gen_config_reference.py --check    # exit 1 if the file is out of date
    python scripts/gen_config_reference.py --stdout   # print instead of writing

``tests/test_config_reference.py`` runs the ``--check`` comparison, so the committed file
always matches the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "configuration.md"

#: (import path, where a user meets it). Order = order in the document.
CONFIG_CLASSES: tuple[tuple[str, str], ...] = (
    ("medcnn.train.loop:TrainConfig",
     "a training config file: `medcnn train --config configs/<name>.yaml` "
     "(read strictly with `medcnn.config.load_config(TrainConfig, path)`; unknown keys are errors)"),
    ("medcnn.preprocess:PreprocessSpec",
     "`bundle.json` → `preprocess` (written from the training config's `preprocess:` section), "
     "and `medcnn.preprocess.Preprocessor(PreprocessSpec(...))` in Python"),
    ("medcnn.postprocess:PostprocessSpec",
     "`bundle.json` → `postprocess`, and `medcnn.postprocess.postprocess(labels, PostprocessSpec(...))` in Python"),
    ("medcnn.postprocess:LabelRule",
     "one entry of `PostprocessSpec.per_label` (`per_label: {<label>: {...}}`)"),
    ("medcnn.measure:CardiacLabels",
     "which label value is which cardiac structure, for `medcnn.measure.cardiac_function` / `cine_function` "
     "(and the cardiac options of `medcnn measure`)"),
)

#: Where a class has no ``help`` metadata or docstring entry for a field, take the meaning
#: from another class's docstring (the mirrored one).
MEANING_FROM: dict[str, str] = {
    "PreprocessConfig": "medcnn.preprocess:PreprocessSpec",
    "LabelRule": "medcnn.postprocess:PostprocessSpec",
}

#: Meanings for fields that carry neither ``help`` metadata nor a docstring entry, written
#: from reading the code that uses them. Better: add ``field(metadata={"help": ...})`` in
#: the class, which takes precedence. An entry for a field that no longer exists is an
#: error, so this table cannot silently go stale.
SUPPLEMENT: dict[str, str] = {
    "TrainConfig.name": "run name: names the output folder (runs/<name>[-fold<k>]) and the exported bundle",
    "TrainConfig.description": "free text stored in the bundle's metadata",
    "TrainConfig.batch_size": "patches per optimisation step (per process when distributed)",
    "TrainConfig.max_steps": "total optimisation steps; the polynomial learning-rate schedule ends here",
    "TrainConfig.steps_per_epoch": "steps counted as one epoch (for logging and validation frequency)",
    "TrainConfig.val_every_epochs": "run sliding-window validation every this many epochs (and at the last step)",
    "TrainConfig.checkpoint_every": "write a resumable checkpoint every this many steps (and at the end)",
    "TrainConfig.dice_weight": "weight of the soft Dice term in the loss",
    "TrainConfig.ce_weight": "weight of the cross-entropy term in the loss",
    "TrainConfig.amp": "mixed precision: 'auto' = bf16 (or fp16) on CUDA, none on CPU",
    "TrainConfig.seed": "seed for weights, patch sampling and augmentation (per rank and step)",
    "TrainConfig.deterministic": "ask PyTorch for deterministic algorithms (slower; reproducible on one device)",
    "TrainConfig.device": "'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1', ...",
    "TrainConfig.num_threads": "CPU threads for PyTorch (None = PyTorch's default)",
    "TrainConfig.sw_overlap": "sliding-window overlap (fraction of the window) for validation; stored in the bundle",
    "TrainConfig.sw_batch_size": "windows per forward pass in sliding-window validation",
    "TrainConfig.export_dtype": "dtype of the weights in the exported bundle",
    "TrainConfig.progress": "show a progress bar",
    "DataConfig.n_folds": "number of cross-validation folds (1 = no split: train on every case, no validation)",
    "DataConfig.fold": "which fold (0-based) is held out for validation",
    "DataConfig.split_seed": "seed of the patient-grouped fold split",
    "OptimConfig.optimizer": "'adamw' or 'sgd' (Nesterov momentum)",
    "OptimConfig.lr": "initial learning rate",
    "OptimConfig.weight_decay": "weight decay (L2 for SGD, decoupled for AdamW)",
    "OptimConfig.momentum": "SGD momentum (ignored by AdamW)",
    "OptimConfig.poly_power": "exponent of nnU-Net's polynomial decay lr x (1 - step / max_steps)^power",
    "OptimConfig.warmup_steps": "linear learning-rate warm-up steps before the decay",
    "OptimConfig.grad_clip": "clip the gradient norm to this value",
    "AugmentConfig.enabled": "switch all augmentation on or off",
    "AugmentConfig.rotate_prob": "probability of a random rotation",
    "AugmentConfig.zoom": "(min, max) random zoom factor",
    "AugmentConfig.zoom_prob": "probability of a random zoom",
    "AugmentConfig.noise_std": "standard deviation of additive Gaussian noise (normalised intensity units)",
    "AugmentConfig.noise_prob": "probability of adding Gaussian noise",
    "AugmentConfig.smooth_sigma": "(min, max) Gaussian blur sigma in voxels",
    "AugmentConfig.smooth_prob": "probability of a Gaussian blur",
    "AugmentConfig.scale_intensity": "random intensity scaling factor range +- this",
    "AugmentConfig.scale_prob": "probability of intensity scaling",
    "AugmentConfig.shift_intensity": "random intensity offset range +- this",
    "AugmentConfig.shift_prob": "probability of an intensity shift",
    "AugmentConfig.gamma": "(min, max) gamma of a random contrast (gamma) adjustment",
    "AugmentConfig.gamma_prob": "probability of a gamma adjustment",
    "CardiacLabels.lv_blood": "label value of the LV blood pool (cavity)",
    "CardiacLabels.lv_myo": "label value of the LV myocardium; null = not labelled (no mass reported)",
    "CardiacLabels.rv_blood": "label value of the RV blood pool; null = not labelled (no RV function reported)",
}

_TITLE = "# Configuration reference"
_INTRO = """\
<!-- GENERATED by scripts/gen_config_reference.py from the config dataclasses; do not edit by hand.
     Regenerate with: python scripts/gen_config_reference.py -->

Every configuration key medcnn accepts, with its type, default and meaning. This page is
generated from the dataclasses in the code, so it cannot drift from what the program
accepts (a test regenerates it and compares).

* YAML files are read with a safe loader; **unknown keys and wrong types are errors** that
  name the key path, e.g. `configs/x.yaml: optim.lr: expected a number, got 'fast'`.
* Units: lengths in mm, volumes in mL, angles in degrees, times in ms unless the key says otherwise.
* `None` is written `null` in YAML. Tuples are YAML lists (`[1.0, 1.0, 1.0]`).
* `(required)`: the key has no default and must be given.
"""


def _load(target: str) -> type:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _docstring_attributes(cls: type) -> dict[str, str]:
    """``name -> description`` from a Google-style ``Attributes:`` docstring section.

    A description may span several indented lines; one entry may name several fields
    (``ct_mean, ct_std: ...``).
    """
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"^Attributes:\s*$", doc, flags=re.M)
    if not m:
        return {}
    out: dict[str, str] = {}
    current: list[str] = []
    text: list[str] = []

    def flush() -> None:
        for n in current:
            out[n] = " ".join(text).strip()

    for line in doc[m.end():].splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):  # next section
            break
        entry = re.match(r"^ {4}([A-Za-z_][\w, ]*?):\s*(.*)$", line)
        if entry and not line.startswith(" " * 8):
            flush()
            current = [n.strip() for n in entry.group(1).split(",")]
            text = [entry.group(2)]
        else:
            text.append(line.strip())
    flush()
    return out


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(cls.__name__ + "("):  # the signature dataclasses put in when there is no docstring
        return ""
    first = doc.split("\n\n")[0].strip()
    return _markdown(" ".join(first.split()))


def _nested_dataclass(tp: typing.Any) -> type | None:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    return None


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(text: str) -> str:
    """RST roles and double backticks → Markdown code spans."""
    text = re.sub(r":(?:func|meth|class|data|mod|attr):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _type_text(text: str) -> str:
    return text.replace("NoneType", "None")


def _rows(cls: type) -> list[dict[str, str]]:
    from medcnn.config import describe_fields

    fallback = _docstring_attributes(cls)
    if cls.__name__ in MEANING_FROM:
        fallback = {**_docstring_attributes(_load(MEANING_FROM[cls.__name__])), **fallback}
    rows = describe_fields(cls)
    for r in rows:
        if not r["meaning"]:
            r["meaning"] = fallback.get(r["key"], "") or SUPPLEMENT.get(f"{cls.__name__}.{r['key']}", "")
        r["meaning"] = _markdown(r["meaning"])
        r["type"] = _type_text(r["type"])
    return rows


def _check_supplement(classes: list[type]) -> None:
    known = set()
    todo, seen = list(classes), set()
    while todo:
        c = todo.pop()
        if c in seen:
            continue
        seen.add(c)
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            known.add(f"{c.__name__}.{f.name}")
            sub = _nested_dataclass(hints[f.name])
            if sub is not None:
                todo.append(sub)
    stale = sorted(set(SUPPLEMENT) - known)
    if stale:
        raise SystemExit(f"SUPPLEMENT names fields that do not exist (remove them): {', '.join(stale)}")


def _section(cls: type, prefix: str, where: str, level: int, seen: set[type], public: str | None = None) -> list[str]:
    hints = typing.get_type_hints(cls)
    title = f"`{prefix.rstrip('.')}` — {cls.__name__}" if prefix else f"{cls.__name__}"
    lines = [f"{'#' * level} {title}", ""]
    public = public or f"{cls.__module__}.{cls.__name__}"
    lines.append(f"Python: `{public}`." + (f" Where: {where}." if where else ""))
    lines.append("")
    summary = _summary(cls)
    if summary:
        lines += [summary, ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type]] = []
    for r in _rows(cls):
        sub = _nested_dataclass(hints[r["key"]])
        meaning = r["meaning"]
        default = r["default"]
        if sub is not None:
            nested.append((r["key"], sub))
            meaning = (meaning + " " if meaning else "") + f"Section: see `{prefix}{r['key']}` below."
            default = "(section defaults)" if default != "(required)" else default
        lines.append(f"| `{prefix}{r['key']}` | {_cell(r['type'])} | `{_cell(default)}` | {_cell(meaning) or '—'} |")
    lines.append("")
    for key, sub in nested:
        if sub in seen:
            continue
        seen.add(sub)
        lines += _section(sub, f"{prefix}{key}.", "", level + 1, seen)
    return lines


def render() -> str:
    out = [_TITLE, "", _INTRO, "## Contents", ""]
    classes = [(_load(t), where, t.replace(":", ".")) for t, where in CONFIG_CLASSES]
    _check_supplement([c for c, _, _ in classes])
    for cls, _, _ in classes:
        out.append(f"* [{cls.__name__}](#{cls.__name__.lower()})")
    out.append("")
    for cls, where, public in classes:
        out += _section(cls, "", where, 2, {cls}, public)
    text = "\n".join(out).rstrip() + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    ap.add_argument("--stdout", action="store_true", help="print the reference instead of writing it")
    ap.add_argument("--output", type=Path, default=OUTPUT, help=f"output file (default {OUTPUT.relative_to(REPO)})")
    args = ap.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python scripts/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
