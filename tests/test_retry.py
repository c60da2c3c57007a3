"""Retry safety: tenacity and stamina never retry a cancellation, timeouts only when told."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import stamina
import tenacity
from tenacity import retry_if_exception, retry_if_exception_type, stop_after_attempt

import cancelscope as cs

from ._helpers import BaseExceptionGroup, ExceptionGroup, forever


def _failure(cls: type[cs.CancelledFailure] = cs.CancelledFailure) -> cs.CancelledFailure:
    return cls("scope 'x' was cancelled", reason="r")


# --------------------------------------------------------------------------- retryable()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("x"), True),
        (ConnectionError("x"), True),
        (TimeoutError("socket"), True),
        (ExceptionGroup("g", [ValueError(), OSError()]), True),
        (asyncio.CancelledError(), False),
        (_failure(), False),
        (_failure(cs.TimeoutFailure), False),
        (ExceptionGroup("g", [ValueError(), _failure()]), False),
        (BaseExceptionGroup("g", [ValueError(), asyncio.CancelledError()]), False),
        (KeyboardInterrupt(), False),
        (SystemExit(), False),
    ],
)
def test_retryable(exc: BaseException, expected: bool) -> None:
    """retryable() is False for cancellations (any leaf) and non-Exceptions, True otherwise."""
    assert cs.retryable(exc) is expected


# --------------------------------------------------------------------------- helpers


class Attempts:
    """An operation that counts its attempts and does what it is told each time.

    ``op.run`` is a real coroutine function: stamina (like most decorators)
    recognises async callables by ``inspect.iscoroutinefunction``.
    """

    def __init__(self, action: Callable[[], Awaitable[Any]]) -> None:
        self.count = 0
        self._action = action

    async def run(self) -> Any:
        self.count += 1
        return await self._action()


async def _cancelled_inside() -> None:
    """A sub-operation inside the attempt was cancelled on purpose: CancelledFailure escapes."""
    async with cs.cancellable() as scope:
        scope.cancel("sub-operation cancelled")
        await asyncio.sleep(0)


async def _attempt_timeout() -> None:
    """The attempt's own with_timeout expires: TimeoutFailure."""
    async with cs.with_timeout(1):
        await forever()


# --------------------------------------------------------------------------- tenacity


@pytest.mark.asyncio
async def test_tenacity_default_never_retries_a_foreign_cancellation() -> None:
    """Default tenacity retry (on Exception) lets an outer scope's cancellation through at once."""
    started = asyncio.Event()
    op = Attempts(lambda: forever(started))
    retrying = tenacity.retry(stop=stop_after_attempt(5))(op.run)

    async with cs.move_on_after(None) as outer:

        async def cancel() -> None:
            await started.wait()
            outer.cancel("request abandoned")

        outer.spawn(cancel)
        await retrying()
    assert outer.cancelled_caught
    assert op.count == 1


@pytest.mark.asyncio
async def test_tenacity_never_retries_a_native_cancel() -> None:
    """task.cancel() on a tenacity retry loop ends it after one attempt."""
    started = asyncio.Event()
    op = Attempts(lambda: forever(started))
    task = asyncio.create_task(tenacity.retry(stop=stop_after_attempt(5))(op.run)())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert op.count == 1


@pytest.mark.asyncio
async def test_tenacity_default_would_retry_cancelled_failure_retryable_stops_it() -> None:
    """Default tenacity retries a CancelledFailure (an Exception); retryable() stops that."""
    naive = Attempts(_cancelled_inside)
    with pytest.raises(tenacity.RetryError):
        await tenacity.retry(stop=stop_after_attempt(3))(naive.run)()
    assert naive.count == 3

    safe = Attempts(_cancelled_inside)
    with pytest.raises(cs.CancelledFailure, match="sub-operation cancelled"):
        await tenacity.retry(stop=stop_after_attempt(3), retry=retry_if_exception(cs.retryable))(
            safe.run
        )()
    assert safe.count == 1


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_tenacity_retries_timeout_failure_only_when_told() -> None:
    """TimeoutFailure is not retried by retryable; adding retry_if_exception_type retries it."""
    loop = asyncio.get_running_loop()
    plain = Attempts(_attempt_timeout)
    with pytest.raises(cs.TimeoutFailure):
        await tenacity.retry(stop=stop_after_attempt(3), retry=retry_if_exception(cs.retryable))(
            plain.run
        )()
    assert (plain.count, loop.time()) == (1, 1)

    told = Attempts(_attempt_timeout)
    policy = retry_if_exception(cs.retryable) | retry_if_exception_type(cs.TimeoutFailure)
    with pytest.raises(tenacity.RetryError):
        await tenacity.retry(stop=stop_after_attempt(3), retry=policy)(told.run)()
    assert (told.count, loop.time()) == (3, 4)


@pytest.mark.asyncio
async def test_tenacity_still_retries_real_errors_with_retryable() -> None:
    """retry_if_exception(retryable) keeps retrying ordinary errors."""
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("flaky")
        return "ok"

    retrying = tenacity.retry(stop=stop_after_attempt(5), retry=retry_if_exception(cs.retryable))
    assert await retrying(flaky)() == "ok"
    assert len(calls) == 3


# --------------------------------------------------------------------------- stamina


@pytest.mark.asyncio
async def test_stamina_never_retries_a_foreign_cancellation() -> None:
    """stamina.retry(on=Exception) lets an outer scope's cancellation through at once."""
    started = asyncio.Event()
    op = Attempts(lambda: forever(started))
    retrying = stamina.retry(on=Exception, attempts=5, wait_initial=0, wait_max=0, wait_jitter=0)(
        op.run
    )
    async with cs.move_on_after(None) as outer:

        async def cancel() -> None:
            await started.wait()
            outer.cancel("shutdown")

        outer.spawn(cancel)
        await retrying()
    assert outer.cancelled_caught
    assert op.count == 1


@pytest.mark.asyncio
async def test_stamina_on_exception_retries_cancelled_failure_on_retryable_does_not() -> None:
    """stamina on=Exception retries a CancelledFailure; on=cs.retryable does not."""
    with stamina.set_testing(True, attempts=3):
        naive = Attempts(_cancelled_inside)
        with pytest.raises(cs.CancelledFailure):
            await stamina.retry(on=Exception)(naive.run)()
        assert naive.count == 3

        safe = Attempts(_cancelled_inside)
        with pytest.raises(cs.CancelledFailure):
            await stamina.retry(on=cs.retryable)(safe.run)()
        assert safe.count == 1


@pytest.mark.asyncio
async def test_stamina_timeout_failure_retried_only_when_told() -> None:
    """stamina on=cs.retryable does not retry TimeoutFailure; on=(…, TimeoutFailure) style does."""

    def retryable_or_timeout(exc: Exception) -> bool:
        return cs.retryable(exc) or isinstance(exc, cs.TimeoutFailure)

    async def timed_out() -> None:
        async with cs.with_timeout(0):
            await asyncio.sleep(0)

    with stamina.set_testing(True, attempts=3):
        plain = Attempts(timed_out)
        with pytest.raises(cs.TimeoutFailure):
            await stamina.retry(on=cs.retryable)(plain.run)()
        assert plain.count == 1

        told = Attempts(timed_out)
        with pytest.raises(cs.TimeoutFailure):
            await stamina.retry(on=retryable_or_timeout)(told.run)()
        assert told.count == 3
