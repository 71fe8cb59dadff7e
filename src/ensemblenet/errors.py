"""Every error ensemblenet raises on purpose, in one tree.

::

    EnsembleNetError
    ├── UnknownNameError (KeyError)        a name not in a registry; suggests close matches
    ├── DuplicateNameError (ValueError)    registering a name twice
    ├── MissingDependencyError (ImportError)  an optional package is not installed
    ├── ConfigError (ValueError)           a setting out of range or of the wrong type
    │   └── QuantizationError              int8 that loses more accuracy than allowed here
    ├── WeightsError (ValueError)          a weights file that does not fit the architecture
    │   └── WeightsUnavailableError        weights that cannot be downloaded (offline)
    ├── DataError (ValueError)             an empty or unusable image folder / split
    ├── ClassMismatchError (ValueError)    members or splits whose class names differ
    ├── CheckpointError (ValueError)       an unreadable, foreign or tampered checkpoint
    └── TrainingError (RuntimeError)       training cannot go on (e.g. a non-finite loss)

Each message names the bad value, the valid options and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ClassMismatchError",
    "ConfigError",
    "DataError",
    "DuplicateNameError",
    "EnsembleNetError",
    "MissingDependencyError",
    "QuantizationError",
    "TrainingError",
    "UnknownNameError",
    "WeightsError",
    "WeightsUnavailableError",
    "close_matches",
]


class EnsembleNetError(Exception):
    """Base class of every error raised on purpose by ensemblenet."""


class UnknownNameError(EnsembleNetError, KeyError):
    """A name that is not registered. The message lists close matches and all options."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(EnsembleNetError, ValueError):
    """A name registered twice in the same registry."""


class MissingDependencyError(EnsembleNetError, ImportError):
    """An optional dependency is needed for what was asked; the message says what to install."""


class ConfigError(EnsembleNetError, ValueError):
    """A setting with a value outside its valid range or of the wrong type."""


class QuantizationError(ConfigError):
    """An int8 engine refused: on held-out images it loses more accuracy than its stated tolerance."""


class WeightsError(EnsembleNetError, ValueError):
    """A weights file that cannot be loaded into the requested architecture."""


class WeightsUnavailableError(WeightsError):
    """Pretrained weights that cannot be obtained here, typically because there is no network."""


class DataError(EnsembleNetError, ValueError):
    """An image folder or split that cannot be used (empty, a single class, no images...)."""


class ClassMismatchError(EnsembleNetError, ValueError):
    """Class names that differ between members of an ensemble or between data splits."""


class CheckpointError(EnsembleNetError, ValueError):
    """A checkpoint that is unreadable, not an ensemblenet file, of an unknown version or tampered."""


class TrainingError(EnsembleNetError, RuntimeError):
    """Training cannot continue, for example because the loss became NaN or infinite."""


def close_matches(name: str, options: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` options that look like ``name`` (for 'did you mean' hints)."""
    opts = list(options)
    lowered = {o.lower(): o for o in opts}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    # Substring matches catch 'resnet' -> 'resnet18' that difflib scores too low.
    subs = [o for o in opts if name.lower() in o.lower() and o not in hits]
    return ([lowered[h] for h in hits] + subs)[:n]


def unknown_name_message(kind: str, name: str, options: Iterable[str], fix: str = "") -> str:
    """Build the standard message for an unknown ``name`` of some ``kind``."""
    opts = sorted(options)
    parts = [f"unknown {kind}: {name!r}."]
    near = close_matches(name, opts)
    if near:
        parts.append("Did you mean " + " or ".join(repr(m) for m in near) + "?")
    shown = ", ".join(repr(o) for o in opts[:30]) + (" ..." if len(opts) > 30 else "")
    parts.append(f"Valid options: {shown}.")
    if fix:
        parts.append(fix)
    return " ".join(parts)
