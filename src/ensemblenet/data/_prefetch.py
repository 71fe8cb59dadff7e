"""Decode the next batches on a second thread while the caller computes on the current one.

>>> list(prefetch(iter(range(5))))
[0, 1, 2, 3, 4]

Decoding a JPEG and resizing it (PIL) and running a network (PyTorch, ONNX Runtime) all release
Python's GIL, so a loader iterated on a background thread overlaps with the engine on the main
thread. ``depth`` batches are decoded ahead (memory: ``depth`` extra batches). An exception in the
loader is raised in the caller at the batch where it happened; leaving the loop early (``break``,
an exception in the caller, closing the generator) stops the thread after at most one more batch.
How much of the decode this hides is measured, not assumed: ``benchmarks/engines.py`` prints it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

from ..errors import ConfigError

__all__ = ["prefetch"]

T = TypeVar("T")

_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``iterable`` on a background thread, ``depth`` items ahead; yields them in order."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"prefetch depth must be a positive int (batches decoded ahead), got {depth!r}")
    return _prefetched(iterable, depth)


def _prefetched(iterable: Iterable[T], depth: int) -> Iterator[T]:
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        # A bounded put that gives up when the consumer has gone, so the thread never hangs.
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterable:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))

    worker = threading.Thread(target=produce, name="ensemblenet-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=60)
