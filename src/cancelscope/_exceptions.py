"""The exceptions a scope raises at its boundary, and the `is_cancellation` test."""

from __future__ import annotations

import asyncio
import math
import sys
from typing import TYPE_CHECKING, Any, cast, final

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._scope import CancellationScope

__all__ = ["CancelledFailure", "TimeoutFailure", "is_cancellation"]


class CancelledFailure(Exception):
    """A scope's own cancellation, reported at the scope's boundary.

    Inside a cancelled scope, cancellation arrives as `asyncio.CancelledError`.
    When that error reaches the boundary of the scope that requested it, the
    scope absorbs it and raises `CancelledFailure` instead (chained with
    ``__cause__`` set to the absorbed error), so callers can tell "this work
    was cancelled on purpose" apart from "this task is being cancelled".

    ``reason`` is the reason given to `CancellationScope.cancel` (``None`` if
    none was given) and ``scope`` the scope whose cancellation it reports.
    """

    reason: str | None
    scope: CancellationScope | None

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        scope: CancellationScope | None = None,
    ) -> None:
        # (make_cancelled_failure builds the same: keep the two in step.)
        super().__init__(message if message is not None else (reason or "cancelled"))
        self.reason = reason
        self.scope = scope

    def __reduce__(self) -> tuple[Any, ...]:
        # The scope is tied to a running loop and cannot travel; keep the rest.
        return (type(self), self.args, {"reason": self.reason, "scope": None})


@final
class TimeoutFailure(CancelledFailure, TimeoutError):
    """A scope's deadline passed: a `CancelledFailure` that is also a `TimeoutError`.

    ``deadline`` is the scope's deadline (in `loop.time()` terms) when it expired.
    """

    # Slots, not the instance dictionary: one is made per fired timeout, and
    # on 3.13 the three attribute writes into a fresh exception dictionary
    # cost about 1.7k instructions more. (Possible here and not on
    # CancelledFailure: OSError's layout, extended, is this class's base;
    # slots on CancelledFailure would conflict with it.) Other attributes
    # still go in the dictionary every exception has.
    __slots__ = ("deadline", "reason", "scope")

    deadline: float

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        scope: CancellationScope | None = None,
        deadline: float = math.inf,
    ) -> None:
        # CancelledFailure.__init__, inlined. (make_timeout_failure builds the
        # same: keep the two in step.)
        TimeoutError.__init__(self, message if message is not None else (reason or "cancelled"))
        self.reason = reason
        self.scope = scope
        self.deadline = deadline

    def __str__(self) -> str:
        # OSError formats its own args; keep the plain message.
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            self.args,
            {"reason": self.reason, "scope": None, "deadline": self.deadline},
        )


# The constructors below build what `CancelledFailure(...)` and
# `TimeoutFailure(...)` build, without calling the Python ``__init__`` through
# the type (about 7.7 k instructions for a TimeoutFailure on 3.13, 4.6 k this
# way): the library makes one per cancelled scope that reports, fired timeout,
# cancelled child awaited. (CancelledFailure's BaseException.__new__ sets
# ``args``; an OSError subclass with its own ``__init__`` leaves that to
# OSError's ``__init__``.)
_exception_new = Exception.__new__
_os_error_new = TimeoutError.__new__
_timeout_error_init = TimeoutError.__init__


def make_cancelled_failure(
    message: str, reason: str | None, scope: CancellationScope | None
) -> CancelledFailure:
    """``CancelledFailure(message, reason=reason, scope=scope)``, faster."""
    failure: CancelledFailure = _exception_new(CancelledFailure, message)
    failure.reason = reason
    failure.scope = scope
    return failure


def make_timeout_failure(
    message: str, reason: str | None, scope: CancellationScope | None, deadline: float
) -> TimeoutFailure:
    """``TimeoutFailure(message, reason=reason, scope=scope, deadline=deadline)``, faster."""
    failure: TimeoutFailure = _os_error_new(TimeoutFailure)
    _timeout_error_init(failure, message)
    failure.reason = reason
    failure.scope = scope
    failure.deadline = deadline
    return failure


def is_cancellation(exc: BaseException | None) -> bool:
    """Tell whether ``exc`` reports a cancellation rather than an error.

    True for `asyncio.CancelledError`, `CancelledFailure` (and so
    `TimeoutFailure`), and an exception group all of whose leaves are
    cancellations. False for everything else, including the builtin
    `TimeoutError` and `KeyboardInterrupt`.
    """
    if isinstance(exc, (asyncio.CancelledError, CancelledFailure)):
        return True
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return all(is_cancellation(e) for e in group.exceptions)
    return False


CancelledFailure.__module__ = "cancelscope"
TimeoutFailure.__module__ = "cancelscope"
