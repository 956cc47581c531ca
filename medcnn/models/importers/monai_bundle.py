"""Import a MONAI bundle (``configs/inference.json|yaml``, ``configs/metadata.json``,
``models/model.pt``) as a medcnn bundle.

The config is read as plain data (JSON, or YAML with ``safe_load``); ``@key`` references
to plain values are followed, ``$`` expressions are **never evaluated**: one where medcnn
needs a value is an error naming it (replace it with ``overrides``, e.g.
``{"network_def.in_channels": 1}``, or ``--set KEY=VALUE`` on the command line; setting a
transform to ``null`` drops it). Supported parts of the common Model Zoo bundles:

- ``network_def``: the networks of :data:`medcnn.models.NETWORK_NAMES` (UNet, BasicUNet,
  DynUNet, SegResNet, AttentionUnet, UNETR, SwinUNETR);
- ``preprocessing``: ``LoadImaged``, ``EnsureChannelFirstd``, ``EnsureTyped``/``ToTensord``/
  ``CastToTyped`` (no-ops), ``Orientationd``, ``Spacingd`` (bilinear or nearest),
  ``ScaleIntensityRanged``, ``NormalizeIntensityd``, ``CropForegroundd``, mapped in order
  onto ``PreprocessSpec(monai=[...])`` (:mod:`medcnn.preprocess._monai`);
- ``inferer``: ``SlidingWindowInferer`` (roi, overlap, constant/gaussian blending);
- ``postprocessing``: ``Activationsd`` (softmax/sigmoid), ``Invertd`` (medcnn always goes
  back to the input grid), ``AsDiscreted`` (argmax / threshold 0.5),
  ``KeepLargestConnectedComponentd``, ``SaveImaged`` (medcnn writes its own outputs).

Channel and label names come from ``metadata.json`` (``network_data_format``); weights
from a plain or ``{"model": ...}`` state dict read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from medcnn.errors import BundleError, ConfigError, InputFileNotFoundError, MedcnnError
from medcnn.models.importers._common import check_state_matches, load_checkpoint, read_json

__all__ = ["is_monai_bundle", "import_monai_bundle"]

_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
#: How an imported bundle's predictions can differ from MONAI running its config (recorded
#: in the provenance, with the import's own notes; docs/import-monai.md).
DEVIATIONS = (
    "images are read by medcnn (SimpleITK / nibabel, same geometry), not LoadImaged",
    "Spacingd and Invertd resample with medcnn's interpolation (same grids; floating-point differences only)",
    "the output always returns to the input grid (Invertd implied); SaveImaged is replaced by medcnn's writers",
    "precision follows medcnn's --precision (auto: bf16 where the hardware has it)",
)
_SKIP_PRE = {"LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureTyped", "ToTensord", "CastToTyped",
             "ToDeviced", "Identityd", "EnsureTyped"}
_SKIP_POST = {"SaveImaged", "EnsureTyped", "ToTensord", "Invertd", "ToDeviced", "CopyItemsd"}
_META_KEYS = {"_target_", "_requires_", "_disabled_", "_desc_", "_mode_"}


def is_monai_bundle(path: Path) -> bool:
    return path.is_dir() and (path / "configs").is_dir() and any((path / "configs" / n).is_file() for n in _CONFIGS)


def _read_config(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        cfg = read_json(path)
    else:
        import yaml

        try:
            cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError.expected("a valid YAML file", f"{type(exc).__name__}: {exc}", path=path) from exc
    if not isinstance(cfg, dict):
        raise ConfigError.expected("a config mapping", type(cfg).__name__, path=path)
    return cfg


def _split(key: str) -> list[str]:
    return key.replace("::", ".").replace("#", ".").split(".")


def _apply_overrides(cfg: dict[str, Any], overrides: Mapping[str, Any], path: Path) -> None:
    """Set each dotted ``key`` to ``value``. The key must exist, except a new argument of a
    component (a mapping with ``_target_``); anything else is a :class:`ConfigError` naming it."""
    for key, value in overrides.items():
        parts = _split(str(key))
        node: Any = cfg
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not p.lstrip("-").isdigit() or not -len(node) <= int(p) < len(node):
                    raise ConfigError.expected(f"a list index below {len(node)} at {'.'.join(parts[:i]) or 'the top'} "
                                               f"for --set {key}", repr(p), path=path)
                if last:
                    node[int(p)] = value
                else:
                    node = node[int(p)]
            elif isinstance(node, dict):
                if p not in node and not (last and "_target_" in node):
                    raise ConfigError.expected(f"an existing config key for --set {key}",
                                               f"no {p!r} in {'.'.join(parts[:i]) or 'the config'}", path=path)
                if last:
                    node[p] = value
                else:
                    node = node[p]
            else:
                raise ConfigError.expected(f"a mapping or list at {'.'.join(parts[:i])} for --set {key}",
                                           f"the value {node!r}"[:80], path=path)


class _Resolver:
    """Follows ``@`` references to plain values; refuses ``$`` expressions and ``%`` macros."""

    def __init__(self, cfg: Mapping[str, Any], path: Path) -> None:
        self.cfg, self.path = cfg, path
        self.last_read = "the config"  # the key read last: named when its value has the wrong type

    def lookup(self, ref: str, where: str) -> Any:
        node: Any = self.cfg
        for p in _split(ref):
            try:
                node = node[int(p)] if isinstance(node, list) else node[p]
            except (KeyError, IndexError, ValueError, TypeError):
                raise ConfigError.expected(f"a config entry {ref!r} (referenced at {where})", "none",
                                           path=self.path) from None
        return node

    def __call__(self, value: Any, where: str, depth: int = 0) -> Any:
        if depth > 20:
            raise ConfigError.expected("non-circular @ references", f"a cycle through {where}", path=self.path)
        if isinstance(value, str):
            if value.startswith("$"):
                raise ConfigError.expected(f"a plain value at {where} (medcnn never evaluates expressions)",
                                           f"the expression {value[:80]!r}", path=self.path,
                                           hint=f"Replace it: medcnn models import ... --set {where}=VALUE")
            if value.startswith("%"):
                raise ConfigError.expected(f"a plain value at {where}", f"the macro {value[:80]!r}", path=self.path,
                                           hint=f"Replace it: --set {where}=VALUE")
            if value.startswith("@"):
                return self(self.lookup(value[1:], where), where, depth + 1)
            return value
        if isinstance(value, Mapping):
            return {k: self(v, f"{where}.{k}", depth) for k, v in value.items() if k not in _META_KEYS}
        if isinstance(value, list):
            return [self(v, f"{where}.{i}", depth) for i, v in enumerate(value)]
        return value


class _Lazy:
    """A transform's arguments, each resolved only when read (``$`` in unused ones is fine)."""

    def __init__(self, t: Mapping[str, Any], where: str, resolve: _Resolver) -> None:
        self.t, self.where, self.resolve = t, where, resolve

    def get(self, key: str, default: Any = None) -> Any:
        self.resolve.last_read = f"{self.where}.{key}"
        return self.resolve(self.t[key], f"{self.where}.{key}") if key in self.t else default

    def __getitem__(self, key: str) -> Any:
        if key not in self.t:
            raise ConfigError.expected(f"{self.where}.{key}", "no such key", path=self.resolve.path)
        return self.get(key)

    def dump(self) -> str:
        return json.dumps({k: v for k, v in self.t.items() if k not in _META_KEYS})[:80]


def _expression_note(t: Mapping[str, Any]) -> str:
    """`` with the expression '$...' (never evaluated)`` for the first ``$`` value of a transform."""
    for k, v in t.items():
        if isinstance(v, str) and v.startswith("$"):
            return f" with the expression {k}={v[:60]!r} (never evaluated)"
    return ""


def _target(d: Any, where: str, path: Path, *, package: str = "monai.transforms") -> str:
    """The class name of ``d["_target_"]``, accepted as MONAI's ConfigParser resolves it to
    MONAI's own class: a bare name (``"UNet"``, ``"Spacingd"``: the parser searches the
    ``monai`` modules for it) or a fully qualified name in ``monai`` that is the same class
    as ``<package>.<name>`` (``monai.networks.nets.UNet``, ``monai.networks.nets.unet.UNet``,
    ``monai.transforms.spatial.dictionary.Spacingd``). Any other module path
    (``scripts.net.UNet``, ``my.Spacingd``) is refused, naming it: it would run other code."""
    import importlib

    t = d.get("_target_") if isinstance(d, Mapping) else None
    if not isinstance(t, str):
        raise ConfigError.expected(f"a '_target_' class name at {where}", repr(t), path=path)
    if t.startswith("$") or t.startswith("@"):
        raise ConfigError.expected(f"a plain '_target_' class name at {where}", repr(t), path=path)
    if "." not in t:
        return t
    module, name = t.rsplit(".", 1)
    found = None
    if module == "monai" or module.startswith("monai."):  # only monai's own modules are ever imported
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            found = None
    expected = getattr(importlib.import_module(package), name, None)
    if found is None or found is not expected:
        raise ConfigError.expected(f"a MONAI class at {where}._target_ ({name!r} or {package}.{name} or the module "
                                   "defining it in monai)", repr(t), path=path,
                                   hint="medcnn builds only MONAI's own classes; code from other modules is "
                                        "never imported")
    return name


def _transforms(cfg: Mapping[str, Any], key: str, path: Path) -> list[tuple[str, dict[str, Any], str]]:
    comp = cfg.get(key)
    if comp is None:
        return []
    if isinstance(comp, Mapping) and "transforms" in comp:
        if _target(comp, key, path) != "Compose":
            raise ConfigError.expected(f"'{key}' as a Compose", repr(comp.get("_target_")), path=path)
        items = comp["transforms"]
    elif isinstance(comp, list):
        items = comp
    else:
        raise ConfigError.expected(f"'{key}' as a Compose with a transforms list", type(comp).__name__, path=path)
    out = []
    for i, t in enumerate(items):
        if t is None:  # dropped with --set KEY=null
            continue
        where = f"{key}.transforms.{i}" if isinstance(comp, Mapping) else f"{key}.{i}"
        out.append((_target(t, where, path), t, where))
    return out


def _mode_order(mode: Any, where: str, path: Path) -> int:
    m = mode[0] if isinstance(mode, (list, tuple)) else mode
    m = "bilinear" if m is None else str(m)
    if m in ("bilinear", "linear", "trilinear", "1"):
        return 1
    if m in ("nearest", "0"):
        return 0
    raise ConfigError.expected(f"Spacingd mode bilinear or nearest at {where}", repr(m), path=path)


#: the data key MONAI's evaluators feed to the network (``CommonKeys.IMAGE``)
IMAGE_KEY = "image"
#: CropForegroundd's own arguments; any other key is a padding keyword (``**pad_kwargs``)
_CROP_ARGS = {"keys", "source_key", "select_fn", "channel_indices", "margin", "allow_smaller", "k_divisible", "mode",
              "start_coord_key", "end_coord_key", "allow_missing_keys", "lazy"}


def _keys(t: "_Lazy") -> list[str] | None:
    """The ``keys`` a dictionary transform acts on (``None``: not given)."""
    keys = t.get("keys")
    if keys is None:
        return None
    return [str(k) for k in (keys if isinstance(keys, (list, tuple)) else [keys])]


def monai_default(transform: str, arg: str) -> Any:
    """The default of ``arg`` of ``monai.transforms.<transform>`` in the installed MONAI
    (what its ConfigParser uses when a bundle leaves the argument out)."""
    import inspect

    import monai.transforms

    return inspect.signature(getattr(monai.transforms, transform)).parameters[arg].default


def _crop_foreground(t: "_Lazy", where: str, path: Path, notes: list[str]) -> dict[str, Any]:
    """``CropForegroundd`` → ``{"op": "crop_foreground", ...}`` with MONAI's defaults for what
    the bundle leaves out (``allow_smaller``: the installed MONAI's, ``False`` since 1.5)."""
    if t.get("select_fn") is not None or t.get("k_divisible", 1) not in (1, [1, 1, 1]):
        raise ConfigError.expected(f"CropForegroundd with the default select_fn and k_divisible at {where}",
                                   "other values", path=path)
    source = t.get("source_key")
    if source != IMAGE_KEY:
        raise ConfigError.expected(f"CropForegroundd source_key {IMAGE_KEY!r} at {where} (nothing else exists "
                                   "at inference)", repr(source), path=path)
    pad = {k: t.get(k) for k in t.t if k not in _CROP_ARGS and k not in _META_KEYS}
    if str(t.get("mode", "constant")) != "constant" or any(k != "value" or v != 0 for k, v in pad.items()):
        raise ConfigError.expected(f"CropForegroundd zero padding (mode constant) at {where}",
                                   f"mode {t.get('mode')!r} {pad or ''}".strip(), path=path)
    allow = t.get("allow_smaller")
    if allow is None:
        allow = bool(monai_default("CropForegroundd", "allow_smaller"))
        notes.append(f"{where} (CropForegroundd) has no allow_smaller: the installed MONAI's default {allow} is used")
    return {"op": "crop_foreground", "margin": t.get("margin", 0), "allow_smaller": allow,
            "channel_indices": t.get("channel_indices")}


def _preprocessing(cfg, resolve, path: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """The ``PreprocessSpec.monai`` operations; transforms whose ``keys`` do not include
    ``"image"`` (e.g. only the label) leave the image unchanged and are skipped."""
    ops: list[dict[str, Any]] = []
    notes = [] if notes is None else notes
    for name, t, where in _transforms(cfg, "preprocessing", path):
        if name in _SKIP_PRE:
            continue
        t = _Lazy(t, where, resolve)
        keys = _keys(t)
        if keys is not None and IMAGE_KEY not in keys:
            notes.append(f"{where} ({name}) skipped: its keys {keys} do not include {IMAGE_KEY!r}")
            continue
        if name == "Orientationd":
            ops.append({"op": "orientation", "axcodes": t.get("axcodes", "RAS")})
        elif name == "Spacingd":
            px = t["pixdim"]
            px = [float(px)] * 3 if isinstance(px, (int, float)) else [float(v) for v in px]
            ops.append({"op": "spacing", "pixdim": px, "order": _mode_order(t.get("mode"), where, path)})
        elif name == "ScaleIntensityRanged":
            ops.append({"op": "scale_range", "a_min": t["a_min"], "a_max": t["a_max"], "b_min": t.get("b_min"),
                        "b_max": t.get("b_max"), "clip": bool(t.get("clip", False))})
        elif name == "NormalizeIntensityd":
            if t.get("subtrahend") is not None or t.get("divisor") is not None:
                raise ConfigError.expected(f"NormalizeIntensityd without subtrahend/divisor at {where}",
                                           "fixed values", path=path)
            ops.append({"op": "normalize", "nonzero": bool(t.get("nonzero", False)),
                        "channel_wise": bool(t.get("channel_wise", False))})
        elif name == "CropForegroundd":
            ops.append(_crop_foreground(t, where, path, notes))
        else:
            raise ConfigError.expected(f"a supported preprocessing transform at {where} (see docs/import-monai.md)",
                                       f"{name}{_expression_note(t.t)}", path=path, hint=f"Drop it if it does not change the image: "
                                                                  f"--set {where}=null")
    return ops


def _network(cfg, resolve, path: Path) -> dict[str, Any]:
    from medcnn.models.registry import NETWORK_NAMES

    nd = cfg.get("network_def")
    if nd is None:
        raise ConfigError.expected("'network_def' in the inference config", "none", path=path)
    name = _target(nd, "network_def", path, package="monai.networks.nets")
    if name.lower() not in NETWORK_NAMES or name.lower() in ("plainconvunet", "residualencoderunet"):
        raise ConfigError.expected(f"a network_def class among UNet, BasicUNet, DynUNet, SegResNet, AttentionUnet, "
                                   "UNETR, SwinUNETR", f"{name!r}", path=path)
    spec = {"name": name.lower(), **resolve(nd, "network_def")}
    spec.setdefault("spatial_dims", 3)
    return spec


def _inferer(cfg, resolve, path: Path) -> tuple[list[int], float, dict[str, Any]]:
    inf = cfg.get("inferer")
    if inf is None:
        raise ConfigError.expected("an 'inferer' in the inference config", "none", path=path)
    name = _target(inf, "inferer", path, package="monai.inferers")
    if name != "SlidingWindowInferer":
        raise ConfigError.expected("inferer SlidingWindowInferer", f"{name}", path=path,
                                   hint="Other inferers (SimpleInferer, SliceInferer) are not mapped yet")
    t = _Lazy(inf, "inferer", resolve)
    roi = t.get("roi_size")
    if roi is None:
        raise ConfigError.expected("inferer.roi_size", "none", path=path)
    mode = str(t.get("mode", "constant"))
    if mode not in ("constant", "gaussian"):
        raise ConfigError.expected("SlidingWindowInferer mode constant or gaussian", repr(mode), path=path)
    if str(t.get("padding_mode", "constant")) != "constant" or float(t.get("cval", 0.0)) != 0.0:
        raise ConfigError.expected("SlidingWindowInferer zero padding", "another padding", path=path)
    inference = {"blend_mode": mode, "sigma_scale": float(t.get("sigma_scale", 0.125))}
    return [int(r) for r in roi], float(t.get("overlap", 0.25)), inference


def _postprocessing(cfg, resolve, path: Path) -> tuple[str | None, dict[str, Any] | None]:
    activation, discrete, largest = None, None, None
    for name, t, where in _transforms(cfg, "postprocessing", path):
        if name in _SKIP_POST:
            continue
        t = _Lazy(t, where, resolve)
        if name == "Activationsd":
            activation = "softmax" if t.get("softmax") else "sigmoid" if t.get("sigmoid") else None
            if activation is None or t.get("other") is not None:
                raise ConfigError.expected(f"Activationsd softmax or sigmoid at {where}", t.dump(), path=path)
        elif name == "AsDiscreted":
            if t.get("argmax"):
                discrete = "argmax"
            elif t.get("threshold") is not None:
                if float(t["threshold"]) != 0.5:
                    raise ConfigError.expected(f"AsDiscreted threshold 0.5 at {where}", repr(t["threshold"]), path=path)
                discrete = "threshold"
            else:
                raise ConfigError.expected(f"AsDiscreted argmax or threshold at {where}", t.dump(),
                                           path=path)
        elif name == "KeepLargestConnectedComponentd":
            conn = {None: 26, 1: 6, 2: 18, 3: 26}.get(t.get("connectivity"))
            if conn is None or t.get("independent", True) is False:
                raise ConfigError.expected(f"KeepLargestConnectedComponentd independent, connectivity 1-3 at {where}",
                                           t.dump(), path=path)
            applied = t.get("applied_labels")
            largest = {"connectivity": conn, "labels": None if applied is None else
                       [int(v) for v in (applied if isinstance(applied, list) else [applied])]}
        else:
            raise ConfigError.expected(f"a supported postprocessing transform at {where} (see docs/import-monai.md)",
                                       f"{name}{_expression_note(t.t)}", path=path, hint=f"Drop it with --set {where}=null if medcnn's "
                                                                  "label map is what you need")
    if discrete == "argmax" and activation == "sigmoid" or discrete == "threshold" and activation == "softmax":
        raise ConfigError.expected("argmax after softmax or threshold after sigmoid", f"{discrete} after {activation}",
                                   path=path)
    if activation is None and discrete is not None:
        activation = "softmax" if discrete == "argmax" else "sigmoid"
    post = None
    if largest is not None:
        post = {"connectivity": largest["connectivity"]}
        if largest["labels"] is None:
            post["keep_largest"] = True
        else:
            post["per_label"] = {str(v): {"keep_largest": True} for v in largest["labels"] if v > 0}
    return activation, post


def _names(meta: Mapping[str, Any], io: str, key: str) -> dict[int, str]:
    fmt = ((meta.get("network_data_format") or {}).get(io) or {}).get(key) or {}
    cd = fmt.get("channel_def") or {}
    return {int(k): str(v) for k, v in cd.items()} if isinstance(cd, Mapping) else {}


def _regions(out_names: Mapping[int, str], k: int, region_order: Any, path: Path
             ) -> tuple[dict[int, str], dict[str, Any]]:
    """Labels and regions of ``k`` sigmoid channels (each one region, e.g. the Model Zoo's
    BraTS bundle: 0 tumour core, 1 whole tumour, 2 enhancing tumour).

    The nesting (outer -> inner) is ``region_order`` when given (channel names or indices),
    else read from the channel names when they are BraTS's (whole tumour ⊇ tumour core ⊇
    enhancing tumour); otherwise the import is refused: medcnn does not guess it."""
    from medcnn.regions import known_region_nesting, regions_from_channel_nesting

    names = [out_names.get(c, f"channel{c}") for c in range(k)]
    if region_order is None:
        nesting = known_region_nesting(names)
        if nesting is None:
            raise ConfigError.expected(
                "the nesting of the sigmoid output channels (region_order, outer to inner)",
                f"channel names {names} medcnn cannot order", path=path,
                hint="pass --region-order with the channel names or indices from outer to inner, e.g. "
                     f"--region-order {','.join(str(i) for i in range(k))}")
    else:
        items = region_order.split(",") if isinstance(region_order, str) else list(region_order)
        nesting = [names[int(v)] if str(v).strip().isdigit() and int(v) < k else str(v).strip() for v in items]
    labels, spec = regions_from_channel_nesting(names, nesting, path=path)
    return labels, spec.to_dict()


@contextmanager
def _named_errors(resolve: _Resolver, *, key: str | None = None) -> Iterator[None]:
    """Every failure while mapping the config is one :class:`ConfigError` naming the file
    and, for a value of the wrong type (often from ``--set``), the key read last (or ``key``)."""
    try:
        yield
    except MedcnnError as exc:
        if exc.path is None or key is not None:
            text = str(exc) if exc.path is not None else f"{resolve.path}: {exc}"
            raise type(exc)(text + (f" (config key {key})" if key else ""), path=resolve.path) from None
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ConfigError.expected(f"a value of the type MONAI expects at {resolve.last_read}",
                                   f"{type(exc).__name__}: {str(exc)[:120]}", path=resolve.path,
                                   hint=f"Check the config or --set {resolve.last_read}=VALUE") from None


def import_monai_bundle(folder: Path, *, overrides: Mapping[str, Any], region_order: Any = None) -> dict[str, Any]:
    """Translate a MONAI bundle folder (see module docstring).

    Several sigmoid outputs are regions (one per channel, ``channel_def`` names): see
    :func:`_regions` for ``region_order``.

    Returns:
        keyword arguments for :func:`medcnn.models.save_bundle` (``model`` is the state dict).
    """
    import torch

    from medcnn.models.registry import build_network
    from medcnn.report.provenance import file_sha256

    folder = Path(folder)
    cpath = next(folder / "configs" / n for n in _CONFIGS if (folder / "configs" / n).is_file())
    cfg = copy.deepcopy(_read_config(cpath))
    _apply_overrides(cfg, overrides, cpath)
    mpath = folder / "configs" / "metadata.json"
    meta = read_json(mpath) if mpath.is_file() else {}
    from medcnn.preprocess._monai import check_monai_ops

    resolve = _Resolver(cfg, cpath)
    notes: list[str] = []
    with _named_errors(resolve):
        spec = _network(cfg, resolve, cpath)
        ops = _preprocessing(cfg, resolve, cpath, notes)
        roi, overlap, inference = _inferer(cfg, resolve, cpath)
        activation, post = _postprocessing(cfg, resolve, cpath)
        check_monai_ops(ops)
    wpath = next((folder / "models" / n for n in ("model.pt", "model.pth", "model.ckpt")
                  if (folder / "models" / n).is_file()), None)
    if wpath is None:
        raise InputFileNotFoundError.expected("models/model.pt", "no such file", path=folder)
    ck = load_checkpoint(wpath)
    state = ck.get("model") if isinstance(ck, Mapping) and isinstance(ck.get("model"), Mapping) else ck
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError.expected("a state dict of tensors (plain or under 'model')", type(state).__name__, path=wpath)
    resolve.last_read = "network_def"
    with _named_errors(resolve, key="network_def"):
        reference = build_network(spec, where=str(cpath)).state_dict()
    check_state_matches(state, reference, path=wpath, what=f"{cpath.name} network_def")
    n_in, k = int(spec["in_channels"]), int(spec["out_channels"])
    chans = _names(meta, "inputs", "image")
    channels = [chans.get(i, f"channel{i}") for i in range(n_in)]
    if len(set(channels)) != len(channels):
        channels = [f"{c}{i}" for i, c in enumerate(channels)]
    out_names = _names(meta, "outputs", "pred")
    regions = None
    if activation == "sigmoid" and k > 1:
        labels, regions = _regions(out_names, k, region_order, mpath if mpath.is_file() else cpath)
    else:
        labels = {i: out_names.get(i, "background" if i == 0 else f"label{i}") for i in range(max(k, 2))}
    files = {str(p.relative_to(folder)): file_sha256(p) for p in (cpath, mpath, wpath) if p.is_file()}
    licence: dict[str, Any] = {k2: meta[k2] for k2 in ("copyright", "license", "intended_use", "authors")
                               if isinstance(meta.get(k2), str)}
    lic_file = next((folder / n for n in ("LICENSE", "LICENSE.txt", "docs/LICENSE") if (folder / n).is_file()), None)
    if lic_file is not None:
        licence["licence_file"] = lic_file.read_text(encoding="utf-8", errors="replace")[:4000]
        files[str(lic_file.relative_to(folder))] = file_sha256(lic_file)
    provenance = {"imported_from": {
        "format": "monai-bundle", "source": folder.name, "bundle_name": meta.get("name"),
        "bundle_version": meta.get("version"), "monai_version": meta.get("monai_version"),
        "config": str(cpath.relative_to(folder)), "network_class": spec["name"],
        "overrides": {k2: v for k2, v in overrides.items()} or None,
        "reproduces": "the bundle's inference config run by MONAI (ConfigParser: preprocessing, network_def, "
                      "inferer, postprocessing)",
        "deviations": list(DEVIATIONS) + notes,
        "files_sha256": files, "licence": licence or None}}
    return {
        "model": dict(state), "network": spec,
        "preprocess": {"orientation": None, "modalities": ["none"] * n_in, "monai": ops},
        "roi_size": roi, "labels": labels, "channels": channels, "overlap": overlap, "postprocess": post,
        "provenance": provenance, "activation": activation, "mirror_axes": None, "inference": inference,
        "regions": regions,
    }
