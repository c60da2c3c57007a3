"""`CancelToken`: a thread-safe cancellation signal (the AbortSignal of cancelscope).

A token is a one-shot flag with a reason, callbacks and waiters. It is not
bound to any event loop or thread: ``cancel()`` may be called from anywhere,
callbacks run synchronously in the thread that fired the token, and
``await token.wait()`` hands the wake-up to the waiter's own loop with
``call_soon_threadsafe`` (no polling).

Scopes link to tokens in both directions (see ``_scope.py``):
``CancellationScope(token=t)`` is cancelled when ``t`` fires, and
``scope.token`` fires when a cancel request reaches the scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import sys
import threading
import time
import traceback
import types
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, final

from ._exceptions import CancelledFailure, TimeoutFailure

if TYPE_CHECKING:
    from ._scope import _Request

__all__ = ["CancelToken"]


def _noop() -> None:
    pass


def _call_each(calls: Iterable[Callable[[], object]]) -> None:
    """Call each of ``calls``; a `BaseException` (KeyboardInterrupt, SystemExit) from one
    does not stop the others: the first is raised once all have run."""
    interrupt: BaseException | None = None
    for call in calls:
        try:
            call()
        except BaseException as exc:
            if interrupt is None:
                interrupt = exc
    if interrupt is not None:
        try:
            raise interrupt
        finally:
            del interrupt


class EarlyCallback(partial[Any]):
    """A library callback that runs before the user callbacks of every token fired with it.

    When a request fires the tokens of several nested scopes (`_scope._fire_tokens`),
    ``to_thread`` must have fired the thread's own token before any ``on_cancel``
    callback, of whichever scope, wakes that thread.
    """

    __slots__ = ()


def _report(exc: BaseException, message: str, source: object) -> None:
    """Report an exception raised by a callback without letting it break the firing.

    In a thread running an event loop, through the loop's exception handler
    (as asyncio does for failing callbacks); elsewhere through
    ``sys.unraisablehook`` (as Python does for failing weakref callbacks).
    """
    loop = asyncio._get_running_loop()
    if loop is not None:
        loop.call_exception_handler({"message": message, "exception": exc, "token": source})
        return
    hook: Any = sys.unraisablehook
    if hook is sys.__unraisablehook__:
        # The default hook (in C) takes only the interpreter's own argument
        # type, which Python code cannot make: write what it would write.
        with contextlib.suppress(Exception):  # no stderr left (interpreter exit)
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            sys.stderr.write(f"{message}: {source!r}\n{text}")
            sys.stderr.flush()
        return
    # A hook set by the application or a test runner: written in Python, it
    # takes any object with these attributes.
    with contextlib.suppress(Exception):  # as the interpreter does with a failing hook
        hook(
            types.SimpleNamespace(
                exc_type=type(exc),
                exc_value=exc,
                exc_traceback=exc.__traceback__,
                err_msg=message,
                object=source,
            )
        )


@final
class CancelToken:
    """A thread-safe, one-shot cancellation signal: AbortController and AbortSignal in one.

    ``cancel(reason)`` fires it (from any thread; the first reason wins).
    Code checks ``cancelled``, calls ``raise_if_cancelled()``, registers
    ``add_callback(fn)``, or waits: ``await token.wait()`` in async code (any
    loop), ``token.wait_blocking(timeout)`` in a thread.

    ``CancelToken.any(*tokens)`` fires when any of ``tokens`` does;
    ``CancelToken.after(seconds)`` fires by itself after ``seconds`` on
    ``time.monotonic()``. Link a token to a scope with
    ``CancellationScope(token=t)`` (the scope is cancelled when ``t`` fires),
    and read ``scope.token`` for a token that fires when the scope is cancelled.
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_cancelled",
        "_deadline",
        "_event",
        "_forwards",
        "_lock",
        "_reason",
        "_request",
        "_timer",
    )

    def __init__(self) -> None:
        # Guards every field below; re-entrant because a garbage-collected
        # CancelToken.any() result unregisters itself from its sources from
        # a weakref callback, which may run while this thread holds the lock.
        self._lock = threading.RLock()
        # Invariant: never turns False again once True.
        self._cancelled = False
        self._reason: str | None = None
        # The scope request that fired the token (for scope.token), so the
        # failure it raises is the scope's own (CancelledFailure or TimeoutFailure).
        self._request: _Request | None = None
        # time.monotonic() deadline of a timeout token; fires as a TimeoutFailure.
        self._deadline: float | None = None
        # Registered callbacks by key, in registration order; None once fired.
        self._callbacks: dict[object, Callable[[], object]] | None = {}
        # Created on the first wait_blocking(); set when the token fires.
        self._event: threading.Event | None = None
        # A timeout token's pending timer entry.
        self._timer: list[Any] | None = None
        # For a CancelToken.any() result: the forwarders registered on its sources.
        self._forwards: list[_Forward] | None = None

    # ------------------------------------------------------------------ state

    @property
    def cancelled(self) -> bool:
        """True once the token has fired. Never turns False again."""
        return self._cancelled

    @property
    def reason(self) -> str | None:
        """The reason the token fired with (None before, or if none was given)."""
        return self._reason

    def cancel(self, reason: str | None = None) -> None:
        """Fire the token: idempotent, the first call's reason wins; safe from any thread.

        Callbacks run synchronously in the calling thread, in registration
        order; an exception in one is reported (the event loop's exception
        handler in a loop thread, ``sys.unraisablehook`` elsewhere) and the
        others still run.
        """
        self._fire(reason, None, None)

    def raise_if_cancelled(self) -> None:
        """Raise `CancelledFailure` if the token has fired; do nothing otherwise.

        It is a `TimeoutFailure` (also a ``TimeoutError``) when a timeout fired
        the token, and for ``scope.token`` the very failure the scope's
        request describes (``.scope`` the scope where it originated).
        `CancelledFailure` is an ``Exception``, so it works the same in a
        thread as in a task: `to_thread` recognises it as the thread honouring
        the cancellation.
        """
        if self._cancelled:
            raise self._failure()

    def _failure(self) -> CancelledFailure:
        req = self._request
        if req is not None:
            failure = req.failure()
            origin = failure.scope
            if origin is not None and origin._hidden:
                # handle.cancel(): report the scope the child belongs to, as
                # the handle does; the per-child scope stays invisible.
                failure.scope = origin._parent
            return failure
        if self._deadline is not None:
            return TimeoutFailure(
                "cancel token timed out (deadline exceeded)",
                reason=self._reason,
                deadline=self._deadline,
            )
        text = "cancel token was cancelled"
        if self._reason is not None:
            text += f": {self._reason}"
        return CancelledFailure(text, reason=self._reason)

    # ------------------------------------------------------------------ callbacks

    def add_callback(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` when the token fires; return a function that unregisters it.

        If the token has already fired, ``callback`` runs at once, here. The
        callback runs in the thread that fires the token (the loop's thread
        for ``scope.token``); an exception in it is reported and does not stop
        the other callbacks. Calling the remover after the callback ran, or
        twice, does nothing.
        """
        if not callable(callback):
            raise TypeError(
                f"add_callback() needs a callable taking no arguments, not "
                f"{type(callback).__name__}"
            )
        key = self._register(callback)
        return _noop if key is None else partial(self._remove, key)

    def _register(self, callback: Callable[[], object], front: bool = False) -> object | None:
        """Register ``callback`` and return its key; or run it now and return None.

        ``front`` puts it before the callbacks already registered.
        """
        key = object()
        with self._lock:
            callbacks = self._callbacks
            if callbacks is not None:
                first = not callbacks
                if front and callbacks:
                    callbacks = self._callbacks = {key: callback, **callbacks}
                else:
                    callbacks[key] = callback
                if first and self._forwards:
                    self._observed(True)
                return key
        self._run_callback(callback)
        return None

    def _remove(self, key: object) -> None:
        with self._lock:
            callbacks = self._callbacks
            if (
                callbacks is not None
                and callbacks.pop(key, None) is not None
                and not callbacks
                and self._forwards
            ):
                self._observed(False)

    def _run_callback(self, callback: Callable[[], object]) -> None:
        try:
            callback()
        except Exception as exc:
            _report(exc, f"exception in a callback of {self!r}: {callback!r}", self)

    # ------------------------------------------------------------------ firing

    def _fire(
        self, reason: str | None, request: _Request | None, deadline: float | None
    ) -> None:
        callbacks = self._claim(reason, request, deadline)
        if callbacks:
            run = self._run_callback
            _call_each([partial(run, callback) for callback in callbacks])

    def _claim(
        self, reason: str | None, request: _Request | None, deadline: float | None
    ) -> list[Callable[[], object]]:
        """Mark the token fired and wake its waiters; return the callbacks to run.

        Empty if it had fired already. `_fire` runs them; firing several
        tokens at once (`_scope._fire_tokens`) claims all of them first, then
        runs every token's `EarlyCallback` callbacks before any other.
        """
        with self._lock:
            if self._cancelled:
                return []
            self._reason = reason
            self._request = request
            if deadline is not None:
                self._deadline = deadline
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, None
            event = self._event
            timer, self._timer = self._timer, None
            forwards, self._forwards = self._forwards, None
        if event is not None:
            event.set()
        if timer is not None:
            _timers.discard(timer)
        for forward in forwards or ():
            forward.detach()
        return list(callbacks.values()) if callbacks else []

    def _adopt(self, source: CancelToken) -> None:
        """Fire with ``source``'s reason and failure (``source`` has fired)."""
        self._fire(source._reason, source._request, source._deadline)

    def _fire_request(self, req: _Request) -> None:
        self._fire(req.reason, req, None)

    # ------------------------------------------------------------------ waiting

    async def wait(self) -> None:
        """Wait until the token fires (returns at once if it has).

        Works in any event loop and from any thread's loop: the firing thread
        wakes this loop with ``call_soon_threadsafe``. Cancelling the waiting
        task only stops the wait.
        """
        if self._cancelled:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        remove = self.add_callback(partial(_wake_threadsafe, loop, fut))
        try:
            await fut
        finally:
            remove()

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """Block the calling thread until the token fires or ``timeout`` seconds pass.

        Returns ``cancelled`` (as ``threading.Event.wait`` does). For threads:
        in a coroutine use ``await token.wait()``, which does not block the loop.
        """
        if self.cancelled:  # the property: mypy must not narrow the field
            return True
        with self._lock:
            if self._cancelled:
                return True
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        return event.wait(timeout)

    # ------------------------------------------------------------------ combinators

    @classmethod
    def any(cls, *tokens: CancelToken) -> CancelToken:
        """A token that fires when any of ``tokens`` fires, with that token's reason.

        Already fired if one of them has (the first in argument order gives
        the reason); never fires for no tokens. The sources hold the result
        weakly while nothing waits on it (no callback, waiter or linked scope),
        so deriving short-lived tokens from a long-lived one leaks nothing;
        once it fires, or is garbage-collected, it unregisters from its sources.
        """
        for token in tokens:
            obj: object = token  # callers may pass anything at runtime
            if not isinstance(obj, CancelToken):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise TypeError(
                    f"CancelToken.any() takes CancelToken objects, not {type(obj).__name__}"
                )
        combined = cls()
        for token in tokens:
            if token._cancelled:
                combined._adopt(token)
                return combined
        forwards: list[_Forward] = []
        combined._forwards = forwards
        for token in tokens:
            forward = _Forward(combined, token)
            forwards.append(forward)
            forward.attach(token)
            if combined._cancelled:
                break
        if not combined._cancelled:
            weakref.finalize(combined, _detach_all, forwards)
        return combined

    def _observed(self, strong: bool) -> None:
        """A CancelToken.any() result gained its first, or lost its last, callback."""
        for forward in self._forwards or ():
            forward.strong = self if strong else None

    @classmethod
    def after(cls, seconds: float | None, reason: str | None = "deadline exceeded") -> CancelToken:
        """A token that fires by itself ``seconds`` from now, measured on ``time.monotonic()``.

        The clock is ``time.monotonic()`` (which the default event loop's
        ``loop.time()`` also uses) and the timer runs in one shared
        background thread, so the token works without an event loop and
        outlives any. ``seconds <= 0`` gives a token already fired; ``None``
        or ``math.inf`` one that never times out; NaN raises `ValueError`.
        Its `raise_if_cancelled()` raises `TimeoutFailure`; a scope linked to
        it reports `TimeoutFailure` too. Cancelling it early drops the timer.
        """
        _check_seconds(seconds)
        if seconds is not None and math.isnan(seconds):
            raise ValueError("seconds is NaN; pass a number, or None / math.inf for no timeout")
        token = cls()
        if seconds is None or seconds == math.inf:
            return token
        when = time.monotonic() + seconds
        if seconds <= 0:
            token._fire(reason, None, when)
        else:
            _timers.add(token, when, reason)
        return token

    def __repr__(self) -> str:
        if not self._cancelled:
            return f"<CancelToken pending at {id(self):#x}>"
        return f"<CancelToken cancelled reason={self._reason!r} at {id(self):#x}>"

    # A token is one signal: copying it would split it in two.
    def __copy__(self) -> CancelToken:
        raise TypeError("CancelToken cannot be copied; share the same token instead")

    def __deepcopy__(self, memo: object) -> CancelToken:
        raise TypeError("CancelToken cannot be copied; share the same token instead")

    def __reduce__(self) -> Any:
        raise TypeError("CancelToken cannot be pickled: it is tied to this process")


CancelToken.__module__ = "cancelscope"


def _check_seconds(value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"seconds must be a number or None, not {type(value).__name__}")


def _wake_threadsafe(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    if loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):  # closed meanwhile: nobody is left to wake
        loop.call_soon_threadsafe(_set_none, fut)


def _set_none(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Forward:
    """Registered on one source of a CancelToken.any() result: fires the result.

    It holds both the result and the source weakly (the source holds it), so
    no reference cycle forms.
    """

    __slots__ = ("key", "source", "strong", "target")

    def __init__(self, target: CancelToken, source: CancelToken) -> None:
        self.target = weakref.ref(target)
        self.source = weakref.ref(source)
        # The result itself while it has callbacks (somebody is waiting on
        # it even if nobody else holds it); None otherwise.
        self.strong: CancelToken | None = None
        self.key: object | None = None

    def attach(self, source: CancelToken) -> None:
        key = self.key = source._register(self)
        if key is not None:
            target = self.target()
            if target is None or target._cancelled:
                # The result fired (another source, from another thread) while
                # this was registering: its detach could not see the key yet.
                self.detach()

    def detach(self) -> None:
        key, self.key = self.key, None
        source = self.source()
        if key is not None and source is not None:
            source._remove(key)

    def __call__(self) -> None:
        target = self.strong or self.target()
        source = self.source()
        if target is not None and source is not None:
            target._adopt(source)


def _detach_all(forwards: list[_Forward]) -> None:
    for forward in forwards:
        forward.detach()


# --------------------------------------------------------------------------- timers


class _Timers:
    """One daemon thread firing the timeout tokens, on ``time.monotonic()``.

    Entries are ``[when, seq, token, reason]`` lists on a heap; discarding one
    blanks its token (lazy deletion) and the heap is rebuilt when most of it
    is blank, so tokens cancelled early leave nothing behind for long.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[list[Any]] = []
        self._seq = itertools.count()
        self._blank = 0
        self._thread: threading.Thread | None = None

    def add(self, token: CancelToken, when: float, reason: str | None) -> None:
        entry: list[Any] = [when, next(self._seq), token, reason]
        with self._cond:
            token._timer = entry
            heapq.heappush(self._heap, entry)
            thread = self._thread
            if thread is None or not thread.is_alive():
                thread = self._thread = threading.Thread(
                    target=self._run, name="cancelscope-timers", daemon=True
                )
                thread.start()
            if self._heap[0] is entry:
                self._cond.notify()

    def discard(self, entry: list[Any]) -> None:
        with self._cond:
            if entry[2] is None:
                return
            entry[2] = None
            self._blank += 1
            if self._blank > 32 and self._blank * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2] is not None]
                heapq.heapify(self._heap)
                self._blank = 0

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                heap = self._heap
                while heap and heap[0][2] is None:
                    heapq.heappop(heap)
                    self._blank -= 1
                if not heap:
                    cond.wait()
                    continue
                when = heap[0][0]
                delay = when - time.monotonic()
                if delay > 0:
                    # Clamped: Condition.wait refuses timeouts past TIMEOUT_MAX.
                    cond.wait(min(delay, threading.TIMEOUT_MAX))
                    continue
                entry = heapq.heappop(heap)
                token: CancelToken = entry[2]
                entry[2] = None
            with token._lock:
                if token._timer is entry:
                    token._timer = None
            try:
                token._fire(entry[3], None, when)
            except BaseException as exc:
                # A KeyboardInterrupt/SystemExit from a callback (the others
                # are reported by _fire): there is nobody here to raise it to,
                # and this thread must go on firing the other tokens.
                _report(exc, f"exception in a callback of {token!r}, fired by its timer", token)


_timers = _Timers()
