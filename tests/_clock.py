"""Scenario time for the interpreters of tests/_scenario.py and tests/test_differential_anyio.py.

A scenario's times are distinct small integers. A `Clock` maps them onto a real event loop
and drives the schedule; the interpreters ask it to sleep until a time, for the loop-time
deadline standing for a scenario time, and for the time now.

`VirtualClock`: the loop's own clock, made virtual by looptime (it starts at 0 and jumps
to the next timer whenever the loop would sleep). Scenario time *is* ``loop.time()``.
looptime patches the loop's class, which uvloop's compiled loop refuses.

`LogicalClock`: for any loop, uvloop included. A driver owns a tick counter; nothing in
the scenario waits on real time:

- ``sleep_until(t)``: at or before the current tick, ``await asyncio.sleep(0)`` (as on the
  virtual clock); later, a future the driver resolves at tick ``t``;
- ``deadline(key, t, fire)``: the real deadline to give a scope (or an outer
  ``asyncio.timeout_at``) that must expire at scenario time ``t``: already reached
  (``loop.time()``) when ``t`` is not after the current tick, else far in the future
  (``loop.time() + FAR``), and at tick ``t`` the driver calls ``fire(loop.time())``, which
  sets the real deadline to "reached now"; moving a deadline asks again, replacing the
  entry under the same key; ``forget(key)`` when the scope exits;
- the driver goes from tick to tick, skipping ticks where nothing is due; at each it fires
  the deadlines due, performs the events due, resolves the sleeps due, then lets the loop
  *settle*: it yields (``await asyncio.sleep(0)``) until a progress fingerprint (every
  task's done state, the future it waits on and its pending cancel, and the clock's own
  step count) is unchanged for `QUIET` consecutive iterations. A loop that does not settle
  within `CAP` iterations fails the run. asyncio and uvloop give no portable "loop idle"
  signal; the settle counts iterations, never real time, so a run is deterministic. On a
  loop whose ready queue is visible (the default loop), every settle is also checked
  exactly: nothing may be ready and no timer due, or the run fails ("settled too early"),
  so the fingerprint rule is proved on the default loop by the ``asyncio-logical`` flavour.

Both give the same instants the same meaning: what is due at a time happens, then every
task runs until it waits for a later time; exit times are scenario times (the tick, or
``loop.time()`` on the virtual clock), so the reference model, which knows no clock,
predicts both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import looptime

from ._helpers import TimerTracker

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# uvloop's loop factory, None where uvloop is not installed.
UVLOOP: LoopFactory | None
try:
    import uvloop

    UVLOOP = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop is not on every platform
    UVLOOP = None
Scheduled = Sequence[tuple[float, Callable[[], None]]]

# A real deadline this far ahead stands for "not yet": a run never lasts that long.
FAR = 1e6
# Settled: the fingerprint is unchanged for this many consecutive loop iterations. On the
# default loop, where each settle is checked exactly, 1 fails within a few hundred
# examples (a done-callback runs without changing the fingerprint) and 2 has never failed
# (docs/reliability.md); 12 leaves a wide margin at a small cost.
QUIET = 12
# Iterations one tick may take before the run fails as not settling.
CAP = 20_000


class Clock:
    """The virtual clock: scenario time is ``loop.time()`` on a looptime loop."""

    def __init__(self) -> None:
        self.timers: TimerTracker | None = None

    def make_loop(self, factory: LoopFactory) -> asyncio.AbstractEventLoop:
        loop = factory()
        assert isinstance(loop, asyncio.BaseEventLoop)
        patched: asyncio.AbstractEventLoop = looptime.patch_event_loop(loop, start=0)
        return patched

    def run(self, factory: LoopFactory, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``main()`` on a fresh loop from ``factory``, tracking its timers; close it."""
        loop = self.make_loop(factory)
        self.timers = TimerTracker(loop)
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    def now(self) -> float:
        """The scenario time now."""
        return asyncio.get_running_loop().time()

    async def sleep_until(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        if when <= loop.time():
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_at(when, _wake, fut)
        try:
            await fut
        finally:
            handle.cancel()

    def deadline(self, key: object, when: float, fire: Callable[[float], None]) -> float:
        """The loop-time deadline standing for scenario time ``when``; see the module doc."""
        return when

    def forget(self, key: object) -> None:
        """The scope (or timeout) under ``key`` has exited: its deadline no longer fires."""

    async def drive(self, schedule: Scheduled, finished: Callable[[], bool]) -> None:
        """Perform each ``(time, action)`` of ``schedule`` (sorted) at its time.

        On the logical clock, go on until ``finished()`` and nothing is due any more.
        """
        for at, action in schedule:
            await self.sleep_until(at)
            action()

    def leftovers(self) -> list[str]:
        """After the run: timers still pending (``loop._scheduled`` where the loop has it,
        and every timer made through ``call_at``/``call_later``, which covers uvloop)."""
        loop = asyncio.get_running_loop()
        left: list[object] = []
        scheduled: list[asyncio.TimerHandle] = getattr(loop, "_scheduled", [])
        left.extend(h for h in scheduled if not h.cancelled())
        assert self.timers is not None
        left.extend(h for h in self.timers.live() if h not in left)
        return [f"timers left: {left}"] if left else []


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class LogicalClock(Clock):
    """Scenario time is a tick counter the driver advances; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.tick = 0
        self.steps = 0  # bumped by every sleep's start and end: progress the tasks show
        self.sleepers: dict[float, list[asyncio.Future[None]]] = {}
        self.timed: dict[object, tuple[float, Callable[[float], None]]] = {}
        self.gone: set[object] = set()  # keys forgotten: their scopes have exited
        # Diagnostics (docs/reliability.md): the longest run of unchanged iterations that
        # was followed by a change.
        self.longest_quiet = 0

    def make_loop(self, factory: LoopFactory) -> asyncio.AbstractEventLoop:
        return factory()

    def now(self) -> float:
        return float(self.tick)

    async def sleep_until(self, when: float) -> None:
        self.steps += 1
        try:
            if when <= self.tick:
                await asyncio.sleep(0)
                return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.sleepers.setdefault(when, []).append(fut)
            await fut
        finally:
            self.steps += 1

    def deadline(self, key: object, when: float, fire: Callable[[float], None]) -> float:
        loop = asyncio.get_running_loop()
        if when <= self.tick:
            self.timed.pop(key, None)
            return loop.time()
        if key not in self.gone:  # moving an exited scope's deadline does nothing
            self.timed[key] = (when, fire)
        return loop.time() + FAR

    def forget(self, key: object) -> None:
        self.timed.pop(key, None)
        self.gone.add(key)

    def _next(self, schedule: Scheduled, done: int) -> float | None:
        for at in [t for t, futs in self.sleepers.items() if all(f.done() for f in futs)]:
            del self.sleepers[at]
        due = [*self.sleepers, *(t for t, _ in self.timed.values())]
        if done < len(schedule):
            due.append(schedule[done][0])
        return max(min(due), self.tick) if due else None

    async def drive(self, schedule: Scheduled, finished: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        done = 0
        await self.settle()
        while True:
            tick = self._next(schedule, done)
            if tick is None:
                if not finished():
                    raise AssertionError(f"deadlock at tick {self.tick}: nothing is due")
                return
            self.tick = int(tick)
            for key, (at, fire) in list(self.timed.items()):
                if at <= tick:
                    del self.timed[key]
                    fire(loop.time())
            while done < len(schedule) and schedule[done][0] <= tick:
                done += 1
                schedule[done - 1][1]()
            for at in [t for t in self.sleepers if t <= tick]:
                for fut in self.sleepers.pop(at):
                    _wake(fut)
            await self.settle()

    def _fingerprint(self) -> dict[object, object]:
        me = asyncio.current_task()
        seen: dict[object, object] = {"steps": self.steps}
        for task in asyncio.all_tasks():
            if task is not me:
                waiter = getattr(task, "_fut_waiter", None)
                seen[task] = (waiter, getattr(task, "_must_cancel", None), task.cancelling()
                              if hasattr(task, "cancelling") else 0)
        return seen

    async def settle(self) -> None:
        """Yield until the tasks stop making progress (see the module docstring)."""
        last = self._fingerprint()
        quiet = 0
        for _ in range(CAP):
            await asyncio.sleep(0)
            now = self._fingerprint()
            if now == last:
                quiet += 1
                if quiet >= QUIET:
                    self._check_idle()
                    return
            else:
                self.longest_quiet = max(self.longest_quiet, quiet)
                quiet = 0
                last = now
        raise AssertionError(f"the loop did not settle in {CAP} iterations at tick {self.tick}")

    def _check_idle(self) -> None:
        """Where the loop shows its ready queue and timers: is it really idle?"""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        if ready is None:
            return  # uvloop keeps its queue private: the fingerprint rule is all there is
        scheduled: list[asyncio.TimerHandle] = getattr(loop, "_scheduled", [])
        soon = [h for h in scheduled if not h.cancelled() and h.when() < loop.time() + FAR / 2]
        if ready or soon:
            raise AssertionError(
                f"settled too early at tick {self.tick}: ready {list(ready)}, timers {soon}"
            )


async def supervise(host: asyncio.Task[None], driver: asyncio.Task[None]) -> None:
    """Await the host, then the driver; if the driver fails first, cancel the host and raise."""
    await asyncio.wait([host, driver], return_when=asyncio.FIRST_EXCEPTION)
    if driver.done() and driver.exception() is not None:
        host.cancel()
        driver.result()
    await host
    await driver
