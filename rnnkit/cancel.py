"""Cooperative cancellation: whoever asked for a piece of work can stop it between two of its steps.

A thread cannot be stopped from outside in Python, so long loops stop themselves: each step of greedy, sampled
and beam-search decoding, each time step that :func:`rnnkit.diagnostics.diagnose` records and each training step
of :class:`rnnkit.training.Trainer` calls :func:`check`, which raises :class:`Cancelled` once the work's
:class:`CancelToken` has been cancelled. The token is context-local (a :class:`contextvars.ContextVar`), so the
loops take no extra argument and code that runs without a token pays one lookup per step::

    token = CancelToken()
    worker = threading.Thread(target=token.run, args=(model.generate, prompt, 500))
    worker.start()
    token.cancel("the client went away")  # the next step of generate raises Cancelled; the thread ends

``rnnkit serve`` gives every request and every training job a token, and cancels it when the request exceeds
``request_timeout``, when its client disconnects, or when a job is deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

__all__ = ["CancelToken", "Cancelled", "check", "cancellable"]

T = TypeVar("T")


class Cancelled(Exception):  # noqa: N818 (the name says what happened, like asyncio.CancelledError)
    """The work was cancelled through its :class:`CancelToken`; the message says why."""


class CancelToken:
    """A flag that one thread sets and the work running under it (:meth:`run`, :func:`cancellable`) checks."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the work to stop at its next check point (idempotent: the first reason is kept)."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with this token as the current one (in whatever thread calls this)."""
        with cancellable(self):
            return fn(*args, **kwargs)


_current: ContextVar[CancelToken | None] = ContextVar("rnnkit_cancel_token", default=None)


@contextmanager
def cancellable(token: CancelToken) -> Iterator[CancelToken]:
    """Make ``token`` the current token of this context (thread or task) for the duration of the block."""
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)


def check() -> None:
    """Raise :class:`Cancelled` if the current work has been cancelled; otherwise return at once."""
    token = _current.get()
    if token is not None and token.cancelled:
        raise Cancelled(token.reason)
