"""Member probabilities computed once per image list, reused by the next call that asks again.

Combining on validation, reporting on test and distilling afterwards each run every member over the
same files; on 2 CPU cores and 3,690 images that is minutes per member and call. An ensemble that
keeps a :class:`ProbaMemo` (``Ensemble.reuse_predictions()``) answers a repeated call from memory.

A stored result is found only for the same member object **with the same weights** (every tensor's
storage and in-place version counter: an optimizer step or ``load_state_dict`` changes it), the same
files in the same order, the same test-time views and the same engine. Files are assumed not to
change on disk while the ensemble lives; call :meth:`ProbaMemo.clear` if they do. Tensors and PIL
images given directly are never stored (there is no cheap identity for their contents).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import nn

__all__ = ["ProbaMemo"]


class ProbaMemo:
    """A store of ``(N, C)`` member probabilities, keyed as the module docstring says."""

    def __init__(self) -> None:
        self._store: dict[Hashable, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(
        member: nn.Module, sources: Sequence[object] | None, views: Hashable, engine: str
    ) -> Hashable | None:
        """The key of ``member``'s probabilities on the files ``sources`` (None: not storable)."""
        if sources is None:
            return None
        weights = tuple((t.data_ptr(), t._version) for t in member.state_dict().values())
        return (id(member), weights, tuple(str(s) for s in sources), views, engine)

    def get(self, key: Hashable | None) -> torch.Tensor | None:
        return None if key is None else self._store.get(key)

    def put(self, key: Hashable | None, probs: torch.Tensor) -> None:
        if key is not None:
            self._store[key] = probs.clone()

    def clear(self) -> None:
        """Forget every stored result."""
        self._store.clear()
