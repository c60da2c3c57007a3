"""Child tasks: `CancellationScope.spawn` and `TaskHandle`."""

from __future__ import annotations

import asyncio
import contextlib
import math
import types
from asyncio import CancelledError
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeGuard, TypeVar, final

from . import _exceptions, _scope
from ._exceptions import CancelledFailure
from ._scope import _object_new

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

    # _delivered is counted on every child a cancellation reaches: a slot of
    # its own, so that no child scope needs an _Extra for it (a plain scope
    # counts in _x.delivered; see _scope._count_delivery). _ts (a slot of
    # every scope) is set at the child's start, so that a walk of the owner's
    # children reaches each child's state without a lookup on its task.
    __slots__ = ("_delivered",)
    _delivered: int
    _hidden: ClassVar[bool] = True
    # Fixed for every hidden scope, so class values rather than slot writes per
    # child: nothing sets them on a hidden scope (it has no deadline, no token
    # link and is never entered with `with`; user code never sees it).
    _cancellable = True
    _raises = False
    _timeout = None
    _deadline: float = math.inf
    _timer = None

    # Made by TaskHandle.__init__ alone, which writes only the fields a spawn
    # must set (not CancellationScope.__init__, and no class call: see
    # _scope._object_new).

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
        scope: _ChildScope = _object_new(_ChildScope)
        scope._name = name
        scope._state = _scope._CREATED
        scope._task = None
        scope._parent = None
        scope._cancelled_by = None
        scope._token = None
        scope._x = None
        scope._delivered = 0
        self._scope = scope
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
            return _exceptions.make_cancelled_failure(text, None, self._owner)
        text = f"child task {self.name!r} was {req.message}"
        if req.deadline is not None:
            return _exceptions.make_timeout_failure(text, req.reason, self._owner, req.deadline)
        return _exceptions.make_cancelled_failure(text, req.reason, self._owner)

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

    def __repr__(self) -> str:
        state = {_PENDING: "running", _RESULT: "done", _ERROR: "failed", _CANCELLED: "cancelled"}
        return f"<TaskHandle {self.name!r} {state[self._state]}>"


TaskHandle.__module__ = "cancelscope"


_NOT_CALLED = object()

# Called directly by spawn on an object.__new__ instance (see _scope._object_new).
_handle_init: Callable[[TaskHandle[Any], CancellationScope, str, asyncio.AbstractEventLoop], None]
_handle_init = TaskHandle.__init__  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
# Typed so that a type() test narrows to Coroutine[Any, Any, Any].
_CoroutineType: type[Coroutine[Any, Any, Any]] = types.CoroutineType


def _is_coroutine(obj: object) -> TypeGuard[Coroutine[Any, Any, Any]]:
    # Not asyncio.iscoroutine: before 3.12 it accepts plain generators.
    return isinstance(obj, (types.CoroutineType, Coroutine))


def _coroutine_from(
    fn: Any, args: tuple[Any, ...], result: object = _NOT_CALLED
) -> Coroutine[Any, Any, Any]:
    """The coroutine to run for ``spawn(fn, *args)`` (``result``: ``fn(*args)``, if made)."""
    if result is not _NOT_CALLED:
        if not _is_coroutine(result):
            raise TypeError(
                f"spawn() needs an async function: {fn!r} returned {type(result).__name__}, "
                "not a coroutine"
            )
        return result
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
    self: CancellationScope,
    fn: Callable[..., Coroutine[Any, Any, T]] | Coroutine[Any, Any, T],
    /,
    *args: Any,
    name: str | None = None,
) -> TaskHandle[T]:
    """Start a child task owned by this scope and return its `TaskHandle`.

    ``fn`` is a coroutine function (called with ``args``) or a coroutine
    object (without args). Works from any task of the scope's loop while
    the scope is open; the scope's exit waits for every child. A child
    that fails cancels the scope; failures are raised at exit in an
    exception group.
    """
    # This is `CancellationScope.spawn` itself (installed on the class by
    # _scope.py): one Python call per spawn, not two.
    state = self._state
    if state is not _scope._ENTERED and state is not _scope._EXITING:
        if state is _scope._ENTERED_SYNC:
            _scope._close_if_coroutine(fn)
            raise RuntimeError(
                f"cannot spawn into {self!r}: it was entered with plain `with`; "
                "use `async with` for a scope that owns child tasks"
            )
        what = (
            "was never entered; enter it with `async with` first"
            if state is _scope._CREATED
            else "has finished; spawn into a scope that is still open"
        )
        _scope._close_if_coroutine(fn)
        raise RuntimeError(f"cannot spawn into {self!r}: it {what}")
    if self._hidden:  # (user code never sees one)
        _scope._close_if_coroutine(fn)
        raise RuntimeError(f"cannot spawn into {self!r}: a child task's hidden scope")
    # The host task's loop, from its state (task.get_loop() is a method call
    # on the task, about 450 instructions on 3.13).
    loop = self._ts.loop
    if asyncio._get_running_loop() is not loop:
        _scope._close_if_coroutine(fn)
        raise RuntimeError(
            f"cannot spawn into {self!r} from outside its event loop "
            "(another thread or another loop)"
        )
    if type(fn) is types.FunctionType:
        # The common case (an async def function), without the checks.
        coro: Coroutine[Any, Any, Any] = fn(*args)
        if type(coro) is not _CoroutineType:
            coro = _coroutine_from(fn, args, coro)
    else:
        coro = _coroutine_from(fn, args)
    label: str = name if name is not None else getattr(coro, "__qualname__", None) or repr(coro)
    handle: TaskHandle[T] = _object_new(TaskHandle)  # pyright: ignore[reportUnknownVariableType]
    _handle_init(handle, self, label, loop)  # (no class call: see _scope._object_new)
    x = self._x
    if x is None:
        x = _scope._extra(self)
    children = x.children
    if children is None:
        children = x.children = {}
    # Registered before the task exists: with an eager task factory the child
    # may run, and even finish, inside create_task().
    children[handle] = None
    main = _child_main(self, handle, coro)
    # Started here, up to its first line (see _prime): a task cancelled
    # before its first step then still runs _child_main's bookkeeping.
    main.send(None)
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


@types.coroutine
def _prime() -> Generator[None, None, None]:
    """Suspend once, without the loop: spawn() starts _child_main up to here.

    A task cancelled before its first step gets the CancelledError thrown into
    its coroutine; a coroutine that has not started yet raises it at once,
    without running a line, so nothing would mark the handle done or take the
    child off its scope, whose exit would then wait for ever. Started up to
    this point, _child_main receives it here instead.
    """
    yield


def _never_started(
    owner: CancellationScope, handle: TaskHandle[Any], coro: Coroutine[Any, Any, Any]
) -> None:
    """A child whose task was cancelled (or closed) before its first step: it is cancelled.

    (The end of `_child_main`, for a child that never ran: keep the two in step.)
    """
    coro.close()  # never started: no "never awaited" warning
    handle._state = _CANCELLED
    waiters = handle._waiters
    if waiters:
        handle._waiters = None
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
    x = owner._x
    if x is None or not x.children or handle not in x.children:
        return
    del x.children[handle]
    if not x.children:
        exit_fut = x.exit_fut
        if exit_fut is not None and not exit_fut.done():
            exit_fut.set_result(None)


async def _child_main(
    owner: CancellationScope, handle: TaskHandle[Any], coro: Coroutine[Any, Any, Any]
) -> None:
    """Run one child inside its hidden scope and record its outcome on the handle.

    What the hidden scope's exit and the handle's completion do is written
    out here rather than called: this runs once per child, and each call
    would cost as much as what it does.
    """
    try:
        await _prime()  # where spawn() leaves it; the task's first step goes on from here
    except BaseException:
        # Cancelled (task.cancel() on the child's task) or closed before its
        # first step: the child never ran; its handle says so.
        _never_started(owner, handle, coro)
        del owner, handle, coro
        raise
    scope = handle._scope
    # With the loop given, no getpid() behind it before 3.12 (this runs in
    # the loop's thread).
    task: asyncio.Task[Any] = _scope._current_task(handle._loop)  # type: ignore[assignment]
    # The child's task is new: it has no state yet.
    ts = _scope._new_state(task, handle._loop)
    ts.scope = scope
    scope._ts = ts
    # Enter the hidden scope with the owner as parent (as __aenter__ does; a
    # hidden scope never reports, so it needs no c0).
    scope._task = task
    scope._parent = owner
    scope._state = _scope._ENTERED
    if owner._cancelled_by is not None or scope._x is not None:
        scope._enter_cancelled(task, ts, owner)
    outcome: Any = None
    try:
        outcome = await coro
        state = _RESULT
    except BaseException as exc:
        if type(exc) is GeneratorExit and _outside(task):
            # Closed outside its task (collected while pending, its loop closed):
            # it will never run again; report nothing, schedule nothing.
            scope._closing(GeneratorExit)
            handle._state = _CANCELLED
            owner._child_closed(handle)
            del owner, handle, scope, coro, task, ts
            raise
        if isinstance(exc, CancelledError):
            state = _CANCELLED
            handle._request = scope._cancelled_by
        else:
            state = _ERROR
            outcome = exc
    try:
        # Leave the hidden scope: CancellationScope._finish for a scope with
        # no timer, no token link and no children, which never absorbs or
        # raises (the outcome goes to the handle).
        scope._state = _scope._EXITED
        scope._task = None
        ts.scope = None
        recheck = ts.recheck
        if recheck is not None:
            # The child is finishing: a check queued after its last delivery
            # would find nothing to do. (A batch skips the tasks that no
            # longer point to it: nothing to cancel there.)
            if not isinstance(recheck, _scope._Batch):
                recheck.cancel()
            ts.recheck = None
            ts.hooked = False
        delivered = scope._delivered
        if delivered:
            scope._delivered = 0
            # (As in CancellationScope._finish: keep the two in step.)
            if _scope._HAS_COUNTS or _scope._counts(task):
                if delivered == 1:
                    # The common case, without a range (and the method through
                    # its descriptor: see _scope._cancelling).
                    try:
                        _scope._uncancel(task)
                    except TypeError:
                        task.uncancel()
                else:
                    for _ in range(delivered):
                        task.uncancel()
        # The handle's outcome; its awaiters wake up.
        handle._state = state
        handle._outcome = outcome
        waiters = handle._waiters
        if waiters:
            handle._waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        if state == _ERROR:
            owner._child_failed(handle, outcome)
    finally:
        # Off the owner's children; the last one wakes an exit waiting for them.
        # (Both there: the owner has this child.)
        x: _scope._Extra = owner._x  # type: ignore[assignment]
        children: dict[TaskHandle[Any], None] = x.children  # type: ignore[assignment]
        del children[handle]
        if not children:
            exit_fut = x.exit_fut
            if exit_fut is not None and not exit_fut.done():
                exit_fut.set_result(None)
        # A failure's traceback keeps this frame alive: drop what it would
        # otherwise hold, so a failed child leaves no reference cycle.
        del owner, handle, scope, coro, task, ts, outcome, x
