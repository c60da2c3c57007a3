"""SPEC 6: deadlines and timeouts, on the virtual clock (loop.time() starts at 0)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

import cancelscope as cs

from ._helpers import forever, live_timers

NAN = math.nan


# --------------------------------------------------------------------------- with_timeout


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
@pytest.mark.parametrize("enter", ["with", "async with"])
async def test_a_scope_cancelled_before_entry_reads_its_deadline_and_arms_no_timer(
    enter: str,
) -> None:
    """A with_timeout scope cancelled before entry sets its deadline at entry, with no timer.

    Its own request came first, so the deadline can never fire: no timer is
    scheduled, yet ``deadline`` reads loop.time() + s as for any other entry.
    """
    loop = asyncio.get_running_loop()
    await asyncio.sleep(2)
    scope = cs.with_timeout(3)
    scope.cancel("early")
    timers_before = live_timers()
    record: list[str] = []

    def note() -> None:
        new_timers = len(live_timers() - timers_before)
        record.append(f"deadline {scope.deadline:g}, new timers {new_timers}")

    try:
        if enter == "with":
            with scope:
                note()
                await forever()
        else:
            async with scope:
                note()
                await forever()
    except cs.CancelledFailure as failure:
        record.append(f"{type(failure).__name__} {failure.reason} at {loop.time():g}")
    assert record == ["deadline 5, new timers 0", "CancelledFailure early at 2"]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_with_timeout_sets_deadline_at_entry() -> None:
    """with_timeout(s) reads inf before entry and sets deadline = loop.time() + s at entry."""
    loop = asyncio.get_running_loop()
    scope = cs.with_timeout(3)
    await asyncio.sleep(2)
    assert scope.deadline == math.inf
    record: list[str] = []
    try:
        async with scope:
            record.append(f"deadline {scope.deadline:g}")
            await asyncio.sleep(100)
    except cs.TimeoutFailure as failure:
        record.append(f"timeout at {loop.time():g} deadline {failure.deadline:g}")
        record.append(f"{failure.reason} {failure.scope is scope}")
    assert record == ["deadline 5", "timeout at 5 deadline 5", "deadline exceeded True"]
    assert scope.cancel_called is True
    assert scope.cancel_reason == "deadline exceeded"
    assert scope.cancelled_caught is True


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_with_deadline_is_absolute() -> None:
    """with_deadline(when) expires at loop.time() == when, whenever it was entered."""
    loop = asyncio.get_running_loop()
    scope = cs.with_deadline(7)
    assert scope.deadline == 7
    await asyncio.sleep(3)
    with pytest.raises(cs.TimeoutFailure) as info:
        await scope.run(asyncio.sleep, 100)
    assert loop.time() == 7
    assert info.value.deadline == 7


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_body_finishing_in_time_is_not_cancelled() -> None:
    """A body that finishes before the deadline exits normally and leaves no timer."""
    baseline = live_timers()
    async with cs.with_timeout(10) as scope:
        await asyncio.sleep(9)
    await asyncio.sleep(5)
    assert scope.cancel_called is False
    assert scope.cancelled_caught is False
    assert live_timers() == baseline


# --------------------------------------------------------------------------- expired at entry


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
@pytest.mark.parametrize("seconds", [0, -1, -0.5, -math.inf])
async def test_non_positive_timeout_cancels_first_suspension_point(seconds: float) -> None:
    """gh-95051: with_timeout(s <= 0) cancels at the very first suspension point, sleep(0) too."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    try:
        async with cs.with_timeout(seconds):
            record.append("body")
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                record.append("first await cancelled")
                raise
            record.append("not reached")
    except cs.TimeoutFailure as failure:
        record.append(f"timeout {failure.reason}")
    assert record == ["body", "first await cancelled", "timeout deadline exceeded"]
    assert loop.time() == 0


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_past_deadline_cancels_first_suspension_point() -> None:
    """gh-95051: with_deadline(now or earlier) cancels at the very first suspension point."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(5)
    record: list[str] = []
    for when in (5.0, 1.0):
        try:
            async with cs.with_deadline(when):
                await asyncio.sleep(0)
                record.append("not reached")
        except cs.TimeoutFailure as failure:
            record.append(f"timeout deadline={failure.deadline:g}")
    assert record == ["timeout deadline=5", "timeout deadline=1"]
    assert loop.time() == 5


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda: cs.move_on_after(0), id="move_on_after(0)"),
        pytest.param(lambda: cs.move_on_at(0), id="move_on_at(0)"),
    ],
)
async def test_expired_move_on_exits_silently_at_first_await(
    factory: Callable[[], cs.CancellationScope],
) -> None:
    """An already-expired move_on scope skips the rest of its body at the first await."""
    record: list[str] = []
    async with factory() as scope:
        record.append("body")
        await asyncio.sleep(0)
        record.append("not reached")
    record.append("after")
    assert record == ["body", "after"]
    assert scope.cancelled_caught is True


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_zero_timeout_run_form() -> None:
    """with_timeout(0, fn) cancels fn at its first suspension point."""
    record: list[str] = []

    async def work() -> None:
        record.append("started")
        await asyncio.sleep(0)
        record.append("not reached")

    with pytest.raises(cs.TimeoutFailure):
        await cs.with_timeout(0, work)
    assert record == ["started"]


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: cs.CancellationScope(timeout=NAN), id="CancellationScope(timeout)"),
        pytest.param(lambda: cs.CancellationScope(deadline=NAN), id="CancellationScope(deadline)"),
        pytest.param(lambda: cs.with_timeout(NAN), id="with_timeout"),
        pytest.param(lambda: cs.with_deadline(NAN), id="with_deadline"),
        pytest.param(lambda: cs.move_on_after(NAN), id="move_on_after"),
        pytest.param(lambda: cs.move_on_at(NAN), id="move_on_at"),
    ],
)
def test_nan_raises_value_error_at_construction(make: Callable[[], object]) -> None:
    """NaN as timeout or deadline raises ValueError at construction, no loop needed."""
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("which", ["with_timeout", "with_deadline"])
def test_nan_run_form_raises_value_error_at_call(which: str) -> None:
    """The run form with NaN raises ValueError at the call, without calling fn."""
    called: list[str] = []

    async def work() -> None:
        called.append("called")

    factory: Any = getattr(cs, which)
    with pytest.raises(ValueError):
        factory(NAN, work)
    assert called == []


@pytest.mark.parametrize(("timeout", "deadline"), [(1, 2), (0, 0), (-1, 0), (5, 5.0)])
def test_timeout_and_deadline_together_raise_value_error(timeout: float, deadline: float) -> None:
    """Passing both timeout and deadline raises ValueError at construction."""
    with pytest.raises(ValueError):
        cs.CancellationScope(timeout=timeout, deadline=deadline)


NO_DEADLINE: list[Any] = [
    pytest.param(lambda: cs.with_timeout(math.inf), id="with_timeout(inf)"),
    pytest.param(lambda: cs.with_timeout(None), id="with_timeout(None)"),
    pytest.param(lambda: cs.with_deadline(math.inf), id="with_deadline(inf)"),
    pytest.param(lambda: cs.with_deadline(None), id="with_deadline(None)"),
    pytest.param(lambda: cs.move_on_after(math.inf), id="move_on_after(inf)"),
    pytest.param(lambda: cs.move_on_after(None), id="move_on_after(None)"),
    pytest.param(lambda: cs.move_on_at(math.inf), id="move_on_at(inf)"),
    pytest.param(lambda: cs.move_on_at(None), id="move_on_at(None)"),
    pytest.param(lambda: cs.CancellationScope(timeout=math.inf), id="Scope(timeout=inf)"),
    pytest.param(lambda: cs.CancellationScope(deadline=math.inf), id="Scope(deadline=inf)"),
    pytest.param(lambda: cs.CancellationScope(timeout=None, deadline=None), id="Scope(None)"),
]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.parametrize("make", NO_DEADLINE)
async def test_inf_and_none_mean_no_deadline(make: Callable[[], cs.CancellationScope]) -> None:
    """math.inf and None mean no deadline for every timeout and deadline function."""
    loop = asyncio.get_running_loop()
    baseline = live_timers()
    scope = make()
    assert scope.deadline == math.inf
    async with scope:
        assert scope.deadline == math.inf
        assert cs.current_deadline() == math.inf
        assert live_timers() == baseline
        await asyncio.sleep(1000)
    assert loop.time() == 1000
    assert scope.cancel_called is False
    assert scope.cancelled_caught is False


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.parametrize("which", ["with_timeout", "with_deadline"])
@pytest.mark.parametrize("value", [math.inf, None])
async def test_inf_and_none_run_form(which: str, value: float | None) -> None:
    """The run forms with inf/None run fn without any deadline and return its result."""
    factory: Any = getattr(cs, which)

    async def work(x: int) -> int:
        assert cs.current_deadline() == math.inf
        await asyncio.sleep(1000)
        return x + 1

    assert await factory(value, work, 41) == 42


# --------------------------------------------------------------------------- the deadline setter


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_deadline_set_before_entry_is_absolute() -> None:
    """Setting deadline before entry replaces a timeout with an absolute deadline."""
    loop = asyncio.get_running_loop()
    scope = cs.with_timeout(10)
    scope.deadline = 5
    assert scope.deadline == 5
    await asyncio.sleep(3)
    try:
        async with scope:
            assert scope.deadline == 5
            await asyncio.sleep(100)
    except cs.TimeoutFailure as failure:
        assert failure.deadline == 5  # noqa: PT017 - pins the failure's field at the same time
    assert loop.time() == 5


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_deadline_set_before_entry_on_plain_scope() -> None:
    """A plain cancellable scope given a deadline before entry times out with TimeoutFailure."""
    loop = asyncio.get_running_loop()
    scope = cs.cancellable()
    scope.deadline = 4
    with pytest.raises(cs.TimeoutFailure):
        await scope.run(asyncio.sleep, 100)
    assert loop.time() == 4


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_past_deadline_set_before_entry_cancels_first_await() -> None:
    """A past deadline set before entry cancels at the first suspension point after entry."""
    await asyncio.sleep(10)
    scope = cs.cancellable()
    scope.deadline = 3
    record: list[str] = []
    try:
        async with scope:
            record.append("body")
            await asyncio.sleep(0)
            record.append("not reached")
    except cs.TimeoutFailure as failure:
        record.append(f"timeout deadline={failure.deadline:g}")
    assert record == ["body", "timeout deadline=3"]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
@pytest.mark.parametrize(("new", "fires_at"), [(3, 3), (8, 8), (5.5, 5.5)])
async def test_deadline_moved_while_active(new: float, fires_at: float) -> None:
    """Moving the deadline earlier or later while active reschedules the timer."""
    loop = asyncio.get_running_loop()
    baseline = live_timers()
    record: list[str] = []
    try:
        async with cs.with_timeout(5) as scope:
            await asyncio.sleep(1)
            scope.deadline = new
            record.append(f"deadline {scope.deadline:g}")
            assert len(live_timers()) == len(baseline) + 1
            await asyncio.sleep(100)
    except cs.TimeoutFailure as failure:
        record.append(f"timeout at {loop.time():g} deadline={failure.deadline:g}")
    assert record == [f"deadline {new:g}", f"timeout at {fires_at:g} deadline={fires_at:g}"]
    assert live_timers() == baseline


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_deadline_moved_later_old_timer_does_not_fire() -> None:
    """After the deadline moved later, nothing happens at the old deadline."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    try:
        async with cs.with_timeout(5) as scope:
            scope.deadline = 20
            await asyncio.sleep(10)
            record.append(f"alive at {loop.time():g}")
            await asyncio.sleep(100)
    except cs.TimeoutFailure:
        record.append(f"timeout at {loop.time():g}")
    assert record == ["alive at 10", "timeout at 20"]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_deadline_set_to_past_while_active_cancels_next_await() -> None:
    """Setting a past deadline while active cancels at the next suspension point."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    try:
        async with cs.cancellable() as scope:
            await asyncio.sleep(4)
            scope.deadline = 2
            record.append("still running")
            await asyncio.sleep(0)
            record.append("not reached")
    except cs.TimeoutFailure as failure:
        record.append(f"timeout at {loop.time():g} deadline={failure.deadline:g}")
    assert record == ["still running", "timeout at 4 deadline=2"]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_deadline_set_to_inf_while_active_removes_it() -> None:
    """Setting the deadline to inf while active removes the timeout and its timer."""
    loop = asyncio.get_running_loop()
    baseline = live_timers()
    async with cs.with_timeout(5) as scope:
        scope.deadline = math.inf
        assert live_timers() == baseline
        assert cs.current_deadline() == math.inf
        await asyncio.sleep(50)
    assert loop.time() == 50
    assert scope.cancel_called is False


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_deadline_set_after_exit_has_no_effect() -> None:
    """Setting deadline after exit schedules nothing and cancels nothing."""
    baseline = live_timers()
    async with cs.with_timeout(5) as scope:
        await asyncio.sleep(1)
    scope.deadline = 0
    scope.deadline = 100
    assert live_timers() == baseline
    await asyncio.sleep(200)
    assert scope.cancel_called is False
    assert scope.cancelled_caught is False


# --------------------------------------------------------------------------- cancel vs deadline


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_cancel_before_deadline_reports_cancelled_failure() -> None:
    """cancel() before the deadline gives CancelledFailure, not TimeoutFailure; the timer goes."""
    baseline = live_timers()
    record: list[str] = []
    try:
        async with cs.with_timeout(10) as scope:
            await asyncio.sleep(2)
            scope.cancel("manual")
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        record.append(f"{type(failure).__name__} {failure.reason}")
    assert record == ["CancelledFailure manual"]
    assert live_timers() == baseline


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_pre_cancelled_timeout_scope_reports_cancel() -> None:
    """A with_timeout scope cancelled before entry reports CancelledFailure and sets no timer."""
    baseline = live_timers()
    scope = cs.with_timeout(10)
    scope.cancel("before entry")
    record: list[str] = []
    try:
        async with scope:
            record.append(f"timers: {len(live_timers()) - len(baseline)}")
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        record.append(f"{type(failure).__name__} {failure.reason}")
    assert record == ["timers: 0", "CancelledFailure before entry"]
    assert live_timers() == baseline


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_cancel_then_deadline_passes_in_shield() -> None:
    """A scope cancelled before its deadline still reports CancelledFailure once it passes."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    try:
        async with cs.with_timeout(10) as scope:
            scope.cancel("first")
            async with cs.non_cancellable():
                await asyncio.sleep(20)
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        record.append(f"{type(failure).__name__} {failure.reason} at {loop.time():g}")
    assert record == ["CancelledFailure first at 20"]
    assert scope.cancel_reason == "first"


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_deadline_then_cancel_reports_timeout() -> None:
    """A scope whose deadline passed first reports TimeoutFailure even if cancel() follows."""
    record: list[str] = []
    try:
        async with cs.with_timeout(10) as scope:
            async with cs.non_cancellable():
                await asyncio.sleep(20)
            scope.cancel("too late")
            await asyncio.sleep(0)
    except cs.TimeoutFailure as failure:
        record.append(f"{failure.reason} deadline={failure.deadline:g}")
    assert record == ["deadline exceeded deadline=10"]
    assert scope.cancel_reason == "deadline exceeded"


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_timeout_failure_deadline_after_move() -> None:
    """TimeoutFailure.deadline is the deadline that expired, including one set later."""
    record: list[float] = []
    try:
        async with cs.with_timeout(3) as scope:
            scope.deadline = 7.25
            await forever()
    except cs.TimeoutFailure as failure:
        record.append(failure.deadline)
    assert record == [7.25]


# --------------------------------------------------------------------------- nesting


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_outer_deadline_first_outer_reports() -> None:
    """An outer deadline expiring before an inner one is reported by the outer scope."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    try:
        async with cs.with_timeout(3, name="outer") as outer:
            try:
                async with cs.with_timeout(10, name="inner") as inner:
                    await forever()
            except cs.CancelledFailure:
                record.append("inner reported, wrong")
                raise
    except cs.TimeoutFailure as failure:
        record.append(f"{failure.scope is outer} at {loop.time():g}")
    assert record == ["True at 3"]
    assert inner.cancel_called is False
    assert inner.cancelled_caught is False


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_inner_deadline_first_outer_goes_on() -> None:
    """An inner deadline expiring first is reported by the inner scope; the outer goes on."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    async with cs.with_timeout(10) as outer:
        try:
            async with cs.with_timeout(3) as inner:
                await forever()
        except cs.TimeoutFailure as failure:
            record.append(f"inner {failure.scope is inner} at {loop.time():g}")
        await asyncio.sleep(5)
        record.append(f"outer alive at {loop.time():g}")
    assert record == ["inner True at 3", "outer alive at 8"]
    assert outer.cancel_called is False


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_equal_deadlines_outermost_reports() -> None:
    """Nested scopes expiring at the same time: the outermost one reports."""
    record: list[str] = []
    try:
        async with cs.with_timeout(5, name="outer") as outer, cs.with_timeout(5, name="inner"):
            await forever()
    except cs.TimeoutFailure as failure:
        record.append(f"outer reports: {failure.scope is outer}")
    assert record == ["outer reports: True"]


# --------------------------------------------------------------------------- current_deadline()


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_current_deadline_outside_and_without_deadlines() -> None:
    """current_deadline() is inf outside any scope and inside scopes without deadlines."""
    assert cs.current_deadline() == math.inf
    async with cs.cancellable(), cs.non_cancellable():
        assert cs.current_deadline() == math.inf
    assert cs.current_deadline() == math.inf


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_current_deadline_is_minimum_over_ancestors() -> None:
    """current_deadline() is the smallest deadline of the current scope and its ancestors."""
    seen: list[float] = []
    async with cs.with_timeout(10):
        seen.append(cs.current_deadline())
        async with cs.with_timeout(4):
            seen.append(cs.current_deadline())
            async with cs.with_timeout(20), cs.cancellable():
                seen.append(cs.current_deadline())
            seen.append(cs.current_deadline())
        seen.append(cs.current_deadline())
    seen.append(cs.current_deadline())
    assert seen == [10, 4, 4, 4, 10, math.inf]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_current_deadline_stops_at_non_cancellable() -> None:
    """current_deadline() does not look past the first non-cancellable scope."""
    seen: list[float] = []
    async with cs.with_timeout(5):
        async with cs.non_cancellable():
            seen.append(cs.current_deadline())
            async with cs.with_timeout(30):
                seen.append(cs.current_deadline())
        seen.append(cs.current_deadline())
    assert seen == [math.inf, 30, 5]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_current_deadline_counts_the_shields_own_deadline() -> None:
    """The first non-cancellable scope's own deadline still counts."""
    seen: list[float] = []
    async with cs.with_timeout(5), cs.CancellationScope(cancellable=False, timeout=20):
        seen.append(cs.current_deadline())
        async with cs.with_timeout(30):
            seen.append(cs.current_deadline())
        async with cs.with_timeout(12):
            seen.append(cs.current_deadline())
        async with cs.non_cancellable():
            seen.append(cs.current_deadline())
    assert seen == [20, 20, 12, math.inf]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_current_deadline_follows_the_setter() -> None:
    """current_deadline() reflects a deadline moved while the scope is active."""
    seen: list[float] = []
    async with cs.with_timeout(5) as scope:
        seen.append(cs.current_deadline())
        scope.deadline = 9
        seen.append(cs.current_deadline())
        scope.deadline = math.inf
        seen.append(cs.current_deadline())
    assert seen == [5, 9, math.inf]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_current_deadline_in_child_and_plain_task() -> None:
    """A spawned child sees its scope's deadline; a plain create_task sees none."""
    seen: dict[str, float] = {}

    async def probe(label: str) -> None:
        seen[label] = cs.current_deadline()
        await asyncio.sleep(0)

    async with cs.with_timeout(7) as scope:
        await scope.spawn(probe, "child")
        await asyncio.create_task(probe("plain"))
    assert seen == {"child": 7, "plain": math.inf}


# --------------------------------------------------------------------------- no timer left


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_no_timer_left_after_any_exit() -> None:
    """When a scope exits, by any path, no callback of it stays scheduled on the loop."""
    baseline = live_timers()
    record: list[str] = []

    async with cs.with_timeout(100):
        await asyncio.sleep(1)
    record.append(f"normal {len(live_timers()) - len(baseline)}")

    try:
        async with cs.with_timeout(2):
            await forever()
    except cs.TimeoutFailure:
        record.append(f"timeout {len(live_timers()) - len(baseline)}")

    try:
        async with cs.with_timeout(100) as scope:
            scope.cancel()
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        record.append(f"cancel {len(live_timers()) - len(baseline)}")

    async with cs.move_on_after(3):
        await forever()
    record.append(f"move_on {len(live_timers()) - len(baseline)}")

    try:
        async with cs.with_deadline(1000):
            raise KeyError("body error")
    except KeyError:
        record.append(f"error {len(live_timers()) - len(baseline)}")

    try:
        async with cs.with_timeout(50), cs.with_timeout(60), cs.with_timeout(1):
            await forever()
    except cs.TimeoutFailure:
        record.append(f"nested {len(live_timers()) - len(baseline)}")

    async with cs.with_timeout(100):
        with cs.with_timeout(100):
            pass
    record.append(f"sync {len(live_timers()) - len(baseline)}")

    assert record == [
        "normal 0",
        "timeout 0",
        "cancel 0",
        "move_on 0",
        "error 0",
        "nested 0",
        "sync 0",
    ]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_no_timer_left_after_outer_cancel() -> None:
    """A deadline scope unwound by an outer scope's cancellation leaves no timer behind."""
    baseline = live_timers()
    try:
        async with cs.cancellable() as outer, cs.with_timeout(100):
            outer.cancel()
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        assert failure.scope is outer  # noqa: PT017 - checks who reported in the same step
    assert live_timers() == baseline


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_no_timer_left_after_native_cancel() -> None:
    """A deadline scope unwound by task.cancel() leaves no timer behind."""
    baseline = live_timers()
    entered = asyncio.Event()

    async def host() -> None:
        async with cs.with_timeout(100):
            entered.set()
            await forever()

    task = asyncio.create_task(host())
    await entered.wait()
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert live_timers() == baseline
