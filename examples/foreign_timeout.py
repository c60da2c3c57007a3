"""A timeout helper swallows its caller's cancellation: `python examples/foreign_timeout.py`.

A request handler asks a helper for a price; the helper bounds the price feed with a
timeout and the handler falls back to a cached price on ``TimeoutError``. The helper's
timeout is written the way many hand-rolled ones are (and ``async_timeout`` once was): it
treats *every* CancelledError that reaches it as its own deadline and raises
``TimeoutError`` instead. Then the client goes away and the request is cancelled while the
helper waits.

* plain asyncio: the helper turns the request's cancellation into ``TimeoutError``; the
  handler serves the cached price and goes on working for a client that is gone.
* the same helper inside a cancelscope scope: level-triggered, the request's cancellation
  comes back at the handler's next ``await``, so the handler stops there.
* ``cs.with_timeout`` as the helper's timeout: it owns only its own deadline, so the
  request's cancellation passes through untouched (as a CancelledError that names who
  cancelled and why), and the fallback never runs.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import cancelscope as cs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # the examples' shared helper, beside this file


async def price_feed(started: asyncio.Event) -> str:
    started.set()
    await asyncio.sleep(3600)  # the feed is slow today
    return "fresh price"


async def hand_rolled_timeout(seconds: float, started: asyncio.Event) -> str:
    """A timeout that believes every cancellation is its own deadline."""
    task = asyncio.ensure_future(price_feed(started))
    timer = asyncio.get_running_loop().call_later(seconds, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        task.cancel()
        raise TimeoutError("price feed timed out") from None  # the bug: whose cancel was it?
    finally:
        timer.cancel()


async def scope_timeout(seconds: float, started: asyncio.Event) -> str:
    """The same helper with cs.with_timeout: it owns its deadline and nothing else."""
    async with cs.with_timeout(seconds, name="price-feed"):
        return await price_feed(started)


async def handler(helper: str, started: asyncio.Event, log: list[str]) -> None:
    fetch = hand_rolled_timeout if helper == "hand-rolled" else scope_timeout
    try:
        price = await fetch(5.0, started)
    except TimeoutError as exc:
        log.append(f"raised {type(exc).__name__}")
        price = "cached price"
    except asyncio.CancelledError as exc:
        log.append(f"let it through: {exc}")
        raise
    try:
        await asyncio.sleep(0)  # render the page with the price
        log.append(f"went on: served the {price}")
    except asyncio.CancelledError:
        log.append("stopped at the next await")
        raise


async def with_plain_asyncio() -> list[str]:
    log: list[str] = []
    started = asyncio.Event()
    task = asyncio.ensure_future(handler("hand-rolled", started, log))
    await started.wait()
    task.cancel()  # the client went away
    try:
        await task
    except asyncio.CancelledError:
        log.append("request cancelled")
    return log


async def with_cancelscope(helper: str) -> list[str]:
    log: list[str] = []
    started = asyncio.Event()
    try:
        async with cs.cancellable(name="request") as request:
            request.spawn(handler, helper, started, log)
            await started.wait()
            request.cancel("client went away")
    except cs.CancelledFailure:
        pass
    return log


def run_all() -> dict[str, list[str]]:
    return {
        "plain": asyncio.run(with_plain_asyncio()),
        "scope": asyncio.run(with_cancelscope("hand-rolled")),
        "with_timeout": asyncio.run(with_cancelscope("with_timeout")),
    }


def scenario() -> dict[str, object]:
    """The demo's protocol: run the versions and summarise them."""
    r = run_all()
    plain_went_on = any(line.startswith("went on") for line in r["plain"])
    ours_went_on = any(
        line.startswith("went on") for line in r["with_timeout"] + r["scope"]
    )
    return {
        "incident": "a timeout deep in the stack swallows the caller's cancel",
        "plain": "cancel turned into TimeoutError; request went on",
        "cancelscope": "cancel passes through with_timeout; request stopped",
        "fixed": plain_went_on and not ours_went_on,
        "details": r,
    }


def main() -> None:
    r = run_all()
    print("A request is cancelled while a helper with a timeout waits on a slow price feed.")
    print_table(
        ["", "task.cancel(), hand-rolled timeout", "scope.cancel(), same helper",
         "scope.cancel(), cs.with_timeout"],
        [
            ["the helper", r["plain"][0], r["scope"][0], r["with_timeout"][0]],
            ["then the handler", r["plain"][1], r["scope"][1], "-"],
        ],
    )


if __name__ == "__main__":
    main()
