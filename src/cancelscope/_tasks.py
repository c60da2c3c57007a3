"""Child tasks: `CancellationScope.spawn` and `TaskHandle`."""

from __future__ import annotations

import asyncio
import contextlib
import types
from asyncio import CancelledError
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeGuard, TypeVar, final

from . import _scope
from ._exceptions import CancelledFailure, TimeoutFailure

if TYPE_CHECKING:
    from ._scope import CancellationScope, _Request

T = TypeVar("T")

_PENDING = 0
_RESULT = 1
_ERROR = 2
_CANCELLED = 3


class _ChildScope(_scope.CancellationScope):
    """The hidden scope at the root of each child task.

    It makes ``handle.cancel()`` level-triggered for that child alone, and
    carries the child's delivery bookkeeping. `CancellationScope.current()`
    and ``parent`` look through it, so user code never sees it.
    """

    __slots__ = ()
    _hidden: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        super().__init__(name=name, raise_on_cancel=False)

    def _label(self) -> str:
        return f"child task {self._name!r}"


@final
class TaskHandle(Generic[T]):
    """A child task owned by a scope, as returned by `CancellationScope.spawn`.

    ``await handle`` returns the child's result, raises its exception, or
    raises `CancelledFailure` if the child was cancelled. Cancelling the task
    that awaits a handle does not cancel the child: the child belongs to its
    scope. ``done()``, ``result()`` and ``exception()`` behave as on
    `asyncio.Future`.
    """

    __slots__ = (
        "__weakref__",
        "_loop",
        "_outcome",
        "_owner",
        "_request",
        "_scope",
        "_state",
        "_waiters",
    )

    def __init__(
        self, owner: CancellationScope, name: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._owner = owner
        self._loop = loop
        self._scope = _ChildScope(name)
        self._state = _PENDING
        self._outcome: Any = None
        # The request that cancelled the child, when known.
        self._request: _Request | None = None
        self._waiters: list[asyncio.Future[None]] | None = None

    @property
    def name(self) -> str:
        """The name given to `spawn`, or the coroutine's ``__qualname__``."""
        name = self._scope._name
        assert name is not None
        return name

    def done(self) -> bool:
        """True once the child has finished (with a result, an error, or cancelled)."""
        return self._state != _PENDING

    def cancelled(self) -> bool:
        """True if the child finished by being cancelled."""
        return self._state == _CANCELLED

    def cancel(self, reason: str | None = None) -> None:
        """Cancel this child alone (not a failure of the scope).

        Level-triggered like any scope cancellation; does nothing once the
        child has finished. Safe from any thread.
        """
        if self._state == _PENDING:
            self._scope.cancel(reason)

    def result(self) -> T:
        """The child's return value; raises its exception, or `CancelledFailure` if cancelled.

        Raises `asyncio.InvalidStateError` while the child is running.
        """
        state = self._state
        if state == _RESULT:
            return self._outcome  # type: ignore[no-any-return]
        if state == _ERROR:
            raise self._outcome
        if state == _CANCELLED:
            raise self._cancelled_failure()
        raise asyncio.InvalidStateError(f"child task {self.name!r} has not finished yet")

    def exception(self) -> BaseException | None:
        """The child's exception, or None if it returned; raises `CancelledFailure` if cancelled.

        Raises `asyncio.InvalidStateError` while the child is running.
        """
        state = self._state
        if state == _RESULT:
            return None
        if state == _ERROR:
            return self._outcome  # type: ignore[no-any-return]
        if state == _CANCELLED:
            raise self._cancelled_failure()
        raise asyncio.InvalidStateError(f"child task {self.name!r} has not finished yet")

    def _cancelled_failure(self) -> CancelledFailure:
        req = self._request
        text = f"child task {self.name!r} was cancelled"
        if req is None:
            return CancelledFailure(text, reason=None, scope=self._owner)
        text = f"child task {self.name!r} was {req.message}"
        if req.deadline is not None:
            return TimeoutFailure(text, reason=req.reason, scope=self._owner, deadline=req.deadline)
        return CancelledFailure(text, reason=req.reason, scope=self._owner)

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == _PENDING:
            # One future per awaiter: cancelling an awaiter cancels only its
            # own future, never the child.
            loop = asyncio.get_running_loop()
            if loop is not self._loop:
                raise RuntimeError(
                    f"{self!r} belongs to another event loop; await it from the loop "
                    "that runs its scope"
                )
            fut: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters
            if waiters is None:
                waiters = self._waiters = []
            waiters.append(fut)
            try:
                yield from fut
            finally:
                if not fut.done() or fut.cancelled():
                    with contextlib.suppress(ValueError):
                        waiters.remove(fut)
        return self.result()

    def _finish(self, state: int, outcome: Any) -> None:
        self._state = state
        self._outcome = outcome
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def __repr__(self) -> str:
        state = {_PENDING: "running", _RESULT: "done", _ERROR: "failed", _CANCELLED: "cancelled"}
        return f"<TaskHandle {self.name!r} {state[self._state]}>"


TaskHandle.__module__ = "cancelscope"


def _is_coroutine(obj: object) -> TypeGuard[Coroutine[Any, Any, Any]]:
    # Not asyncio.iscoroutine: before 3.12 it accepts plain generators.
    return isinstance(obj, (types.CoroutineType, Coroutine))


def _coroutine_from(fn: Any, args: tuple[Any, ...]) -> Coroutine[Any, Any, Any]:
    if type(fn) is types.FunctionType:
        # The common case (an async def function), without the ABC checks.
        coro = fn(*args)
        if type(coro) is types.CoroutineType:
            return coro  # pyright: ignore[reportUnknownVariableType]
        if not _is_coroutine(coro):
            raise TypeError(
                f"spawn() needs an async function: {fn!r} returned {type(coro).__name__}, "
                "not a coroutine"
            )
        return coro
    if _is_coroutine(fn):
        if args:
            fn.close()
            raise TypeError(
                "spawn() got a coroutine object and arguments; pass either a coroutine "
                "object alone, or the async function and its arguments"
            )
        return fn
    if not callable(fn):
        raise TypeError(
            f"spawn() needs an async function (with its arguments) or a coroutine "
            f"object, not {type(fn).__name__}"
        )
    coro = fn(*args)
    if not _is_coroutine(coro):
        raise TypeError(
            f"spawn() needs an async function: {fn!r} returned {type(coro).__name__}, "
            "not a coroutine"
        )
    return coro


def spawn(
    scope: CancellationScope,
    fn: Callable[..., Coroutine[Any, Any, T]] | Coroutine[Any, Any, T],
    args: tuple[Any, ...],
    name: str | None,
) -> TaskHandle[T]:
    state = scope._state
    if state is not _scope._ENTERED and state is not _scope._EXITING:
        what = (
            "was never entered; enter it with `async with` first"
            if state is _scope._CREATED
            else "has finished; spawn into a scope that is still open"
        )
        _scope._close_if_coroutine(fn)
        raise RuntimeError(f"cannot spawn into {scope!r}: it {what}")
    if scope._sync or scope._hidden:
        _scope._close_if_coroutine(fn)
        raise RuntimeError(
            f"cannot spawn into {scope!r}: it was entered with plain `with`; "
            "use `async with` for a scope that owns child tasks"
        )
    task = scope._task
    assert task is not None
    loop = task.get_loop()
    if asyncio._get_running_loop() is not loop:
        _scope._close_if_coroutine(fn)
        raise RuntimeError(
            f"cannot spawn into {scope!r} from outside its event loop "
            "(another thread or another loop)"
        )
    coro = _coroutine_from(fn, args)
    label: str = name if name is not None else getattr(coro, "__qualname__", None) or repr(coro)
    handle: TaskHandle[T] = TaskHandle(scope, label, loop)
    children = scope._children
    if children is None:
        children = scope._children = {}
    # Registered before the task exists: with an eager task factory the child
    # may run, and even finish, inside create_task().
    children[handle] = None
    main = _child_main(scope, handle, coro)
    try:
        loop.create_task(main, name=label)
    except BaseException:
        del children[handle]
        main.close()
        coro.close()
        raise
    return handle


def _outside(task: asyncio.Task[Any]) -> bool:
    """Is the running code outside ``task`` (no loop running, or another task)?"""
    if asyncio._get_running_loop() is None:
        return True
    return asyncio.current_task() is not task


async def _child_main(
    owner: CancellationScope, handle: TaskHandle[Any], coro: Coroutine[Any, Any, Any]
) -> None:
    """Run one child inside its hidden scope and record its outcome on the handle."""
    scope = handle._scope
    # With the loop given, no getpid() behind it before 3.12 (this runs in
    # the loop's thread).
    task = _scope._current_task(handle._loop)
    assert task is not None
    # A new task has no state yet: getattr with a default, not _get_state's
    # try/except, is the cheap form for a miss.
    ts = getattr(task, _scope._STATE_ATTR, None)
    if ts is None and _scope._fallback_states:
        ts = _scope._fallback_states.get(task)
    if ts is None:
        ts = _scope._new_state(task)
    # Enter the hidden scope with the owner as parent.
    ts.scope = owner
    scope._enter_child(task, ts)
    closed = False
    try:
        value = await coro
    except BaseException as exc:
        if type(exc) is GeneratorExit and _outside(task):
            # Closed outside its task (collected while pending, its loop closed):
            # it will never run again; report nothing, schedule nothing.
            scope._closing(GeneratorExit)
            handle._state = _CANCELLED
            owner._child_closed(handle)
            closed = True
            raise
        absorbed = scope._finish(task, ts, type(exc), exc)
        if absorbed or isinstance(exc, CancelledError):
            handle._request = scope._cancelled_by
            handle._finish(_CANCELLED, None)
        else:
            handle._finish(_ERROR, exc)
            owner._child_failed(handle, exc)
    else:
        scope._finish(task, ts, None, None)
        handle._finish(_RESULT, value)
    finally:
        if not closed:
            owner._child_done(handle)
        # A failure's traceback keeps this frame alive: drop what it would
        # otherwise hold, so a failed child leaves no reference cycle.
        del owner, handle, scope, coro, task, ts, closed
