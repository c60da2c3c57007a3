"""Helpers shared by the test modules: version shims, skip markers and small coroutines.

Import them with ``from ._helpers import ...``.  Nothing here is a test or a fixture.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

import cancelscope as cs

__all__ = [
    "HAS_COUNTS",
    "BaseExceptionGroup",
    "ExceptionGroup",
    "Runner",
    "TaskGroup",
    "TimerTracker",
    "assert_not_cancelling",
    "cancelling",
    "children_failing_together",
    "current",
    "current_task",
    "eager_loop",
    "fail_soon",
    "forever",
    "forever_noting_cancel",
    "forever_raising_on_cancel",
    "forever_returning_on_cancel",
    "live_timers",
    "no_unawaited_coroutine_warning",
    "only_310",
    "requires_311",
    "requires_312",
    "run_on_private_loop",
    "run_with_failing_child",
    "timeout",
    "uncancel",
]

T = TypeVar("T")

# --------------------------------------------------------------------------- Python versions

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup, ExceptionGroup
else:
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

requires_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="needs 3.11+ asyncio")
requires_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="needs 3.12+ asyncio")
only_310 = pytest.mark.skipif(sys.version_info >= (3, 11), reason="3.10's weaker guarantee")

# Whether tasks count their pending cancel requests (Task.cancelling(), 3.11+).
HAS_COUNTS = sys.version_info >= (3, 11)

if sys.version_info >= (3, 11):
    from asyncio import Runner, TaskGroup, Timeout, timeout

    def uncancel(task: asyncio.Task[Any]) -> int:
        """task.uncancel() (3.11+)."""
        return task.uncancel()

else:  # pragma: no cover - stubs so the names exist; the tests using them skip on 3.10

    class Timeout:
        """Stub: asyncio.Timeout needs 3.11."""

        def expired(self) -> bool:
            raise NotImplementedError

        async def __aenter__(self) -> Timeout:
            raise NotImplementedError

        async def __aexit__(self, *exc: object) -> None:
            raise NotImplementedError

    def timeout(delay: float | None) -> Timeout:
        """Stub: asyncio.timeout needs 3.11."""
        raise NotImplementedError

    class TaskGroup:
        """Stub: asyncio.TaskGroup needs 3.11."""

        async def __aenter__(self) -> TaskGroup:
            raise NotImplementedError

        async def __aexit__(self, *exc: object) -> None:
            raise NotImplementedError

        def create_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
            raise NotImplementedError

    class Runner:
        """Stub: asyncio.Runner needs 3.11."""

        def __init__(
            self, *, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        ) -> None:
            raise NotImplementedError

        def __enter__(self) -> Runner:
            raise NotImplementedError

        def __exit__(self, *exc: object) -> None:
            raise NotImplementedError

        def run(self, coro: Coroutine[Any, Any, T]) -> T:
            raise NotImplementedError

    def uncancel(task: asyncio.Task[Any]) -> int:
        """task.uncancel() needs 3.11."""
        raise NotImplementedError


if sys.version_info >= (3, 12):
    from asyncio import eager_task_factory
else:  # pragma: no cover - stub so the name exists; the tests using it skip before 3.12

    def eager_task_factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Future[Any]:
        """Stub: asyncio.eager_task_factory needs 3.12."""
        raise NotImplementedError


def eager_loop() -> asyncio.AbstractEventLoop:
    """A new event loop using the eager task factory (3.12+)."""
    loop = asyncio.new_event_loop()
    loop.set_task_factory(eager_task_factory)
    return loop


def cancelling(task: asyncio.Task[Any]) -> int:
    """task.cancelling(), or -1 where Python keeps no such count (3.10)."""
    count = -1
    if sys.version_info >= (3, 11):
        count = task.cancelling()
    return count


# --------------------------------------------------------------------------- tasks and scopes

current = cs.CancellationScope.current


def current_task() -> asyncio.Task[Any]:
    """The task running this code (there must be one)."""
    task = asyncio.current_task()
    assert task is not None
    return task


def assert_not_cancelling() -> None:
    """The current task has no cancellation request left over (3.11+ can check directly)."""
    if sys.version_info >= (3, 11):
        assert current_task().cancelling() == 0


async def forever(
    started: asyncio.Event | None = None,
    *,
    on_cancel: Callable[[asyncio.CancelledError], object] | None = None,
) -> None:
    """Set ``started`` if given, then wait forever (until cancelled).

    ``on_cancel``, if given, is called with the CancelledError, which then propagates unchanged.
    """
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError as exc:
        if on_cancel is not None:
            on_cancel(exc)
        raise


async def forever_noting_cancel(
    record: list[str], note: str, started: asyncio.Event | None = None
) -> None:
    """Like :func:`forever`; when cancelled, append ``note`` to ``record`` and re-raise."""
    try:
        await forever(started)
    except asyncio.CancelledError:
        record.append(note)
        raise


async def forever_raising_on_cancel(
    exc: BaseException, started: asyncio.Event | None = None
) -> None:
    """Like :func:`forever`, but a cancellation is replaced by ``exc`` (raised ``from None``)."""
    try:
        await forever(started)
    except asyncio.CancelledError:
        raise exc from None


async def forever_returning_on_cancel(result: str, started: asyncio.Event | None = None) -> str:
    """Like :func:`forever`, but a cancellation ends it normally, returning ``result``."""
    try:
        await forever(started)
    except asyncio.CancelledError:
        return result
    raise AssertionError("forever() returned without being cancelled")


async def fail_soon(exc: BaseException) -> None:
    """Raise ``exc`` after one loop turn."""
    await asyncio.sleep(0)
    raise exc


async def run_with_failing_child(scope: cs.CancellationScope, exc: BaseException) -> None:
    """Enter ``scope``, spawn a child raising ``exc`` after one turn, and wait.

    The scope's exit then raises the group of it.
    """
    async with scope:
        scope.spawn(fail_soon, exc)
        await forever()


async def children_failing_together(*errors: BaseException) -> None:
    """Enter a cancellable scope whose children raise ``errors`` in one loop iteration; wait.

    The scope's exit then raises the group of them.
    """
    go = asyncio.Event()

    async def failing(exc: BaseException) -> None:
        await go.wait()
        raise exc

    async with cs.cancellable() as scope:
        for exc in errors:
            scope.spawn(failing, exc)
        await asyncio.sleep(0)
        go.set()
        await forever()


def run_on_private_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> list[BaseException]:
    """Run ``asyncio.run(main())`` in a fresh thread; return what escaped it (nothing: ``[]``).

    An exception escaping there (even KeyboardInterrupt) stops that loop, not the test session.
    """
    escaped: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            escaped.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return escaped


# --------------------------------------------------------------------------- leftovers


def live_timers() -> set[asyncio.TimerHandle]:
    """Timer handles still scheduled (not cancelled) on the running loop."""
    loop = asyncio.get_running_loop()
    scheduled: list[asyncio.TimerHandle] | None = getattr(loop, "_scheduled", None)
    if scheduled is None:  # pragma: no cover - uvloop keeps its timers private
        return set()
    return {handle for handle in scheduled if not handle.cancelled()}


class TimerTracker:
    """Every timer made through ``loop.call_at`` / ``loop.call_later`` of one loop.

    uvloop keeps its timers private (there is no ``loop._scheduled``), so this wraps the
    two methods on the loop instance and keeps each handle made. `live` is what is still
    pending: not cancelled and not yet due. ``restore()`` removes the wrappers.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.handles: dict[int, asyncio.TimerHandle] = {}
        call_at, call_later = loop.call_at, loop.call_later

        def tracked_at(when: float, callback: Callable[..., object], *args: Any,
                       context: Any = None) -> asyncio.TimerHandle:
            handle = call_at(when, callback, *args, context=context)
            self.handles[id(handle)] = handle
            return handle

        def tracked_later(delay: float, callback: Callable[..., object], *args: Any,
                          context: Any = None) -> asyncio.TimerHandle:
            handle = call_later(delay, callback, *args, context=context)
            self.handles[id(handle)] = handle
            return handle

        vars(loop)["call_at"] = tracked_at
        vars(loop)["call_later"] = tracked_later

    def live(self) -> list[asyncio.TimerHandle]:
        """Timers neither cancelled nor due yet.

        uvloop answers a delay that rounds to 0 ms with a plain ``Handle`` (a ``call_soon``,
        no ``when()``): that is no timer, and left out.
        """
        now = self.loop.time()
        return [
            h for h in self.handles.values()
            if hasattr(h, "when") and not h.cancelled() and h.when() > now
        ]

    def restore(self) -> None:
        vars(self.loop).pop("call_at", None)
        vars(self.loop).pop("call_later", None)


@contextmanager
def no_unawaited_coroutine_warning() -> Iterator[None]:
    """Fail if a coroutine created inside the block is garbage-collected un-awaited."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
