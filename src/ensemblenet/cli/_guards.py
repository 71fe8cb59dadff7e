"""Checks every command passes before it does any work: the device exists, and its outputs are safe.

* ``--device`` (and ``--devices``) must exist on this machine: ``cuda`` without CUDA or ``cuda:3``
  with two GPUs is a one-line error before any file is read or any model built.
* Every output file is checked before training or predicting starts: not an existing folder, not
  one of the command's inputs (``predict -o model.pt`` would overwrite the model), and not an
  existing file unless ``--overwrite`` (``train --resume`` continues its own run, so its model and
  state files may exist).
* Each output gets a lock file next to it (``<output>.lock``, holding the pid, host, command and
  start time) for as long as the command runs, so a second command writing the same output at the
  same time is refused instead of silently losing one result. A lock left by a process that is no
  longer running on this host (killed with SIGKILL, a crash, a power cut) is stale: it is removed
  with a note and the command goes on. A lock from another host cannot be checked and is refused;
  delete it by hand once you know that run is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..api import default_model_path, default_student_path, member_paths
from ..errors import ConfigError
from ..training import resolve_device
from ._console import Console
from ._train import _state_path_for

__all__ = ["add_overwrite_option", "guarded", "lock_path"]


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``, for commands that write files."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist (default: refuse)"
    )


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: ``<output>.lock`` beside it."""
    return output.with_name(output.name + ".lock")


def _outputs(args: argparse.Namespace) -> tuple[list[tuple[Path, str]], list[Path], set[str]]:
    """(output, option) pairs, the inputs they must differ from, and outputs allowed to exist."""
    command = args.command
    models = [Path(m) for m in (getattr(args, "model", None) or getattr(args, "models", None) or [])]
    if command == "train":
        out = Path(args.out) if args.out else default_model_path(args.backbone)
        state = Path(args.state) if args.state else _state_path_for(out)
        inputs = [Path(p) for p in (args.data, args.val, args.weights) if p]
        resumable: set[str] = set()
        if args.resume:
            resumable = {_key(out), _key(state)}  # continuing a run rewrites its own files
            if _key(Path(args.resume)) == _key(out):
                raise ConfigError(
                    f"--out {out} is the state file given to --resume; the model goes to another file "
                    "(the state is normally <out>.state.pt)"
                )
        if _key(out) == _key(state):
            raise ConfigError(f"--out and --state are the same file ({out}); give them different names")
        return [(out, "--out"), (state, "--state")], inputs, resumable
    if command == "train-ensemble":
        out_dir = Path(args.out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"--out-dir {out_dir} is a file, not a folder; choose a folder for the members")
        paths = [*member_paths(args.backbone, out_dir), out_dir / "ensemble.pt"]
        # --resume continues the members of this folder: their models and states may exist.
        resumable = (
            {_key(p) for m in paths for p in (m, _state_path_for(m))}
            if getattr(args, "resume", False)
            else set()
        )
        inputs = [Path(p) for p in (args.data, args.val, args.test) if p]
        return [(p, "--out-dir") for p in paths], inputs, resumable
    if command == "distill":
        out = Path(args.out) if args.out else default_student_path(args.student)
        inputs = models + [Path(p) for p in (args.data, args.val, args.test, args.run) if p]
        outputs = [(out, "--out")] + ([(Path(args.report), "--report")] if args.report else [])
        if args.report and _key(Path(args.report)) == _key(out):
            raise ConfigError(f"--out and --report are the same file ({out}); give them different names")
        return outputs, inputs, set()
    output = getattr(args, "output", None) or getattr(args, "out", None)
    if output is None:
        return [], [], set()
    option = "--output" if command == "predict" else "--out"
    if command == "report" and Path(output).suffix.lower() != ".json":
        option = "--out DIR"  # a report folder: an existing one is replaced only with --overwrite
    inputs = models + [Path(p) for p in getattr(args, "inputs", [])]
    return [(Path(output), option)], inputs, set()


def _key(path: Path) -> str:
    """A path compared by what it points to (two spellings of one file are one output)."""
    return os.path.realpath(os.path.expanduser(path))


def _check_output(
    path: Path, option: str, inputs: Sequence[Path], allowed: set[str], overwrite: bool
) -> None:
    for item in inputs:
        if _key(path) == _key(item) or (path.exists() and item.exists() and os.path.samefile(path, item)):
            raise ConfigError(
                f"{option} {path} is also an input of this command; writing it would destroy that input. "
                "Choose another output file"
            )
    if path.is_dir() and option != "--out DIR":
        raise ConfigError(
            f"{option} {path} is an existing folder; name a file (a new one, or one to replace)"
        )
    if path.exists() and not overwrite and _key(path) not in allowed:
        raise ConfigError(
            f"{option} {path} already exists; pass --overwrite to replace it, or choose another file"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _take_lock(path: Path, command: str, con: Console) -> Path:
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    # Written to a temporary file and hard-linked into place: the lock appears atomically, with its
    # content, or not at all (os.link fails if it exists).
    fd, tmp = tempfile.mkstemp(prefix=f".{lock.name}.", dir=lock.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        for _attempt in range(2):
            try:
                _create(tmp, lock)
                return lock
            except FileExistsError:
                holder = _holder(lock)
                if not _stale(holder):
                    raise ConfigError(
                        f"{path} is being written by another ensemblenet command (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, '{holder.get('command')}', since {holder.get('started')}); "
                        f"wait for it to finish, choose another output, or delete {lock} if that run is gone"
                    ) from None
                con.note(
                    f"ensemblenet: removed a stale lock {lock} (pid {holder.get('pid')} is no longer running)"
                )
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
        raise ConfigError(f"could not take the lock {lock}; another command keeps creating it")
    finally:
        Path(tmp).unlink(missing_ok=True)


def _create(filled: str, lock: Path) -> None:
    """Make ``lock`` a copy of ``filled`` only if it does not exist yet (FileExistsError otherwise)."""
    try:
        os.link(filled, lock)  # atomic, and the lock never exists without its content
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive create, then write
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(Path(filled).read_text(encoding="utf-8"))


def _holder(lock: Path) -> dict[str, Any]:
    try:
        found = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _stale(holder: dict[str, Any]) -> bool:
    """A lock whose process is gone on this host; one from another host is never called stale."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname():
        return False
    return pid != os.getpid() and not _alive(pid)


def _release(lock: Path) -> None:
    if _holder(lock).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


@contextlib.contextmanager
def guarded(args: argparse.Namespace, con: Console) -> Iterator[None]:
    """Check the device and the outputs of the command in ``args``; hold the outputs' locks while
    the command runs."""
    for device in [getattr(args, "device", "auto"), *(getattr(args, "devices", None) or [])]:
        resolve_device(device or "auto")
    outputs, inputs, allowed = _outputs(args)
    held: list[Path] = []
    try:
        for path, _option in outputs:
            held.append(_take_lock(path, f"ensemblenet {args.command}", con))
        for path, option in outputs:
            _check_output(path, option, inputs, allowed, bool(getattr(args, "overwrite", False)))
        yield
    finally:
        for lock in held:
            _release(lock)
