"""Threads: `current_token()` and `to_thread()`, which waits for the thread it started.

A thread cannot be interrupted; it can only be asked to stop. `to_thread`
hands the blocking function a `CancelToken` (``current_token()`` inside the
thread) that fires when the calling scope is cancelled or the calling task is
cancelled, and then waits, shielded, for the thread to finish, up to
``abandon_after`` seconds. The thread is never silently orphaned: if it has
to be abandoned, the CancelledError says so.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import sys
from asyncio import CancelledError
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _scope
from ._exceptions import CancelledFailure
from ._token import CancelToken, EarlyCallback

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    Ts = TypeVarTuple("Ts")

__all__ = ["current_token", "to_thread"]

T = TypeVar("T")

# The token of the to_thread() call running in this thread: set only in the
# context copy the thread runs in, never in the caller's.
_thread_token: contextvars.ContextVar[CancelToken] = contextvars.ContextVar(
    "cancelscope_thread_token"
)


def current_token() -> CancelToken | None:
    """The `CancelToken` of the current scope (its ``scope.token``), or None outside any scope.

    In a task: the token of its innermost open scope (in a child task that has
    not entered a scope of its own, its handle's: it also fires on
    ``handle.cancel()``). In a thread started by `cancelscope.to_thread`: the
    call's token, which also fires when the caller is cancelled natively. In
    a thread started by ``asyncio.to_thread`` (which copies the context): the
    token of the calling task's current scope. Elsewhere (a thread started
    otherwise, ``loop.run_in_executor``, a loop callback outside any task, as
    for `CancellationScope.current`): None.
    """
    task: asyncio.Task[Any] | None
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread: a worker thread, maybe
        pass
    else:
        if task is None:
            # A loop callback: it may run in a copy of a task's context, but it
            # is in no scope.
            return None
        ts = _scope._get_state(task)
        scope = ts.scope if ts is not None else None
        return scope.token if scope is not None else None
    token = _thread_token.get(None)
    if token is not None:
        return token
    ts = _scope._task_state_var.get(None)
    scope = ts.scope if ts is not None else None
    return scope.token if scope is not None else None


def _check_abandon(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"abandon_after must be a number of seconds or None, not {type(value).__name__}"
        )
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"abandon_after must be >= 0 seconds (or None to wait for the thread), not {value!r}"
        )
    return None if value == math.inf else float(value)


async def to_thread(
    fn: Callable[[Unpack[Ts]], T], /, *args: Unpack[Ts], abandon_after: float | None = None
) -> T:
    """Run ``fn(*args)`` in a worker thread with a token it can honour; return its result.

    Inside the thread ``current_token()`` returns a `CancelToken` that fires
    when the caller is cancelled: its current scope is cancelled (with that
    request's reason and failure), or the task is cancelled natively. Inside
    a shield that a request from outside reached, it does not fire: cleanup
    in a shield runs to its end. In an already cancelled scope the thread is
    not started at all. Cooperative code checks it
    (``raise_if_cancelled()``, ``wait_blocking()``, ``add_callback()``);
    for code that cannot, use ``scope.on_cancel`` to interrupt it.

    When the caller is cancelled, ``to_thread`` does not return until the
    thread has finished, as a scope waits for its children: the wait is
    shielded from scope requests, further native cancels are absorbed into
    the one already raised. ``abandon_after`` (seconds, measured on the
    loop's clock from the cancellation) bounds that wait; past it the thread
    is abandoned (left running, its outcome discarded) and the CancelledError
    raised carries a note saying so. ``None`` waits as long as it takes.

    Outcome after a cancellation: the CancelledError is re-raised (the
    thread's result, or the `CancelledFailure` with which it honoured the
    token, is dropped); if the thread failed with any other exception, that
    exception is raised instead, so no error is lost. The thread runs in the
    loop's default executor with a copy of the caller's context.
    """
    if not callable(fn):
        raise TypeError(f"to_thread() needs a callable, not {type(fn).__name__}")
    limit = _check_abandon(abandon_after)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    ts = _scope._get_state(task) if task is not None else None
    scope = ts.scope if ts is not None else None
    if scope is not None and scope._cancelled_by is not None:
        # Already cancelled: take the CancelledError here, before a thread starts.
        await asyncio.sleep(0)
    token = CancelToken()
    # Told at once, in the cancel() call, when the scope becomes effectively
    # cancelled, and before any on_cancel callback of this scope or one around
    # it (on_cancel(conn.interrupt) must find the thread's token fired: see
    # EarlyCallback). A shield reached from outside is
    # not cancelled: then only the delivery below fires the token.
    key = scope.token._register(EarlyCallback(_follow, scope, token), front=True) if scope else None
    ctx = contextvars.copy_context()
    ctx.run(_thread_token.set, token)

    def call() -> T:
        return ctx.run(fn, *args)

    try:
        fut = loop.run_in_executor(None, call)
        try:
            # asyncio.wait never cancels what it waits for: the thread's
            # future stays ours to wait on after a cancellation.
            await asyncio.wait((fut,))
        except CancelledError as exc:
            # A native cancel, or a shield cancelled after a request from
            # outside had already fired its token: fire it now.
            req = scope._cancelled_by if scope is not None else None
            if req is not None:
                token._fire_request(req)
            else:
                token.cancel("the task awaiting to_thread() was cancelled")
            if not await _wait_for_thread(loop, fut, limit):
                _add_note(
                    exc,
                    f"to_thread(): {_name(fn)} did not finish within abandon_after="
                    f"{abandon_after!r}s of the cancellation; its thread was abandoned and "
                    "may still be running",
                )
                raise
            error = fut.exception()
            if error is not None and not isinstance(error, CancelledFailure):
                raise error from None
            raise
        return fut.result()
    finally:
        if key is not None:
            assert scope is not None
            scope.token._remove(key)


def _follow(scope: _scope.CancellationScope, token: CancelToken) -> None:
    req = scope._cancelled_by
    if req is not None:
        token._fire_request(req)


async def _wait_for_thread(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], limit: float | None
) -> bool:
    """Wait for ``fut`` (shielded, bounded by ``limit``); return whether it finished."""
    end = None if limit is None else loop.time() + limit
    # Without the shield the cancelled scope would interrupt every wait at
    # once (level-triggered) and the task would spin until the thread ends.
    with _scope.CancellationScope(cancellable=False, name="to_thread wait"):
        while not fut.done():
            remaining = None if end is None else end - loop.time()
            if remaining is not None and remaining <= 0:
                break
            try:
                await asyncio.wait((fut,), timeout=remaining)
            except CancelledError:
                # Another native cancel: the caller already has one to raise.
                continue
    if not fut.done():
        # Nobody will read its outcome: do not warn "exception was never retrieved".
        fut.add_done_callback(_consume)
        return False
    return True


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _add_note(exc: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # pragma: no cover - 3.10: exceptiongroup's traceback patch prints __notes__
        notes = getattr(exc, "__notes__", None)
        if notes is None:
            notes = []
            exc.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(note)
