"""Ctrl+C, SIGTERM and a hang-up stop a training run on every Keras backend.

A stopping signal's handler raises ``KeyboardInterrupt`` wherever the main thread is. On the JAX
backend the main thread spends most of a step waiting inside Keras's ``pythonify_logs``, whose bare
``except: pass`` swallows that exception: the run trained on to its last epoch and exited 0, the
signal lost. So while a run trains, each handler also remembers the signal, and a callback raises
it again at the next batch or epoch end, outside any library's ``except``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fervid.fileio import stopping_signals
from fervid.model.backend import keras


class StopWhenAsked(keras.callbacks.Callback):
    """Raises ``KeyboardInterrupt`` at the first batch or epoch end after a stopping signal arrived
    (placed after the checkpoint, so an epoch that has just ended is saved first)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    def _raise_if_asked(self) -> None:
        if self.asked:
            raise KeyboardInterrupt

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._raise_if_asked()

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._raise_if_asked()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._raise_if_asked()


@contextmanager
def stops_remembered(callback: StopWhenAsked) -> Iterator[None]:
    """For the block, each stopping signal that has a Python handler (Ctrl+C's, or the command
    line's for SIGTERM and SIGHUP) is noted in ``callback.asked`` before that handler runs; the
    handlers are put back after. Signals left to the system (SIGTERM outside the command line, which
    ends the process anyway) and threads other than the main one (which cannot set handlers) are left
    as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Callable] = {}
    for number in stopping_signals():
        handler = signal.getsignal(number)
        if callable(handler):
            previous[number] = handler
            signal.signal(number, _remembering(handler, callback.asked))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _remembering(handler: Callable, asked: list[int]) -> Callable:
    def remember(signum: int, frame: object) -> None:
        asked.append(signum)
        handler(signum, frame)

    return remember
