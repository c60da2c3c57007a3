"""Generated scope trees: the scenario language, a strategy, an interpreter and a reference model.

A `Scenario` is a tree of scopes entered by one host task (each `Node` may spawn children,
which may enter scopes of their own), what each body does (`Act`), and a schedule of
`Event`s on a virtual clock. Every time in a scenario is a distinct integer, so no two
things happen in the same instant unless one causes the other; that makes a run
deterministic and lets `predict` (a small model of SPEC 3-7 written as plain generators,
with no asyncio in it) say what every scope must raise.

`run` executes a scenario with cancelscope on a fresh loop and returns the `Outcome` (what
each scope raised, when, and its flags; what each child ended with; what escaped the host)
after asserting the invariants that hold for every tree. Scenario time is kept by a
`tests._clock.Clock`: looptime's virtual clock, or a logical tick counter (any loop, uvloop
included). `sleep_act` and `Clock.drive` (the body's sleep/swallow/raise loop and the
event schedule) are shared with the anyio interpreter of tests/test_differential_anyio.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from hypothesis import strategies as st

import cancelscope as cs

from ._clock import Clock, LoopFactory, supervise
from ._helpers import BaseExceptionGroup, cancelling

KINDS = ("cancellable", "shield", "timeout", "move_on")


# --------------------------------------------------------------------------- the language


@dataclass(frozen=True)
class Act:
    """What a body does once its inner scope (if any) has exited.

    ``sleep``: sleep until ``until``, then return or raise ``ValueError(tag)``; ``swallow``
    says what it does with the first CancelledError cancelscope delivers: "no" (let it
    go), "reawait" (catch it and sleep again: level-triggered delivery must come back) or
    "return" (catch it and return). ``await``: await the handle of child ``child``.
    """

    kind: str = "sleep"
    until: int = 0
    then: str = "return"
    swallow: str = "no"
    child: int = -1


@dataclass(frozen=True)
class Child:
    """A child task spawned at entry into its scope: enters ``node`` (if any), then acts."""

    id: int
    act: Act
    node: Node | None = None


@dataclass(frozen=True)
class Node:
    """A scope: its kind, deadline, children, the scope nested in its body, and the body's act."""

    id: int
    kind: str
    act: Act
    deadline: int | None = None
    children: tuple[Child, ...] = ()
    inner: Node | None = None


@dataclass(frozen=True)
class Event:
    """At ``at``: ``cancel`` scope ``target``; set its ``deadline`` to ``value``; ``native``
    ``task.cancel()`` of the host (``target == -1``) or of child ``target``."""

    at: int
    what: str
    target: int
    value: int = 0


@dataclass(frozen=True)
class Scenario:
    """A host tree, a schedule, and optionally an outer ``asyncio.timeout_at`` (3.11+)."""

    root: Node
    events: tuple[Event, ...] = ()
    outer_timeout: int | None = None


@dataclass
class Outcome:
    """What a run showed: per scope (exit time, what it raised, cancel_called,
    cancelled_caught), per child (how its handle ended), what escaped the host."""

    scopes: dict[int, tuple[float, str, Any, bool]] = field(default_factory=dict)
    children: dict[int, str] = field(default_factory=dict)
    host: str = ""
    swallowed: int = 0


def nodes(scenario: Scenario) -> Iterator[Node]:
    """Every node of the scenario, host chain and children's chains."""

    def walk(node: Node | None) -> Iterator[Node]:
        while node is not None:
            yield node
            for child in node.children:
                yield from walk(child.node)
            node = node.inner

    return walk(scenario.root)


def children(scenario: Scenario) -> Iterator[Child]:
    """Every child of the scenario."""
    for node in nodes(scenario):
        yield from node.children


# --------------------------------------------------------------------------- the strategy


@st.composite
def scenarios(
    draw: st.DrawFn, *, max_depth: int = 3, max_children: int = 2, max_events: int = 4,
    natives: bool = True, awaits: bool = True, outer: bool = True,
) -> Scenario:
    """Random scenarios; every time in one is a distinct integer (no same-instant ties)."""
    counter = iter(range(1000))
    times: list[int] = []  # placeholders, replaced by distinct integers at the end

    def slot() -> int:
        times.append(0)
        return -len(times)  # negative: index into the distinct times drawn below

    def act(allow_await: bool) -> Act:
        kinds = ["sleep", "await"] if allow_await else ["sleep"]
        kind = draw(st.sampled_from(kinds))
        if kind == "await":
            # The slot is the time of the plain sleep used if no child can be awaited.
            return Act(kind="await", until=slot())
        return Act(
            until=slot(),
            then=draw(st.sampled_from(["return", "raise"])),
            swallow=draw(st.sampled_from(["no", "reawait", "return"])),
        )

    def node(depth: int, in_child: bool) -> Node:
        kind = draw(st.sampled_from(KINDS))
        ident = next(counter)
        deadline = slot() if kind in ("timeout", "move_on") else None
        kids: list[Child] = []
        if not in_child:
            for _ in range(draw(st.integers(0, max_children))):
                cid = next(counter)
                sub = node(1, True) if draw(st.booleans()) and depth < max_depth else None
                kids.append(Child(cid, act(awaits), sub))
        inner = node(depth + 1, in_child) if depth < max_depth and draw(st.booleans()) else None
        return Node(ident, kind, act(awaits), deadline, tuple(kids), inner)

    root = node(1, False)
    shell = Scenario(root)
    ids = [n.id for n in nodes(shell)]
    kid_ids = [c.id for c in children(shell)]
    events: list[Event] = []
    for _ in range(draw(st.integers(0, max_events))):
        whats = ["cancel", "deadline"] + (["native"] if natives else [])
        what = draw(st.sampled_from(whats))
        if what == "native":
            target = draw(st.sampled_from([-1, *kid_ids]))
            events.append(Event(slot(), what, target))
        elif what == "cancel":
            events.append(Event(slot(), what, draw(st.sampled_from(ids))))
        else:
            events.append(Event(slot(), what, draw(st.sampled_from(ids)), slot()))
    outer_at = slot() if outer and sys.version_info >= (3, 11) and draw(st.booleans()) else None
    n = len(times)
    distinct = draw(st.lists(st.integers(1, 2 * n + 2), min_size=n, max_size=n, unique=True))
    return _resolve(draw, Scenario(root, tuple(events), outer_at), distinct)


def _resolve(draw: st.DrawFn, sc: Scenario, distinct: list[int]) -> Scenario:
    """Replace time placeholders by the distinct times; point awaits at eligible children."""

    def t(value: int) -> int:
        return distinct[-value - 1] if value < 0 else value

    def fix_act(a: Act, eligible: list[Child]) -> Act:
        if a.kind == "await":
            # Only children that cannot fail are awaited: a failure would reach the
            # awaiter twice in one instant (through the handle and through the scope).
            ok = [c.id for c in eligible if c.node is None and c.act.kind == "sleep"
                  and c.act.then == "return"]
            if not ok:
                return Act(until=t(a.until))
            return Act(kind="await", child=draw(st.sampled_from(ok)))
        return Act(a.kind, t(a.until), a.then, a.swallow, a.child)

    def chain_children(n: Node | None) -> list[Child]:
        found: list[Child] = []
        while n is not None:
            found.extend(n.children)
            n = n.inner
        return found

    def fix(n: Node, eligible: list[Child]) -> Node:
        kids = tuple(
            Child(c.id, fix_act(c.act, chain_children(c.node)),
                  fix(c.node, chain_children(c.node)) if c.node is not None else None)
            for c in n.children
        )
        inner = fix(n.inner, eligible) if n.inner is not None else None
        return Node(
            n.id, n.kind, fix_act(n.act, eligible),
            t(n.deadline) if n.deadline is not None else None, kids, inner,
        )

    root = fix(sc.root, chain_children(sc.root))
    events = tuple(
        sorted((Event(t(e.at), e.what, e.target, t(e.value)) for e in sc.events),
               key=lambda e: e.at)
    )
    outer_at = t(sc.outer_timeout) if sc.outer_timeout is not None else None
    return Scenario(root, events, outer_at)


# --------------------------------------------------------------------------- describing outcomes


def describe(exc: BaseException | None) -> str:
    """A short, comparable name for an outcome (the model produces the same strings)."""
    if exc is None:
        return "normal"
    if isinstance(exc, BaseExceptionGroup):
        leaves = sorted(describe(e) for e in exc.exceptions)
        return "group[" + ",".join(leaves) + "]"
    if isinstance(exc, cs.CancelledFailure):
        kind = "TimeoutFailure" if isinstance(exc, cs.TimeoutFailure) else "CancelledFailure"
        text = str(exc)
        if text.startswith("child task "):
            return f"{kind}(handle {text.split(chr(39))[1]})"
        scope = exc.scope
        return f"{kind}@{scope.name if scope is not None else '?'}"
    if isinstance(exc, asyncio.CancelledError):
        return "CancelledError"
    if isinstance(exc, TimeoutError):
        return "TimeoutError"
    if isinstance(exc, ValueError):
        return str(exc.args[0])
    return repr(exc)


# --------------------------------------------------------------------------- the interpreter


async def sleep_act(
    clock: Clock, a: Act, tag: str, ours: Callable[[BaseException], bool],
    swallowed: Callable[[], None],
) -> None:
    """A sleeping body (``a.kind == "sleep"``): sleep until ``a.until``, swallowing the first
    CancelledError for which ``ours`` holds if ``a.swallow`` says so (calling ``swallowed``),
    then return or raise ``ValueError(tag)``."""
    done = False
    while True:
        try:
            await clock.sleep_until(a.until)
            break
        except asyncio.CancelledError as exc:
            if a.swallow == "no" or done or not ours(exc):
                raise
            done = True
            swallowed()
            if a.swallow == "return":
                return
    if a.then == "raise":
        raise ValueError(tag)


@dataclass
class DeadlineOf:
    """What the logical clock calls at a deadline's tick: ``scope.deadline = when``. The
    scope may be bound after the call to `Clock.deadline` (it is created with the result)."""

    scope: Any = None

    def __call__(self, when: float) -> None:
        self.scope.deadline = when


def _make_scope(node: Node, clock: Clock) -> cs.CancellationScope:
    name = f"n{node.id}"
    if node.kind == "cancellable":
        return cs.cancellable(name=name)
    if node.kind == "shield":
        return cs.non_cancellable(name=name)
    assert node.deadline is not None
    fire = DeadlineOf()
    when = clock.deadline(node.id, node.deadline, fire)
    scope = (cs.with_deadline if node.kind == "timeout" else cs.move_on_at)(when, name=name)
    fire.scope = scope
    return scope


def _ours(exc: BaseException) -> bool:
    """Was this CancelledError delivered by cancelscope (the only kind bodies swallow)?"""
    return bool(exc.args) and str(exc.args[0]).startswith("cancelled by ")


class _Run:
    """One execution of a scenario with cancelscope."""

    def __init__(self, sc: Scenario, clock: Clock) -> None:
        self.sc = sc
        self.clock = clock
        self.out = Outcome()
        self.scopes: dict[int, cs.CancellationScope] = {}
        self.handles: dict[int, cs.TaskHandle[None]] = {}
        self.problems: list[str] = []

    def swallowed(self) -> None:
        self.out.swallowed += 1

    async def act(self, a: Act, tag: str) -> None:
        if a.kind == "await":
            # A checkpoint first: whether a child cancelled in this very instant has
            # finished before the await is a race between steps that SPEC leaves open.
            await asyncio.sleep(0)
            await self.handles[a.child]
            return
        await sleep_act(self.clock, a, tag, _ours, self.swallowed)

    async def node(self, n: Node) -> None:
        clock = self.clock
        scope = _make_scope(n, clock)
        self.scopes[n.id] = scope
        mine: list[cs.TaskHandle[None]] = []
        try:
            async with scope:
                for c in n.children:
                    handle = scope.spawn(self.child, c, name=f"c{c.id}")
                    self.handles[c.id] = handle
                    mine.append(handle)
                if n.inner is not None:
                    await self.node(n.inner)
                await self.act(n.act, f"body n{n.id}")
        except BaseException as exc:
            clock.forget(n.id)
            self.exited(n, scope, exc, clock.now(), mine)
            raise
        clock.forget(n.id)
        self.exited(n, scope, None, clock.now(), mine)

    def exited(
        self, n: Node, scope: cs.CancellationScope, exc: BaseException | None, now: float,
        mine: list[cs.TaskHandle[None]],
    ) -> None:
        self.out.scopes[n.id] = (now, describe(exc), scope.cancel_called, scope.cancelled_caught)
        if any(not h.done() for h in mine):
            self.problems.append(f"n{n.id} exited with a child still running")
        if scope.active or scope._timer is not None:
            self.problems.append(f"n{n.id} still active or timed after exit")
        x = scope._x
        if x is not None and x.delivered:
            self.problems.append(f"n{n.id} left {x.delivered} deliveries uncounted")

    async def child(self, c: Child) -> None:
        if c.node is not None:
            await self.node(c.node)
        await self.act(c.act, f"child c{c.id}")

    async def host(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        entry = cancelling(task)
        try:
            if self.sc.outer_timeout is not None:
                holder: list[asyncio.Timeout] = []
                when = self.clock.deadline(
                    "outer", self.sc.outer_timeout, lambda t: holder[0].reschedule(t)
                )
                holder.append(asyncio.timeout_at(when))
                try:
                    async with holder[0]:
                        await self.node(self.sc.root)
                finally:
                    self.clock.forget("outer")
            else:
                await self.node(self.sc.root)
        except BaseException as exc:
            self.out.host = describe(exc)
        else:
            self.out.host = "normal"
        natives = sum(1 for e in self.sc.events if e.what == "native" and e.target == -1
                      and e.at in self.host_cancels)
        if entry >= 0 and cancelling(task) - entry != natives:
            self.problems.append(
                f"host cancelling() {cancelling(task)} at the end, expected {entry + natives}"
            )

    def event(self, e: Event, host: asyncio.Task[None]) -> None:
        if e.what == "cancel":
            self.scopes[e.target].cancel(f"event at {e.at}")
        elif e.what == "deadline":
            scope = self.scopes[e.target]
            scope.deadline = self.clock.deadline(e.target, e.value, DeadlineOf(scope))
        else:
            task = host if e.target == -1 else self.child_task(e.target)
            if task is not None and not task.done():
                task.cancel("native")
                if e.target == -1:
                    self.host_cancels.add(e.at)

    async def driver(self, host: asyncio.Task[None]) -> None:
        schedule = [(float(e.at), partial(self.event, e, host)) for e in self.sc.events]
        await self.clock.drive(schedule, host.done)

    def child_task(self, ident: int) -> asyncio.Task[Any] | None:
        for task in asyncio.all_tasks():
            if task.get_name() == f"c{ident}":
                return task
        return None

    async def main(self) -> None:
        self.host_cancels: set[int] = set()
        loop = asyncio.get_running_loop()
        host = loop.create_task(self.host(), name="host")
        driver = loop.create_task(self.driver(host), name="driver")
        await supervise(host, driver)
        for h in self.handles.values():
            self.out.children[int(h.name[1:])] = _handle_outcome(h)
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me]
        if left:
            self.problems.append(f"tasks left: {left}")
        self.problems.extend(self.clock.leftovers())
        for ident, scope in self.scopes.items():
            if scope.active:
                self.problems.append(f"n{ident} never exited")


def _handle_outcome(h: cs.TaskHandle[None]) -> str:
    if h.cancelled():
        try:
            h.result()
        except cs.TimeoutFailure:
            return "cancelled:timeout"
        except cs.CancelledFailure:
            return "cancelled"
    exc = h.exception()
    return "result" if exc is None else "failed:" + describe(exc)


def run(
    sc: Scenario, factory: LoopFactory = asyncio.new_event_loop, clock: type[Clock] = Clock
) -> Outcome:
    """Run ``sc`` with cancelscope on a fresh loop from ``factory``, its time kept by
    ``clock`` (the virtual clock by default); assert the invariants."""
    runner = _Run(sc, clock())
    runner.clock.run(factory, runner.main)
    assert runner.problems == [], runner.problems
    assert set(runner.out.scopes) == {n.id for n in nodes(sc)}, "a scope never exited"
    return runner.out


# --------------------------------------------------------------------------- the model
#
# The model is written from SPEC 3-7 alone. Tasks are generators that yield what they
# wait for: ("sleep", t), ("await", child id) or ("children", scope). The scheduler
# processes one instant at a time: it delivers cancellation to every task suspended in
# an effectively cancelled scope (not in an exit's wait for children: §10), resumes
# every task whose wait is over, and repeats until nothing changes; then the clock jumps
# to the next timer or event.


class _Either:
    """A prediction that allows either value (a race SPEC leaves open); equal to any bool."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, bool)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "EITHER"


EITHER: Any = _Either()


class MCancelled(BaseException):
    """A CancelledError in the model: ``native`` (task.cancel(), asyncio.timeout) or ours."""

    def __init__(self, native: bool) -> None:
        super().__init__(native)
        self.native = native


class MRaised(Exception):
    """A non-cancellation exception in the model, already described."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass
class _Req:
    deadline: bool


class _MScope:
    def __init__(self, node: Node | None, parent: _MScope | None, task: _MTask) -> None:
        self.node = node
        self.parent = parent
        self.task = task
        self.cancellable = node is None or node.kind != "shield"
        self.deadline = float(node.deadline) if node is not None and node.deadline else None
        self.own: _Req | None = None
        self.eff: _Req | None = None
        self.state = "open"
        self.children: list[_MTask] = []
        self.failures: list[str] = []
        self.below: list[_MScope] = []
        self.caught = False
        if parent is not None:
            parent.below.append(self)
            if self.cancellable and parent.eff is not None:
                self.eff = parent.eff


class _MTask:
    def __init__(self, gen: Generator[Any, Any, None], child: Child | None) -> None:
        self.gen = gen
        self.child = child
        self.wait: Any = ("start",)
        self.current: _MScope | None = None
        self.natives = 0
        self.done = False
        self.done_at = -1.0
        self.handle = ""  # a child's handle outcome


class Model:
    """Predicts the `Outcome` of a scenario (see the module docstring)."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.now = 0.0
        self.out = Outcome()
        self.tasks: list[_MTask] = []
        self.scopes: dict[int, _MScope] = {}
        self.kids: dict[int, _MTask] = {}
        self.host: _MTask | None = None
        self.outer_fired = False
        self.host_natives = 0

    # -- requests (SPEC 3) --

    def request(self, scope: _MScope, req: _Req) -> None:
        if scope.state == "exited" or scope.own is not None:
            return
        scope.own = req
        if scope.eff is None:
            self.carry(scope, req)

    def carry(self, scope: _MScope, req: _Req) -> None:
        scope.eff = req
        for below in scope.below:
            if below.state != "exited" and below.cancellable and below.eff is None:
                self.carry(below, req)

    # -- the code the tasks run --

    def act(self, task: _MTask, a: Act, tag: str) -> Generator[Any, Any, None]:
        if a.kind == "await":
            kid = self.kids[a.child]
            yield ("sleep", self.now)  # the interpreter's checkpoint
            if not kid.done:
                yield ("await", kid)
            if kid.handle.startswith("cancelled"):
                timeout = kid.handle == "cancelled:timeout"
                kind = "TimeoutFailure" if timeout else "CancelledFailure"
                raise MRaised(f"{kind}(handle c{a.child})")
            return
        swallowed = False
        while True:
            try:
                yield ("sleep", a.until)
                break
            except MCancelled as exc:
                if a.swallow == "no" or swallowed or exc.native:
                    raise
                swallowed = True
                self.out.swallowed += 1
                if a.swallow == "return":
                    return
        if a.then == "raise":
            raise MRaised(tag)

    def node(self, task: _MTask, n: Node) -> Generator[Any, Any, None]:
        scope = _MScope(n, task.current, task)
        self.scopes[n.id] = scope
        task.current = scope
        exc: BaseException | None = None
        try:
            for c in n.children:
                self.spawn(scope, c)
            if n.inner is not None:
                yield from self.node(task, n.inner)
            yield from self.act(task, n.act, f"body n{n.id}")
        except (MCancelled, MRaised) as e:
            exc = e
        foreign: MCancelled | None = None
        # The children the exit found running, when the exit's own request could only
        # set cancel_called: the scope was already effectively cancelled, and so was
        # every one of them (see `called` below).
        racing: list[_MTask] = []
        racing_at = -1.0
        if any(not k.done for k in scope.children):
            scope.state = "exiting"
            if exc is not None:
                running = [k for k in scope.children if not k.done]
                if (
                    scope.own is None
                    and scope.eff is not None
                    and all(k.current is not None and k.current.eff is not None for k in running)
                ):
                    racing = running
                    racing_at = self.now
                self.request(scope, _Req(False))  # SPEC 5: a raising body stops the children
            while any(not k.done for k in scope.children):
                try:
                    yield ("children", scope)
                except MCancelled as e:  # only a native cancel reaches the wait (§10)
                    foreign = foreign or e
                    self.request(scope, _Req(False))
            scope.state = "open"
        called: object = scope.own is not None
        if not called and exc is not None and any(k.done_at == self.now for k in scope.children):
            # The body raised in the instant its last children were cancelled: whether
            # they finished before the exit looked (no request) or after (the "body
            # raised" request) is a race between steps of one instant that SPEC leaves open.
            called = EITHER
        elif racing and racing_at == self.now and all(k.done_at == self.now for k in racing):
            # The same race seen from the other side: the exit found children that were
            # already cancelled and finished in this instant anyway. Whether they were
            # done before the exit looked is up to the order of steps in the instant.
            called = EITHER
        result = self.finish(scope, exc, foreign)
        self.out.scopes[n.id] = (self.now, describe_model(result), called, scope.caught)
        if result is not None:
            raise result

    def owns(self, scope: _MScope, exc: MCancelled) -> bool:
        """SPEC 7.3: is this CancelledError the scope's own?"""
        if scope.eff is None:
            return False
        parent = scope.parent
        if scope.cancellable and parent is not None and parent.eff is not None:
            return False
        if sys.version_info < (3, 11):
            # SPEC 8's weaker guarantee: 3.10 keeps no counts, so ownership goes by the
            # error itself; a native cancel that only hit the exit's wait goes unseen.
            return not exc.native
        return scope.task.natives == 0

    def finish(
        self, scope: _MScope, exc: BaseException | None, foreign: MCancelled | None
    ) -> BaseException | None:
        """SPEC 7, in order; returns what the scope raises (None: exits normally)."""
        scope.state = "exited"
        scope.task.current = scope.parent
        if scope.failures:
            leaves = list(scope.failures)
            if isinstance(exc, MCancelled):
                if self.owns(scope, exc):
                    scope.caught = True
            elif isinstance(exc, MRaised):
                leaves.append(exc.text)
            return MRaised("group[" + ",".join(sorted(leaves)) + "]")
        if foreign is not None:
            return exc if exc is not None else foreign
        if not isinstance(exc, MCancelled):
            return exc
        if not self.owns(scope, exc):
            return exc
        scope.caught = True
        assert scope.node is not None
        assert scope.own is not None
        if scope.node.kind == "move_on":
            return None
        kind = "TimeoutFailure" if scope.own.deadline else "CancelledFailure"
        return MRaised(f"{kind}@n{scope.node.id}")

    def spawn(self, owner: _MScope, c: Child) -> None:
        task = _MTask(self.child(owner, c), c)
        owner.children.append(task)
        self.kids[c.id] = task
        self.tasks.append(task)

    def child(self, owner: _MScope, c: Child) -> Generator[Any, Any, None]:
        task = self.kids[c.id]
        hidden = _MScope(None, owner, task)
        task.current = hidden
        try:
            if c.node is not None:
                yield from self.node(task, c.node)
            yield from self.act(task, c.act, f"child c{c.id}")
        except MCancelled:
            req = hidden.eff
            task.handle = "cancelled:timeout" if req is not None and req.deadline else "cancelled"
        except MRaised as e:
            task.handle = "failed:" + e.text
            owner.failures.append(e.text)
            self.request(owner, _Req(False))
        else:
            task.handle = "result"
        hidden.state = "exited"

    def host_main(self) -> Generator[Any, Any, None]:
        assert self.host is not None
        try:
            yield from self.node(self.host, self.sc.root)
        except MCancelled:
            timed_out = self.outer_fired and self.host_natives == 0
            self.out.host = "TimeoutError" if timed_out else "CancelledError"
        except MRaised as e:
            self.out.host = e.text
        else:
            self.out.host = "normal"

    # -- the scheduler --

    def resume(self, task: _MTask, exc: BaseException | None = None) -> None:
        """Run ``task`` to its next wait, throwing ``exc`` into it if given."""
        try:
            task.wait = task.gen.send(None) if exc is None else task.gen.throw(exc)
        except StopIteration:
            task.done = True
            task.done_at = self.now
            task.wait = None

    def settle(self) -> None:
        changed = True
        while changed:
            changed = False
            for task in list(self.tasks):
                if task.done:
                    continue
                wait = task.wait
                cur = task.current
                if wait[0] == "start":
                    self.resume(task)
                elif (wait[0] in ("sleep", "await") and cur is not None
                      and cur.eff is not None and cur.state != "exiting"):
                    self.resume(task, MCancelled(False))
                elif (
                    (wait[0] == "sleep" and wait[1] <= self.now)
                    or (wait[0] == "await" and wait[1].done)
                    or (wait[0] == "children" and all(k.done for k in wait[1].children))
                ):
                    self.resume(task)
                else:
                    continue
                changed = True

    def native(self, task: _MTask | None, outer: bool = False) -> None:
        if task is None or task.done:
            return
        task.natives += 1
        if task is self.host:
            if outer:
                self.outer_fired = True
            else:
                self.host_natives += 1
        self.resume(task, MCancelled(True))

    def predict(self) -> Outcome:
        self.host = _MTask(self.host_main(), None)
        self.tasks.append(self.host)
        events = list(self.sc.events)
        self.settle()
        while not self.host.done or events or any(not t.done for t in self.tasks):
            candidates: list[float] = []
            for task in self.tasks:
                if not task.done and task.wait[0] == "sleep":
                    candidates.append(max(float(task.wait[1]), self.now))
            for scope in self.scopes.values():
                if scope.state != "exited" and scope.own is None and scope.deadline is not None:
                    candidates.append(max(scope.deadline, self.now))
            if events:
                candidates.append(float(events[0].at))
            if self.sc.outer_timeout is not None and not self.host.done and not self.outer_fired:
                candidates.append(float(self.sc.outer_timeout))
            assert candidates, "model deadlock"
            self.now = min(candidates)
            for scope in list(self.scopes.values()):
                if (scope.state != "exited" and scope.own is None
                        and scope.deadline is not None and scope.deadline <= self.now):
                    self.request(scope, _Req(True))
            if events and events[0].at <= self.now:
                self.event(events.pop(0))
            if (self.sc.outer_timeout is not None and not self.outer_fired
                    and self.sc.outer_timeout <= self.now and not self.host.done):
                self.native(self.host, outer=True)
            self.settle()
        for ident, task in self.kids.items():
            self.out.children[ident] = task.handle
        return self.out

    def event(self, e: Event) -> None:
        if e.what == "native":
            self.native(self.host if e.target == -1 else self.kids.get(e.target))
            return
        scope = self.scopes[e.target]
        if e.what == "cancel":
            self.request(scope, _Req(False))
        elif scope.state != "exited":
            scope.deadline = float(e.value)
            if scope.own is None and scope.deadline <= self.now:
                self.request(scope, _Req(True))


def describe_model(exc: BaseException | None) -> str:
    """`describe` for the model's exceptions."""
    if exc is None:
        return "normal"
    if isinstance(exc, MCancelled):
        return "CancelledError"
    assert isinstance(exc, MRaised)
    return exc.text


def predict(sc: Scenario) -> Outcome:
    """What SPEC 3-7 say a run of ``sc`` must show."""
    return Model(sc).predict()
