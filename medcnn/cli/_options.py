"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse

__all__ = ["add_threads_option"]


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
                        "the cores other processes keep busy, decided per case; threads wait passively unless "
                        "OMP_WAIT_POLICY is set)")
