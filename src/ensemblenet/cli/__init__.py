"""The ``ensemblenet`` command line: train, train-ensemble, evaluate, predict, ensemble, report, export,
distill.

Every command exits 0 on success and, on failure, prints ONE line ``ensemblenet <command>: error: ...``
on stderr and exits non-zero (1 for an error, 2 for a bad command line, 130 for Ctrl-C), whatever
the error (an unforeseen one is named by its type; ``-v`` shows its traceback). ``--json`` prints
one machine-readable JSON document on stdout; ``-q`` keeps stderr to errors only (results still
print); ``-v`` adds progress logging and tracebacks on errors (``-vv``: debug logging).

Before any work, a command checks that ``--device`` exists here and that its output files are
safe to write (not a folder, not one of its inputs, not an existing file without ``--overwrite``)
and locks them against a second command writing them at the same time (see ``cli/_guards.py``).

>>> from ensemblenet.cli import build_parser
>>> build_parser().parse_args(["train", "data/", "--backbone", "torchvision:resnet18"]).recipe
'fast'
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import IO

from ..errors import EnsembleNetError
from ._console import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CommandInterrupted,
    Console,
    _one_line,
)
from ._guards import guarded
from ._parser import build_parser

__all__ = ["build_parser", "main"]


def _configure_logging(verbose: int, quiet: bool, stream: IO[str]) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("ensemblenet: %(levelname)s: %(message)s"))
    level = (
        logging.ERROR
        if quiet
        else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    root = logging.getLogger("ensemblenet")
    root.addHandler(handler)
    handler.previous_level = root.level  # type: ignore[attr-defined]  # restored when the command ends
    root.setLevel(level)
    return handler


def main(
    argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Every error becomes one line on stderr and exit code 1 (the library's own errors and
    file-system errors as they are, anything else prefixed by its type); Ctrl-C exits with 130.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    con = Console(args, stdout, stderr)
    handler = _configure_logging(args.verbose, args.quiet, stderr)
    prefix = f"ensemblenet {args.command}"
    func: Callable[[argparse.Namespace, Console], int] = args.func
    try:
        with guarded(args, con):  # the device exists and the outputs are safe, before any work
            return func(args, con)
    except CommandInterrupted as exc:
        print(f"{prefix}: {exc}", file=stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away ('| head'): not an error of ours
        if stdout is sys.stdout:
            # Point stdout at /dev/null so the interpreter's final flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (EnsembleNetError, OSError) as exc:
        if args.verbose:
            traceback.print_exc(file=stderr)
        print(f"{prefix}: error: {_one_line(exc)}", file=stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug or an error we did not foresee: still one line, no traceback
        if args.verbose:
            traceback.print_exc(file=stderr)
        hint = "" if args.verbose else " (run with -v for the traceback)"
        print(f"{prefix}: error: {type(exc).__name__}: {_one_line(exc)}{hint}", file=stderr)
        return EXIT_ERROR
    finally:
        logging.getLogger("ensemblenet").removeHandler(handler)
        logging.getLogger("ensemblenet").setLevel(handler.previous_level)  # type: ignore[attr-defined]
        stderr.flush()
        with contextlib.suppress(BrokenPipeError):  # e.g. '| head' closed the pipe early
            stdout.flush()
