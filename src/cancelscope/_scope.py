"""The scope tree, cancel requests, and level-triggered delivery.

How it works, in brief (docs/semantics.md has the user-facing contract):

* Each task that has entered a scope carries a `_TaskState` whose ``scope`` is
  its innermost open scope. A scope's ``_parent`` is the scope that was current
  when it was entered (for a child task: its hidden per-child scope, whose
  parent is the spawning scope).
* A cancel request is a `_Request`. `_reach` is the one place where a request
  arrives at a scope; `_carry` walks down the tree from a scope that has just
  become *effectively cancelled*, marking every scope below it (stopping at
  non-cancellable ones) and scheduling delivery to every task whose current
  scope is now effectively cancelled. Effective cancellation never reverts
  while a scope is open, so it is cached per scope in ``_cancelled_by`` and
  entering or exiting a scope costs O(1).
* Delivery (`_deliver`) calls ``task.cancel()`` only while the task is suspended
  and then arranges to look again right after the task's next step: through a
  done-callback on the future the task waits on, or ``call_soon`` when its
  step is already queued. So a task that catches the CancelledError and
  awaits again gets another one, and nothing runs while the task computes,
  sits in a shield, or waits for a future that is winding down (no polling:
  anyio#1111, anyio#1257).
* Every ``task.cancel()`` made is counted on the scope that was current and
  undone with ``task.uncancel()`` when that scope exits, so the task's
  ``cancelling()`` count is what foreign cancellers expect (3.11+). A scope
  owns a CancelledError when it is the outermost effectively cancelled scope
  (below any shield) and no other cancel request is pending for the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import inspect
import math
import sys
import threading
import types
import weakref
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Coroutine, Generator
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar, cast, overload

from ._exceptions import CancelledFailure, make_cancelled_failure, make_timeout_failure
from ._token import CancelToken, EarlyCallback, _call_each

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._tasks import TaskHandle

T = TypeVar("T")

# Task.cancelling()/uncancel() exist from 3.11; without them a scope cannot
# count foreign cancel requests and falls back to recognising its messages.
_HAS_COUNTS = sys.version_info >= (3, 11)
_INF = math.inf
# A scope's _timeout when it has an absolute deadline instead (set before
# entry): one check at entry covers both. A NaN, which no caller can pass
# (_check_time refuses it), told apart by identity.
_ABSOLUTE = float("nan")

_current_task = asyncio.current_task
if TYPE_CHECKING:

    class _HostTask(asyncio.Task[Any]):
        """A task as the entries read it: with the attribute holding its state."""

        _cancelscope_state: _TaskState
        _fut_waiter: asyncio.Future[Any] | None

else:
    _HostTask = asyncio.Task
# Task methods called through their descriptor, not looked up on the task: the
# attribute cancelscope sets on a task gives it an instance dictionary, and on
# 3.13 a method lookup on such a task is generic (~265 instructions more than
# the call specialised on the descriptor). For a task that is not an
# asyncio.Task the call raises TypeError, and the caller falls back to the method.
def _call_cancelling(task: asyncio.Task[Any]) -> int:
    return task.cancelling()


def _call_uncancel(task: asyncio.Task[Any]) -> int:
    return task.uncancel()


_cancelling: Callable[[asyncio.Task[Any]], int] = (
    cast("Callable[[asyncio.Task[Any]], int]", asyncio.Task[Any].cancelling)
    if _HAS_COUNTS
    else _call_cancelling
)
_uncancel: Callable[[asyncio.Task[Any]], int] = (
    cast("Callable[[asyncio.Task[Any]], int]", asyncio.Task[Any].uncancel)
    if _HAS_COUNTS
    else _call_uncancel
)
_task_cancel: Callable[[asyncio.Task[Any], object], bool] = cast(
    "Callable[[asyncio.Task[Any], object], bool]", asyncio.Task[Any].cancel
)
# (A Future method: the call is not specialised, but the lookup is saved.)
_task_done: Callable[[asyncio.Task[Any]], bool] = cast(
    "Callable[[asyncio.Task[Any]], bool]", asyncio.Task[Any].done
)
_get_running_loop = asyncio._get_running_loop
# The same, where a task is running (so a loop is): typed without the None.
_task_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio._get_running_loop  # type: ignore[assignment]
_get_ident = threading.get_ident
# Before 3.12 the running loop lookup behind current_task() makes a getpid()
# syscall; with the loop given it is a dict lookup. Exits check the thread
# themselves and pass the task's loop (see CancellationScope.__exit__).
_CHEAP_CURRENT_TASK = sys.version_info >= (3, 12)
_Future = asyncio.Future


class _State(enum.Enum):
    CREATED = "created"
    ENTERED = "entered"
    # Entered with plain `with`: spawn refuses it, everything else is as ENTERED.
    ENTERED_SYNC = "entered (with)"
    EXITING = "exiting"  # async exit waiting for children
    EXITED = "exited"


_CREATED = _State.CREATED
_ENTERED = _State.ENTERED
_ENTERED_SYNC = _State.ENTERED_SYNC
_EXITING = _State.EXITING
_EXITED = _State.EXITED


class _CancelMessage(str):
    """Message of every CancelledError cancelscope delivers: marks it as ours."""

    __slots__ = ()


class _Request:
    """One cancel request: where it came from and why. Shared by every scope it reaches.

    It holds its origin weakly: the origin holds it (``_x.own_req``), and a
    cancelled scope must not become a reference cycle.
    """

    __slots__ = ("_label", "_origin", "deadline", "hooked", "message", "reason")

    def __init__(
        self, origin: CancellationScope, reason: str | None, deadline: float | None = None
    ) -> None:
        self._origin = weakref.ref(origin)
        self.reason = reason
        # Not None when the request is a deadline that passed.
        self.deadline = deadline
        # The origin's label, kept for failure() (a scope's name never changes):
        # origin._label(), inlined for the common scope (keep the two in step).
        if origin._hidden:
            label = origin._label()
        elif origin._name is not None:
            label = f"scope {origin._name!r}"
        else:
            label = "unnamed scope at " + hex(id(origin))
        self._label = label
        text = "cancelled by " + label if reason is None else f"cancelled by {label}: {reason}"
        # The message of every CancelledError delivered for this request; 3.10
        # recognises its own by their type (see _ours_310).
        self.message = text if _HAS_COUNTS else _CancelMessage(text)
        # Scopes this request reached that have a token to fire once the
        # request has been carried through the tree (see _reach).
        self.hooked: list[CancellationScope] | None = None

    @property
    def origin(self) -> CancellationScope | None:
        """The scope where the request was made (None once nothing else holds it)."""
        return self._origin()

    def failure(self, scope: CancellationScope | None = None) -> CancelledFailure:
        """The CancelledFailure describing this request (``scope`` defaults to the origin)."""
        if scope is None:
            scope = self._origin()
            label = self._label if scope is not None else "a scope"
        else:
            label = scope._label()
        if self.deadline is not None:
            return make_timeout_failure(
                f"{label} timed out (deadline exceeded)", self.reason, scope, self.deadline
            )
        reason = self.reason
        if reason is None:
            return make_cancelled_failure(f"{label} was cancelled", None, scope)
        return make_cancelled_failure(f"{label} was cancelled: {reason}", reason, scope)


class _RequestedFuture(asyncio.Future[CancelledFailure]):
    """The `cancel_requested` future: awaiting it never cancels it.

    Each awaiter waits on a future of its own, so cancelling one awaiter (say,
    by its scope) leaves the shared future pending for the others. `_resolve`
    resolves the awaiters' futures at once, before any cancellation the same
    request delivers, so an awaiter inside the cancelled scope sees the result.
    """

    _waiters: list[asyncio.Future[None]] | None = None

    def __await__(self) -> Generator[Any, None, CancelledFailure]:
        if not self.done():
            waiter: asyncio.Future[None] = self.get_loop().create_future()
            waiters = self._waiters
            if waiters is None:
                waiters = self._waiters = []
            waiters.append(waiter)
            try:
                yield from waiter
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)
        return self.result()

    __iter__ = __await__

    def _resolve(self, failure: CancelledFailure) -> None:
        if self.done():
            return
        self.set_result(failure)
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)


# Objects made often (scopes by the factories, task states, task handles) are
# made with object.__new__ and then plain attribute writes or a direct call of
# the initialiser, not by calling their class. On 3.13 a call of a class with
# __slots__ is never specialised: it goes through type_call and slot_tp_init,
# a C-level call of __init__ with the arguments packed into a tuple. The
# direct way is an ordinary Python call with exact arguments: about 440
# instructions less per object, about 800 with the writes inlined. (A helper
# function doing both steps costs about as much as it saves.)
_object_new = object.__new__
# For the requests made on hot paths (a deadline, cancel()).
_request_init = _Request.__init__


class _TaskState:
    """What cancelscope keeps per task, stored on the task object itself."""

    __slots__ = (
        "__weakref__",
        "forwarded",
        "group_exit",
        "hooked",
        "loop",
        "recheck",
        "scope",
        "thread",
    )

    # Made by _new_state alone, which writes every field (no __init__: a class
    # call is not specialised for a class with __slots__, see _object_new).

    # The task's loop and the thread it runs in: what an exit needs to
    # confirm it runs in this task without asking for the running loop.
    loop: asyncio.AbstractEventLoop
    thread: int
    # Invariant: the task's innermost open scope, or None outside any scope.
    # Only scope entry/exit (in the task itself) changes it.
    scope: CancellationScope | None
    # Invariant: True while a _deliver of this task is scheduled, either by
    # call_soon or as a done-callback of the future the task waits on; it
    # guarantees at most one delivery in flight per task.
    hooked: bool
    # How that _deliver was queued when not as a done-callback: its call_soon
    # handle, or the _Batch it joined. A finishing child drops it (and
    # cancels a handle), so a finished delivery costs no extra callback.
    recheck: asyncio.Handle | _Batch | None
    # The task-group exit coroutine a CancelledError was last delivered
    # into: it swallows further ones while it waits, so none is sent again.
    # _DELIVERED after a delivery into no known exit (or not probed: see
    # _deliver); None before the first since the last cancelled exit.
    group_exit: object | None
    # 3.10 only: the last delivery went through a task or gather future.
    forwarded: bool


_STATE_ATTR = "_cancelscope_state"
# Tasks that refuse attributes (exotic task factories) keep their state here.
_fallback_states: weakref.WeakKeyDictionary[asyncio.Task[Any], _TaskState] = (
    weakref.WeakKeyDictionary()
)


# True once a task refused the attribute (checked instead of the dictionary's
# length, a Python-level call).
_fallback_used = False


def _get_state(task: asyncio.Task[Any]) -> _TaskState | None:
    holder: Any = task
    try:
        return holder._cancelscope_state  # type: ignore[no-any-return]
    except AttributeError:
        # (The attribute form is cheaper than getattr with a default when
        # the state exists, the common case.)
        return _fallback_states.get(task) if _fallback_used else None


# The state of the task whose context this is: set once per task, when the
# task first enters a scope (never on scope entry/exit), so that a thread
# started with asyncio.to_thread, which copies the context, can find the
# task's current scope (current_token()).
_task_state_var: contextvars.ContextVar[_TaskState] = contextvars.ContextVar(
    "cancelscope_task_state"
)


def _new_state(task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> _TaskState:
    """Create ``task``'s state; called in ``task`` itself (its context is current).

    ``loop`` is the task's (the running loop): callers have it without
    ``task.get_loop()``, a method call on the task (~450 instructions on 3.13).
    """
    ts: _TaskState = _object_new(_TaskState)
    ts.loop = loop
    ts.thread = _get_ident()
    ts.scope = None
    ts.hooked = False
    ts.recheck = None
    ts.group_exit = None
    ts.forwarded = False
    _task_state_var.set(ts)
    try:
        setattr(task, _STATE_ATTR, ts)
    except AttributeError:  # pragma: no cover - only with task types without __dict__
        global _fallback_used
        _fallback_used = True
        _fallback_states[task] = ts
    return ts



# --------------------------------------------------------------------------- delivery


def _deliver(task: asyncio.Task[Any], ts: _TaskState, batch: _Batch | None = None) -> None:
    """Deliver cancellation to ``task`` if its current scope is effectively cancelled.

    Never called from inside ``task``'s own step; ``ts`` is the task's state
    (queued checks carry it: a task's state never changes, and looking it up
    on the task costs a generic attribute lookup). ``batch``: see `_recheck_soon`.
    """
    ts.hooked = False
    ts.recheck = None
    try:
        done = _task_done(task)
    except TypeError:  # not an asyncio.Task (see _cancelling)
        done = task.done()
    if done:
        return
    scope = ts.scope
    if scope is None:
        return
    req = scope._cancelled_by
    # A scope in EXITING is its host's current scope while __aexit__ waits for
    # children; cancelling that wait would only make it spin.
    if req is None or scope._state is _EXITING:
        return
    holder: Any = task
    waiter: asyncio.Future[Any] | None = holder._fut_waiter
    if waiter is not None:
        if not waiter.done():
            last = ts.group_exit
            if last is None:
                # The first delivery since the task last left a cancelled
                # scope: nothing to compare with, so no probe (the walk costs
                # more than the rest of a delivery). If it went into a task-group
                # exit, the next delivery finds that exit and goes in once more,
                # which the exit swallows like the first; then none again.
                ts.group_exit = _DELIVERED
                deliver = True
            else:
                group_exit = _children_wait(task)
                deliver = group_exit is None or group_exit is not last
                if deliver:
                    ts.group_exit = _DELIVERED if group_exit is None else group_exit
            if deliver:
                if not _HAS_COUNTS:
                    # 3.10: a task or gather future passes the cancellation on
                    # and may hand back a CancelledError without our message.
                    ts.forwarded = type(waiter) is not _Future
                try:
                    _task_cancel(task, req.message)
                except TypeError:  # not an asyncio.Task (see _cancelling)
                    task.cancel(req.message)
                # _count_delivery, inlined (every delivery into a waiting task).
                if scope._hidden:
                    scope._delivered += 1  # type: ignore[attr-defined]  # see _count_delivery
                else:
                    x = scope._x
                    if x is None:
                        x = _extra(scope)
                    x.delivered += 1
        # The task's own wakeup callback was added first, so ours runs right
        # after the task's next step; if the waiter is a task winding down
        # (anyio#1111) we simply wait for it.
        ts.hooked = True
        if waiter.done():
            # Its callbacks (the task's wakeup first) are already queued: a
            # check queued now comes right after them, without a partial.
            # (_recheck_soon, inlined: every delivery into a waiting task.)
            if batch is not None and batch.loop is ts.loop:
                ts.recheck = batch
                batch.items.append((task, ts))
            else:
                ts.recheck = ts.loop.call_soon(_deliver, task, ts)
        else:
            waiter.add_done_callback(partial(_after_waiter, task, ts))
    else:
        # The task's next step is already queued (it yielded bare, or a
        # wakeup is pending); a check queued now runs right after it.
        if not task._must_cancel:  # type: ignore[attr-defined]
            task.cancel(req.message)
            _count_delivery(scope)
        ts.hooked = True
        _recheck_soon(task, ts, batch)


def _count_delivery(scope: CancellationScope) -> None:
    """Count a task.cancel() made on ``scope``'s account (undone at its exit).

    (Inlined in `_deliver`: keep the two in step.)
    """
    if scope._hidden:
        scope._delivered += 1  # type: ignore[attr-defined]  # a slot of _ChildScope
    else:
        x = scope._x
        if x is None:
            x = _extra(scope)
        x.delivered += 1


# ts.group_exit after a delivery that went into no known task-group exit.
_DELIVERED: object = object()


class _Batch:
    """Checks queued together by one walk of the tree: one loop callback for all.

    Cancelling a scope with many children would otherwise queue one
    ``call_soon`` per child, and cancel most of them again as the children
    finish. Queued once the walk is done, the batch runs after every wakeup
    the walk's deliveries queued, so each task is looked at right after its
    next step, as with a ``call_soon`` of its own. A task leaves the batch by
    setting its ``recheck`` to something else (see `_tasks._child_main`).
    """

    __slots__ = ("items", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[tuple[asyncio.Task[Any], _TaskState]] = []

    def queue(self) -> None:
        if self.items:
            self.loop.call_soon(self.run)

    def run(self) -> None:
        batch = _Batch(self.loop)
        try:
            for task, ts in self.items:
                if ts.recheck is self:
                    _deliver(task, ts, batch)
        finally:
            batch.queue()


def _recheck_soon(task: asyncio.Task[Any], ts: _TaskState, batch: _Batch | None) -> None:
    """Check ``task`` again once the callbacks already queued have run; ts.hooked is set.

    With ``batch`` (passed down from the walk that delivers, never kept in a
    global: loops in other threads walk at the same time) the check joins it.
    (Inlined in `_deliver` and `_start_deadline`: keep them in step.)
    """
    if batch is not None and batch.loop is ts.loop:
        ts.recheck = batch
        batch.items.append((task, ts))
    else:
        ts.recheck = ts.loop.call_soon(_deliver, task, ts)


# Code objects of exits that, once they have seen a CancelledError, swallow
# further ones while they wait for their children and re-raise the first at
# the end (asyncio.TaskGroup, anyio's task group). Delivering into the same
# exit twice would only make the host spin while the children wind down.
# Compared by identity (hashing a code object hashes its whole bytecode);
# _NO_CODE, which matches nothing, until the library is known.
_NO_CODE: object = object()
_asyncio_group_exit: object = _NO_CODE
_anyio_group_exit: object = _NO_CODE
_anyio_learned = False


def _children_wait(task: asyncio.Task[Any]) -> object | None:
    """The task-group exit coroutine ``task`` is suspended in, if any (cancel path only)."""
    if not _anyio_learned and _anyio_backend in _modules:
        _learn_children_waits()
    first = _asyncio_group_exit
    second = _anyio_group_exit
    coro: Any = task.get_coro()
    while coro is not None:
        if type(coro) is _CoroutineType:  # the common case, without getattr
            code: object = coro.cr_code
            if code is first or code is second:
                return coro  # pyright: ignore[reportUnknownVariableType]
            coro = coro.cr_await
        else:
            kind: type[Any] = type(coro)  # pyright: ignore[reportUnknownVariableType]
            if kind in _opaque_awaits:
                return None
            code = getattr(coro, "cr_code", None)
            if code is not None and (code is first or code is second):
                return coro  # type: ignore[no-any-return]
            coro = getattr(coro, "cr_await", None)
            if coro is None and not kind.__dictoffset__:
                # Where the chain ends (a future's iterator, a generator): the
                # type has no cr_await and its instances cannot add one, so
                # the next walk stops here without a failing getattr.
                _opaque_awaits.add(kind)
    return None


_anyio_backend = "anyio._backends._asyncio"
_modules = sys.modules
_CoroutineType = types.CoroutineType
_opaque_awaits: set[type] = {types.GeneratorType}


def _learn_children_waits() -> None:
    global _asyncio_group_exit, _anyio_group_exit, _anyio_learned
    group = getattr(asyncio, "TaskGroup", None)
    if group is not None:
        _asyncio_group_exit = group.__aexit__.__code__
    backend = sys.modules.get(_anyio_backend)
    if backend is not None:
        _anyio_learned = True
        aexit = getattr(getattr(backend, "TaskGroup", None), "__aexit__", None)
        code = getattr(aexit, "__code__", None)
        if code is not None:
            _anyio_group_exit = code


def _after_waiter(task: asyncio.Task[Any], ts: _TaskState, _fut: object) -> None:
    _deliver(task, ts)


def _schedule(task: asyncio.Task[Any], ts: _TaskState, batch: _Batch | None = None) -> None:
    """Make sure ``task`` is (re)checked for delivery at its next suspension point."""
    if ts.hooked:
        return
    holder: Any = task
    waiter: asyncio.Future[Any] | None = holder._fut_waiter
    if waiter is None:
        # Either its step is queued (deliver now: the step will carry it) or
        # it is running: the current task, or a task mid-step under an eager
        # child's first step (gh-128550), which is not the current task.
        coro = task.get_coro()
        running = getattr(coro, "cr_running", None) or getattr(coro, "gi_running", False)
    else:
        running = waiter.done()  # a wakeup is queued: look after it
    if running:
        ts.hooked = True
        _recheck_soon(task, ts, batch)
    else:
        _deliver(task, ts, batch)


def _reach(scope: CancellationScope, req: _Request) -> None:
    """A request has arrived at ``scope``: the one place every request passes.

    Resolves ``cancel_requested`` the first time, and notes the scope's token
    (``scope.token``, ``on_cancel``) on the request: the caller fires it with
    `_fire_tokens` once the request has been carried through the tree, so
    user callbacks never run in the middle of the walk.
    """
    x = scope._x
    if scope._cancelled_by is None and (
        scope._cancellable or x is None or x.reached_by is None
    ):
        # The first request to arrive. A cancellable scope becomes cancelled
        # by it right after (every caller sets _cancelled_by next), so only a
        # shield needs to remember it apart: no _Extra otherwise.
        if not scope._cancellable:
            if x is None:
                x = _extra(scope)
            x.reached_by = req
        fut = x.requested_fut if x is not None else None
        if fut is not None:
            fut._resolve(req.failure())
        if scope._token is not None:
            hooked = req.hooked
            if hooked is None:
                req.hooked = [scope]
            else:
                hooked.append(scope)


def _fire_tokens(req: _Request) -> None:
    """Fire the tokens of the scopes ``req`` reached, outermost first.

    Every token is marked fired before any callback runs, and the library's
    own callbacks (`EarlyCallback`: a ``to_thread`` thread's token) run before any
    user callback, of any of these scopes.
    """
    hooked, req.hooked = req.hooked, None
    early: list[Callable[[], object]] = []
    late: list[Callable[[], object]] = []
    for scope in hooked or ():
        token = scope._token
        if token is not None:
            run = token._run_callback
            for callback in token._claim(req.reason, req, None):
                (early if type(callback) is EarlyCallback else late).append(partial(run, callback))
    # A KeyboardInterrupt/SystemExit from a callback goes on once every callback has run.
    _call_each(early + late)


def _carry(top: CancellationScope, req: _Request) -> None:
    """``top`` has just become effectively cancelled by ``req``: carry it down the tree."""
    host = top._task
    x = top._x
    children = x.children if x is not None else None
    if host is not None and not children:
        holder: Any = host
        try:
            ts: _TaskState | None = holder._cancelscope_state
        except AttributeError:
            ts = _get_state(host)
        if ts is not None and ts.scope is top:
            # The common case (a scope with no children, current in its
            # host): what the walk below comes to.
            _schedule(host, ts)
            return
    if host is None and not children:
        return
    pending: list[tuple[asyncio.Task[Any], CancellationScope]] = []
    if host is not None:
        pending.append((host, top))
        batch = _Batch(host.get_loop())
    else:
        assert children
        batch = _Batch(next(iter(children))._loop)
    try:
        if children:
            _push_children(top, pending, req, batch)
        _walk(pending, req, batch)
    finally:
        batch.queue()


def _walk(
    pending: list[tuple[asyncio.Task[Any], CancellationScope]], req: _Request, batch: _Batch
) -> None:
    """The walk of `_carry`: deliver ``req`` below each (task, scope) in ``pending``."""
    ts: _TaskState | None
    while pending:
        task, upper = pending.pop()
        holder: Any = task
        try:
            ts = holder._cancelscope_state
        except AttributeError:
            ts = _get_state(task)
        if ts is None:  # pragma: no cover - defensive
            continue
        scope = ts.scope
        if scope is not None and scope._parent is upper:
            # The common case (a child in its root scope, a host in the scope
            # below `upper`): the walk below for a chain of one.
            x = scope._x
            if not scope._cancellable or scope._token is not None or x is not None:
                _reach(scope, req)  # (a no-op for any other scope)
            if scope._cancelled_by is not None or not scope._cancellable:
                continue
            scope._cancelled_by = req
            # The host first, then its children: the order of their wakeups.
            _schedule(task, ts, batch)
            if x is not None and x.children:
                _push_children(scope, pending, req, batch)
            continue
        chain: list[CancellationScope] = []
        add = chain.append
        while scope is not None and scope is not upper:
            add(scope)
            scope = scope._parent
        if scope is None:  # pragma: no cover - defensive: the task left `upper`
            continue
        parents: list[CancellationScope] | None = None
        for scope in reversed(chain):
            x = scope._x
            if not scope._cancellable or scope._token is not None or x is not None:
                _reach(scope, req)  # (a no-op for any other scope)
            if scope._cancelled_by is not None or not scope._cancellable:
                # Already cancelled (its subtree too), or a shield: stop here.
                break
            scope._cancelled_by = req
            if x is not None and x.children:
                if parents is None:
                    parents = [scope]
                else:
                    parents.append(scope)
        else:
            _schedule(task, ts, batch)
        if parents is not None:
            # After the host, innermost first (the order of their wakeups).
            for scope in reversed(parents):
                _push_children(scope, pending, req, batch)


def _push_children(
    scope: CancellationScope,
    pending: list[tuple[asyncio.Task[Any], CancellationScope]],
    req: _Request,
    batch: _Batch,
) -> None:
    """Carry ``req`` into the children of ``scope``, which it has just cancelled.

    A child still in its root (hidden) scope, waiting on a future, gets the
    delivery here, with what `_walk`, `_schedule` and `_deliver` would do
    for it inlined (keep them in step): cancelling a scope with many
    children is the path where a call per child shows. Any other child goes
    to ``pending`` for `_walk`.
    """
    x = scope._x
    children = x.children if x is not None else None
    if not children:
        return
    # Last spawned first, as the walk's stack of pending work would take them.
    for handle in reversed(children):
        child = handle._scope
        # A child not started yet sees the cancellation when it starts; a
        # finished one is not there to see it.
        if child._state is not _ENTERED:
            continue
        task: _HostTask = child._task  # type: ignore[assignment]  # (entered)
        ts = child._ts
        if ts.scope is not child:
            pending.append((task, scope))  # it entered scopes of its own
            continue
        if child._token is not None or child._x is not None:
            _reach(child, req)  # (current_token() in the child made its token)
        if child._cancelled_by is not None:
            continue  # already cancelled (by handle.cancel())
        child._cancelled_by = req
        if ts.hooked:
            continue  # a delivery is already on its way
        waiter: asyncio.Future[Any] | None = task._fut_waiter
        if waiter is None or ts.group_exit is not None or not _HAS_COUNTS or waiter.done():
            _schedule(task, ts, batch)
            continue
        # (Task methods through their descriptors: see _cancelling.)
        try:
            done = _task_done(task)
        except TypeError:
            done = task.done()
        if done:
            _schedule(task, ts, batch)
            continue
        # _deliver's first delivery into a waiting task.
        ts.group_exit = _DELIVERED
        try:
            _task_cancel(task, req.message)
        except TypeError:
            task.cancel(req.message)
        child._delivered += 1
        ts.hooked = True
        if waiter.done():
            if batch.loop is ts.loop:
                ts.recheck = batch
                batch.items.append((task, ts))
            else:  # pragma: no cover - a scope's children share its loop
                ts.recheck = ts.loop.call_soon(_deliver, task, ts)
        else:
            waiter.add_done_callback(partial(_after_waiter, task, ts))


def _rearm(task: asyncio.Task[Any], err: BaseException) -> None:
    """A foreign CancelledError had to be dropped (an exception won): request it again.

    Done at the task's next suspension point, and only if the canceller has not
    withdrawn its request meanwhile: a TaskGroup or asyncio.timeout that the
    winning exception passes through uncancels and relies on its count, and a
    cancel re-requested at once would reach the task as a stray CancelledError
    (before 3.13 ``uncancel()`` does not clear a pending cancel). The count is
    left unchanged (``uncancel()`` then ``cancel()``), as asyncio.TaskGroup
    does since 3.13.
    """
    counted = _HAS_COUNTS or _counts(task)
    level = task.cancelling() if counted else -1
    msg = err.args[0] if err.args else None
    task.get_loop().call_soon(_rearm_now, task, msg, level)


def _rearm_now(task: asyncio.Task[Any], msg: object, level: int) -> None:
    if task.done():
        return
    if level >= 0:
        if task.cancelling() < level or level == 0:
            return  # withdrawn by its canceller
        task.uncancel()
    task.cancel(msg)


def _counts(task: asyncio.Task[Any]) -> bool:
    """3.10 only: does this task keep cancel counts anyway (a backported pure-Python task)?"""
    return hasattr(task, "uncancel")


def _ours_310(task: asyncio.Task[Any], exc: BaseException) -> bool:
    """3.10 has no cancel counts: recognise a CancelledError cancelscope delivered.

    Ours carry a `_CancelMessage`. When the delivery went through a task or a
    gather future, 3.10 hands the awaiter a fresh CancelledError without
    message: that one counts as ours too. A native cancel landing in the same
    iteration as ours cannot be told apart (SPEC 8).
    """
    args = exc.args
    if args and isinstance(args[0], _CancelMessage):
        return True
    if args and args[0]:
        return False  # someone else's message
    ts = _get_state(task)
    return ts is not None and ts.forwarded


def _check_time(value: object, what: str) -> float | None:
    """Validate a timeout or deadline: None/inf mean none; NaN is refused."""
    if value is None:
        return None
    if not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {type(value).__name__}")
    value = float(value)
    if value != value:
        raise ValueError(f"{what} is NaN; pass a number, or None / math.inf for no {what}")
    if value == _INF:
        return None
    return value


# --------------------------------------------------------------------------- the scope


class _Extra:
    """The fields of a scope that only change once it is cancelled, spawns or is watched.

    Made by `_extra` on first need. Once the scope is entered, its loop
    thread makes it (every other thread hands its work to the loop). Before
    entry, ``cancel()`` and a linked token firing outside any loop run in the
    caller's thread, so `_extra` makes it under a lock while the scope is not
    entered yet (only then: the lock would cost a fired timeout about 2% more
    instructions), and such a caller records nothing but its request
    (`CancellationScope._cancel_unentered`; one that raced the entry may make
    it just after, see `_extra`). Each field is then written on its own, as
    the attributes of an instance dictionary were. ``scope.token``, made from
    any thread on the first read of a scope's token, is a slot of the scope
    rather than a field here, which keeps that path off this lock.
    """

    __slots__ = (
        "c0",
        "cancelled_caught",
        "children",
        "delivered",
        "exit_fut",
        "failures",
        "own_req",
        "reached_by",
        "requested_fut",
        "token_link",
    )

    # The first request made on this scope itself (cancel(), deadline, child
    # failure): cancel_called, and the failure reported at exit.
    own_req: _Request | None
    # A shield's first request (resolves cancel_requested); for a cancellable
    # scope that request is _cancelled_by (see _reach).
    reached_by: _Request | None
    # scope.cancel_requested, once read; its loop is the one the scope must
    # be entered in when it was read before entry.
    requested_fut: _RequestedFuture | None
    cancelled_caught: bool
    # Invariant: task.cancel() calls made while this scope was its host's
    # current scope and not yet undone by uncancel() (done at exit). (A
    # hidden child scope counts in a slot of its own: see _tasks.py.)
    delivered: int
    # Open children (an insertion-ordered set); None until the first spawn.
    children: dict[TaskHandle[Any], None] | None
    failures: list[BaseException] | None
    exit_fut: asyncio.Future[None] | None
    # Registration on the token passed as token=; removed at exit.
    token_link: _TokenLink | None
    # task.cancelling() at entry, less a native cancel then pending (3.11+).
    c0: int


def _extra(scope: CancellationScope) -> _Extra:
    """``scope._x``, made if it is not there yet (see `_Extra` for the threads)."""
    x = scope._x
    if x is None:
        new: _Extra = _object_new(_Extra)
        new.own_req = None
        new.reached_by = None
        new.requested_fut = None
        new.cancelled_caught = False
        new.delivered = 0
        new.children = None
        new.failures = None
        new.exit_fut = None
        new.token_link = None
        new.c0 = 0
        # (Not `with`: a context manager that is not always needed costs more.)
        locked = scope._state is _CREATED
        if locked:
            _extra_lock.acquire()
        try:
            # The test and the store are adjacent, with no call between them:
            # CPython switches threads only at calls and backward jumps, so a
            # thread that races the loop's thread just after entry (see
            # _cancel_unentered) cannot slip its _Extra in between either.
            x = scope._x
            if x is None:
                x = scope._x = new
        finally:
            if locked:
                _extra_lock.release()
    return x


# Makes each _Extra of a scope not entered yet: two threads must not both
# make one for the same scope (the second would replace the first and lose
# what was written into it).
_extra_lock = threading.Lock()


class CancellationScope:
    """A node in the tree of cancellable work; use it with ``async with``.

    Cancelling a scope cancels everything inside it: nested scopes, the body
    of the task that entered it, and the child tasks spawned into it. Inside,
    cancellation arrives as `asyncio.CancelledError` at every suspension point
    until the code leaves the cancelled scope. At the boundary the scope's own
    cancellation becomes `CancelledFailure` (`TimeoutFailure` for a deadline),
    or is swallowed when ``raise_on_cancel=False``; cancellation the scope does
    not own passes through untouched.

    ``cancellable=False`` shields the scope from requests made outside it.
    ``timeout`` (seconds from entry) and ``deadline`` (absolute
    ``loop.time()``) are mutually exclusive; ``None`` or ``math.inf`` mean none.
    ``token`` links a `CancelToken`: the scope is cancelled (with the token's
    reason) when it fires, from any thread; the link is removed at exit.
    """

    # Fields touched by every entry and exit live in slots. The rest only
    # change once a scope is cancelled, spawns, is linked to a token or bound
    # to a loop before entry: they live in one _Extra object (``_x``), made
    # on first need, so a scope that is never cancelled costs a few slot
    # writes and nothing else. There is no instance dictionary: on 3.13 an
    # attribute read on an instance whose class has __slots__ plus __dict__
    # is never specialised (a class default read cost about twice a slot
    # read), and every hot path read several.
    __slots__ = (
        "__weakref__",
        "_cancellable",
        # Read by every entry (the parent's) and exit: slots.
        "_cancelled_by",
        "_deadline",
        "_name",
        # Set at entry; unset before (read only on entered scopes, and by the
        # parent property).
        "_parent",
        "_raises",
        "_state",
        "_task",
        "_timeout",
        # Every scope with a deadline sets it.
        "_timer",
        # Read by every walk of the tree; written from any thread (the token
        # property), which a field of _x could not be without a lock.
        "_token",
        # The host task's state, set at entry (and never unset: a task's
        # state never changes): an exit reads it here rather than with a
        # generic attribute lookup on the task (~360 instructions on 3.13).
        # Unset before the first entry, which an exit takes as "never entered".
        "_ts",
        "_x",
    )

    # Set by _init (the fields every scope has).
    _name: str | None
    _cancellable: bool
    # raise_on_cancel.
    _raises: bool
    # Seconds from entry, or None; turned into _deadline at entry.
    _timeout: float | None
    # Absolute loop time, inf for none. Set at entry, or by the setter.
    _deadline: float
    _state: _State
    # The host task while open, else None.
    _task: asyncio.Task[Any] | None
    _parent: CancellationScope | None
    _timer: asyncio.TimerHandle | None
    # Invariant (while open): the request that made this scope effectively
    # cancelled, or None; never reset while open. Set by _carry/_enter.
    # While it is None, nothing was delivered on this scope's account
    # (delivered == 0) and no child failed: exits rely on that.
    _cancelled_by: _Request | None
    # scope.token, created on first use (any thread: see the property);
    # fired by _fire_tokens. on_cancel callbacks are its callbacks.
    _token: CancelToken | None
    # Set at the first entry; read only once _task has been seen set.
    _ts: _TaskState
    # The rarely-set fields (see _Extra), or None while none is set.
    _x: _Extra | None

    # True only for the hidden per-child scope (see _tasks.py).
    _hidden: ClassVar[bool] = False

    def __init__(
        self,
        *,
        cancellable: bool = True,
        timeout: float | None = None,
        deadline: float | None = None,
        name: str | None = None,
        raise_on_cancel: bool = True,
        token: CancelToken | None = None,
    ) -> None:
        # Replaced by _init at import (after the class), which keeps this
        # signature for inspect and the type checkers.
        _init(  # pragma: no cover
            self, _KEYWORDS, cancellable, timeout, deadline, name, raise_on_cancel, token
        )

    # ------------------------------------------------------------------ public API

    @staticmethod
    def current() -> CancellationScope | None:
        """The current task's innermost open scope, or ``None`` outside any scope.

        In a child task that has not entered a scope of its own this is the
        scope that spawned it. Tasks made with plain ``asyncio.create_task``
        are not children: ``None`` there until they enter a scope.
        """
        try:
            task = _current_task()
        except RuntimeError:
            return None
        if task is None:
            return None
        ts = _get_state(task)
        if ts is None:
            return None
        scope = ts.scope
        if scope is not None and scope._hidden:
            scope = scope._parent
        return scope

    @property
    def name(self) -> str | None:
        """The name given at construction (shown in reprs and cancel messages)."""
        return self._name

    @property
    def cancellable(self) -> bool:
        """False for a shield: requests made outside the scope stop at it."""
        return self._cancellable

    @property
    def active(self) -> bool:
        """True from entry until the scope has exited (also while it waits for children)."""
        state = self._state
        return state is _ENTERED or state is _ENTERED_SYNC or state is _EXITING

    @property
    def parent(self) -> CancellationScope | None:
        """The scope that was current when this one was entered (None before entry)."""
        try:
            parent = self._parent
        except AttributeError:
            return None  # never entered (_init leaves it unset)
        if parent is not None and parent._hidden:
            parent = parent._parent
        return parent

    @property
    def cancel_called(self) -> bool:
        """True once this scope itself was cancelled: `cancel()`, its deadline, or a failed child.

        Never turns False again. A request from an outer scope does not set it.
        """
        x = self._x
        return x is not None and x.own_req is not None

    @property
    def cancel_reason(self) -> str | None:
        """The reason of the first request made on this scope itself (None if none given)."""
        x = self._x
        req = x.own_req if x is not None else None
        return req.reason if req is not None else None

    @property
    def cancelled_caught(self) -> bool:
        """True once the scope absorbed its own cancellation at exit.

        False if the body swallowed the CancelledError itself, or if the
        cancellation was not this scope's to absorb. Never turns False again.
        """
        x = self._x
        return x is not None and x.cancelled_caught

    @property
    def deadline(self) -> float:
        """Absolute deadline in ``loop.time()`` terms, ``math.inf`` when there is none.

        With ``timeout=`` it reads ``math.inf`` until entry. Setting it before
        entry fixes an absolute deadline; while open it reschedules the timer
        (a past value cancels at the next suspension point); after exit it
        has no effect.
        """
        return self._deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        checked = _check_time(value, "deadline")
        when = _INF if checked is None else checked
        state = self._state
        if state is _EXITED:
            return
        self._deadline = when
        if state is _CREATED:
            self._timeout = None if checked is None else _ABSOLUTE
        else:
            self._arm_deadline()

    @property
    def cancel_requested(self) -> asyncio.Future[CancelledFailure]:
        """A future resolved (with a `CancelledFailure`) when a request first reaches the scope.

        Its result's ``reason`` is the request's reason and ``scope`` the scope
        where it originated. A non-cancellable scope's future resolves when a
        request from outside arrives, though the request stops there. It
        never carries an exception and stays pending if no request comes.
        Reading it needs a running loop (or an entered scope).
        """
        x = self._x
        fut = x.requested_fut if x is not None else None
        if fut is None or fut.cancelled():
            # A future cancelled by someone who awaited it is replaced.
            if fut is not None:
                loop = fut.get_loop()
            else:
                task = self._task
                loop = task.get_loop() if task is not None else asyncio.get_running_loop()
            fut = _RequestedFuture(loop=loop)
            req = self._reached()
            if req is not None:
                fut.set_result(req.failure())
            _extra(self).requested_fut = fut
        return fut

    def cancel(self, reason: str | None = None) -> None:
        """Request cancellation of this scope and everything inside it.

        Idempotent: the first call's reason wins. Before entry it pre-cancels
        the scope; after exit it does nothing. Safe from any thread (and from
        a signal handler): there it takes effect on the loop's next iteration.
        """
        task = self._task
        if task is not None:
            loop = task.get_loop()
            if _get_running_loop() is not loop:
                # Another thread (or no running loop): hand it to the loop.
                # A closed loop raises RuntimeError: nothing is left to cancel.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._cancel, reason)
                return
            self._cancel(reason)
            if _current_task(loop) is None:
                # Outside any task we may be in a signal handler that
                # interrupted select(): wake the loop so delivery happens now.
                loop.call_soon_threadsafe(_noop)
        elif self._state is not _EXITED:
            req: _Request = _object_new(_Request)
            _request_init(req, self, reason, None)  # (no class call: see _object_new)
            self._cancel_unentered(req)

    def spawn(
        self, fn: Callable[..., Coroutine[Any, Any, T]] | Coroutine[Any, Any, T], /, *args: Any,
        name: str | None = None,
    ) -> TaskHandle[T]:
        """Start a child task owned by this scope and return its `TaskHandle`.

        ``fn`` is a coroutine function (called with ``args``) or a coroutine
        object (without args). Works from any task of the scope's loop while
        the scope is open; the scope's exit waits for every child. A child
        that fails cancels the scope; failures are raised at exit in an
        exception group.
        """
        # Replaced by _tasks.spawn at import (the end of this module): the
        # same signature and docstring, one Python call less per spawn.
        return _tasks.spawn(self, fn, *args, name=name)  # pragma: no cover

    def run(self, fn: Callable[..., Awaitable[T]], /, *args: Any) -> Coroutine[Any, Any, T]:
        """Return an awaitable that enters this scope, awaits ``fn(*args)`` and returns the result.

        A non-callable ``fn`` raises `TypeError` at the call. With
        ``raise_on_cancel=False`` a cancelled run returns ``None``.
        """
        fn_obj: object = fn  # callers may pass anything at runtime
        if not callable(fn_obj):
            _close_if_coroutine(fn_obj)
            raise TypeError(
                f"run() needs a callable returning an awaitable, not {type(fn_obj).__name__}; "
                "pass the async function and its arguments: scope.run(fn, *args)"
            )
        if self._state is not _CREATED:
            raise RuntimeError(f"{self!r} was already entered; run() needs a fresh scope")
        return self._run(fn, args)

    async def _run(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        async with self:
            return await fn(*args)
        # Only a raise_on_cancel=False scope gets here: it absorbed its own
        # cancellation, and there is no result to return.
        return None  # type: ignore[return-value]

    @property
    def token(self) -> CancelToken:
        """A `CancelToken` that fires when a cancel request reaches this scope.

        That is exactly when `cancel_requested` resolves: `cancel()` or the
        deadline, a request from an enclosing scope (also for a shield, which
        it stops at), a failing child. Its reason is the request's, and its
        ``raise_if_cancelled()`` raises the request's `CancelledFailure`. It
        fires in the loop's thread once the request has reached every scope
        below, before any task sees its CancelledError. Pass it to threads
        and synchronous code; readable from any thread.
        """
        token = self._token
        if token is None:
            with _token_lock:
                token = self._token
                if token is None:
                    token = self._token = CancelToken()
            # A request that reached the scope before _token was set (see
            # _reach), read here; one in flight in the loop's thread right now
            # is caught by the check handed to the loop. Firing twice is harmless.
            req = self._reached()
            if req is not None:
                token._fire_request(req)
            else:
                task = self._task
                if task is not None and _get_running_loop() is not task.get_loop():
                    with contextlib.suppress(RuntimeError):  # a closed loop
                        task.get_loop().call_soon_threadsafe(self._fire_if_reached, token)
        return token

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` when a cancel request reaches this scope; return a remover.

        Temporal's "CancellationScopes and callbacks": for stopping what
        cancellation cannot interrupt (``sqlite3.Connection.interrupt``, a
        subprocess, a socket). Runs when ``scope.token`` fires: in the loop's
        thread, after the request has reached every scope below and before
        any task sees its CancelledError; at once if a request already
        reached the scope. Callbacks run in registration order; an exception
        is passed to the loop's exception handler and never stops delivery
        or the other callbacks. Never called for a scope that exits without
        being reached.
        """
        if self._state is _EXITED and self._reached() is None:
            if not callable(callback):
                raise TypeError(
                    f"on_cancel() needs a callable taking no arguments, not "
                    f"{type(callback).__name__}"
                )
            return _noop
        return self.token.add_callback(callback)

    def _cancel_by_token(self, token: CancelToken) -> None:
        """The token passed as ``token=`` fired; in this scope's loop, once entered."""
        if self._state is not _EXITED:  # (it may have exited since it was handed over)
            self._own_request(self._token_request(token))

    def _token_request(self, token: CancelToken) -> _Request:
        """The request on this scope for its linked token, which has fired."""
        req = token._request
        deadline = req.deadline if req is not None else token._deadline
        return _Request(self, token._reason, deadline)

    def _reached(self) -> _Request | None:
        """The first request that reached this scope, or None (see _reach)."""
        x = self._x
        req = x.reached_by if x is not None else None
        return req if req is not None else self._cancelled_by

    def _fire_if_reached(self, token: CancelToken) -> None:
        req = self._reached()
        if req is not None:
            token._fire_request(req)

    def _detach_token(self) -> None:
        """At exit: a long-lived token must not keep exited scopes registered."""
        x = self._x
        if x is not None:
            link = x.token_link
            if link is not None:
                x.token_link = None
                link.detach()

    # ------------------------------------------------------------------ enter / exit

    # __enter__ and __aenter__ are the same code, inlined (the hot path: one
    # Python call less per entry); keep them, and _tasks._child_main's entry
    # of the hidden scope, in step.

    def __enter__(self) -> Self:
        if self._state is not _CREATED:
            raise RuntimeError(
                f"{self!r} cannot be entered twice; create a new scope for each `with` block"
            )
        # (None outside a task: the attribute lookup fails, the except tells.)
        task: _HostTask = _current_task()  # type: ignore[assignment]
        try:
            ts = task._cancelscope_state
        except AttributeError:
            if task is None:  # pyright: ignore[reportUnnecessaryComparison]
                raise RuntimeError(f"{self!r} must be entered inside an asyncio task") from None
            ts = _get_state(task) or _new_state(task, _task_loop())
        parent = ts.scope
        self._task = task
        self._ts = ts
        self._parent = parent
        if _HAS_COUNTS or _counts(task):
            # A native cancel still pending from before entry (the task is
            # running, so it can only be _must_cancel) is foreign, not ours.
            try:
                c0: int = _cancelling(task)
            except TypeError:  # not an asyncio.Task: a task factory's own class
                c0 = task.cancelling()
            if c0:
                c0 -= task._must_cancel  # type: ignore[attr-defined]
                if c0:
                    _extra(self).c0 = c0
        self._state = _ENTERED_SYNC
        ts.scope = self
        # Read after _state: a cancel() from another thread records its
        # request and then reads _state (see _cancel_unentered).
        x = self._x
        if x is not None or (parent is not None and parent._cancelled_by is not None):
            self._enter_extra(task, ts, parent, x)  # (and the deadline)
            return self
        timeout = self._timeout
        if timeout is not None:  # a timeout, or a deadline (_ABSOLUTE)
            if timeout is not _ABSOLUTE:
                # _start_deadline's common case, inlined (B: one frame less).
                loop = ts.loop
                now = loop.time()
                when = self._deadline = now + timeout
                if when > now:
                    self._timer = loop.call_at(when, self._on_deadline)
                else:
                    self._expired_at_entry(task, ts, when)
            else:
                self._start_deadline(task, ts)
        return self

    async def __aenter__(self) -> Self:
        if self._state is not _CREATED:
            raise RuntimeError(
                f"{self!r} cannot be entered twice; create a new scope for each `with` block"
            )
        # (None outside a task: the attribute lookup fails, the except tells.)
        task: _HostTask = _current_task()  # type: ignore[assignment]
        try:
            ts = task._cancelscope_state
        except AttributeError:
            if task is None:  # pyright: ignore[reportUnnecessaryComparison]
                raise RuntimeError(f"{self!r} must be entered inside an asyncio task") from None
            ts = _get_state(task) or _new_state(task, _task_loop())
        parent = ts.scope
        self._task = task
        self._ts = ts
        self._parent = parent
        if _HAS_COUNTS or _counts(task):
            # A native cancel still pending from before entry (the task is
            # running, so it can only be _must_cancel) is foreign, not ours.
            try:
                c0: int = _cancelling(task)
            except TypeError:  # not an asyncio.Task: a task factory's own class
                c0 = task.cancelling()
            if c0:
                c0 -= task._must_cancel  # type: ignore[attr-defined]
                if c0:
                    _extra(self).c0 = c0
        self._state = _ENTERED
        ts.scope = self
        # Read after _state: a cancel() from another thread records its
        # request and then reads _state (see _cancel_unentered).
        x = self._x
        if x is not None or (parent is not None and parent._cancelled_by is not None):
            self._enter_extra(task, ts, parent, x)  # (and the deadline)
            return self
        timeout = self._timeout
        if timeout is not None:  # a timeout, or a deadline (_ABSOLUTE)
            if timeout is not _ABSOLUTE:
                # _start_deadline's common case, inlined (B: one frame less).
                loop = ts.loop
                now = loop.time()
                when = self._deadline = now + timeout
                if when > now:
                    self._timer = loop.call_at(when, self._on_deadline)
                else:
                    self._expired_at_entry(task, ts, when)
            else:
                self._start_deadline(task, ts)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # The checks of _exit_check, inlined: this is the hot path. The state
        # needs none: ts.scope is the scope only while it is open in its task
        # (and _ts is unset until its entry).
        task: asyncio.Task[Any] = self._task  # type: ignore[assignment]  # (checked below)
        try:  # (free on 3.11+)
            ts = self._ts
            if (
                ts.scope is not self
                or (
                    _current_task()
                    if _CHEAP_CURRENT_TASK
                    else _current_task(ts.loop) if _get_ident() == ts.thread else None
                )
                is not task
            ):
                ts = self._exit_check()  # raises
        except AttributeError:
            raise self._never_entered() from None  # (_ts is unset until entry)
        except RuntimeError:
            # current_task() without a running loop, or a wrong exit.
            if self._closing(exc_type):
                return False  # closed outside its task: see _closing
            raise
        x = self._x
        if x is None:
            if self._cancelled_by is None:
                # Never cancelled, nothing rare: nothing to uncancel, report or absorb.
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                parent = self._parent
                self._state = _EXITED
                self._task = None
                ts.scope = parent
                if parent is not None and parent._cancelled_by is not None:
                    _schedule(task, ts)  # back in a cancelled scope (leaving a shield)
                return False
            parent = self._parent
            if parent is not None and parent._cancelled_by is not None and self._cancellable:
                self._inner_exit(task, ts)
                return False
            return self._finish(task, ts, exc_type, exc)
        if x.children:
            raise RuntimeError(
                f"{self!r} still has child tasks: a scope that owns children must "
                "exit with `async with`, which waits for them"
            )
        if self._cancelled_by is None:
            self._leave(task, ts, x)
            return False
        parent = self._parent
        if (
            parent is not None
            and parent._cancelled_by is not None
            and self._cancellable
            and not x.delivered
            and x.failures is None
        ):
            self._inner_exit(task, ts)
            return False
        return self._finish(task, ts, exc_type, exc)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # As __exit__ (kept in step with it).
        task: asyncio.Task[Any] = self._task  # type: ignore[assignment]  # (checked below)
        try:  # (free on 3.11+)
            ts = self._ts
            if (
                ts.scope is not self
                or (
                    _current_task()
                    if _CHEAP_CURRENT_TASK
                    else _current_task(ts.loop) if _get_ident() == ts.thread else None
                )
                is not task
            ):
                ts = self._exit_check()  # raises
        except AttributeError:
            raise self._never_entered() from None  # (_ts is unset until entry)
        except RuntimeError:
            # current_task() without a running loop, or a wrong exit.
            if self._closing(exc_type):
                return False  # closed outside its task: see _closing
            raise
        x = self._x
        if x is None:
            if self._cancelled_by is None:
                # Never cancelled, nothing rare: nothing to uncancel, report or absorb.
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                parent = self._parent
                self._state = _EXITED
                self._task = None
                ts.scope = parent
                if parent is not None and parent._cancelled_by is not None:
                    _schedule(task, ts)  # back in a cancelled scope (leaving a shield)
                return False
            parent = self._parent
            if parent is not None and parent._cancelled_by is not None and self._cancellable:
                # _inner_exit, inlined (a cancelled nest unwinds through here).
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._state = _EXITED
                self._task = None
                ts.scope = parent
                if not ts.hooked:
                    _schedule(task, ts)
                return False
            return self._finish(task, ts, exc_type, exc)
        if not x.children:
            if self._cancelled_by is None:
                self._leave(task, ts, x)
                return False
            parent = self._parent
            if (
                parent is not None
                and parent._cancelled_by is not None
                and self._cancellable
                and not x.delivered
                and x.failures is None
            ):
                self._inner_exit(task, ts)
                return False
            return self._finish(task, ts, exc_type, exc)
        foreign = await self._wait_children(task, exc)
        # The outcome depends on what unwound the body (SPEC 7): the wait for
        # children is not a delivery point. A foreign cancellation that hit
        # the wait is re-raised, or, if the body raised, re-requested.
        if foreign is None:
            return self._finish(task, ts, exc_type, exc)
        if exc is not None:
            if not isinstance(exc, CancelledError):
                _rearm(task, foreign)
                return self._finish(task, ts, exc_type, exc)
            # The body's CancelledError goes on, never absorbed: a foreign
            # cancellation is pending (3.10 could not tell by counting).
            return self._finish(task, ts, exc_type, exc, foreign=True)
        self._finish(task, ts, type(foreign), foreign, foreign=True)
        raise foreign

    def _enter_extra(
        self,
        task: asyncio.Task[Any],
        ts: _TaskState,
        parent: CancellationScope | None,
        x: _Extra | None,
    ) -> None:
        """The end of an entry for a scope with an `_Extra`, or below a cancelled scope.

        Arms the deadline too, unless the scope was cancelled itself before
        (or while) entering.
        """
        if x is not None:
            fut = x.requested_fut
            if fut is not None and fut.get_loop() is not ts.loop:
                # Bound to another loop before entry by reading cancel_requested:
                # undo the entry (the scope can still be entered in its loop).
                ts.scope = parent
                self._state = _CREATED
                self._task = None
                self._parent = None
                x.c0 = 0
                raise RuntimeError(
                    f"{self!r} belongs to another event loop than the one entering it"
                )
        if (x is not None and x.own_req is not None) or (
            parent is not None and parent._cancelled_by is not None
        ):
            self._enter_cancelled(task, ts, parent)
        timeout = self._timeout
        if timeout is not None:
            x = self._x
            if x is None or x.own_req is None:
                self._start_deadline(task, ts)
            elif timeout is not _ABSOLUTE:
                # Cancelled already: the deadline reads as set, with no timer.
                self._deadline = ts.loop.time() + timeout

    def _enter_cancelled(
        self, task: asyncio.Task[Any], ts: _TaskState, parent: CancellationScope | None
    ) -> None:
        """Entry into a pre-cancelled scope, or below an effectively cancelled one."""
        x = self._x
        own = x.own_req if x is not None else None
        inherited = parent._cancelled_by if parent is not None else None
        if inherited is not None:
            _reach(self, inherited)
            if self._cancellable:
                self._cancelled_by = inherited
        if own is not None:
            _reach(self, own)
            if self._cancelled_by is None:
                self._cancelled_by = own
        if self._cancelled_by is not None:
            _schedule(task, ts)
        try:
            for req in (inherited, own):
                if req is not None and req.hooked is not None:
                    _fire_tokens(req)
        except BaseException:
            # A KeyboardInterrupt/SystemExit from an on_cancel callback (the
            # others are reported, not raised). The entry raises it, so no exit
            # will run: leave the scope as if it had exited at once.
            self._state = _EXITED
            self._task = None
            ts.scope = None if self._hidden else parent
            self._detach_token()
            raise
    def _closing(self, exc_type: type[BaseException] | None) -> bool:
        """A coroutine closed outside its task (GeneratorExit): leave the scope quietly.

        That happens when a pending task is collected, or its loop closed: the
        task can never run again, so there is nothing to wait for or deliver,
        and an error here would only be "Exception ignored" noise (asyncio.timeout
        is quiet there too). Drops the timer and marks the scope exited.
        """
        if exc_type is None or not issubclass(exc_type, GeneratorExit):
            return False
        state = self._state
        if state is not _ENTERED and state is not _ENTERED_SYNC and state is not _EXITING:
            return False
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        task = self._task
        ts = _get_state(task) if task is not None else None
        if ts is not None and ts.scope is self:
            ts.scope = None if self._hidden else self._parent
        self._state = _EXITED
        self._task = None
        self._detach_token()
        return True

    def _never_entered(self) -> RuntimeError:
        return RuntimeError(f"{self!r} was never entered; it cannot exit")

    def _exit_check(self) -> _TaskState:
        """Refuse a wrong exit before changing anything; return the host's task state."""
        state = self._state
        if state is _CREATED:
            raise self._never_entered()
        if state is not _ENTERED and state is not _ENTERED_SYNC:
            raise RuntimeError(f"{self!r} has already exited; it cannot exit")
        task = _current_task()
        if task is None or task is not self._task:
            raise RuntimeError(
                f"{self!r} was entered in {self._task!r} and must exit there, "
                f"not in {task!r}"
            )
        ts = _get_state(task)
        assert ts is not None  # set when the scope was entered in this task
        if ts.scope is not self:
            raise RuntimeError(
                f"scopes must exit in the reverse order of entry: {self!r} cannot "
                f"exit while {ts.scope!r}, entered inside it, is still open"
            )
        return ts

    def _inner_exit(self, task: asyncio.Task[Any], ts: _TaskState) -> None:
        """Leave a cancelled scope whose parent is cancelled too, nothing else pending.

        The exits check for that case (cancellable, nothing delivered on this
        scope's account, no failed child): the common exit of an inner scope
        while a cancellation unwinds a nest. The outermost cancelled scope
        reports (SPEC 7.3), so whatever the body raised goes on, as _finish
        would decide, with one Python call instead of three.
        """
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        self._state = _EXITED
        self._task = None
        x = self._x
        if x is not None and x.token_link is not None:
            self._detach_token()
        ts.scope = self._parent
        if not ts.hooked:
            _schedule(task, ts)  # still in a cancelled scope: delivery goes on

    def _leave(self, task: asyncio.Task[Any], ts: _TaskState, x: _Extra) -> None:
        """Exit of a scope never cancelled that has an `_Extra` (a token, cancel_requested...)."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        parent = self._parent
        self._state = _EXITED
        self._task = None
        if x.token_link is not None:
            self._detach_token()
        ts.scope = parent
        if parent is not None and parent._cancelled_by is not None:
            _schedule(task, ts)  # back in a cancelled scope (leaving a shield)

    async def _wait_children(
        self, task: asyncio.Task[Any], exc: BaseException | None
    ) -> BaseException | None:
        """Wait until every child has finished; return a foreign CancelledError caught meanwhile."""
        self._state = _EXITING
        # A KeyboardInterrupt/SystemExit from an on_cancel callback fired by a
        # request below: raised once the children have finished (SPEC 5).
        interrupt: BaseException | None = None
        if exc is not None:
            # As TaskGroup, trio and anyio: a failing body stops the children.
            interrupt = self._stop_children(f"the scope's body raised {type(exc).__name__}")
        foreign: BaseException | None = None
        loop = self._ts.loop  # task.get_loop(), without a method call on the task
        x = _extra(self)  # (it has children)
        while x.children:
            fut = x.exit_fut = loop.create_future()
            try:
                await fut
            except GeneratorExit:
                self._closing(GeneratorExit)  # closed outside its task: see _closing
                raise
            except CancelledError as err:
                # Delivery to a host in EXITING is suppressed, so this is a
                # foreign cancellation (task.cancel(), asyncio.timeout, ...):
                # stop the children, keep waiting, re-raise it afterwards.
                if foreign is None:
                    foreign = err
                stopped = self._stop_children(
                    "the host task was cancelled while waiting for children"
                )
                if interrupt is None:
                    interrupt = stopped
        x.exit_fut = None
        self._state = _ENTERED
        if interrupt is not None:
            # It wins over the exit's own outcome, which becomes its context.
            try:
                self._finish(task, self._ts, type(exc) if exc is not None else None, exc)
            except BaseException as outcome:
                if interrupt.__context__ is None:
                    interrupt.__context__ = outcome
            raise interrupt
        return foreign

    def _stop_children(self, reason: str) -> BaseException | None:
        """A request on this scope while its exit waits for children; return, not raise,
        a KeyboardInterrupt/SystemExit from an on_cancel callback (see _wait_children)."""
        try:
            self._own_request(_Request(self, reason))
        except BaseException as err:
            return err
        return None

    def _finish(
        self,
        task: asyncio.Task[Any],
        ts: _TaskState,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        foreign: bool = False,
    ) -> bool:
        """Leave the scope; return True to swallow the exception, or raise the outcome.

        ``foreign`` marks an exception known not to be the scope's own.
        """
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        parent = self._parent
        self._state = _EXITED
        self._task = None
        x = self._x
        if x is not None and x.token_link is not None:
            self._detach_token()
        # A task-group exit a delivery went into has finished by now (it ran
        # inside this scope): do not keep its coroutine alive.
        ts.group_exit = None
        # (A hidden child scope never gets here: see _tasks._child_main.) A check
        # still queued after the last delivery is left alone: it serves the
        # next request of this task, if any, at no extra cost.
        ts.scope = parent
        if parent is not None and parent._cancelled_by is not None:
            # Back in a cancelled scope (leaving a shield, or the body
            # swallowed the error): delivery goes on.
            _schedule(task, ts)
        c0 = 0
        if x is not None:
            delivered = x.delivered
            if delivered:
                x.delivered = 0
                if _HAS_COUNTS or _counts(task):
                    if delivered == 1:
                        # The common case, without a range (and the method
                        # through its descriptor, see _cancelling).
                        try:
                            _uncancel(task)
                        except TypeError:
                            task.uncancel()
                    else:
                        for _ in range(delivered):
                            task.uncancel()
            failures = x.failures
            if failures is not None:
                x.failures = None
                return self._raise_group(task, failures, exc)
            c0 = x.c0
        if exc_type is None or not issubclass(exc_type, CancelledError):
            return False
        assert exc is not None
        # _owns, inlined.
        if foreign or self._cancelled_by is None:
            return False
        if self._cancellable and parent is not None and parent._cancelled_by is not None:
            return False  # the outermost cancelled scope reports
        if _HAS_COUNTS or _counts(task):
            try:
                pending = _cancelling(task)
            except TypeError:  # not an asyncio.Task (see _cancelling)
                pending = task.cancelling()
            if pending > c0:
                return False  # another cancel request is pending: not ours to absorb
        elif not _ours_310(task, exc):
            return False
        if x is None:
            x = _extra(self)
        x.cancelled_caught = True
        if self._raises:
            req = self._cancelled_by
            assert req is not None
            raise req.failure() from exc
        return True

    def _owns(self, task: asyncio.Task[Any], exc: BaseException) -> bool:
        """Is ``exc`` (a CancelledError) this scope's own cancellation? (SPEC 7.3)

        (Inlined in `_finish`; keep the two in step.)
        """
        if self._cancelled_by is None:
            return False
        parent = self._parent
        if self._cancellable and parent is not None and parent._cancelled_by is not None:
            return False  # the outermost cancelled scope reports
        if _HAS_COUNTS or _counts(task):
            return task.cancelling() <= self._c0()
        return _ours_310(task, exc)

    def _c0(self) -> int:
        """task.cancelling() at entry, less a native cancel then pending (see _Extra.c0)."""
        x = self._x
        return x.c0 if x is not None else 0

    def _raise_group(
        self,
        task: asyncio.Task[Any],
        failures: list[BaseException],
        exc: BaseException | None,
    ) -> NoReturn:
        errors = list(failures)
        if isinstance(exc, CancelledError):
            if self._owns(task, exc):
                _extra(self).cancelled_caught = True
            elif (
                task.cancelling() > self._c0()
                if _HAS_COUNTS or _counts(task)
                else not _ours_310(task, exc)
            ):
                # The group wins over a foreign cancellation; re-request it so
                # it is not lost.
                _rearm(task, exc)
        elif exc is not None:
            errors.append(exc)
        raise BaseExceptionGroup(f"unhandled errors in {self._label()}", errors) from None

    # ------------------------------------------------------------------ requests

    def _cancel(self, reason: str | None) -> None:
        if self._state is _EXITED:
            return
        req: _Request = _object_new(_Request)
        _request_init(req, self, reason, None)  # (no class call: see _object_new)
        self._own_request(req)

    def _cancel_unentered(self, req: _Request) -> None:
        """`_own_request` for a scope that was not entered when the caller looked.

        ``cancel()`` of such a scope, or its linked token firing outside any
        loop, runs in the caller's thread, which may not be the thread that
        is entering the scope at that very moment. So this only records the
        request and then reads ``_state``, while the entry writes ``_state``
        and then reads the request (`__enter__`): under the interpreter lock
        one of the two sees the other's write. Either the entry finds the
        request, or this finds the scope entered and hands the request to the
        loop (`_own_request_late`), which applies it unless the entry did.
        """
        x = _extra(self)
        if x.own_req is not None:
            return  # the first request wins
        x.own_req = req
        state = self._state
        if state is _CREATED or state is _EXITED:
            return  # the entry will find it (or the scope is done)
        task = self._task
        if task is None:
            return  # exited meanwhile
        loop = task.get_loop()
        if _get_running_loop() is loop:  # pragma: no cover - needs another thread's entry
            self._own_request_late(req)
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing left to cancel
            loop.call_soon_threadsafe(self._own_request_late, req)

    def _own_request_late(self, req: _Request) -> None:
        """In the loop: ``req``, recorded by `_cancel_unentered` as the scope was entered."""
        state = self._state
        if state is not _ENTERED and state is not _ENTERED_SYNC and state is not _EXITING:
            return
        x = _extra(self)
        own = x.own_req
        if own is not None:
            if own is not req or self._cancelled_by is req:
                return  # another request came first, or the entry applied this one
            # Recorded, perhaps not applied: apply it as a request made now.
            # (If the entry applied it below a request from outside, the
            # scope's _cancelled_by, this repeats nothing: _reach and _carry
            # act only on a scope not cancelled yet.)
            x.own_req = None
        # (None: it was recorded in an _Extra that the entry's replaced.)
        self._own_request(req)

    def _own_request(self, req: _Request) -> None:
        """A request made on this scope itself (idempotent: the first one wins)."""
        x = self._x
        if x is None:
            x = _extra(self)
        elif x.own_req is not None:
            return
        x.own_req = req
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        state = self._state
        if state is _ENTERED or state is _ENTERED_SYNC or state is _EXITING:
            if (
                not self._cancellable
                or self._token is not None
                or x.requested_fut is not None
            ):
                _reach(self, req)  # (a no-op for any other scope)
            if self._cancelled_by is None:
                self._cancelled_by = req
                _carry(self, req)
            if req.hooked is not None:
                _fire_tokens(req)

    def _start_deadline(self, task: asyncio.Task[Any], ts: _TaskState) -> None:
        """Arm the deadline at entry (_arm_deadline, reading the clock once).

        For a deadline, and for the rare entries of _enter_extra: the entries
        arm a relative timeout inline (keep that in step with this).
        """
        loop = ts.loop  # task.get_loop(), without a method call on the task (~450 instructions)
        now = loop.time()
        timeout: float = self._timeout  # type: ignore[assignment]  # (not None here)
        if timeout is not _ABSOLUTE:
            when = self._deadline = now + timeout
        else:
            when = self._deadline
        # (Not called for a scope cancelled itself before entry: see
        # _enter_extra. A cancel() from another thread just after the entry
        # read _x cancels the timer this arms, in _own_request_late.)
        if when > now:
            self._timer = loop.call_at(when, self._on_deadline)
        else:
            self._expired_at_entry(task, ts, when)

    def _expired_at_entry(self, task: asyncio.Task[Any], ts: _TaskState, when: float) -> None:
        """Entry of a scope whose deadline has passed (gh-95051), as in _arm_deadline."""
        x = self._x
        if x is not None and x.own_req is not None:
            return  # (that cancel() from another thread came first)
        req: _Request = _object_new(_Request)
        _request_init(req, self, "deadline exceeded", when)  # (see _object_new)
        if (
            not self._cancellable
            or self._token is not None
            or (x is not None and x.requested_fut is not None)
        ):
            self._own_request(req)
            return
        # _own_request, for a scope just entered (no timer, no children) that
        # nothing watches: its task is running, so delivery waits for the
        # next suspension point, as _carry and _schedule would arrange.
        if x is None:
            x = _extra(self)
        x.own_req = req
        if self._cancelled_by is None:
            self._cancelled_by = req
            if not ts.hooked:
                ts.hooked = True
                ts.recheck = ts.loop.call_soon(_deliver, task, ts)  # _recheck_soon, no batch

    def _arm_deadline(self) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        when = self._deadline
        x = self._x
        if (x is not None and x.own_req is not None) or when == _INF:
            return
        assert self._task is not None
        loop = self._task.get_loop()
        if when <= loop.time():
            # Already expired: cancel now, so the very first suspension point
            # sees it (gh-95051: timeout(0) must not fire one await late).
            req: _Request = _object_new(_Request)
            _request_init(req, self, "deadline exceeded", when)  # (see _object_new)
            self._own_request(req)
        else:
            self._timer = loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        req: _Request = _object_new(_Request)
        _request_init(req, self, "deadline exceeded", self._deadline)  # (see _object_new)
        self._own_request(req)

    # ------------------------------------------------------------------ children

    def _child_failed(self, handle: TaskHandle[Any], exc: BaseException) -> None:
        x = _extra(self)
        if x.failures is None:
            x.failures = []
        x.failures.append(exc)
        self._own_request(_Request(self, f"child task {handle.name!r} failed with {exc!r}"))

    def _child_closed(self, handle: TaskHandle[Any]) -> None:
        """A child's coroutine was closed outside its task: forget it, wake nobody."""
        x = self._x
        if x is not None and x.children is not None:
            x.children.pop(handle, None)

    # ------------------------------------------------------------------ display

    def _label(self) -> str:
        if self._name is not None:
            return f"scope {self._name!r}"
        return "unnamed scope at " + hex(id(self))

    def __repr__(self) -> str:
        parts = [type(self).__name__]
        if self._name is not None:
            parts.append(repr(self._name))
        parts.append(self._state.value)
        if not self._cancellable:
            parts.append("non-cancellable")
        if self._state is _CREATED and self._timeout is not None and self._timeout is not _ABSOLUTE:
            parts.append(f"timeout={self._timeout:g}s")
        elif self._deadline != _INF:
            task = self._task
            if task is not None:
                remaining = self._deadline - task.get_loop().time()
                parts.append(f"deadline={round(remaining, 3):+g}s")
            else:
                parts.append(f"deadline={self._deadline:g}")
        x = self._x
        if x is not None and x.own_req is not None:
            parts.append("cancel_called")
        elif self._cancelled_by is not None:
            parts.append("cancelled_by_parent")
        if x is not None and x.cancelled_caught:
            parts.append("cancelled_caught")
        if x is not None and x.children:
            parts.append(f"children={len(x.children)}")
        return "<" + " ".join(parts) + ">"


CancellationScope.__module__ = "cancelscope"


class _KeywordsOnly(enum.Enum):
    KEYWORDS = "keywords"


_KEYWORDS = _KeywordsOnly.KEYWORDS


def _init(
    self: CancellationScope,
    keywords: object = _KEYWORDS,
    /,
    cancellable: bool = True,
    timeout: float | None = None,
    deadline: float | None = None,
    name: str | None = None,
    raise_on_cancel: bool = True,
    token: CancelToken | None = None,
) -> None:
    """`CancellationScope.__init__`, whose parameters are keyword-only.

    CPython fills a missing keyword-only parameter with a dictionary lookup
    per parameter on every call, and a missing positional one by copying a
    tuple: on 3.13 that was ~700 of the ~3,900 instructions of
    ``CancellationScope()``. So the parameters here are positional-or-keyword,
    behind a positional-only guard: any positional argument lands in
    ``keywords`` and is refused, which keeps them keyword-only for callers.
    The factories below pass the guard and go positional (no keyword
    matching either); `with_timeout` has a shorter one, _init_timeout.
    """
    if keywords is not _KEYWORDS:
        raise TypeError(
            "CancellationScope() takes keyword arguments only (cancellable=, timeout=, "
            f"deadline=, name=, raise_on_cancel=, token=), not the positional {keywords!r}"
        )
    when = _INF
    # The common cases first, in as few bytecodes as possible (B, E: every
    # scope with a timeout runs this).
    if deadline is None:
        if timeout is not None:
            kind: type[object] = type(timeout)  # (callers may pass anything at runtime)
            if kind is float:
                if timeout - timeout != 0.0:  # inf or NaN (finite: 0.0)
                    timeout = _check_time(timeout, "timeout")
            elif kind is int:
                timeout = float(timeout)  # as _check_time, without its checks
            else:
                timeout = _check_time(timeout, "timeout")
    elif timeout is not None:
        raise ValueError(
            "pass either timeout (seconds from entry) or deadline (absolute "
            "loop.time()), not both"
        )
    else:
        checked = _check_time(deadline, "deadline")
        if checked is not None:
            when = checked
            timeout = _ABSOLUTE
    self._name = name
    # `True if x else False` is bool(x) without the call (hot: every scope).
    self._cancellable = True if cancellable else False  # noqa: SIM210
    self._raises = True if raise_on_cancel else False  # noqa: SIM210
    self._timeout = timeout
    self._deadline = when
    self._state = _CREATED
    self._task = None
    # (_parent and _ts stay unset until entry: see their slots.)
    self._timer = None
    self._cancelled_by = None
    self._token = None
    self._x = None
    if token is not None:
        _TokenLink.link(self, token)


def _init_timeout(self: CancellationScope, timeout: float | None, name: str | None) -> None:
    """``_init(self, _KEYWORDS, True, timeout, None, name, True, None)`` in fewer steps.

    `with_timeout` (B and E: every scope with a timeout) checks and writes
    only what it sets; keep it in step with _init.
    """
    if timeout is not None:
        kind: type[object] = type(timeout)  # (callers may pass anything at runtime)
        if kind is float:
            if timeout - timeout != 0.0:  # inf or NaN (finite: 0.0)
                timeout = _check_time(timeout, "timeout")
        elif kind is int:
            timeout = float(timeout)  # as _check_time, without its checks
        else:
            timeout = _check_time(timeout, "timeout")
    self._name = name
    self._cancellable = True
    self._raises = True
    self._timeout = timeout
    self._deadline = _INF
    self._state = _CREATED
    self._task = None
    self._timer = None
    self._cancelled_by = None
    self._token = None
    self._x = None


_init.__signature__ = inspect.signature(CancellationScope.__init__)  # type: ignore[attr-defined]
_init.__qualname__ = "CancellationScope.__init__"
CancellationScope.__init__ = _init  # type: ignore[method-assign,assignment]


# The factories below make their scope with _object_new and a direct call of
# _init (_init_timeout for with_timeout), not by calling the class (see _object_new).


def _noop() -> None:
    pass


def _close_if_coroutine(obj: object) -> None:
    # A coroutine object we refuse would otherwise warn "never awaited".
    if asyncio.iscoroutine(obj):
        obj.close()


def current_deadline() -> float:
    """The effective deadline of the current task, ``math.inf`` if none.

    The minimum deadline of the current scope and its ancestors, not looking
    past the first non-cancellable one (whose own deadline still counts).
    """
    try:
        task = _current_task()
    except RuntimeError:
        return _INF
    if task is None:
        return _INF
    ts = _get_state(task)
    scope = ts.scope if ts is not None else None
    when = _INF
    while scope is not None:
        if scope._deadline < when:
            when = scope._deadline
        if not scope._cancellable:
            break
        scope = scope._parent
    return when


# ------------------------------------------------------------------ convenience forms

def _make(
    fn: Callable[..., Awaitable[T]] | None,
    args: tuple[Any, ...],
    scope: CancellationScope,
    what: str,
) -> CancellationScope | Coroutine[Any, Any, T]:
    if fn is None:
        if args:
            raise TypeError(f"{what}() got arguments but no function to call with them")
        return scope
    return scope.run(fn, *args)


@overload
def cancellable(fn: None = None, /, *, name: str | None = None) -> CancellationScope: ...
@overload
def cancellable(
    fn: Callable[..., Awaitable[T]], /, *args: Any, name: str | None = None
) -> Coroutine[Any, Any, T]: ...
def cancellable(
    fn: Callable[..., Awaitable[T]] | None = None, /, *args: Any, name: str | None = None
) -> CancellationScope | Coroutine[Any, Any, T]:
    """A new cancellable scope, or, given ``fn``, an awaitable running ``fn(*args)`` inside one.

    Temporal's ``CancellationScope.cancellable``. Use the scope with ``async with``.
    """
    scope: CancellationScope = _object_new(CancellationScope)
    _init(scope, _KEYWORDS, True, None, None, name, True, None)
    if fn is None and not args:
        return scope  # the common form, without _make
    return _make(fn, args, scope, "cancellable")


@overload
def non_cancellable(fn: None = None, /, *, name: str | None = None) -> CancellationScope: ...
@overload
def non_cancellable(
    fn: Callable[..., Awaitable[T]], /, *args: Any, name: str | None = None
) -> Coroutine[Any, Any, T]: ...
def non_cancellable(
    fn: Callable[..., Awaitable[T]] | None = None, /, *args: Any, name: str | None = None
) -> CancellationScope | Coroutine[Any, Any, T]:
    """A scope shielded from requests made outside it (or run ``fn(*args)`` in one).

    Only cancelscope requests are blocked: a native ``task.cancel()`` still
    interrupts the body (see docs/semantics.md).
    """
    scope: CancellationScope = _object_new(CancellationScope)
    _init(scope, _KEYWORDS, False, None, None, name, True, None)
    if fn is None and not args:
        return scope  # the common form, without _make
    return _make(fn, args, scope, "non_cancellable")


@overload
def with_timeout(
    seconds: float | None, fn: None = None, /, *, name: str | None = None
) -> CancellationScope: ...
@overload
def with_timeout(
    seconds: float | None,
    fn: Callable[..., Awaitable[T]],
    /,
    *args: Any,
    name: str | None = None,
) -> Coroutine[Any, Any, T]: ...
def with_timeout(
    seconds: float | None,
    fn: Callable[..., Awaitable[T]] | None = None,
    /,
    *args: Any,
    name: str | None = None,
) -> CancellationScope | Coroutine[Any, Any, T]:
    """A scope that cancels itself ``seconds`` after entry and then raises `TimeoutFailure`.

    Given ``fn``, an awaitable running ``fn(*args)`` inside such a scope.
    ``seconds <= 0`` is already expired; ``None`` or ``math.inf`` mean no timeout.
    """
    scope: CancellationScope = _object_new(CancellationScope)
    _init_timeout(scope, seconds, name)
    if fn is None and not args:
        return scope  # the common form, without _make
    return _make(fn, args, scope, "with_timeout")


@overload
def with_deadline(
    when: float | None, fn: None = None, /, *, name: str | None = None
) -> CancellationScope: ...
@overload
def with_deadline(
    when: float | None,
    fn: Callable[..., Awaitable[T]],
    /,
    *args: Any,
    name: str | None = None,
) -> Coroutine[Any, Any, T]: ...
def with_deadline(
    when: float | None,
    fn: Callable[..., Awaitable[T]] | None = None,
    /,
    *args: Any,
    name: str | None = None,
) -> CancellationScope | Coroutine[Any, Any, T]:
    """As `with_timeout`, with an absolute ``loop.time()`` deadline."""
    scope: CancellationScope = _object_new(CancellationScope)
    _init(scope, _KEYWORDS, True, None, when, name, True, None)
    return _make(fn, args, scope, "with_deadline")


def move_on_after(seconds: float | None, *, name: str | None = None) -> CancellationScope:
    """A scope that cancels itself ``seconds`` after entry and then exits silently.

    Check ``scope.cancelled_caught`` to learn whether it timed out.
    """
    scope: CancellationScope = _object_new(CancellationScope)
    _init(scope, _KEYWORDS, True, seconds, None, name, False, None)
    return scope


def move_on_at(when: float | None, *, name: str | None = None) -> CancellationScope:
    """As `move_on_after`, with an absolute ``loop.time()`` deadline."""
    scope: CancellationScope = _object_new(CancellationScope)
    _init(scope, _KEYWORDS, True, None, when, name, False, None)
    return scope


_learn_children_waits()

# Serialises the creation of scope.token between threads.
_token_lock = threading.Lock()


def _unlink(token_ref: weakref.ref[CancelToken], key: object, _gone: object) -> None:
    token = token_ref()
    if token is not None:
        token._remove(key)


class _TokenLink:
    """A scope's registration on the token passed as ``token=``.

    Holds the scope and the token weakly (the token holds the link), so a
    linked scope is freed like any other; the scope removes it at exit.
    """

    __slots__ = ("key", "scope", "token")

    def __init__(self, scope: CancellationScope, token: CancelToken) -> None:
        self.scope = weakref.ref(scope)
        self.token = weakref.ref(token)
        self.key: object | None = None

    @staticmethod
    def link(scope: CancellationScope, token: CancelToken) -> None:
        obj: object = token  # callers may pass anything at runtime
        if not isinstance(obj, CancelToken):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"token must be a CancelToken or None, not {type(obj).__name__}")
        link = _TokenLink(scope, token)
        key = token._register(link)
        if key is not None:
            link.key = key
            _extra(scope).token_link = link
            # A scope dropped without exiting (never entered) unregisters too;
            # the callback holds no reference to the link (no cycle).
            link.scope = weakref.ref(scope, partial(_unlink, link.token, key))

    def detach(self) -> None:
        key, self.key = self.key, None
        token = self.token()
        if key is not None and token is not None:
            token._remove(key)

    def __call__(self) -> None:
        scope = self.scope()
        token = self.token()
        if scope is None or token is None:
            return
        task = scope._task
        if task is None:
            # Not entered (yet), in whatever thread: as cancel() before entry,
            # which is safe against an entry under way in another thread. (No
            # loop to hand it to: a scope is bound to a loop only at entry.)
            if scope._state is not _EXITED:
                scope._cancel_unentered(scope._token_request(token))
            return
        loop = task.get_loop()
        if _get_running_loop() is not loop:
            # Another thread: hand it to the scope's loop, as cancel() does.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(scope._cancel_by_token, token)
            return
        scope._cancel_by_token(token)


# Imported last: _tasks subclasses CancellationScope.
from . import _tasks  # noqa: E402

_tasks.spawn.__qualname__ = "CancellationScope.spawn"
CancellationScope.spawn = _tasks.spawn  # type: ignore[method-assign]
