"""`cancel_once`: asyncio's one-shot cancellation, for code written for it.

Inside a cancelled scope, cancellation arrives at every suspension point until
the code leaves the scope (SPEC 4). Most code wants exactly that; some third-
party cleanup does not: httpcore, for one, closes a cancelled request's
connection under an anyio shield, which does not hold off cancelscope's
requests (each library's cancellation is foreign to the other), so inside a
cancelled scope the close is itself cancelled and the connection stays open.

`cancel_once` runs such a call in a task of its own, outside the scope tree,
and when the caller is cancelled cancels that task once, as asyncio would,
then waits for it to finish. Nothing is orphaned: the call returns or raises
only after the task is done.
"""

from __future__ import annotations

import asyncio
import inspect
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._exceptions import CancelledFailure
from ._scope import _HAS_COUNTS, CancellationScope, _close_if_coroutine

__all__ = ["cancel_once"]

T = TypeVar("T")


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _not_cancelled_since(caller: asyncio.Task[Any] | None, c0: int) -> bool:
    """No cancel request reached ``caller`` since it counted ``c0`` of them.

    3.10 has no count: a call found done and cancelled when the wait raised is
    taken to have cancelled itself (a caller cancelled in the same loop
    iteration as the call's end then reads as the call's own cancellation).
    """
    if caller is None or not _HAS_COUNTS:
        return True
    return caller.cancelling() <= c0


def _message(exc: BaseException) -> object:
    return exc.args[0] if exc.args else None


def cancel_once(fn: Callable[..., Awaitable[T]], /, *args: Any) -> Coroutine[Any, Any, T]:
    """Await ``fn(*args)`` with asyncio's one-shot cancellation instead of level-triggered.

    ``fn(*args)`` runs in a task of its own. If the caller is not cancelled,
    this returns its result or raises its exception. If the caller is
    cancelled (its scope, a deadline, or ``task.cancel()``), the task is
    cancelled **once**, with the same message, and this waits until it has
    finished (a further native cancel of the caller is passed on, once each),
    then raises the caller's CancelledError (the last native one, if any came
    meanwhile), so the enclosing scope reports its cancellation as usual; if
    the task's cleanup raised an error instead, that error is raised, as it
    would be had the call been awaited directly. A call that cancels itself
    (nobody cancelled the caller) raises `CancelledFailure`, not a bare
    CancelledError into a task that was not cancelled.

    For libraries whose cleanup relies on cancellation arriving once (httpx /
    httpcore close a cancelled request's connection under an anyio shield)::

        response = await cs.cancel_once(client.get, url)

    ``fn`` is called at once, by ``cancel_once`` itself (it is a plain function
    returning the coroutine that does the work); a non-callable, or a function
    that returns no awaitable, raises `TypeError` there and starts nothing.
    """
    fn_obj: object = fn  # callers may pass anything at runtime
    if not callable(fn_obj):
        _close_if_coroutine(fn_obj)
        raise TypeError(
            f"cancel_once() needs a function returning an awaitable, not "
            f"{type(fn_obj).__name__}; pass the function and its arguments: "
            "cancel_once(fn, *args)"
        )
    made: object = fn(*args)
    coro: Coroutine[Any, Any, T]
    if asyncio.iscoroutine(made):
        coro = made
    elif inspect.isawaitable(made):
        coro = _await(made)
    else:
        raise TypeError(
            f"cancel_once() needs a function returning an awaitable: {fn!r} returned "
            f"{type(made).__name__}"
        )
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return _cancel_once(coro, f"cancel_once({name})")


async def _cancel_once(coro: Coroutine[Any, Any, T], name: str) -> T:
    loop = asyncio.get_running_loop()
    caller = asyncio.current_task()
    # Cancel requests of the caller so far (3.11+): one more, when the wait
    # below raises, tells a cancelled caller from a call that cancelled itself.
    c0 = caller.cancelling() if caller is not None and _HAS_COUNTS else 0
    task = loop.create_task(coro, name=name)
    try:
        return await asyncio.shield(task)
    except CancelledError as exc:
        cancelled: CancelledError = exc
    if task.done() and task.cancelled() and _not_cancelled_since(caller, c0):
        # The shield passes on the call's own cancellation; nobody asked for it.
        failure = CancelledFailure(f"{name} was cancelled by itself")
        failure.__cause__ = cancelled
        del cancelled  # (the error's traceback holds this frame: no cycle)
        raise failure
    try:
        task.cancel(_message(cancelled))
        # Our own deliveries would only interrupt this wait: it is not a
        # suspension point of the work, just the wait for its end.
        async with CancellationScope(cancellable=False, name="cancel_once wait"):
            while not task.done():
                try:
                    await asyncio.wait((task,))
                except CancelledError as again:
                    # A native cancel of the caller (a scope's request is held
                    # off here): asyncio's semantics, passed on once. It is the
                    # one raised at the end, so that it reaches its owner (3.10
                    # judges ownership by the error itself).
                    task.cancel(_message(again))
                    cancelled = again
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error
        raise cancelled
    finally:
        del cancelled
