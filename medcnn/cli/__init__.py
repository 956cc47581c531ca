"""The ``medcnn`` command.

Each subcommand lives in its own module ``medcnn/cli/<name>.py`` exposing
``register(subparsers)``, which adds a parser whose ``func`` default is the handler
``func(args) -> int``. The CLI is the only place that reads ``argv`` and the environment.

Warnings about an input (:class:`medcnn.errors.NiftiHeaderWarning`: a NIfTI header read by
medcnn's rule for inconsistent headers) are printed as one line, ``medcnn <command>:
warning: <file>: ...``, once per distinct message (so once per file).

Errors: a :class:`medcnn.errors.MedcnnError` (bad input) becomes one line on stderr and
exit code 2; Ctrl-C exits 130; an unexpected exception prints one line naming it and
exits 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from typing import Iterator, Sequence

__all__ = ["main", "build_parser", "COMMANDS"]

#: Subcommand modules, in the order ``medcnn --help`` lists them.
COMMANDS: tuple[str, ...] = ("info", "segment", "train", "measure", "response", "run", "validate", "convert", "models",
                             "demo")

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    from medcnn import __version__

    parser = argparse.ArgumentParser(
        prog="medcnn",
        description="3D CNN segmentation and measurement of CT/MRI volumes.",
    )
    parser.add_argument("--version", action="version", version=f"medcnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"medcnn.cli.{name.replace('-', '_')}").register(sub)
    return parser


@contextlib.contextmanager
def input_warnings_as_lines(command: str) -> Iterator[None]:
    """Print each :class:`NiftiHeaderWarning` as one line on stderr, once per distinct message;
    other warnings are shown as Python shows them."""
    from medcnn.errors import NiftiHeaderWarning

    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always", NiftiHeaderWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, NiftiHeaderWarning):
                return shown(message, category, filename, lineno, file, line)
            text = " ".join(str(message).split())
            if text not in seen:
                seen.add(text)
                print(f"medcnn {command}: warning: {text}", file=sys.stderr)
            return None

        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    from medcnn.errors import MedcnnError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with input_warnings_as_lines(args.command):
            return int(args.func(args) or 0)
    except MedcnnError as exc:
        if args.debug:
            raise
        print(f"medcnn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"medcnn {args.command}: interrupted; no partial output files were left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last line of defence for the CLI
        if args.debug:
            raise
        print(f"medcnn {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(rerun with --debug for the traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL
