"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse

__all__ = ["add_threads_option", "add_backend_option", "backend_cache_dir", "add_dicom_options",
           "add_whole_slice_option"]


def _threads(value: str) -> int | str:
    from medcnn.errors import ConfigError
    from medcnn.inference.threads import parse_threads

    try:
        return parse_threads(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads N|auto``: CPU threads per case (:class:`medcnn.inference.ThreadPolicy`)."""
    p.add_argument("--threads", type=_threads, default="auto", metavar="N|auto",
                   help="CPU threads per case (default auto: the usable cores, shared among parallel workers, less "
                        "the cores other processes keep busy, decided per case)")


def add_backend_option(p: argparse.ArgumentParser) -> None:
    """``--backend torch|onnxruntime|auto``: the network executor (:mod:`medcnn.inference.executors`)."""
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "auto"),
                   help="network executor: torch (default); onnxruntime (CPU, fp32: the network exported to ONNX "
                        "once, verified against torch and cached in $MEDCNN_CACHE/onnx or ~/.cache/medcnn/onnx); "
                        "auto (times both at 1, 2 and 4 windows per call, 2D models also 8 and 16, and keeps the fastest). "
                        "Falls back to torch with a notice when onnxruntime is missing (docs/inference.md)")


def add_whole_slice_option(p: argparse.ArgumentParser) -> None:
    """``--whole-slice`` / ``--no-whole-slice``: how a 2D model covers each slice."""
    p.add_argument("--whole-slice", dest="whole_slice", action=argparse.BooleanOptionalAction, default=None,
                   help="2D models: run the network once per whole slice instead of overlapping windows (about "
                        "3x faster on cine; labels can differ from the windowed ones). Default: the model's "
                        "measured verdict, on only where its whole-slice labels agreed >= 99.5%% with its windowed "
                        "labels in every measured volume (`medcnn models show`)")


def backend_cache_dir() -> str:
    """The export cache folder of ``--backend``: ``$MEDCNN_CACHE/onnx``, else ``~/.cache/medcnn/onnx``
    (the CLI is the one place that reads the environment)."""
    import os

    from medcnn.inference.executors import default_cache_dir

    return str(default_cache_dir(os.environ))


def add_dicom_options(p: argparse.ArgumentParser) -> None:
    """``--dicom``, ``--dicom-fractional``: the DICOM outputs of ``segment`` and ``run``, which
    both write them by :func:`medcnn.batch.pipeline.write_case_dicom`."""
    p.add_argument("--dicom", action="store_true",
                   help="for 3D DICOM series inputs also write a DICOM SEG (label map) and a DICOM SR TID 1500 "
                        "(volumes; cardiac EDV/ESV/SV/EF of an ED/ES pair) per scan, referencing the source series; "
                        "other inputs are noted instead (see docs/dicom.md)")
    p.add_argument("--dicom-fractional", action="store_true",
                   help="with --dicom: write a FRACTIONAL SEG of the class probabilities (8-bit) instead of the "
                        "binary label map (the SR still reports the label map's volumes)")
