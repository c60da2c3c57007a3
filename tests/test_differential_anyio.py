"""Differential checks: the same generated tree run with cancelscope and with anyio on asyncio.

The shared subset is cancel scopes, shields, deadlines and task groups: `scenarios` without
native cancels, handle awaits or an outer ``asyncio.timeout``. Each library runs the tree
through its own small interpreter; the outcomes (which code ran and when each scope exited,
what it let out, how every child ended, what escaped the host) must agree up to the
intended differences listed in docs/semantics.md §10 ("Differences from anyio"):

1. A scope's own cancellation: cancelscope raises ``CancelledFailure`` at the boundary where
   an anyio ``CancelScope`` exits silently; ``TimeoutFailure`` is anyio's ``TimeoutError``.
   Both interpreters catch these at the boundary, so the rest of the tree runs the same way.
2. A body exception in a scope with children: anyio's task group always wraps it in an
   exception group, cancelscope only when a child failed (SPEC 7.2). Groups are compared
   as their flattened leaves.
3. The exit's wait for children is not a delivery point in cancelscope: a scope whose body
   returned and which is cancelled while it waits for children exits normally (after
   cancelling them); anyio delivers into the task group's exit and the scope then reports
   its cancellation. Encoded as: cancelscope "normal" with ``cancel_called`` matches anyio
   "absorbed"/"timeout" (or a CancelledError, when an outer cancellation also arrived
   during the wait) for a scope that had children. When the cancellation came from
   outside, the body goes on after the scope here and is unwound in anyio: such examples
   are not compared (``assume``; a few percent of them).
4. Which failure a scope that absorbed its own cancellation reports: here the request
   that cancelled it decides (SPEC 6: a deadline gives ``TimeoutFailure``, ``cancel()``
   before the deadline ``CancelledFailure``, whatever the deadline is moved to later);
   anyio's ``fail_after`` compares the clock with the deadline at exit, and a plain
   ``CancelScope`` whose deadline passes exits silently. Compared as "absorbed".
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
import pytest
from hypothesis import HealthCheck, assume, example, given, settings

import cancelscope as cs

from ._clock import UVLOOP, Clock, LogicalClock, LoopFactory, supervise
from ._helpers import BaseExceptionGroup, eager_loop
from ._scenario import (
    Act,
    Child,
    DeadlineOf,
    Event,
    Node,
    Scenario,
    nodes,
    scenarios,
    sleep_act,
)

SOAK = os.environ.get("CANCELSCOPE_SOAK", "") not in ("", "0")
EXAMPLES = 3_000 if SOAK else 150

EXAMPLES_LOGICAL = 3_000 if SOAK else 150  # uvloop
EXAMPLES_LOGICAL_ASYNCIO = 1_000 if SOAK else 75

# flavour: (loop factory, clock). The logical clock (tests/_clock.py) keeps time on uvloop,
# which looptime cannot patch, and on the default loop to show that the two clocks agree.
FLAVOURS: dict[str, tuple[LoopFactory, type[Clock]]] = {
    "asyncio": (asyncio.new_event_loop, Clock),
}
if sys.version_info >= (3, 12):
    FLAVOURS["eager"] = (eager_loop, Clock)
VIRTUAL = list(FLAVOURS)
FLAVOURS["asyncio-logical"] = (asyncio.new_event_loop, LogicalClock)
if UVLOOP is not None:
    FLAVOURS["uvloop"] = (UVLOOP, LogicalClock)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from _leaves(e)
    else:
        yield exc


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "normal"
    if isinstance(exc, BaseExceptionGroup):
        # Difference 2: compared as flattened leaves, so a group of one equals the bare error.
        return ",".join(sorted(_describe(e) for e in _leaves(exc)))
    if isinstance(exc, asyncio.CancelledError):
        return "CancelledError"
    if isinstance(exc, ValueError):
        return str(exc.args[0])
    return repr(exc)  # pragma: no cover - nothing else is raised in a scenario


@dataclass
class Seen:
    """One library's run: per scope (exit time, what it let out, cancel_called, had children)."""

    scopes: dict[int, tuple[float, str, bool, bool]] = field(default_factory=dict)
    children: dict[int, str] = field(default_factory=dict)
    host: str = ""
    swallowed: int = 0
    diverged: bool = False


class _Interp:
    """What both interpreters share: acts, children, the driver. Subclasses open scopes.

    Checkpoint: a body with children ends with ``await asyncio.sleep(0)`` in both
    libraries, so a scope already cancelled when its body ends unwinds the body in both
    (anyio would deliver into its task group's exit, cancelscope at no point: difference 3).
    """

    marker = ""

    def __init__(self, sc: Scenario, clock: Clock) -> None:
        self.sc = sc
        self.clock = clock
        self.seen = Seen()
        self.scopes: dict[int, Any] = {}

    def ours(self, exc: BaseException) -> bool:
        return bool(exc.args) and str(exc.args[0]).startswith(self.marker)

    def swallowed(self) -> None:
        self.seen.swallowed += 1

    async def act(self, a: Act, tag: str) -> None:
        await sleep_act(self.clock, a, tag, self.ours, self.swallowed)

    async def child(self, c: Child) -> None:
        try:
            if c.node is not None:
                await self.node(c.node)
            await self.act(c.act, f"child c{c.id}")
        except asyncio.CancelledError:
            self.seen.children[c.id] = "cancelled"
            raise
        except BaseException as exc:
            self.seen.children[c.id] = "failed:" + _describe(exc)
            raise
        self.seen.children[c.id] = "result"

    async def node(self, n: Node) -> None:
        raise NotImplementedError

    def record(self, n: Node, what: str, called: bool) -> None:
        self.clock.forget(n.id)
        self.seen.scopes[n.id] = (self.clock.now(), what, called, bool(n.children))

    def deadline(self, n: Node, fire: DeadlineOf) -> float:
        """The loop-time deadline to create the scope of ``n`` with (inf: none)."""
        if n.deadline is None or n.kind not in ("timeout", "move_on"):
            return math.inf
        return self.clock.deadline(n.id, n.deadline, fire)

    def timed(self, scope: Any) -> bool:
        """Has this (exited) scope still a timer?"""
        raise NotImplementedError

    async def host(self) -> None:
        try:
            await self.node(self.sc.root)
        except BaseException as exc:
            self.seen.host = _describe(exc)
        else:
            self.seen.host = "normal"

    def event(self, e: Event) -> None:
        scope = self.scopes[e.target]
        if e.what == "cancel":
            scope.cancel()
        else:
            scope.deadline = self.clock.deadline(e.target, e.value, DeadlineOf(scope))

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        host = loop.create_task(self.host())
        schedule = [(float(e.at), partial(self.event, e)) for e in self.sc.events]
        driver = loop.create_task(self.clock.drive(schedule, host.done))
        await supervise(host, driver)
        problems = self.clock.leftovers()
        problems.extend(f"n{k} still has a timer" for k, s in self.scopes.items() if self.timed(s))
        assert problems == [], problems


class _CS(_Interp):
    marker = "cancelled by "

    def timed(self, scope: Any) -> bool:
        return scope._timer is not None

    async def node(self, n: Node) -> None:
        name = f"n{n.id}"
        fire = DeadlineOf()
        scope = fire.scope = {
            "cancellable": lambda: cs.CancellationScope(name=name),
            "shield": lambda: cs.CancellationScope(cancellable=False, name=name),
            "timeout": lambda: cs.CancellationScope(deadline=self.deadline(n, fire), name=name),
            "move_on": lambda: cs.move_on_at(self.deadline(n, fire), name=name),
        }[n.kind]()
        self.scopes[n.id] = scope
        watch = False
        try:
            async with scope:
                for c in n.children:
                    scope.spawn(self.child, c, name=f"c{c.id}")
                if n.inner is not None:
                    await self.node(n.inner)
                await self.act(n.act, f"body n{n.id}")
                if n.children:
                    await asyncio.sleep(0)  # see _Interp.checkpoint
                    x = scope._x
                    if scope._cancelled_by is None and any(
                        not h.done() for h in (x.children if x is not None else None) or ()
                    ):
                        watch = True
        except cs.CancelledFailure as exc:
            if exc.scope is not scope:
                raise
            kind = "timeout" if isinstance(exc, cs.TimeoutFailure) else "absorbed"
            self.record(n, kind, scope.cancel_called)
            return
        except BaseException as exc:
            self.record(n, _describe(exc), scope.cancel_called)
            raise
        what = "absorbed" if scope.cancelled_caught else "normal"
        self.record(n, what, scope.cancel_called)
        parent = scope._parent
        if watch and scope._cancelled_by is not None and (
            scope._cancelled_by.origin is not scope
            or (parent is not None and parent._cancelled_by is not None)
        ):
            # Difference 3 for a cancellation from outside that arrived during the exit's
            # wait (as the scope's own, or on top of it): here the body goes on after the
            # scope; anyio unwinds it, letting the outer CancelledError out of the exit.
            self.seen.diverged = True


class _AnyIO(_Interp):
    marker = "Cancelled via cancel scope "

    def timed(self, scope: Any) -> bool:
        return scope._timeout_handle is not None

    async def node(self, n: Node) -> None:
        fire = DeadlineOf()
        scope = fire.scope = anyio.CancelScope(
            shield=n.kind == "shield", deadline=self.deadline(n, fire)
        )
        self.scopes[n.id] = scope
        try:
            with scope:
                if n.children:
                    async with anyio.create_task_group() as tg:
                        for c in n.children:
                            tg.start_soon(self.child, c)
                        await self.body(n)
                else:
                    await self.body(n)
        except BaseException as exc:
            self.record(n, _describe(exc), scope.cancel_called)
            raise
        if scope.cancelled_caught:
            timed_out = n.kind == "timeout" and anyio.current_time() >= scope.deadline
            self.record(n, "timeout" if timed_out else "absorbed", scope.cancel_called)
        else:
            self.record(n, "normal", scope.cancel_called)

    async def body(self, n: Node) -> None:
        if n.inner is not None:
            await self.node(n.inner)
        await self.act(n.act, f"body n{n.id}")
        if n.children:
            await asyncio.sleep(0)  # see _Interp.checkpoint


def _run(kind: type[_Interp], sc: Scenario, factory: LoopFactory, clock: type[Clock]) -> Seen:
    interp = kind(sc, clock())
    interp.clock.run(factory, interp.main)
    return interp.seen


def _same_scope(
    kind: str, ours: tuple[float, str, bool, bool], theirs: tuple[float, str, bool, bool]
) -> bool:
    if ours[:2] == theirs[:2]:
        return True
    # Difference 4: which of the two a scope that absorbed its cancellation reports.
    reported = ("absorbed", "timeout")
    if ours[1] in reported and theirs[1] in reported:
        return ours[0] == theirs[0]
    # Difference 3: the exit's wait for children is not a delivery point here.
    return (
        ours[0] == theirs[0] and ours[1] == "normal" and ours[2] and ours[3]
        # anyio reports the cancellation, or lets an outer one through that also came
        and theirs[1] in ("absorbed", "timeout", "CancelledError")
    )


REGRESSIONS = [
    # Difference 3: the deadline passes while the exit waits for the child.
    Scenario(
        Node(0, "move_on", Act(until=1), deadline=2, children=(Child(1, Act(until=3)),)),
    ),
    # Difference 1: an explicit cancel of a raising scope, caught at its boundary.
    Scenario(
        Node(0, "cancellable", Act(until=5), inner=Node(1, "timeout", Act(until=4), 6)),
        events=(Event(2, "cancel", 1),),
    ),
    # Found by the soak (eager): a scope times out while waiting for a shielded child, then
    # an outer scope is cancelled too; anyio lets the outer CancelledError out of it.
    Scenario(
        Node(0, "cancellable", Act(until=12), inner=Node(
            7, "timeout", Act(until=7), deadline=8,
            children=(Child(8, Act(until=11), Node(9, "shield", Act(until=10))),),
        )),
        events=(Event(9, "cancel", 0),),
    ),
]

F = TypeVar("F", bound=Callable[..., Any])
SUBSET = scenarios(natives=False, awaits=False, outer=False)
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


def regressions(test: F) -> F:
    """Every scenario of REGRESSIONS as an explicit example of ``test``."""
    for sc in reversed(REGRESSIONS):
        test = example(sc=sc)(test)
    return test


def check(flavour: str, sc: Scenario) -> None:
    factory, clock = FLAVOURS[flavour]
    ours = _run(_CS, sc, factory, clock)
    assume(not ours.diverged)
    theirs = _run(_AnyIO, sc, factory, clock)
    kinds = {n.id: n.kind for n in nodes(sc)}
    assert ours.host == theirs.host
    assert ours.children == theirs.children
    assert ours.swallowed == theirs.swallowed
    assert set(ours.scopes) == set(theirs.scopes)
    different = {
        k: (ours.scopes[k], theirs.scopes[k])
        for k in ours.scopes
        if not _same_scope(kinds[k], ours.scopes[k], theirs.scopes[k])
    }
    assert different == {}


@pytest.mark.parametrize("flavour", VIRTUAL)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=HEALTH)
@given(sc=SUBSET)
@regressions
def test_cancelscope_and_anyio_agree_on_the_shared_subset(flavour: str, sc: Scenario) -> None:
    """cancelscope and anyio run a generated tree alike, up to the documented differences."""
    check(flavour, sc)


@pytest.mark.parametrize("flavour", ["uvloop"] if "uvloop" in FLAVOURS else [])
@settings(max_examples=EXAMPLES_LOGICAL, deadline=None, suppress_health_check=HEALTH)
@given(sc=SUBSET)
@regressions
def test_cancelscope_and_anyio_agree_on_uvloop(flavour: str, sc: Scenario) -> None:
    """The same on uvloop, with the logical clock (looptime cannot patch uvloop)."""
    check(flavour, sc)


@pytest.mark.parametrize("flavour", ["asyncio-logical"])
@settings(max_examples=EXAMPLES_LOGICAL_ASYNCIO, deadline=None, suppress_health_check=HEALTH)
@given(sc=SUBSET)
@regressions
def test_cancelscope_and_anyio_agree_on_a_logical_clock(flavour: str, sc: Scenario) -> None:
    """The same on the default loop with the logical clock: the two clocks agree."""
    check(flavour, sc)
