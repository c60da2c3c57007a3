"""`retryable`: the predicate retry libraries need so they never retry a cancellation."""

from __future__ import annotations

import sys
from typing import cast

from ._exceptions import is_cancellation

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

__all__ = ["retryable"]


def retryable(exc: BaseException) -> bool:
    """Tell a retry library whether ``exc`` is worth another attempt.

    False for every cancellation: `asyncio.CancelledError`, `CancelledFailure`
    and `TimeoutFailure` (someone asked for the work to stop, or its deadline
    passed), and an exception group with any such leaf. False too for what is
    not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``). True for
    every other ``Exception``, the builtin ``TimeoutError`` (a socket
    timeout, say) included. To retry attempts that hit their own
    ``with_timeout``, say so explicitly, e.g. with tenacity
    ``retry_if_exception(cs.retryable) | retry_if_exception_type(cs.TimeoutFailure)``.

    Use it where the library's default (retry on any ``Exception``) would
    retry a `CancelledFailure`: tenacity ``retry=retry_if_exception(cs.retryable)``,
    stamina ``on=cs.retryable``.
    """
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return all(retryable(leaf) for leaf in group.exceptions)
    return not is_cancellation(exc)


retryable.__module__ = "cancelscope"
