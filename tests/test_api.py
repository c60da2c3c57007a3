"""SPEC 1: the public names, their attributes, and both forms of each scope function."""

from __future__ import annotations

import asyncio
import importlib.resources
import inspect
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import cancelscope as cs

from ._helpers import BaseExceptionGroup, ExceptionGroup

PUBLIC_NAMES = [
    "CancellationScope",
    "CancelledFailure",
    "TaskHandle",
    "TimeoutFailure",
    "cancellable",
    "current_deadline",
    "is_cancellation",
    "move_on_after",
    "move_on_at",
    "non_cancellable",
    "with_deadline",
    "with_timeout",
]
PUBLIC_CLASSES = ["CancellationScope", "CancelledFailure", "TaskHandle", "TimeoutFailure"]
SCOPE_MEMBERS = [
    "name",
    "cancellable",
    "deadline",
    "cancel_called",
    "cancelled_caught",
    "cancel_reason",
    "cancel_requested",
    "parent",
    "active",
    "cancel",
    "spawn",
    "run",
    "current",
]

ScopeFactory = Callable[..., Any]

# Each scope function with a harmless first argument where it takes one.
SCOPE_FUNCTIONS: dict[str, tuple[ScopeFactory, bool]] = {
    "cancellable": (cs.cancellable, True),
    "non_cancellable": (cs.non_cancellable, False),
    "with_timeout": (lambda *a, **kw: cs.with_timeout(1000, *a, **kw), True),
    "with_deadline": (lambda *a, **kw: cs.with_deadline(math.inf, *a, **kw), True),
}


async def _cancelled_failure() -> cs.CancelledFailure:
    scope = cs.cancellable(name="probe")
    scope.cancel("probe reason")
    try:
        async with scope:
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        return failure
    raise AssertionError("a pre-cancelled scope exited without CancelledFailure")


async def _timeout_failure() -> cs.TimeoutFailure:
    try:
        async with cs.with_timeout(0, name="probe"):
            await asyncio.sleep(0)
    except cs.TimeoutFailure as failure:
        return failure
    raise AssertionError("with_timeout(0) exited without TimeoutFailure")


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_is_exported(name: str) -> None:
    """Every name SPEC 1 lists is an attribute of the package and is in __all__."""
    assert hasattr(cs, name)
    assert name in cs.__all__


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_has_docstring(name: str) -> None:
    """Every public name has a non-empty docstring."""
    doc = inspect.getdoc(getattr(cs, name))
    assert doc
    assert doc.strip()


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_public_class_reports_package_module(name: str) -> None:
    """Public classes report __module__ == 'cancelscope', so tracebacks read cancelscope.X."""
    assert getattr(cs, name).__module__ == "cancelscope"


@pytest.mark.parametrize("name", sorted(set(PUBLIC_NAMES) - set(PUBLIC_CLASSES)))
def test_public_function_reports_package_module(name: str) -> None:
    """Public functions report __module__ == 'cancelscope' as well (STYLE: one public face)."""
    assert getattr(cs, name).__module__ == "cancelscope"


def test_package_ships_py_typed() -> None:
    """The package ships the py.typed marker."""
    assert (importlib.resources.files("cancelscope") / "py.typed").is_file()


@pytest.mark.parametrize("member", SCOPE_MEMBERS)
def test_scope_member_exists_with_docstring(member: str) -> None:
    """Every scope attribute and method of SPEC 1 exists and is documented."""
    attr = inspect.getattr_static(cs.CancellationScope, member)
    doc = inspect.getdoc(getattr(attr, "__func__", attr))
    assert doc
    assert doc.strip()


def test_scope_constructs_without_a_loop() -> None:
    """Constructing any scope needs no running loop; attributes read their initial values."""
    scopes = [
        cs.CancellationScope(),
        cs.cancellable(),
        cs.non_cancellable(),
        cs.with_timeout(5),
        cs.with_deadline(5),
        cs.move_on_after(5),
        cs.move_on_at(5),
    ]
    for scope in scopes:
        assert isinstance(scope, cs.CancellationScope)
        assert scope.name is None
        assert scope.cancel_called is False
        assert scope.cancelled_caught is False
        assert scope.cancel_reason is None
        assert scope.parent is None
        assert scope.active is False
    assert [s.cancellable for s in scopes] == [True, True, False, True, True, True, True]


def test_scope_constructor_keywords() -> None:
    """CancellationScope takes cancellable, timeout, deadline, name and raise_on_cancel."""
    scope = cs.CancellationScope(cancellable=False, deadline=12.5, name="n", raise_on_cancel=False)
    assert scope.cancellable is False
    assert scope.deadline == 12.5
    assert scope.name == "n"
    assert cs.CancellationScope(timeout=3).deadline == math.inf


# --------------------------------------------------------------------------- exceptions


def test_exception_hierarchy() -> None:
    """CancelledFailure is an Exception, not a CancelledError; TimeoutFailure is a TimeoutError."""
    assert issubclass(cs.CancelledFailure, Exception)
    assert not issubclass(cs.CancelledFailure, asyncio.CancelledError)
    assert issubclass(cs.TimeoutFailure, cs.CancelledFailure)
    assert issubclass(cs.TimeoutFailure, TimeoutError)
    assert not issubclass(cs.TimeoutFailure, asyncio.CancelledError)


@pytest.mark.asyncio
async def test_cancelled_failure_carries_reason_and_scope() -> None:
    """A CancelledFailure's .reason is the cancel reason and .scope the scope it reports."""
    failure = await _cancelled_failure()
    assert failure.reason == "probe reason"
    assert isinstance(failure.scope, cs.CancellationScope)
    assert failure.scope.name == "probe"
    assert not isinstance(failure, cs.TimeoutFailure)


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_timeout_failure_is_a_timeout_error_with_deadline() -> None:
    """A TimeoutFailure is caught by `except TimeoutError` and carries .deadline."""
    with pytest.raises(TimeoutError) as info:
        async with cs.with_timeout(2.5):
            await asyncio.sleep(10)
    failure = info.value
    assert isinstance(failure, cs.TimeoutFailure)
    assert isinstance(failure, cs.CancelledFailure)
    assert failure.deadline == 2.5


def _fields(failure: cs.CancelledFailure) -> tuple[Any, ...]:
    return (
        type(failure),
        failure.args,
        str(failure),
        repr(failure),
        failure.reason,
        failure.scope,
        getattr(failure, "deadline", None),
        getattr(failure, "errno", None),
        getattr(failure, "strerror", None),
    )


@pytest.mark.parametrize("reason", [None, "why"])
def test_the_library_builds_failures_as_their_constructors_do(reason: str | None) -> None:
    """The fast constructors the library uses make what the public ones make, pickles included."""
    import pickle

    from cancelscope._exceptions import make_cancelled_failure, make_timeout_failure

    scope = cs.CancellationScope(name="x")
    fast = make_cancelled_failure("x was cancelled", reason, scope)
    slow = cs.CancelledFailure("x was cancelled", reason=reason, scope=scope)
    assert _fields(fast) == _fields(slow)
    fast_t = make_timeout_failure("x timed out", reason, scope, 2.5)
    slow_t = cs.TimeoutFailure("x timed out", reason=reason, scope=scope, deadline=2.5)
    assert _fields(fast_t) == _fields(slow_t)
    assert fast_t.args == ("x timed out",)
    for failure in (fast, fast_t):
        copy = pickle.loads(pickle.dumps(failure))
        assert (copy.args, copy.reason, copy.scope) == (failure.args, reason, None)
    assert pickle.loads(pickle.dumps(fast_t)).deadline == 2.5


def test_a_timeout_failure_keeps_its_fields_in_slots_and_takes_other_attributes() -> None:
    """TimeoutFailure's own fields are slots; the exception dictionary still takes the rest."""
    import copy

    failure = cs.TimeoutFailure("t", reason="r", deadline=1.5)
    assert vars(failure) == {}  # reason, scope and deadline are not in the dictionary
    failure.extra = "kept"  # type: ignore[attr-defined]
    assert vars(failure) == {"extra": "kept"}
    if sys.version_info >= (3, 11):
        failure.add_note("a note")
        assert failure.__notes__ == ["a note"]
    clone = copy.copy(failure)
    assert (clone.args, clone.reason, clone.deadline, clone.scope) == (("t",), "r", 1.5, None)


# --------------------------------------------------------------------------- is_cancellation


def _plain_cases() -> list[tuple[str, BaseException, bool]]:
    return [
        ("CancelledError", asyncio.CancelledError(), True),
        ("CancelledError with message", asyncio.CancelledError("why"), True),
        ("TimeoutError", TimeoutError(), False),
        ("asyncio.TimeoutError", asyncio.TimeoutError(), False),
        ("KeyboardInterrupt", KeyboardInterrupt(), False),
        ("SystemExit", SystemExit(), False),
        ("ValueError", ValueError(), False),
        ("Exception", Exception(), False),
        ("group of one CancelledError", BaseExceptionGroup("g", [asyncio.CancelledError()]), True),
        (
            "group of CancelledErrors",
            BaseExceptionGroup("g", [asyncio.CancelledError(), asyncio.CancelledError()]),
            True,
        ),
        (
            "group with a ValueError",
            BaseExceptionGroup("g", [asyncio.CancelledError(), ValueError()]),
            False,
        ),
        (
            "group with a KeyboardInterrupt",
            BaseExceptionGroup("g", [asyncio.CancelledError(), KeyboardInterrupt()]),
            False,
        ),
        (
            "nested groups of cancellations",
            BaseExceptionGroup(
                "outer",
                [
                    asyncio.CancelledError(),
                    BaseExceptionGroup(
                        "inner", [BaseExceptionGroup("deep", [asyncio.CancelledError()])]
                    ),
                ],
            ),
            True,
        ),
        (
            "nested group with a TimeoutError leaf",
            BaseExceptionGroup(
                "outer",
                [asyncio.CancelledError(), ExceptionGroup("inner", [TimeoutError()])],
            ),
            False,
        ),
        ("group of a TimeoutError", ExceptionGroup("g", [TimeoutError()]), False),
    ]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [pytest.param(exc, expected, id=label) for label, exc, expected in _plain_cases()],
)
def test_is_cancellation_plain(exc: BaseException, expected: bool) -> None:
    """is_cancellation: True for CancelledError and all-cancellation groups, False otherwise."""
    assert cs.is_cancellation(exc) is expected


@pytest.mark.asyncio
async def test_is_cancellation_failures() -> None:
    """is_cancellation is True for CancelledFailure, TimeoutFailure and groups of them."""
    cancelled = await _cancelled_failure()
    timed_out = await _timeout_failure()
    assert cs.is_cancellation(cancelled) is True
    assert cs.is_cancellation(timed_out) is True
    assert cs.is_cancellation(ExceptionGroup("g", [cancelled, timed_out])) is True
    nested = BaseExceptionGroup(
        "outer", [asyncio.CancelledError(), ExceptionGroup("inner", [timed_out])]
    )
    assert cs.is_cancellation(nested) is True
    mixed = ExceptionGroup("g", [cancelled, ExceptionGroup("inner", [ValueError()])])
    assert cs.is_cancellation(mixed) is False


# --------------------------------------------------------------------------- scope forms


@pytest.mark.parametrize("which", list(SCOPE_FUNCTIONS))
def test_scope_form_returns_a_scope(which: str) -> None:
    """Without fn, each scope function returns a fresh CancellationScope carrying the name."""
    factory, cancellable = SCOPE_FUNCTIONS[which]
    scope = factory(name="form")
    assert isinstance(scope, cs.CancellationScope)
    assert scope.name == "form"
    assert scope.cancellable is cancellable
    assert scope.active is False
    assert factory() is not factory()


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("which", list(SCOPE_FUNCTIONS))
async def test_scope_form_enters_with_async_with(which: str) -> None:
    """`async with` on the scope form returns the scope itself and makes it current."""
    factory, _ = SCOPE_FUNCTIONS[which]
    scope: cs.CancellationScope = factory()
    active = [scope.active]
    async with scope as entered:
        assert entered is scope
        active.append(scope.active)
        assert cs.CancellationScope.current() is scope
        await asyncio.sleep(0)
    active.append(scope.active)
    assert active == [False, True, False]
    assert cs.CancellationScope.current() is None


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("which", list(SCOPE_FUNCTIONS))
async def test_run_form_returns_result(which: str) -> None:
    """With fn, each scope function runs fn(*args) inside a new scope and returns its result."""
    factory, cancellable = SCOPE_FUNCTIONS[which]
    seen: list[cs.CancellationScope | None] = []

    async def work(a: int, b: str) -> str:
        seen.append(cs.CancellationScope.current())
        await asyncio.sleep(0)
        return f"{a}-{b}"

    async with cs.cancellable() as outer:
        result = await factory(work, 7, "x", name="ran")
    assert result == "7-x"
    [inner] = seen
    assert inner is not None
    assert inner is not outer
    assert inner.name == "ran"
    assert inner.cancellable is cancellable
    assert inner.parent is outer
    assert inner.active is False


@pytest.mark.asyncio
@pytest.mark.parametrize("which", list(SCOPE_FUNCTIONS))
async def test_run_form_propagates_errors(which: str) -> None:
    """The run form lets fn's exception propagate unchanged."""
    factory, _ = SCOPE_FUNCTIONS[which]
    error = KeyError("boom")

    async def work() -> None:
        await asyncio.sleep(0)
        raise error

    with pytest.raises(KeyError) as info:
        await factory(work)
    assert info.value is error


@pytest.mark.parametrize("which", list(SCOPE_FUNCTIONS))
def test_run_form_non_callable_raises_type_error_at_call(which: str) -> None:
    """A non-callable fn raises TypeError at the call, before anything is awaited."""
    factory, _ = SCOPE_FUNCTIONS[which]
    not_callable: Any = 42
    with pytest.raises(TypeError):
        factory(not_callable)


@pytest.mark.asyncio
@pytest.mark.parametrize("which", list(SCOPE_FUNCTIONS))
async def test_run_form_coroutine_object_raises_type_error_at_call(which: str) -> None:
    """Passing a coroutine object instead of a function raises TypeError at the call."""
    factory, _ = SCOPE_FUNCTIONS[which]

    async def work() -> int:
        return 1

    coro: Any = work()
    try:
        with pytest.raises(TypeError):
            factory(coro)
    finally:
        coro.close()


@pytest.mark.asyncio
async def test_non_cancellable_run_form_is_shielded() -> None:
    """non_cancellable(fn) runs fn to completion although the outer scope is cancelled."""
    record: list[str] = []

    async def work() -> str:
        outer.cancel("stop")
        await asyncio.sleep(0)
        record.append("shielded body finished")
        return "done"

    try:
        async with cs.cancellable() as outer:
            record.append(await cs.non_cancellable(work))
            await asyncio.sleep(0)
            record.append("not reached")
    except cs.CancelledFailure as failure:
        record.append(f"failure from {failure.scope is outer}")
    assert record == ["shielded body finished", "done", "failure from True"]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.parametrize(
    ("start", "run", "fires_at"),
    [
        pytest.param(0, lambda fn: cs.with_timeout(3, fn), 3, id="with_timeout"),
        pytest.param(1, lambda fn: cs.with_deadline(4, fn), 4, id="with_deadline"),
    ],
)
async def test_deadline_run_forms_time_out(
    start: float,
    run: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]],
    fires_at: float,
) -> None:
    """The run forms raise TimeoutFailure when fn outlives the deadline.

    with_timeout(s, fn) fires s seconds after the call; with_deadline(when, fn), called at 1,
    fires at the absolute deadline.
    """
    loop = asyncio.get_running_loop()
    if start:
        await asyncio.sleep(start)

    async def slow() -> None:
        await asyncio.sleep(100)

    with pytest.raises(cs.TimeoutFailure) as info:
        await run(slow)
    assert loop.time() == fires_at
    assert info.value.deadline == fires_at


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.parametrize("factory", [cs.move_on_after, cs.move_on_at])
async def test_move_on_exits_silently(factory: Callable[[float], cs.CancellationScope]) -> None:
    """move_on_after/move_on_at cancel on the deadline and exit without an exception."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    async with factory(5) as scope:
        record.append("enter")
        await asyncio.sleep(100)
        record.append("not reached")
    record.append("after")
    assert record == ["enter", "after"]
    assert loop.time() == 5
    assert scope.cancelled_caught is True
    assert scope.cancel_called is True
    await asyncio.sleep(0)


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_move_on_after_without_expiry_leaves_flags_false() -> None:
    """A move_on_after scope whose body finishes in time reports cancelled_caught False."""
    async with cs.move_on_after(5) as scope:
        await asyncio.sleep(1)
    assert scope.cancelled_caught is False
    assert scope.cancel_called is False


@pytest.mark.asyncio
async def test_raise_on_cancel_false_swallows_own_cancel() -> None:
    """CancellationScope(raise_on_cancel=False) cancelled by cancel() exits silently."""
    record: list[str] = []
    async with cs.CancellationScope(raise_on_cancel=False) as scope:
        scope.cancel("enough")
        await asyncio.sleep(0)
        record.append("the cancelled body went on")
    assert record == []
    assert scope.cancelled_caught is True
    assert scope.cancel_reason == "enough"


# --------------------------------------------------------------------------- run()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_scope_run_enters_scope_and_returns_result() -> None:
    """scope.run(fn, *args) enters that scope, awaits fn(*args) inside it and returns the result."""
    scope = cs.cancellable(name="r")
    seen: list[cs.CancellationScope | None] = []

    async def work(x: int) -> int:
        seen.append(cs.CancellationScope.current())
        assert scope.active
        await asyncio.sleep(0)
        return x * 2

    assert await scope.run(work, 21) == 42
    assert seen == [scope]
    assert scope.active is False


@pytest.mark.asyncio
async def test_scope_run_reports_its_cancellation() -> None:
    """A scope.run() whose scope is cancelled raises CancelledFailure for that scope."""
    scope = cs.cancellable()

    async def work() -> None:
        scope.cancel("from inside")
        await asyncio.sleep(0)

    with pytest.raises(cs.CancelledFailure) as info:
        await scope.run(work)
    assert info.value.scope is scope
    assert info.value.reason == "from inside"
    assert scope.cancelled_caught is True


def test_scope_run_non_callable_raises_type_error_at_call() -> None:
    """scope.run() with a non-callable raises TypeError at the call."""
    not_callable: Any = "nope"
    with pytest.raises(TypeError):
        _ = cs.cancellable().run(not_callable)


@pytest.mark.asyncio
async def test_scope_run_on_entered_scope_raises() -> None:
    """scope.run() on a scope that was already entered raises RuntimeError (entered once)."""

    async def work() -> None:
        await asyncio.sleep(0)

    async with cs.cancellable() as scope:
        with pytest.raises(RuntimeError):
            await scope.run(work)
    with pytest.raises(RuntimeError):
        await scope.run(work)


# --------------------------------------------------------------------------- current()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_current_tracks_nesting() -> None:
    """current() is None outside, the innermost scope inside, and restored on exit."""
    assert cs.CancellationScope.current() is None
    async with cs.cancellable() as outer:
        assert cs.CancellationScope.current() is outer
        assert outer.parent is None
        async with cs.non_cancellable() as inner:
            assert cs.CancellationScope.current() is inner
            assert inner.parent is outer
        assert cs.CancellationScope.current() is outer
    assert cs.CancellationScope.current() is None


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_current_in_plain_task_is_none() -> None:
    """A task made with plain asyncio.create_task inside a scope sees current() None."""
    seen: list[cs.CancellationScope | None] = []

    async def plain() -> None:
        seen.append(cs.CancellationScope.current())

    async with cs.cancellable():
        await asyncio.create_task(plain())
    assert seen == [None]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_current_in_child_is_spawning_scope() -> None:
    """In a spawned child that entered no scope, current() is the spawning scope."""
    seen: list[cs.CancellationScope | None] = []

    async def child() -> None:
        seen.append(cs.CancellationScope.current())
        await asyncio.sleep(0)
        seen.append(cs.CancellationScope.current())

    async with cs.cancellable() as scope:
        handle = scope.spawn(child)
        await handle
    assert seen == [scope, scope]


def test_current_outside_a_loop_is_none() -> None:
    """current() outside any event loop is None."""
    assert cs.CancellationScope.current() is None
    assert cs.current_deadline() == math.inf


@pytest.mark.asyncio
async def test_sync_enter_returns_scope() -> None:
    """Plain `with` returns the scope from __enter__ as well."""
    with cs.cancellable() as scope:
        assert cs.CancellationScope.current() is scope
    assert scope.active is False


# --------------------------------------------------------------------------- repr


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_repr_shows_state_name_deadline_and_cancel_called() -> None:
    """repr shows the state, the name, the remaining deadline and cancel_called."""
    scope = cs.with_timeout(2.5, name="fetch")
    assert "'fetch'" in repr(scope)
    assert "created" in repr(scope)
    async with scope:
        text = repr(scope)
        assert "entered" in text
        assert "+2.5s" in text
        assert "cancel_called" not in text
        await asyncio.sleep(1)
        assert "+1.5s" in repr(scope)
        scope.deadline = math.inf
        scope.cancel()
        assert "cancel_called" in repr(scope)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(0)
    assert "exited" in repr(scope)


@pytest.mark.asyncio
async def test_repr_and_tree_tell_a_plain_with_entry() -> None:
    """A scope entered with plain `with` reads "entered (with)": it cannot spawn."""
    async with cs.cancellable(name="outer") as outer:
        with cs.cancellable(name="inner") as inner:
            assert "'inner' entered (with)" in repr(inner)
            assert "'outer' entered>" in repr(outer)
            assert "'inner' entered (with)" in cs.format_tree()
            assert inner.active


@pytest.mark.asyncio
async def test_repr_after_exit_says_exited() -> None:
    """After exit the repr says the scope exited and keeps the name."""
    async with cs.cancellable(name="done") as scope:
        await asyncio.sleep(0)
    assert "exited" in repr(scope)
    assert "'done'" in repr(scope)


def test_spawn_reads_as_a_method_of_the_scope() -> None:
    """`spawn` is installed from _tasks for speed; help() and signatures still read right."""
    spawn = cs.CancellationScope.spawn
    assert spawn.__qualname__ == "CancellationScope.spawn"
    assert str(inspect.signature(spawn)) == (
        "(self: 'CancellationScope', fn: 'Callable[..., Coroutine[Any, Any, T]] | "
        "Coroutine[Any, Any, T]', /, *args: 'Any', name: 'str | None' = None) "
        "-> 'TaskHandle[T]'"
    )
    assert (inspect.getdoc(spawn) or "").startswith("Start a child task owned by this scope")


def test_the_constructor_reads_keyword_only() -> None:
    """`__init__` is installed from a faster function; its signature is still keyword-only."""
    init = cs.CancellationScope.__init__
    assert init.__qualname__ == "CancellationScope.__init__"
    params = list(inspect.signature(cs.CancellationScope).parameters.values())
    assert [p.name for p in params] == [
        "cancellable",
        "timeout",
        "deadline",
        "name",
        "raise_on_cancel",
        "token",
    ]
    assert {p.kind for p in params} == {inspect.Parameter.KEYWORD_ONLY}


def test_a_subclass_can_call_the_constructor() -> None:
    """A subclass passes the keywords on with super().__init__()."""

    class Named(cs.CancellationScope):
        def __init__(self) -> None:
            super().__init__(name="sub", cancellable=False, timeout=5)

    scope = Named()
    assert (scope.name, scope.cancellable) == ("sub", False)
    assert "timeout=5s" in repr(scope)


@pytest.mark.asyncio
async def test_a_scope_that_is_never_cancelled_keeps_everything_in_its_slots() -> None:
    """No instance dictionary, and no _Extra object unless something rarely needed happens.

    The hot path's promise (issue 3): entering and leaving a scope that is never
    cancelled writes a few slots and allocates nothing else.
    """
    made = [
        cs.CancellationScope(),
        cs.cancellable(name="named"),
        cs.non_cancellable(),
        cs.with_timeout(1000),
        cs.move_on_after(1000),
        cs.CancellationScope(raise_on_cancel=False, deadline=math.inf),
    ]
    for scope in made[:3]:
        with scope:
            assert not hasattr(scope, "__dict__")
        assert scope._x is None
    for scope in made[3:]:
        async with scope, cs.CancellationScope() as inner:
            pass
        assert (scope._x, inner._x) == (None, None)
    assert [s._raises for s in made] == [True] * 4 + [False] * 2


@pytest.mark.asyncio
async def test_rarely_needed_fields_appear_when_needed_and_read_as_before() -> None:
    """cancel_called, cancel_reason, cancelled_caught and cancel_requested through _Extra."""
    scope = cs.move_on_after(1000)
    fut = scope.cancel_requested  # binds the scope to this loop before entry
    assert scope._x is not None
    assert scope._x.own_req is None
    async with scope:
        assert (scope.cancel_called, scope.cancel_reason) == (False, None)
        scope.cancel("enough")
        assert (scope.cancel_called, scope.cancel_reason) == (True, "enough")
        await asyncio.sleep(0)
    assert scope.cancelled_caught
    assert fut.done()
    assert fut.result().reason == "enough"
    assert scope._x.delivered == 0  # every delivery was undone at exit
    assert "cancel_called" in repr(scope)
    assert "cancelled_caught" in repr(scope)
