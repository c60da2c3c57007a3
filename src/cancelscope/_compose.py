"""Promise-style helpers that never orphan work: `gather`, `race`, `first_success`.

Each runs its awaitables as child tasks of one private scope (a child of the
caller's current scope), so whatever happens, nothing outlives the call: the
helper returns or raises only after every awaitable has finished, and a
cancellation of the caller reaches all of them.

How outcomes surface (the same rule for the three):

* The errors the helper must report are collected in order; exactly one is
  raised as it is (``except ValueError`` works), two or more in an
  ``ExceptionGroup`` (``BaseExceptionGroup`` if one is not an ``Exception``).
  So an error is never dropped, not even one raised by a loser's cleanup.
* An awaitable that ends in a CancelledError nobody asked for (it cancelled
  itself) counts as failing with `CancelledFailure`.
* A helper cancelled from outside (an enclosing scope, ``task.cancel()``)
  cancels every awaitable, waits for them, and raises the CancelledError, so
  the enclosing scope reports its own cancellation as usual.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, overload

from ._exceptions import CancelledFailure
from ._scope import CancellationScope

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

__all__ = ["first_success", "gather", "race"]

T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")
T5 = TypeVar("T5")

_MISSING: Any = object()


def _check(what: str, aws: tuple[object, ...], *, empty_ok: bool) -> list[Awaitable[Any]]:
    """Refuse bad arguments before anything starts, closing coroutines we will not run."""
    problem: str | None = None
    for index, aw in enumerate(aws):
        if not inspect.isawaitable(aw):
            problem = (
                f"{what}() takes awaitables (coroutines, tasks, futures); argument {index} "
                f"is {type(aw).__name__}"
            )
            if callable(aw):
                problem += "; did you forget to call it?"
            break
    if problem is None and not aws and not empty_ok:
        problem = f"{what}() needs at least one awaitable"
    if problem is not None:
        for aw in aws:
            if asyncio.iscoroutine(aw):
                aw.close()
        raise (ValueError if not aws else TypeError)(problem)
    return list(aws)  # type: ignore[arg-type]


def _label(aw: object, index: int) -> str:
    name = getattr(aw, "__qualname__", None) or type(aw).__name__
    return f"{name} (awaitable {index})"


def _raise(what: str, errors: list[BaseException]) -> None:
    # Not `from None`: that would overwrite the error's own __cause__.
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BaseExceptionGroup(f"{what}() failed", errors)


class _Call:
    """One helper call: its scope, and what each child reports back."""

    __slots__ = ("decided", "errors", "labels", "scope", "value", "what", "won")

    def __init__(self, what: str, labels: list[str]) -> None:
        self.what = what
        self.labels = labels
        self.scope = CancellationScope(name=what)
        # race / first_success: a winner was chosen (the others are cancelled).
        self.decided = False
        self.won = False  # the winner succeeded (race: it may have failed)
        self.value: Any = _MISSING
        self.errors: list[BaseException | None] = [None] * len(labels)

    @property
    def stopping(self) -> bool:
        """The awaitables are being cancelled: a winner was chosen, or the caller was cancelled.

        An error raised from then on comes from an awaitable's cleanup, and is
        never dropped: it is raised as a failure of the helper's scope.
        """
        return self.decided or self.scope._cancelled_by is not None

    def decide(self, index: int, won: bool, value: Any) -> None:
        self.decided = True
        self.won = won
        self.value = value
        outcome = "finished first" if self.what == "race" else "succeeded first"
        self.scope.cancel(f"{self.labels[index]} {outcome}")

    async def run(
        self,
        aws: list[Awaitable[Any]],
        on_result: Callable[[int, Any], None],
        on_error: Callable[[int, BaseException], None],
    ) -> list[BaseException]:
        """Run every awaitable as a child; return the errors that escaped as failures."""
        scope = self.scope
        try:
            async with scope:
                for index, aw in enumerate(aws):
                    scope.spawn(self._child, index, aw, on_result, on_error,
                                name=self.labels[index])
        except BaseExceptionGroup as group:
            # The body only spawns, so a group here is the scope's: child failures.
            return list(group.exceptions)
        return []

    async def _child(
        self,
        index: int,
        aw: Awaitable[Any],
        on_result: Callable[[int, Any], None],
        on_error: Callable[[int, BaseException], None],
    ) -> None:
        try:
            value = await aw
        except CancelledError as exc:
            if self.scope._cancelled_by is not None:
                raise  # the helper's own cancellation, or one from outside
            failure = CancelledFailure(
                f"{self.labels[index]} of {self.what}() was cancelled by itself"
            )
            failure.__cause__ = exc
            on_error(index, failure)
        except BaseException as exc:
            on_error(index, exc)
        else:
            on_result(index, value)

    async def cancelled(self) -> Any:
        """Nothing won and nothing failed: the caller was cancelled; let it see that."""
        # Level-triggered: the enclosing cancelled scope delivers here.
        await asyncio.sleep(0)
        raise CancelledFailure(f"{self.what}() was cancelled", scope=self.scope)


@overload
def gather() -> Coroutine[Any, Any, tuple[()]]: ...
@overload
def gather(a1: Awaitable[T1], /) -> Coroutine[Any, Any, tuple[T1]]: ...
@overload
def gather(a1: Awaitable[T1], a2: Awaitable[T2], /) -> Coroutine[Any, Any, tuple[T1, T2]]: ...
@overload
def gather(
    a1: Awaitable[T1], a2: Awaitable[T2], a3: Awaitable[T3], /
) -> Coroutine[Any, Any, tuple[T1, T2, T3]]: ...
@overload
def gather(
    a1: Awaitable[T1], a2: Awaitable[T2], a3: Awaitable[T3], a4: Awaitable[T4], /
) -> Coroutine[Any, Any, tuple[T1, T2, T3, T4]]: ...
@overload
def gather(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    a4: Awaitable[T4],
    a5: Awaitable[T5],
    /,
) -> Coroutine[Any, Any, tuple[T1, T2, T3, T4, T5]]: ...
@overload
def gather(*aws: Awaitable[T]) -> Coroutine[Any, Any, tuple[T, ...]]: ...
def gather(*aws: Awaitable[Any]) -> Coroutine[Any, Any, tuple[Any, ...]]:
    """Await every awaitable concurrently; return their results in argument order.

    The first failure cancels the others, and ``gather`` raises only after
    they have all finished (their cleanup included): no zombie work. The
    failure is raised as it is; if more than one awaitable failed (the
    others' cleanup can fail too), all of them in an ``ExceptionGroup``, in
    the order they failed. Cancelled from outside, it cancels them all,
    waits, and raises the CancelledError.

    Arguments are checked at the call, before anything starts (see `_check`).
    """
    return _gather(_check("gather", aws, empty_ok=True))


async def _gather(checked: list[Awaitable[Any]]) -> tuple[Any, ...]:
    call = _Call("gather", [_label(aw, i) for i, aw in enumerate(checked)])
    results: list[Any] = [_MISSING] * len(checked)

    def on_result(index: int, value: Any) -> None:
        results[index] = value

    def on_error(index: int, exc: BaseException) -> None:
        raise exc  # a failure of the scope: the others are cancelled

    _raise("gather", await call.run(checked, on_result, on_error))
    if any(value is _MISSING for value in results):
        return await call.cancelled()  # type: ignore[no-any-return]
    return tuple(results)


def race(*aws: Awaitable[T]) -> Coroutine[Any, Any, T]:
    """Return (or raise) the outcome of the first awaitable to finish; cancel the others.

    Effection's race: the losers are cancelled and awaited before ``race``
    returns, so none is left running. If the winner failed its error is
    raised; an error from a loser's cleanup is raised too (with the winner's
    error, if any, in an ``ExceptionGroup``), never dropped. At least one
    awaitable is required. Cancelled from outside, it cancels them all,
    waits, and raises the CancelledError.

    Arguments are checked at the call, before anything starts (see `_check`).
    """
    return _race(_check("race", aws, empty_ok=False))


async def _race(checked: list[Awaitable[T]]) -> T:
    call = _Call("race", [_label(aw, i) for i, aw in enumerate(checked)])
    winner_error: list[BaseException] = []

    def on_result(index: int, value: Any) -> None:
        if not call.decided:
            call.decide(index, True, value)

    def on_error(index: int, exc: BaseException) -> None:
        if call.stopping:
            raise exc  # a loser's cleanup (or one cancelled with the caller) failed: report it
        winner_error.append(exc)
        call.decide(index, False, None)

    failures = await call.run(checked, on_result, on_error)
    _raise("race", winner_error + failures)
    if call.won:
        return call.value  # type: ignore[no-any-return]
    return await call.cancelled()  # type: ignore[no-any-return]


def first_success(*aws: Awaitable[T]) -> Coroutine[Any, Any, T]:
    """Return the result of the first awaitable to succeed; cancel the others.

    Failures before a success are the competition and are dropped once one
    succeeds (hedged requests: a replica fails, another answers). If every
    awaitable fails, raises an ``ExceptionGroup`` of all their errors in
    argument order (``errors[i]`` is ``aws[i]``'s), even for one awaitable.
    An error from a loser's cleanup after the success, or a non-``Exception``
    (``KeyboardInterrupt``), is raised, never dropped. At least one awaitable
    is required. Cancelled from outside, it cancels them all, waits, and
    raises the CancelledError.

    Arguments are checked at the call, before anything starts (see `_check`).
    """
    return _first_success(_check("first_success", aws, empty_ok=False))


async def _first_success(checked: list[Awaitable[T]]) -> T:
    call = _Call("first_success", [_label(aw, i) for i, aw in enumerate(checked)])

    def on_result(index: int, value: Any) -> None:
        if not call.decided:
            call.decide(index, True, value)

    def on_error(index: int, exc: BaseException) -> None:
        if call.stopping or not isinstance(exc, Exception):
            raise exc  # cleanup after a success or a cancellation, or KeyboardInterrupt
        call.errors[index] = exc

    failures = await call.run(checked, on_result, on_error)
    _raise("first_success", failures)
    if call.won:
        return call.value  # type: ignore[no-any-return]
    errors = [exc for exc in call.errors if exc is not None]
    if len(errors) == len(checked):
        raise BaseExceptionGroup("first_success(): every awaitable failed", errors)
    return await call.cancelled()  # type: ignore[no-any-return]


for _fn in (gather, race, first_success):
    _fn.__module__ = "cancelscope"
del _fn
