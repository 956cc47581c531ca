"""The GPU check's test cases (written by ``scripts/gpu_pack.py``), read as Volumes.

Looked for in ``$MEDCNN_GPU_DATA``, then ``../data`` beside this checkout (the layout of
the carry-over pack: ``pack/src`` and ``pack/data``), then ``out/gpu-pack/data``. Each
``*.npz`` holds ``image`` (float32) and ``meta`` (JSON: geometry in medcnn's RAS+
convention, leading axis, frame times, the bundle it is for); nothing here needs
nibabel, SimpleITK or scipy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from medcnn.volume import Geometry, Volume

REPO = Path(__file__).resolve().parents[1]


def gpu_data_dir() -> Path | None:
    """The folder of GPU-check cases, or ``None``."""
    candidates = []
    if os.environ.get("MEDCNN_GPU_DATA"):
        candidates.append(Path(os.environ["MEDCNN_GPU_DATA"]))
    candidates += [REPO.parent / "data", REPO / "out" / "gpu-pack" / "data"]
    for c in candidates:
        if (c / "hippocampus.npz").is_file():
            return c
    return None


def load_case(path: Path) -> tuple[Volume, dict]:
    """``(volume, arrays)``: the case as a Volume and the npz's other arrays."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        extra = {k: z[k] for k in z.files if k not in ("image", "meta")}
        arr = z["image"]
    vol = Volume(arr, Geometry.from_dict(meta["geometry"]), leading_axis=meta["leading_axis"],
                 frame_times_ms=meta["frame_times_ms"], meta={"bundle": meta["bundle"], "note": meta["note"]})
    return vol, extra
