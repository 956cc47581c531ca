"""Write the ``input`` key (modality, sequence, intensity profile per channel) of the shipped
bundles from their own training data, keeping the weights byte for byte.

    python scripts/input_profiles.py [--data ../shared/data] [--check]

For each bundle in ``medcnn/bundles``: the datasets named by its training config
(``provenance.training.config.data.dataset`` and ``data.extra``), every entry of their
``dataset.json`` (``training``), each channel's image read by medcnn's own reader, and
:func:`medcnn.models.compat.intensity_profile` over them (``[min, max]`` over the images of
percentiles 1/50/99 of the voxels above the image mean, the fraction of voxels < 0 and <= -500,
and the minimum). ``--check`` recomputes and exits 1 if a bundle's stored profile differs.
Modality, sequence meaning and conflicting SeriesDescription words are stated here by hand,
from the data's README.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcnn.io import read_volume  # noqa: E402
from medcnn.models.bundle import update_bundle  # noqa: E402
from medcnn.models.compat import intensity_profile  # noqa: E402
from medcnn.train.datasets import load_dataset_json  # noqa: E402

_CINE_CONFLICTS = ["lge", "psir", "molli", "shmolli", "t1map", "t2map", "flair", "dwi", "adc", "perfusion", "haste",
                   "tof", "mprage", "t1", "t2"]
#: per bundle and channel: what the channel means (from the data's README)
SPECS = {
    "hippocampus-mri": {"T1": {
        "modality": "MR", "sequence": "T1-weighted MRI (1 mm crops around one hippocampus, MSD Task04)",
        "conflicting_descriptions": ["t2", "flair", "dwi", "adc", "pd", "swi", "bold", "perfusion", "dti", "lge",
                                     "cine"]}},
    "brain-tumour-mri": {
        "FLAIR": {"modality": "MR", "sequence": "T2-FLAIR MRI, skull-stripped, z-scored inside the brain (BRATS)",
                  "conflicting_descriptions": ["t1", "t1c", "t1ce", "t1gd", "mprage", "dwi", "adc", "swi", "cine"]},
        "T1c": {"modality": "MR", "sequence": "contrast-enhanced T1 MRI, skull-stripped, z-scored inside the brain "
                                              "(BRATS)",
                "conflicting_descriptions": ["flair", "t2", "dwi", "adc", "swi", "cine"]}},
    "brain-tumour-mri-4seq": {
        "FLAIR": {"modality": "MR", "sequence": "T2-FLAIR MRI, skull-stripped, co-registered, 1 mm, raw scanner "
                                                "intensities (BraTS 2018)",
                  "conflicting_descriptions": ["t1", "t1c", "t1ce", "t1gd", "mprage", "dwi", "adc", "swi", "cine"]},
        "T1": {"modality": "MR", "sequence": "native (pre-contrast) T1-weighted MRI, skull-stripped, co-registered, "
                                             "1 mm, raw scanner intensities (BraTS 2018)",
               "conflicting_descriptions": ["flair", "t2", "t1c", "t1ce", "t1gd", "gd", "gad", "post", "dwi", "adc",
                                            "swi", "cine"]},
        "T1ce": {"modality": "MR", "sequence": "contrast-enhanced T1-weighted MRI, skull-stripped, co-registered, "
                                               "1 mm, raw scanner intensities (BraTS 2018)",
                 "conflicting_descriptions": ["flair", "t2", "pre", "native", "dwi", "adc", "swi", "cine"]},
        "T2": {"modality": "MR", "sequence": "T2-weighted MRI, skull-stripped, co-registered, 1 mm, raw scanner "
                                             "intensities (BraTS 2018)",
               "conflicting_descriptions": ["flair", "t1", "t1c", "t1ce", "t1gd", "mprage", "dwi", "adc", "swi",
                                            "cine"]}},
    "cardiac-cine-mri": {"cine": {"modality": "MR", "sequence": "short-axis bSSFP cine MRI",
                                  "conflicting_descriptions": _CINE_CONFLICTS}},
    "cardiac-lv-cine-mri": {"cine": {"modality": "MR", "sequence": "short-axis bSSFP cine MRI",
                                     "conflicting_descriptions": _CINE_CONFLICTS}},
}
METHOD = ("intensity: [min, max] over the bundle's training images (every entry of the dataset.json files of its "
          "training config) of: body_p01/p50/p99 = percentiles 1/50/99 of the voxels above the image mean; "
          "negative_fraction = fraction of voxels < 0; air_fraction = fraction of voxels <= -500; min_value = "
          "minimum (scripts/input_profiles.py; checks: medcnn.models.compat)")


def _datasets(bundle_json: dict) -> list[str]:
    data = ((bundle_json.get("provenance") or {}).get("training") or {}).get("config", {}).get("data", {})
    return [data["dataset"]] + [e["dataset"] for e in data.get("extra") or []]


def profile(bundle: Path, data_root: Path) -> dict:
    meta = json.loads((bundle / "bundle.json").read_text())
    channels = list(meta["channels"])
    images: dict[str, list] = {c: [] for c in channels}
    sources = []
    for ds in _datasets(meta):
        cases = load_dataset_json(data_root / ds)  # either spelling: "training" (MSD) or "cases" (shared data)
        sources.append(f"{ds} ({len(cases)} entries)")
        for case in cases:
            for c, p in zip(channels, case.images):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    images[c].append(read_volume(p).array)
    spec = SPECS[bundle.name]
    return {"method": METHOD, "channels": {
        c: {**spec[c], "intensity": intensity_profile(images[c], source=", ".join(sources))} for c in channels}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    bad = 0
    for bundle in sorted((REPO / "medcnn" / "bundles").iterdir()):
        if not (bundle / "bundle.json").is_file() or bundle.name not in SPECS:
            continue
        new = profile(bundle, Path(args.data))
        old = json.loads((bundle / "bundle.json").read_text()).get("input")
        if args.check:
            same = json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)
            print(f"{bundle.name}: {'ok' if same else 'DIFFERS'}")
            bad += not same
            continue
        update_bundle(bundle, input=new)
        print(f"{bundle.name}: " + "; ".join(f"{c} {v['intensity']['n_images']} images" for c, v in
                                             new["channels"].items()))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
