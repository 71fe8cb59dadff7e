"""Output and argument helpers shared by every command: exit codes, the Console, one-line errors."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import IO, Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandInterrupted(Exception):
    """Ctrl-C during a command; the message says what was kept and how to go on."""


class Console:
    """Where a command's human text, JSON document and progress bars go."""

    def __init__(self, args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> None:
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False))
        self.stdout, self.stderr = stdout, stderr

    def say(self, text: str) -> None:
        """Human-readable result (stdout), unless --json (--quiet keeps results, drops chatter)."""
        if not self.json:
            print(text, file=self.stdout)

    def note(self, text: str) -> None:
        """A side remark (stderr), unless --quiet."""
        if not self.quiet:
            print(text, file=self.stderr)

    def result(self, document: dict[str, Any]) -> None:
        """The machine-readable result (stdout), with --json only."""
        if self.json:
            print(json.dumps(_jsonable(document), indent=2, allow_nan=False), file=self.stdout)


def _jsonable(value: Any) -> Any:
    """NaN/inf become null and paths/tuples plain JSON types, so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text += f": {exc.filename}"
    return text


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _weights_arg(text: str) -> str | None:
    return None if text.lower() in ("none", "random") else text
