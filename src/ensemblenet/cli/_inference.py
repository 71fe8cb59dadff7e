"""The ``evaluate`` and ``predict`` commands, and the streaming writer of prediction rows."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

from ..data import list_image_files
from ..errors import ConfigError
from ._console import EXIT_OK, Console
from ._loading import _device, _load_ensemble

log = logging.getLogger("ensemblenet.cli")  # the CLI's one logger name, whichever module logs


def _cmd_evaluate(args: argparse.Namespace, con: Console) -> int:
    ensemble = _load_ensemble(args.model, args.strategy, args.weights, args.tta, trust_code=args.trust_code)
    result = ensemble.evaluate(
        str(args.data), batch_size=args.batch_size, device=_device(args), progress=not con.quiet
    )
    con.say(str(result))
    con.result({"command": "evaluate", "models": list(args.model), **result.to_dict()})
    return EXIT_OK


def _expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given; folders searched recursively for image files (sorted)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = list_image_files(path)
            if not found:
                log.warning("no image files under %s", path)
            files.extend(found)
        elif path.exists() or path.is_symlink():  # a broken link gets its "unreadable image" row
            files.append(path)
        else:
            raise FileNotFoundError(2, "no such file or folder", str(path))
    if not files:
        raise ConfigError(f"no image files to predict in {list(inputs)}")
    return files


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(text: str) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP's advice: prefix ``'``)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _RowWriter:
    """Writes prediction rows as they come: CSV, a JSON array (valid once closed) or JSON lines.

    CSV text cells (paths, class names) that a spreadsheet would read as a formula (starting with
    ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) get a leading ``'``; JSON is unchanged.
    """

    def __init__(self, stream: IO[str], fmt: str, classes: Sequence[str]) -> None:
        self.stream, self.fmt, self.classes, self.rows = stream, fmt, list(classes), 0
        if fmt == "csv":
            self.csv = csv.writer(stream, lineterminator="\n")
            self.csv.writerow(["path", "prediction", *map(_csv_text, self.classes), "error"])
        elif fmt == "json":
            stream.write("[")

    def write(self, path: Path, probs: Sequence[float]) -> None:
        bad = any(math.isnan(p) for p in probs)
        pred = None if bad else self.classes[max(range(len(probs)), key=probs.__getitem__)]
        error = "unreadable image" if bad else None
        if self.fmt == "csv":
            cells = ["" if bad else f"{p:.6g}" for p in probs]
            self.csv.writerow([_csv_text(str(path)), _csv_text(pred or ""), *cells, error or ""])
        else:
            row = {
                "path": str(path),
                "prediction": pred,
                "probabilities": None if bad else dict(zip(self.classes, probs, strict=True)),
                "error": error,
            }
            text = json.dumps(row, allow_nan=False)
            if self.fmt == "json":
                self.stream.write(("\n  " if self.rows == 0 else ",\n  ") + text)
            else:
                self.stream.write(text + "\n")
        self.rows += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.rows else "]\n")
        self.stream.flush()


def _chunks(items: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _cmd_predict(args: argparse.Namespace, con: Console) -> int:
    fmt = args.format or ("json" if args.json else "csv")
    ensemble = _load_ensemble(args.model, args.strategy, args.weights, args.tta, trust_code=args.trust_code)
    files = _expand_inputs(args.inputs)
    stream: IO[str]
    stream = open(args.output, "w", encoding="utf-8", newline="") if args.output else con.stdout  # noqa: SIM115
    unreadable = 0
    try:
        writer = _RowWriter(stream, fmt, ensemble.classes)
        with tqdm(total=len(files), desc="predict", unit="img", disable=con.quiet, file=con.stderr) as bar:
            for chunk in _chunks(files, args.batch_size):
                probs = ensemble.predict_proba(
                    chunk, batch_size=args.batch_size, device=_device(args), progress=False
                )
                for path, row in zip(chunk, probs.tolist(), strict=True):
                    writer.write(path, row)
                    unreadable += any(math.isnan(p) for p in row)
                stream.flush()  # streaming: each batch's rows are visible as soon as they are computed
                bar.update(len(chunk))
        writer.close()
    finally:
        if stream is not con.stdout:
            stream.close()
    where = args.output or "stdout"
    con.note(f"predicted {len(files)} image(s), {unreadable} unreadable, written to {where} as {fmt}")
    return EXIT_OK
