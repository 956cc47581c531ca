"""Model bundles: weights (safetensors) + everything needed to run them (JSON).

A bundle is a folder::

    my_model/
        bundle.json          network spec, preprocessing, ROI, overlap, labels, channels,
                             postprocessing, training mirror axes, provenance, sha256 of
                             the weights, versions
        model.safetensors    the weights (float32, or float16 to halve the size)

or the same two files in one zip archive named ``*.medcnn`` (written with
``save_bundle(..., "my_model.medcnn")``).

Loading never unpickles anything: weights are read with :mod:`safetensors`, their
SHA-256 is checked against ``bundle.json``, and every tensor name and shape is checked
against the network the spec builds. A PyTorch pickle (``.pt``/``.pth``/``.ckpt``, a zip
holding ``data.pkl``, or any file that starts with pickle opcodes) is refused with
:class:`UnsafeModelFileError`, because unpickling runs arbitrary code. To convert a
checkpoint **you trust**, in Python::

    import torch; from medcnn.models import build_network, save_bundle
    net = build_network(spec); net.load_state_dict(torch.load("model.pt", weights_only=True))
    save_bundle(net, "my_model", network=spec, preprocess=..., roi_size=..., labels=..., channels=...)
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

from medcnn.errors import BundleError, ConfigError, InputFileNotFoundError, UnsafeModelFileError
from medcnn.models.registry import build_network, network_patch_divisor, validate_network_spec

__all__ = [
    "Bundle",
    "save_bundle",
    "update_bundle",
    "load_bundle",
    "bundle_spec_sha256",
    "sniff_model_file",
    "BUNDLE_JSON",
    "WEIGHTS_FILE",
    "FORMAT_VERSION",
    "CONVERT_HINT",
    "WHOLE_SLICE_MIN_AGREEMENT_PERCENT",
    "whole_slice_default",
    "network_spatial_dims",
]

BUNDLE_JSON = "bundle.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "medcnn-bundle"
#: Bundle format written by this version; newer formats are refused with a clear message.
FORMAT_VERSION = 1
ARCHIVE_SUFFIX = ".medcnn"

_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar")
#: Opcodes a protocol 0/1 pickle can start with: MARK, EMPTY_LIST/DICT/TUPLE, GLOBAL, NONE...
_PICKLE_TEXT_OPCODES = frozenset(b"(]})cNIJKLFSVUXqrhj")

CONVERT_HINT = (
    "Loading it would unpickle it, which runs arbitrary code. If you trust the file, convert it once in "
    "Python: `import torch; from medcnn.models import build_network, save_bundle`; "
    "`net = build_network(spec); net.load_state_dict(torch.load(PATH, weights_only=True))`; "
    "`save_bundle(net, 'my_bundle', network=spec, preprocess=..., roi_size=..., labels=..., channels=...)` "
    "(see medcnn.models.bundle)"
)


# ---------------------------------------------------------------------------- sniffing
def sniff_model_file(head: bytes, *, names: Sequence[str] | None = None) -> str:
    """Classify the first bytes of a weights file.

    Args:
        head: at least the first 16 bytes of the file.
        names: member names when the file is a zip archive.

    Returns:
        ``"safetensors"``, ``"pickle"`` (pickle or PyTorch zip checkpoint), ``"zip"``
        (another archive) or ``"unknown"``.
    """
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:4] == b"PK\x03\x04":
        if names is not None and any(n.endswith((".pkl", "data.pkl")) or "/data/" in n for n in names):
            return "pickle"
        return "zip"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n < 512 * 1024**2 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] and head[0] in _PICKLE_TEXT_OPCODES:
        return "pickle"
    return "unknown"


def _refuse_unsafe(path: Path, what: str) -> UnsafeModelFileError:
    return UnsafeModelFileError.expected(
        "a medcnn bundle (bundle.json + model.safetensors)", what, path=path, hint=CONVERT_HINT)


def _zip_names(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _check_not_pickle(path: Path, head: bytes) -> str:
    kind = sniff_model_file(head, names=_zip_names(path) if head[:4] == b"PK\x03\x04" else None)
    if kind == "pickle":
        raise _refuse_unsafe(path, "a Python pickle / PyTorch checkpoint")
    return kind


# ---------------------------------------------------------------------------- Bundle
@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded, verified model bundle.

    Attributes:
        path: where it was loaded from (folder or ``.medcnn`` archive).
        json: the parsed ``bundle.json``.
        state_dict: verified weights, floating tensors as float32 on the CPU.
        sha256: hex SHA-256 of the weights file (equal to ``json["weights"]["sha256"]``).
    """

    path: Path
    json: dict[str, Any]
    state_dict: Mapping[str, Any] = field(repr=False)
    sha256: str
    _template: Any = field(default=None, repr=False)

    # -- convenient views of bundle.json
    @property
    def network(self) -> dict[str, Any]:
        """The network spec (see :mod:`medcnn.models.registry`)."""
        return dict(self.json["network"])

    @property
    def preprocess(self) -> dict[str, Any]:
        """The :class:`medcnn.preprocess.PreprocessSpec` as a dict."""
        return dict(self.json["preprocess"])

    @property
    def roi_size(self) -> tuple[int, ...]:
        """Sliding-window patch size in voxels of the network's input grid."""
        return tuple(int(v) for v in self.json["roi_size"])

    @property
    def overlap(self) -> float:
        """Default fraction of overlap between neighbouring windows (0 <= overlap < 1)."""
        return float(self.json["overlap"])

    @property
    def labels(self) -> dict[int, str]:
        """Label value → name, e.g. ``{0: "background", 1: "LV blood pool"}``."""
        return {int(k): str(v) for k, v in self.json["labels"].items()}

    @property
    def regions(self):
        """The model's regions (:class:`medcnn.regions.RegionSpec`: named unions of labels
        and, for region-trained sigmoid networks, how channels become labels), or ``None``."""
        from medcnn.regions import RegionSpec

        r = self.json.get("regions")
        return None if r is None else RegionSpec.from_dict(r, path=self.path)

    @property
    def channels(self) -> tuple[str, ...]:
        """Input channel names in the order the network expects them."""
        return tuple(self.json["channels"])

    @property
    def postprocess(self) -> dict[str, Any] | None:
        return None if self.json.get("postprocess") is None else dict(self.json["postprocess"])

    @property
    def target_spacing_mm(self) -> tuple[float, ...] | None:
        ts = self.json.get("target_spacing_mm")
        return None if ts is None else tuple(float(v) for v in ts)

    @property
    def activation(self) -> str | None:
        """``"softmax"``, ``"sigmoid"`` or ``None`` (the default for the output count)."""
        return self.json.get("activation")

    @property
    def mirror_axes(self) -> tuple[int, ...] | None:
        """Axes of the network's input window (``0..spatial_dims-1``) that training mirrored
        (flip augmentation), i.e. the axes test-time augmentation can average over without
        showing the network views it never saw. ``None``: not recorded (bundles written
        before this key, or by other tools)."""
        m = self.json.get("mirror_axes")
        return None if m is None else tuple(int(a) for a in m)

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.json.get("provenance") or {})

    @property
    def spec_sha256(self) -> str:
        """SHA-256 of everything that determines this bundle's predictions (see
        :func:`bundle_spec_sha256`): changes with the postprocessing, not with provenance."""
        return bundle_spec_sha256(self.json)

    @property
    def medcnn_version(self) -> str:
        return str(self.json.get("medcnn_version"))

    @property
    def format_version(self) -> int:
        return int(self.json["format_version"])

    def build_model(self):
        """A fresh ``torch.nn.Module`` in eval mode holding the bundle's float32 weights."""
        model = copy.deepcopy(self._template)
        return model.eval()

    def preprocess_spec(self):
        """The preprocessing as a :class:`medcnn.preprocess.PreprocessSpec`."""
        from medcnn.preprocess import PreprocessSpec

        return PreprocessSpec.from_dict(self.preprocess)

    def __repr__(self) -> str:
        return (f"Bundle(path={str(self.path)!r}, network={self.json['network'].get('name')!r}, "
                f"roi_size={self.roi_size}, labels={self.labels}, channels={self.channels}, "
                f"sha256={self.sha256[:12]}...)")


# ---------------------------------------------------------------------------- saving
def _preprocess_dict(preprocess: Any) -> dict[str, Any]:
    if hasattr(preprocess, "to_dict"):
        d = dict(preprocess.to_dict())
    elif isinstance(preprocess, Mapping):
        d = dict(preprocess)
    else:
        raise ConfigError.expected("a PreprocessSpec or its dict", f"{type(preprocess).__name__}")
    try:
        from medcnn.preprocess import PreprocessSpec
    except ImportError:  # pragma: no cover - preprocess is part of the package
        return d
    return dict(PreprocessSpec.from_dict(d).to_dict())


def _json_checked(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError.expected(f"JSON-serialisable {what}", f"{exc}") from exc


def _bundle_json(
    network: Mapping[str, Any],
    preprocess: Any,
    roi_size: Sequence[int],
    labels: Mapping[int, str],
    channels: Sequence[str],
    overlap: float,
    postprocess: Any,
    provenance: Mapping[str, Any] | None,
    activation: str | None = None,
    mirror_axes: Sequence[int] | None = None,
    inference: Mapping[str, Any] | None = None,
    regions: Any = None,
) -> dict[str, Any]:
    from medcnn import __version__

    spec = validate_network_spec(_json_checked(dict(network), "network spec"))
    nd = spec["spatial_dims"]
    roi = [int(v) for v in roi_size]
    if len(roi) != nd or any(v < 1 for v in roi):
        raise ConfigError.expected(f"roi_size with {nd} positive entries (the network is {nd}D)", f"{tuple(roi_size)}")
    div = network_patch_divisor(spec)
    if any(r % d for r, d in zip(roi, div)):
        raise ConfigError.expected(f"roi_size divisible by {div} for this {spec['name']}", f"{tuple(roi)}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError.expected("overlap in [0, 1)", f"{overlap}")
    chans = [str(c) for c in channels]
    if len(chans) != spec["in_channels"]:
        raise ConfigError.expected(f"{spec['in_channels']} channel names (network in_channels)", f"{chans}")
    if activation is not None and activation not in ("softmax", "sigmoid"):
        raise ConfigError.expected("activation 'softmax' or 'sigmoid'", repr(activation))
    k = spec["out_channels"]
    n_classes = k + 1 if (activation == "sigmoid" and k > 1) else max(k, 2)
    painted = (regions.to_dict() if hasattr(regions, "to_dict") else dict(regions or {})).get("channel_labels")
    if activation == "sigmoid" and k > 1 and painted:  # region channels write these labels (e.g. BraTS 1, 2, 4)
        n_classes = max(int(v) for v in painted) + 1
    lab: dict[str, str] = {}
    for k, v in dict(labels).items():
        if isinstance(k, bool) or int(k) != k or not 0 <= int(k) < n_classes:
            raise ConfigError.expected(f"label values 0..{n_classes - 1} (out_channels {spec['out_channels']})",
                                       f"label {k!r}")
        lab[str(int(k))] = str(v)
    mirror = None if mirror_axes is None else check_mirror_axes(mirror_axes, nd)
    pp = postprocess.to_dict() if hasattr(postprocess, "to_dict") else postprocess
    pre = _preprocess_dict(preprocess)
    ts = pre.get("target_spacing")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medcnn_version": __version__,
        "network": spec,
        "preprocess": _json_checked(pre, "preprocess spec"),
        "target_spacing_mm": None if ts is None else [float(v) for v in ts],
        "roi_size": roi,
        "overlap": float(overlap),
        "labels": dict(sorted(lab.items(), key=lambda kv: int(kv[0]))),
        "channels": chans,
        "postprocess": _json_checked(pp, "postprocess spec") if pp is not None else None,
        "activation": activation,
        "mirror_axes": mirror,
        "provenance": _json_checked(dict(provenance or {}), "provenance"),
    }
    if inference:
        meta["inference"] = check_inference_options(inference, nd)
    if regions is not None:  # only when set: bundles without regions keep their spec hash
        meta["regions"] = check_regions_spec(regions, meta)
    return meta


def check_regions_spec(regions: Any, meta: Mapping[str, Any], *, path: Any = None) -> dict[str, Any]:
    """Validate a bundle's ``regions`` (a :class:`medcnn.regions.RegionSpec` or its dict)
    against its labels and outputs; returns the dict. Region channels need one sigmoid
    output per region."""
    from medcnn.regions import RegionSpec

    spec = regions if isinstance(regions, RegionSpec) else RegionSpec.from_dict(regions, path=path)
    spec.check_labels({int(k): v for k, v in meta["labels"].items()}, path=path)
    if spec.has_channels:
        k = int(meta["network"]["out_channels"])
        if meta.get("activation") != "sigmoid" or len(spec.channels or ()) != k:
            raise ConfigError.expected(f"region channels for a sigmoid network with {k} outputs",
                                       f"{len(spec.channels or ())} channels, activation {meta.get('activation')!r}",
                                       path=path)
    return spec.to_dict()


#: ``bundle.json["inference"]`` keys: run-time rules an imported model needs (defaults of
#: the :class:`~medcnn.inference.Segmenter` options of the same names).
#: ``tta_axes`` is the default test-time augmentation (``"trained"``: nnU-Net models, as
#: ``nnUNetv2_predict`` mirrors by default); an explicit ``tta_axes`` / ``--no-tta`` wins.
INFERENCE_KEYS = ("blend_mode", "sigma_scale", "window_placement", "slice_axis", "memory_format", "tta_axes")


def check_inference_options(d: Mapping[str, Any], spatial_dims: int) -> dict[str, Any]:
    """Validate a bundle's ``inference`` dict (see :data:`INFERENCE_KEYS`)."""
    if not isinstance(d, Mapping):
        raise ConfigError.expected("an 'inference' dict", type(d).__name__)
    unknown = sorted(set(d) - set(INFERENCE_KEYS))
    if unknown:
        raise ConfigError.expected(f"inference keys among {list(INFERENCE_KEYS)}", f"unknown {unknown}")
    out = _json_checked(dict(d), "inference options")
    if out.get("blend_mode", "gaussian") not in ("gaussian", "constant", "nnunet"):
        raise ConfigError.expected("blend_mode 'gaussian', 'constant' or 'nnunet'", repr(out["blend_mode"]))
    if out.get("window_placement", "monai") not in ("monai", "nnunet"):
        raise ConfigError.expected("window_placement 'monai' or 'nnunet'", repr(out["window_placement"]))
    if out.get("memory_format", "auto") not in ("auto", "channels_last", "contiguous"):
        raise ConfigError.expected("memory_format 'auto', 'channels_last' or 'contiguous'", repr(out["memory_format"]))
    sa = out.get("slice_axis")
    if sa is not None and (spatial_dims != 2 or sa not in (0, 1, 2) or isinstance(sa, bool)):
        raise ConfigError.expected("slice_axis 0, 1 or 2, for a 2D network only", repr(sa))
    if out.get("tta_axes", "none") not in ("none", "trained"):
        raise ConfigError.expected("tta_axes 'none' or 'trained'", repr(out["tta_axes"]))
    if "sigma_scale" in out and not (isinstance(out["sigma_scale"], (int, float)) and out["sigma_scale"] > 0):
        raise ConfigError.expected("sigma_scale > 0", repr(out["sigma_scale"]))
    return out


#: bundle.json keys that decide what a bundle predicts (provenance and versions do not)
SPEC_KEYS = ("network", "preprocess", "roi_size", "overlap", "labels", "channels", "postprocess", "activation",
             "mirror_axes")


def bundle_spec_sha256(meta: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a bundle's prediction-relevant fields
    (:data:`SPEC_KEYS` plus the weights' SHA-256). Two bundles with the same weights but
    different postprocessing get different spec hashes; editing provenance changes nothing."""
    spec = {k: meta.get(k) for k in SPEC_KEYS}
    if meta.get("inference"):  # only bundles that have it (older bundles keep their hash)
        spec["inference"] = meta["inference"]
    if meta.get("regions"):  # the same: only region bundles
        spec["regions"] = meta["regions"]
    spec["weights_sha256"] = str((meta.get("weights") or {}).get("sha256", "")).lower()
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


#: A 2D bundle runs whole slices by default only where its recorded whole-slice labels
#: (bundle.json ``whole_slice``, written by benchmarks/bench_whole_slice.py) agree with its
#: windowed labels in at least this share of voxels in *every* measured volume.
WHOLE_SLICE_MIN_AGREEMENT_PERCENT = 99.5


def network_spatial_dims(bundle_json: Mapping[str, Any]) -> int:
    """2 or 3: the spatial dims of a bundle.json's network (3 when it does not say)."""
    return int((bundle_json.get("network") or {}).get("spatial_dims") or 3)


def whole_slice_default(bundle_json: Mapping[str, Any]) -> bool:
    """Whether a bundle runs whole slices by default: a 2D network whose ``whole_slice``
    record (benchmarks/bench_whole_slice.py) shows at least
    :data:`WHOLE_SLICE_MIN_AGREEMENT_PERCENT` of voxels equal to its windowed labels in every
    measured volume. The record is outside the spec hash (it measures the spec, it does not
    change it); a batch hashes the decision into its ``config_hash`` instead."""
    rec = bundle_json.get("whole_slice")
    if not isinstance(rec, Mapping) or network_spatial_dims(bundle_json) != 2:
        return False
    try:
        worst = float(rec["voxels_equal_percent_min"])
    except (KeyError, TypeError, ValueError):
        return False
    return worst >= WHOLE_SLICE_MIN_AGREEMENT_PERCENT and int(rec.get("volumes") or 0) > 0


def check_mirror_axes(axes: Any, spatial_dims: int) -> list[int]:
    """``axes`` as a sorted list of distinct window axes ``0..spatial_dims-1``, or ConfigError."""
    ok = isinstance(axes, (list, tuple)) and all(isinstance(a, int) and not isinstance(a, bool) for a in axes)
    if not ok or any(not 0 <= a < spatial_dims for a in axes) or len(set(axes)) != len(axes):
        raise ConfigError.expected(f"mirror_axes: distinct window axes among 0..{spatial_dims - 1}", repr(axes))
    return sorted(int(a) for a in axes)


def _state_for_saving(model: Any, spec: Mapping[str, Any], weights_dtype: str) -> dict[str, Any]:
    import torch

    if weights_dtype not in ("float32", "float16"):
        raise ConfigError.expected("weights_dtype 'float32' or 'float16'", repr(weights_dtype))
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    reference = build_network(spec).state_dict()
    _compare_state(state, reference, where="model passed to save_bundle", error=ConfigError)
    out = {}
    for k, v in state.items():
        t = v.detach().to("cpu").clone().contiguous()
        if weights_dtype == "float16" and t.is_floating_point():
            t16 = t.to(torch.float16)
            if not torch.isfinite(t16).all() and torch.isfinite(t).all():
                raise ConfigError.expected("weights within float16 range (|w| < 65504)",
                                           f"overflow in {k!r}", hint="Save with weights_dtype='float32'")
            t = t16
        elif t.is_floating_point():
            t = t.to(torch.float32)
        out[k] = t
    return out


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_bundle(
    model: Any,
    path: str | PathLike[str],
    *,
    network: Mapping[str, Any],
    preprocess: Any,
    roi_size: Sequence[int],
    labels: Mapping[int, str],
    channels: Sequence[str],
    overlap: float = 0.5,
    postprocess: Any = None,
    provenance: Mapping[str, Any] | None = None,
    weights_dtype: str = "float32",
    overwrite: bool = False,
    activation: str | None = None,
    mirror_axes: Sequence[int] | None = None,
    inference: Mapping[str, Any] | None = None,
    regions: Any = None,
) -> Path:
    """Write a bundle folder (or a ``.medcnn`` zip when ``path`` ends with it), atomically.

    Args:
        model: the trained ``torch.nn.Module`` (or its state dict); its tensor names and
            shapes must match the network ``network`` builds.
        path: target folder (created) or ``*.medcnn`` archive.
        network: JSON-able network spec (:func:`medcnn.models.build_network`).
        preprocess: :class:`medcnn.preprocess.PreprocessSpec` or its dict.
        roi_size: sliding-window patch in voxels (2 entries for a 2D network).
        labels: label value → name; values ``0..max(out_channels, 2) - 1``.
        channels: one name per input channel (e.g. ``["FLAIR", "T1c"]``).
        overlap: default window overlap fraction.
        postprocess: :class:`medcnn.postprocess.PostprocessSpec` or its dict, optional.
        provenance: free JSON-able dict (data, epochs, metrics, git commit...).
        weights_dtype: ``"float32"`` or ``"float16"`` (half the size; cast back on load).
        overwrite: replace an existing bundle at ``path``.
        activation: ``"softmax"`` or ``"sigmoid"`` (default: softmax for 2+ outputs,
            sigmoid for one; sigmoid with several outputs = nested regions, see
            :func:`medcnn.postprocess.threshold_labels`).
        mirror_axes: axes of the network window (``0..spatial_dims-1``) that training
            mirrored (flip augmentation); ``Segmenter(tta_axes="trained")`` averages
            over exactly these. ``None`` (default): not recorded.
        inference: run-time rules of the model (:data:`INFERENCE_KEYS`, e.g. nnU-Net's
            window placement), the defaults of ``Segmenter.from_bundle``.
        regions: the model's regions (:class:`medcnn.regions.RegionSpec` or its dict):
            named unions of labels reported with every measurement (CSV, HTML, SEG, SR);
            for several sigmoid outputs also which region each channel predicts and how
            the channels are painted into labels (default without it: channel ``c`` writes
            label ``c + 1``, later channels win).

    Returns:
        The bundle path. Nothing is left at ``path`` if writing fails.
    """
    from safetensors.torch import save as st_save

    dest = Path(path)
    if dest.exists() and not overwrite:
        raise BundleError.expected("a new bundle path", "an existing file or folder", path=dest,
                                   hint="Pass overwrite=True to replace it")
    meta = _bundle_json(network, preprocess, roi_size, labels, channels, overlap, postprocess, provenance,
                        activation, mirror_axes, inference, regions)
    state = _state_for_saving(model, meta["network"], weights_dtype)
    # one metadata key: safetensors keeps metadata in a hash map whose order (and so the
    # file's bytes and sha256) would otherwise change from one process to the next
    blob = st_save(state, metadata={"format": "pt"})
    n_params = int(sum(t.numel() for t in state.values() if t.is_floating_point()))
    meta["weights"] = {"file": WEIGHTS_FILE, "sha256": _sha256_bytes(blob), "dtype": weights_dtype,
                       "n_tensors": len(state), "n_parameters": n_params, "bytes": len(blob)}
    _write_bundle(dest, json.dumps(meta, indent=2) + "\n", blob)
    return dest


_KEEP: Any = object()


def update_bundle(
    path: str | PathLike[str],
    *,
    postprocess: Any = _KEEP,
    provenance: Mapping[str, Any] | None = _KEEP,
    mirror_axes: Sequence[int] | None = _KEEP,
    activation: str | None = _KEEP,
    input: Mapping[str, Any] | None = _KEEP,  # noqa: A002 - the bundle.json key's name
) -> Path:
    """Change a bundle's ``bundle.json`` fields in place, keeping its weights file byte for
    byte (so its SHA-256, the model hash in reports, stays the same).

    The bundle is loaded and verified first; arguments left out keep their values. Use it
    to add postprocessing or record an evaluation without re-serialising the weights.
    ``input`` is the input description (modality, sequence, intensity profile per channel;
    :mod:`medcnn.models.compat`): metadata, so the spec hash stays the same.
    """
    b = load_bundle(path)
    given = {"postprocess": postprocess, "provenance": provenance, "mirror_axes": mirror_axes,
             "activation": activation}
    new = {k: getattr(b, k) if v is _KEEP else v for k, v in given.items()}
    meta = _bundle_json(b.network, b.preprocess, b.roi_size, b.labels, b.channels, b.overlap, new["postprocess"],
                        new["provenance"], new["activation"], new["mirror_axes"], b.json.get("inference"),
                        b.json.get("regions"))
    inp = b.json.get("input") if input is _KEEP else input
    if inp:
        meta["input"] = _json_checked(dict(inp), "input description")
    meta["weights"] = dict(b.json["weights"])
    _, blob, _ = _read_bundle_files(b.path)
    _write_bundle(b.path, json.dumps(meta, indent=2) + "\n", blob)
    return b.path


def _write_bundle(dest: Path, text: str, blob: bytes) -> None:
    """Write bundle.json + weights as a folder or ``.medcnn`` archive at ``dest``, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if dest.suffix == ARCHIVE_SUFFIX:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(BUNDLE_JSON, text)
                zf.writestr(WEIGHTS_FILE, blob)
        else:
            tmp.mkdir()
            (tmp / WEIGHTS_FILE).write_bytes(blob)
            (tmp / BUNDLE_JSON).write_text(text, encoding="utf-8")
        _replace(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink(missing_ok=True)


def _replace(tmp: Path, dest: Path) -> None:
    if not dest.exists():
        os.replace(tmp, dest)
        return
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    _remove(old)


# ---------------------------------------------------------------------------- loading
def _compare_state(state: Mapping[str, Any], reference: Mapping[str, Any], *, where: str,
                   error: type = BundleError) -> None:
    missing = [k for k in reference if k not in state]
    if missing:
        raise error.expected(f"a weight named {missing[0]!r} for the network in the spec",
                             f"no such tensor ({len(missing)} missing)", path=where,
                             hint="The weights do not belong to this network spec")
    extra = [k for k in state if k not in reference]
    if extra:
        raise error.expected("only weights of the network in the spec", f"unexpected tensor {extra[0]!r} "
                             f"({len(extra)} unexpected)", path=where,
                             hint="The weights do not belong to this network spec")
    for k, ref in reference.items():
        got = tuple(state[k].shape)
        if got != tuple(ref.shape):
            raise error.expected(f"tensor {k!r} of shape {tuple(ref.shape)}", f"shape {got}", path=where,
                                 hint="The weights do not belong to this network spec")


def _read_bundle_files(p: Path) -> tuple[bytes, bytes, str]:
    """(bundle.json bytes, weights bytes, weights file name) from a folder or archive."""
    if p.is_dir():
        jpath = p / BUNDLE_JSON
        if not jpath.is_file():
            pickles = sorted(q.name for q in p.iterdir() if q.suffix.lower() in _PICKLE_SUFFIXES)
            if pickles:
                raise _refuse_unsafe(p / pickles[0], "a PyTorch checkpoint and no bundle.json")
            raise BundleError.expected(f"a bundle folder holding {BUNDLE_JSON} and {WEIGHTS_FILE}",
                                       f"no {BUNDLE_JSON}", path=p)
        jbytes = jpath.read_bytes()
        wname = _weights_name(jbytes, p)
        wpath = p / wname
        if not wpath.is_file():
            raise BundleError.expected(f"weights file {wname}", "no such file", path=p)
        with open(wpath, "rb") as fh:
            head = fh.read(16)
        kind = _check_not_pickle(wpath, head)
        if kind != "safetensors":
            raise BundleError.expected("a safetensors weights file", f"a file of type {kind!r}", path=wpath)
        return jbytes, wpath.read_bytes(), wname
    # a single file: .medcnn archive, or something we refuse with a reason
    with open(p, "rb") as fh:
        head = fh.read(16)
    if p.suffix.lower() in _PICKLE_SUFFIXES:
        raise _refuse_unsafe(p, f"a {p.suffix} file (PyTorch pickle)")
    kind = _check_not_pickle(p, head)
    if kind == "safetensors":
        raise BundleError.expected("a bundle folder or .medcnn archive (weights + bundle.json)",
                                   "a bare safetensors weights file", path=p,
                                   hint="Build the network and call medcnn.models.save_bundle to add its spec")
    if kind != "zip":
        raise BundleError.expected("a bundle folder or .medcnn archive", "an unrecognised file", path=p)
    with zipfile.ZipFile(p) as zf:
        names = zf.namelist()
        if BUNDLE_JSON not in names:
            raise BundleError.expected(f"an archive holding {BUNDLE_JSON}", f"members {names[:5]}", path=p)
        jbytes = zf.read(BUNDLE_JSON)
        wname = _weights_name(jbytes, p)
        if wname not in names:
            raise BundleError.expected(f"weights member {wname}", "no such member", path=p)
        blob = zf.read(wname)
    names = None
    if blob[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as inner:
                names = inner.namelist()
        except zipfile.BadZipFile:
            names = None
    kind = sniff_model_file(blob[:16], names=names)
    if kind == "pickle":
        raise _refuse_unsafe(p, f"member {wname} that is a Python pickle / PyTorch checkpoint")
    if kind != "safetensors":
        raise BundleError.expected("a safetensors weights member", f"a member of type {kind!r}", path=p)
    return jbytes, blob, wname


def _weights_name(jbytes: bytes, p: Path) -> str:
    meta = _parse_json(jbytes, p)
    w = meta.get("weights")
    name = w.get("file", WEIGHTS_FILE) if isinstance(w, Mapping) else WEIGHTS_FILE
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith(".") \
            or not name.endswith(".safetensors"):
        raise BundleError.expected("a weights file name like 'model.safetensors' in bundle.json",
                                   repr(name), path=p)
    return name


def _parse_json(jbytes: bytes, p: Path) -> dict[str, Any]:
    try:
        meta = json.loads(jbytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError.expected(f"valid JSON in {BUNDLE_JSON}", f"{exc}", path=p) from exc
    if not isinstance(meta, dict):
        raise BundleError.expected(f"a JSON object in {BUNDLE_JSON}", type(meta).__name__, path=p)
    return meta


_REQUIRED_KEYS = ("format_version", "network", "preprocess", "roi_size", "overlap", "labels", "channels", "weights")


def load_bundle(path: str | PathLike[str] | Bundle) -> Bundle:
    """Load and verify a bundle folder or ``.medcnn`` archive.

    Checks, in order: no pickles; ``bundle.json`` parses and has every required key; its
    format version is one this medcnn reads; the weights' SHA-256 equals the recorded
    one; the network spec is valid; every tensor the network needs is present with the
    right shape and no unknown tensors are present.

    ``path`` may also be the name of a default bundle (see ``medcnn models list``).

    Raises:
        InputFileNotFoundError: nothing at ``path``.
        UnsafeModelFileError: a pickle / PyTorch checkpoint (see :data:`CONVERT_HINT`).
        BundleError: incomplete, inconsistent or tampered bundle (names the key).
    """
    if isinstance(path, Bundle):
        return path
    p = Path(path)
    if not p.exists():
        from medcnn.models.defaults import bundled_names, resolve_model

        if str(path) in bundled_names():  # a default model name
            p = resolve_model(path)
    if not p.exists():
        raise InputFileNotFoundError.expected("an existing bundle folder or .medcnn archive", "nothing at that path",
                                              path=p)
    jbytes, blob, wname = _read_bundle_files(p)
    meta = _parse_json(jbytes, p)
    if meta.get("format", FORMAT) != FORMAT:
        raise BundleError.expected(f"format {FORMAT!r} in {BUNDLE_JSON}", repr(meta.get("format")), path=p)
    for k in _REQUIRED_KEYS:
        if k not in meta:
            raise BundleError.expected(f"key {k!r} in {BUNDLE_JSON}", "no such key", path=p)
    fv = meta["format_version"]
    if not isinstance(fv, int) or fv < 1:
        raise BundleError.expected("an integer format_version >= 1", repr(fv), path=p)
    if fv > FORMAT_VERSION:
        raise BundleError.expected(f"bundle format version <= {FORMAT_VERSION}", f"version {fv}", path=p,
                                   hint="The bundle was written by a newer medcnn; upgrade medcnn")
    expected = meta["weights"].get("sha256") if isinstance(meta["weights"], Mapping) else None
    if not isinstance(expected, str):
        raise BundleError.expected("weights.sha256 in bundle.json", repr(expected), path=p)
    got = _sha256_bytes(blob)
    if got != expected.lower():
        raise BundleError.expected(f"sha256 {expected} for {wname}", got, path=p,
                                   hint="The weights were modified or belong to another bundle")
    try:
        spec = validate_network_spec(meta["network"], where=str(p))
        if meta.get("mirror_axes") is not None:
            check_mirror_axes(meta["mirror_axes"], int(spec["spatial_dims"]))
        if meta.get("inference") is not None:
            check_inference_options(meta["inference"], int(spec["spatial_dims"]))
        if meta.get("regions") is not None:
            check_regions_spec(meta["regions"], meta)
    except ConfigError as exc:
        raise BundleError(str(exc), path=p) from exc
    state = _load_safetensors(blob, p)
    try:
        template = build_network(spec, where=str(p))
    except ConfigError as exc:
        raise BundleError(str(exc), path=p) from exc
    reference = template.state_dict()
    _compare_state(state, reference, where=str(p))
    state = {k: (v.float() if v.is_floating_point() else v).to(reference[k].dtype) for k, v in state.items()}
    template.load_state_dict(state, strict=True)
    template.eval()
    return Bundle(path=p, json=meta, state_dict=state, sha256=got, _template=template)


def _load_safetensors(blob: bytes, p: Path) -> dict[str, Any]:
    from safetensors.torch import load as st_load

    try:
        return st_load(blob)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise BundleError.expected("a readable safetensors weights file", f"{type(exc).__name__}: {exc}",
                                   path=p) from exc
