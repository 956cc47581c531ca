"""Regions: nested sets of voxel classes (whole tumour ⊇ tumour core ⊇ enhancing tumour).

A label map holds **voxel classes**: every voxel has one label value, named for what it
is (in nnU-Net's BraTS datasets 1 = whole tumour minus core (oedema), 2 = core minus
enhancing, 3 = enhancing; in BraTS's own files 1/2/4). A **region** is a named set of
voxel classes, e.g. ``{"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing
tumor": [3]}``; its volume is the volume of the union of its classes. The regions of one
model form a *laminar* family: any two are nested or disjoint.

Region-trained networks (nnU-Net ``regions_class_order``, MONAI Model Zoo BraTS bundles)
output one sigmoid channel per region. :class:`RegionSpec` records which region each
channel predicts, which label value it writes and in which order the channels are
painted into the label map (each voxel keeps the label of the last channel > 0.5 that
covers it: nnU-Net's rule); it is validated so that the label map's unions give back
exactly the regions the channels predicted whenever the outputs are nested, and the
nesting is checked on every prediction (:func:`nesting_violations`).

This module imports numpy only: ``measure``, ``report`` and ``io`` use it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError, InvalidLabelError

__all__ = [
    "RegionSpec",
    "NESTING_TOLERANCE",
    "check_regions",
    "class_names",
    "regions_from_nnunet",
    "regions_from_channel_nesting",
    "known_region_nesting",
    "paint_regions",
    "nesting_violations",
    "check_nesting",
    "regions_of_file",
    "BRATS_REGIONS",
    "REGION_PRESETS",
    "parse_regions",
    "regions_of_volume_rows",
    "match_region_names",
]

#: The BraTS challenge regions in BraTS's own label convention (2017-2021 files: 1 necrotic
#: and non-enhancing tumour core, 2 peritumoral oedema, 4 enhancing tumour; 3 unused):
#: whole tumour WT = {1, 2, 4}, tumour core TC = {1, 4}, enhancing tumour ET = {4}.
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
#: Named region sets accepted by :func:`parse_regions` (``--regions brats``).
REGION_PRESETS: dict[str, dict[str, tuple[int, ...]]] = {"brats": BRATS_REGIONS}

#: Default tolerance of :func:`check_nesting`: the largest fraction of an inner region's
#: voxels allowed outside its outer region in a prediction (sigmoid channels are trained
#: independently, so a few boundary voxels can disagree; a wrong channel order puts most
#: of them outside).
NESTING_TOLERANCE = 0.05
#: Inner regions with fewer voxels than this are not judged by :func:`check_nesting`.
NESTING_MIN_VOXELS = 20

#: Region names of the BraTS convention (lower case) -> rank, outer (0) to inner: what
#: "the declared channel meaning" of a BraTS model means when no order is given.
_BRATS_NESTING = {
    "whole tumor": 0, "whole tumour": 0, "wt": 0,
    "tumor core": 1, "tumour core": 1, "tc": 1,
    "enhancing tumor": 2, "enhancing tumour": 2, "et": 2,
}


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def check_regions(regions: Mapping[str, Sequence[int]], *, labels: Mapping[int, str] | None = None,
                  path: str | Path | None = None) -> dict[str, list[int]]:
    """Validate regions: ``{name: [label values > 0]}``, nested or disjoint pairwise.

    Args:
        regions: region name -> voxel-class label values.
        labels: the label map's classes (``{value: name}``); every region label must be one.
        path: file named in errors.

    Returns:
        ``{name: sorted distinct labels}`` in the given order.

    Raises:
        ConfigError: empty/non-integer members, a label not in ``labels``, or two regions
            that overlap without one containing the other (no painting can represent them).
    """
    out: dict[str, list[int]] = {}
    if not isinstance(regions, Mapping):
        raise ConfigError.expected("regions as {name: [label values > 0, ...]}", type(regions).__name__, path=path)
    for name, members in regions.items():
        ok = (isinstance(members, (list, tuple, np.ndarray)) and len(members) > 0
              and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in members))
        if not str(name).strip() or not ok:
            raise ConfigError.expected("regions as {name: [label values > 0, ...]}", f"{name!r}: {members!r}",
                                       path=path)
        out[str(name)] = sorted({int(v) for v in members})
    if labels is not None:
        known = {int(k) for k in labels if int(k) != 0}
        for name, members in out.items():
            missing = [v for v in members if v not in known]
            if missing:
                raise ConfigError.expected(f"region {name!r} made of the label map's classes {sorted(known)}",
                                           f"labels {missing}", path=path)
    names = list(out)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa, sb = set(out[a]), set(out[b])
            if sa & sb and not (sa <= sb or sb <= sa):
                raise ConfigError.expected(
                    "nested or disjoint regions (inner ⊆ outer)",
                    f"{a!r} {sorted(sa)} and {b!r} {sorted(sb)} overlapping without one containing the other",
                    path=path)
    return out


def class_names(regions: Mapping[str, Sequence[int]]) -> dict[int, str]:
    """Names of the voxel classes of nested regions, said as region differences.

    Class ``c`` lies in the innermost region containing it minus the regions inside
    that one which do not contain ``c``: with WT ``[1, 2, 3]``, TC ``[2, 3]``, ET ``[3]``
    that is ``{1: "WT minus TC", 2: "TC minus ET", 3: "ET"}``.
    """
    sets = {n: set(v) for n, v in check_regions(regions).items()}
    out: dict[int, str] = {}
    for c in sorted(set().union(*sets.values()) if sets else ()):
        holding = [n for n, s in sets.items() if c in s]
        inner = min(holding, key=lambda n: (len(sets[n]), list(sets).index(n)))
        inside = [n for n, s in sets.items() if s < sets[inner] and c not in s]
        maximal = [n for n in inside if not any(sets[n] < sets[m] for m in inside)]
        out[c] = inner if not maximal else f"{inner} minus {' and '.join(maximal)}"
    return out


@dataclass(frozen=True)
class RegionSpec:
    """Regions of a model and, for region-trained (sigmoid) networks, how its channels
    become a label map.

    Attributes:
        regions: ``{region name: [voxel-class labels]}`` (nested or disjoint), outer first.
        channels: sigmoid models only: the region each network output channel predicts.
        channel_labels: the label value channel ``c`` writes.
        paint_order: channel indices in the order they are painted (a later channel wins).
    """

    regions: Mapping[str, tuple[int, ...]]
    channels: tuple[str, ...] | None = None
    channel_labels: tuple[int, ...] | None = None
    paint_order: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        regs = check_regions(self.regions)
        object.__setattr__(self, "regions", {k: tuple(v) for k, v in regs.items()})
        given = [self.channels is not None, self.channel_labels is not None, self.paint_order is not None]
        if any(given) and not all(given):
            raise ConfigError.expected("channels, channel_labels and paint_order together", "only some of them")
        if self.channels is None:
            return
        ch, lab, order = tuple(map(str, self.channels)), tuple(int(v) for v in self.channel_labels or ()), \
            tuple(int(v) for v in self.paint_order or ())
        object.__setattr__(self, "channels", ch)
        object.__setattr__(self, "channel_labels", lab)
        object.__setattr__(self, "paint_order", order)
        if len(lab) != len(ch) or sorted(order) != list(range(len(ch))):
            raise ConfigError.expected(f"one label per channel and paint_order a permutation of 0..{len(ch) - 1}",
                                       f"channel_labels {list(lab)}, paint_order {list(order)}")
        missing = [c for c in ch if c not in regs]
        if missing or len(set(ch)) != len(ch):
            raise ConfigError.expected(f"one channel per region among {list(regs)}", f"channels {list(ch)}")
        self._check_painting()

    def _check_painting(self) -> None:
        """Painting the channels must give a label whose region memberships are those of
        the true class, for every class, when the outputs are nested (nnU-Net's rule:
        the last painted channel covering a voxel decides its label)."""
        sets = [set(self.regions[c]) for c in self.channels or ()]
        labels = self.channel_labels or ()
        for i, v in enumerate(labels):
            if v not in sets[i]:
                raise ConfigError.expected(f"channel {i} ({self.channels[i]!r}) writing a label of its region "
                                           f"{sorted(sets[i])}", f"label {v}")

        def member(x: int) -> frozenset[int]:
            return frozenset(i for i, s in enumerate(sets) if x in s)

        classes = sorted(set().union(*sets)) if sets else []
        for c in classes:
            last = [i for i in self.paint_order or () if c in sets[i]][-1]
            if member(labels[last]) != member(c):
                names = [self.channels[i] for i in self.paint_order or ()]
                raise ConfigError.expected(
                    "regions painted outer to inner (each channel's label inside every region painted before it "
                    "that overlaps it)",
                    f"class {c} painted as label {labels[last]} by {self.channels[last]!r} in order {names}")

    @property
    def has_channels(self) -> bool:
        return self.channels is not None

    def paint(self) -> list[tuple[int, int]]:
        """``[(channel, label)]`` in painting order."""
        return [(c, (self.channel_labels or ())[c]) for c in self.paint_order or ()]

    def nesting_pairs(self) -> list[tuple[int, int]]:
        """``[(inner channel, outer channel)]`` for every region directly inside another."""
        if not self.channels:
            return []
        sets = [set(self.regions[c]) for c in self.channels]
        pairs = []
        for i, si in enumerate(sets):
            outers = [j for j, sj in enumerate(sets) if si < sj]
            if outers:
                pairs.append((i, min(outers, key=lambda j: len(sets[j]))))
        return pairs

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"regions": {k: list(v) for k, v in self.regions.items()}}
        if self.channels is not None:
            d.update(channels=list(self.channels), channel_labels=list(self.channel_labels or ()),
                     paint_order=list(self.paint_order or ()))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, path: str | Path | None = None) -> "RegionSpec":
        if not isinstance(d, Mapping):
            raise ConfigError.expected("a regions dict", type(d).__name__, path=path)
        unknown = sorted(set(d) - {"regions", "channels", "channel_labels", "paint_order"})
        if unknown or "regions" not in d:
            raise ConfigError.expected("regions keys 'regions' (+ channels, channel_labels, paint_order)",
                                       f"keys {sorted(d)}", path=path)
        try:
            return cls(regions=d["regions"], channels=d.get("channels"), channel_labels=d.get("channel_labels"),
                       paint_order=d.get("paint_order"))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}" if path is not None else str(exc), path=path) from None

    def check_labels(self, labels: Mapping[int, str], *, path: str | Path | None = None) -> None:
        """Every region label is one of ``labels`` (the label map's classes)."""
        check_regions(self.regions, labels=labels, path=path)


def regions_from_nnunet(dataset: Mapping[str, Any], *, path: str | Path | None = None
                        ) -> tuple[dict[int, str], RegionSpec]:
    """Voxel classes and regions of an nnU-Net ``dataset.json`` with region labels.

    nnU-Net's rule: channel ``i`` predicts the ``i``-th foreground entry of ``labels``
    (a list of label values = a region) and writes ``regions_class_order[i]`` where its
    sigmoid is > 0.5, in channel order. The label map therefore holds the label values of
    ``regions_class_order`` (e.g. BraTS: 1 = whole tumour minus core, 2 = core minus
    enhancing, 3 = enhancing); they are named by :func:`class_names`.

    Returns:
        ``({label value: class name, 0: background}, RegionSpec)``.

    Raises:
        ConfigError: no ``regions_class_order``, one of the wrong length, a label not in
            its region, regions that are not nested/disjoint, or an order in which a later
            region would overwrite a class it does not contain.
    """
    labels = {str(k): v for k, v in dict(dataset.get("labels") or {}).items() if k != "ignore"}
    bg = next((k for k, v in labels.items() if (v == 0 or v == [0]) and k == "background"), "background")
    fg = [(k, v) for k, v in labels.items() if k != "background"]
    order = dataset.get("regions_class_order")
    if not isinstance(order, (list, tuple)) or len(order) != len(fg):
        raise ConfigError.expected(f"regions_class_order with one label per region ({len(fg)}) in dataset.json",
                                   repr(order), path=path)
    regions = {str(k): [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])] for k, v in fg}
    try:
        spec = RegionSpec(regions=regions, channels=tuple(regions), channel_labels=tuple(int(v) for v in order),
                          paint_order=tuple(range(len(fg))))
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}labels / regions_class_order: {exc}", path=path) from None
    names = class_names(spec.regions)
    classes = {0: str(bg)}
    classes.update({v: names[v] for v in sorted(set(spec.channel_labels or ()))})
    return classes, spec


def known_region_nesting(names: Sequence[str]) -> list[str] | None:
    """Channel names ordered outer -> inner when every one is a BraTS region name (whole
    tumour, tumour core, enhancing tumour, or WT/TC/ET), else ``None``."""
    ranks = [_BRATS_NESTING.get(_norm(n)) for n in names]
    if not names or any(r is None for r in ranks) or len(set(ranks)) != len(ranks):
        return None
    return [n for _, n in sorted(zip(ranks, names))]


def regions_from_channel_nesting(channels: Sequence[str], nesting: Sequence[str], *,
                                 path: str | Path | None = None) -> tuple[dict[int, str], RegionSpec]:
    """Voxel classes and regions of sigmoid channels that are nested in a chain.

    Args:
        channels: the region name of each network output channel, in channel order
            (MONAI's ``channel_def``: e.g. ``["Tumor core", "Whole tumor", "Enhancing tumor"]``).
        nesting: the same names ordered outer -> inner (``["Whole tumor", "Tumor core",
            "Enhancing tumor"]``).

    Returns:
        ``({0: background, 1: outer minus next, ..., N: innermost}, RegionSpec)``: the
        k-th region of ``nesting`` holds labels ``k+1..N`` and its channel writes ``k+1``;
        channels are painted outer to inner.
    """
    chans = [str(c) for c in channels]
    nest = [str(c) for c in nesting]
    if len(set(chans)) != len(chans) or sorted(nest) != sorted(chans):
        raise ConfigError.expected(f"a region order naming each output channel once ({chans})", f"{nest}",
                                   path=path)
    n = len(nest)
    regions = {name: list(range(k + 1, n + 1)) for k, name in enumerate(nest)}
    spec = RegionSpec(regions=regions, channels=tuple(chans),
                      channel_labels=tuple(nest.index(c) + 1 for c in chans),
                      paint_order=tuple(chans.index(c) for c in nest))
    return {0: "background", **class_names(spec.regions)}, spec


def paint_regions(masks: np.ndarray, spec: RegionSpec) -> np.ndarray:
    """Label map ``(...)`` uint8/16 from per-channel booleans ``(C, ...)`` (channel > 0.5),
    painted in ``spec.paint_order`` (a later channel wins)."""
    arr = np.asarray(masks)
    if not spec.has_channels or arr.shape[0] != len(spec.channels or ()):
        raise ConfigError.expected(f"{len(spec.channels or ())} region channels", f"{arr.shape[0]}")
    top = max(spec.channel_labels or (0,))
    out = np.zeros(arr.shape[1:], np.uint8 if top < 256 else np.uint16)
    for c, v in spec.paint():
        out[arr[c].astype(bool, copy=False)] = v
    return out


def nesting_violations(masks: np.ndarray, spec: RegionSpec) -> list[dict[str, Any]]:
    """Per directly nested pair: voxels of the inner channel and those outside the outer one.

    Args:
        masks: ``(C, ...)`` booleans, channel ``c`` > 0.5.

    Returns:
        ``[{"inner", "outer", "inner_voxels", "outside_voxels"}]`` (region names, counts).
    """
    arr = np.asarray(masks, dtype=bool)
    rows = []
    for i, j in spec.nesting_pairs():
        rows.append({"inner": (spec.channels or ())[i], "outer": (spec.channels or ())[j],
                     "inner_voxels": int(np.count_nonzero(arr[i])),
                     "outside_voxels": int(np.count_nonzero(arr[i] & ~arr[j]))})
    return rows


def check_nesting(rows: Sequence[Mapping[str, Any]], *, tolerance: float = NESTING_TOLERANCE,
                  min_voxels: int = NESTING_MIN_VOXELS, path: str | Path | None = None) -> None:
    """Refuse a prediction whose channels contradict the declared nesting.

    Raises:
        InvalidLabelError: more than ``tolerance`` of an inner region's voxels (when it has
            at least ``min_voxels``) lie outside its outer region: the declared channel order
            (``regions_class_order`` / ``channel_def`` / ``--region-order``) does not match the
            network's outputs.
    """
    for r in rows:
        n, out = int(r["inner_voxels"]), int(r["outside_voxels"])
        if n >= min_voxels and out > tolerance * n:
            raise InvalidLabelError.expected(
                f"region {r['inner']!r} inside {r['outer']!r} as the model declares (at most "
                f"{tolerance:.0%} of its voxels outside)", f"{out} of {n} voxels ({out / n:.1%}) outside", path=path,
                hint="the declared channel order contradicts the network's outputs: re-import the model with the "
                     "right order (medcnn models import --region-order OUTER,...,INNER)")


def regions_of_file(path: str | Path) -> dict[str, list[int]]:
    """The regions a JSON file declares: a medcnn ``bundle.json`` (``regions.regions``) or an
    MSD-style ``dataset.json`` with a ``"regions": {name: [labels]}`` key (e.g. the BraTS
    2018 copy in ``../shared/data``); ``{}`` when it declares none.

    Raises:
        CorruptFileError: not valid JSON. ConfigError: malformed or non-nested regions.
    """
    import json

    from medcnn.errors import CorruptFileError

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError.expected("a readable JSON file", f"{type(exc).__name__}: {exc}", path=p) from None
    regs = data.get("regions") if isinstance(data, Mapping) else None
    if isinstance(regs, Mapping) and isinstance(regs.get("regions"), Mapping):  # bundle.json
        regs = regs["regions"]
    return check_regions(regs, path=p) if regs else {}


_SPEC_FORMS = ("a preset (" + ", ".join(REGION_PRESETS) + "), NAME=L,L;NAME=L (e.g. WT=1,2,4;TC=1,4;ET=4), "
               "a JSON object {name: [labels]} or a .json file (bundle.json, dataset.json with \"regions\", or "
               "{name: [labels]})")


def parse_regions(spec: str, *, what: str = "--regions") -> dict[str, list[int]]:
    """Regions from a command-line specification.

    Args:
        spec: a preset name (``"brats"``: :data:`BRATS_REGIONS`); inline ``"WT=1,2,4;TC=1,4;ET=4"``
            (``;`` between regions, ``,`` between labels); inline JSON ``'{"WT": [1, 2, 4]}'``; or
            the path of a ``.json`` file: a medcnn ``bundle.json`` or an MSD ``dataset.json``
            with ``"regions"`` (:func:`regions_of_file`), or a plain ``{name: [labels]}`` object.
        what: the option named in errors.

    Returns:
        ``{name: sorted labels}``, validated by :func:`check_regions` (nested or disjoint).

    Raises:
        ConfigError: none of those forms, an empty spec, repeated names, labels <= 0,
            overlapping regions that are not nested. InputFileNotFoundError /
            CorruptFileError: a ``.json`` path that is missing or not JSON.
    """
    import json

    from medcnn.errors import InputFileNotFoundError

    text = str(spec).strip()
    if text.lower() in REGION_PRESETS:
        return check_regions({k: list(v) for k, v in REGION_PRESETS[text.lower()].items()})
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError.expected(f"{what} as {_SPEC_FORMS}", f"invalid JSON ({exc.msg})") from None
        if isinstance(data, Mapping) and isinstance(data.get("regions"), Mapping):
            data = data["regions"]
        return check_regions(data)
    if text.lower().endswith(".json"):
        p = Path(text)
        if not p.is_file():
            raise InputFileNotFoundError.expected(f"an existing JSON file for {what}", "no file at that path", path=p)
        found = regions_of_file(p)
        if found:
            return found
        data = json.loads(p.read_text(encoding="utf-8"))  # readable: regions_of_file parsed it
        if isinstance(data, Mapping) and data and all(isinstance(v, list) for v in data.values()):
            return check_regions(data, path=p)
        raise ConfigError.expected(f"regions in the file ({_SPEC_FORMS})", "none declared", path=p)
    out: dict[str, list[int]] = {}
    for item in (t.strip() for t in text.split(";")):
        if not item:
            continue
        name, eq, values = item.partition("=")
        try:
            labels = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            labels = []
        if not eq or not name.strip() or not labels:
            raise ConfigError.expected(f"{what} as {_SPEC_FORMS}", repr(spec))
        if name.strip() in out:
            raise ConfigError.expected(f"each region named once in {what}", f"{name.strip()!r} twice")
        out[name.strip()] = labels
    if not out:
        raise ConfigError.expected(f"{what} as {_SPEC_FORMS}", repr(spec))
    return check_regions(out)


def regions_of_volume_rows(rows: Sequence[Mapping[str, Any]], *, path: str | Path | None = None
                           ) -> dict[str, list[int]]:
    """The regions a medcnn volume table reports: its region rows, whose ``label`` is the
    member labels joined by ``+`` as a string (``"1+2+4"``, or ``"4"`` for a one-label
    region) and ``label_name`` the region's name (label rows have integer labels). These are
    the rows ``medcnn segment`` keeps in ``segment_provenance.json`` and ``medcnn run`` in
    ``result.json`` (``volumes``) for a model whose bundle declares regions.

    Returns:
        ``{name: labels}`` in row order (``{}`` when there are no region rows).

    Raises:
        ConfigError: a malformed region label, or one name with two label sets.
    """
    out: dict[str, list[int]] = {}
    for r in rows:
        label, name = r.get("label"), r.get("label_name")
        if not isinstance(label, str) or not name:
            continue
        try:
            members = sorted({int(v) for v in label.split("+")})
        except ValueError:
            raise ConfigError.expected("region rows labelled like 1+2+4", repr(label), path=path) from None
        if str(name) in out and out[str(name)] != members:
            raise ConfigError.expected(f"one label set for region {name!r}", f"{out[str(name)]} and {members}",
                                       path=path)
        out[str(name)] = members
    return check_regions(out, path=path) if out else {}


def match_region_names(wanted: Sequence[str], available: Sequence[str]) -> dict[str, str | None]:
    """Pair region names of two conventions: ``{wanted name: available name or None}``.

    Names match when equal after lower-casing and reading ``_``/``-`` as spaces, or when both
    are the same BraTS region (``WT`` = ``whole tumor`` = ``Whole_tumour``; likewise TC and
    ET); each available name is used once.
    """
    free = list(available)
    out: dict[str, str | None] = {}
    for w in wanted:
        hit = next((a for a in free if _norm(a) == _norm(w)), None)
        if hit is None and _BRATS_NESTING.get(_norm(w)) is not None:
            hit = next((a for a in free if _BRATS_NESTING.get(_norm(a)) == _BRATS_NESTING[_norm(w)]), None)
        if hit is not None:
            free.remove(hit)
        out[w] = hit
    return out
