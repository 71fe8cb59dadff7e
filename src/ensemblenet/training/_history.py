"""What training returns: one record per epoch (the reference notebook's printout, as data)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ConfigError

__all__ = ["EpochRecord", "History"]


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: ``train_loss`` (mean over the epoch's batches), validation loss and accuracy."""

    epoch: int
    train_loss: float
    val_loss: float = math.nan
    val_accuracy: float = math.nan
    lr: float = math.nan
    seconds: float = math.nan
    train_images: int = 0
    skipped: int = 0

    def get(self, name: str) -> float:
        """A metric by name, with a helpful error for a typo."""
        names = [f.name for f in fields(self)]
        if name not in names:
            raise ConfigError(f"unknown metric {name!r}; an epoch record has {names}")
        return float(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"epoch {self.epoch}: train_loss {self.train_loss:.4f}  val_loss {self.val_loss:.4f}  "
            f"val_acc {self.val_accuracy:.4f}  ({self.seconds:.0f}s)"
        )


@dataclass
class History:
    """The list of :class:`EpochRecord`, plus the files skipped as unreadable."""

    records: list[EpochRecord] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)

    def append(self, record: EpochRecord) -> None:
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> EpochRecord:
        return self.records[i]

    def column(self, name: str) -> list[float]:
        """One metric across epochs, e.g. ``history.column("val_accuracy")``."""
        return [r.get(name) for r in self.records]

    def to_dict(self) -> dict[str, Any]:
        return {"records": [r.to_dict() for r in self.records], "skipped_files": list(self.skipped_files)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls([EpochRecord(**r) for r in data.get("records", [])], list(data.get("skipped_files", [])))

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self.records)
