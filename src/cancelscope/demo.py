"""``python -m cancelscope.demo``: a short tour of what cancelscope does.

Until the incident demos land (zombie queries, abandoned fetches, a port left
bound, a swallowed cancellation), this runs the README's tour.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import cancelscope as cs


async def _query(replica: int) -> str:
    await asyncio.sleep({1: 0.01, 2: 0.05}.get(replica, 10))  # replica 3 is slow
    if replica == 2:
        raise ConnectionError(f"replica {replica} is down")
    return f"rows from replica {replica}"


async def _gather_leaves_zombies() -> list[str]:
    """Plain asyncio: gather fails, the sibling queries go on running."""
    tasks = [asyncio.ensure_future(_query(n)) for n in (1, 2, 3)]
    with contextlib.suppress(ConnectionError):
        await asyncio.gather(*tasks)
    still_running = [f"replica-{n}" for n, t in zip((1, 2, 3), tasks, strict=True) if not t.done()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return still_running


async def _scope_cancels_siblings() -> list[str]:
    """cancelscope: the failure cancels the siblings, and the scope waits for them."""
    handles: list[cs.TaskHandle[str]] = []
    try:
        async with cs.cancellable(name="request") as scope:
            handles = [scope.spawn(_query, n, name=f"replica-{n}") for n in (1, 2, 3)]
    except Exception:  # the ExceptionGroup of the children's failures
        pass
    return [h.name for h in handles if not h.done()]


async def main() -> None:
    """Run the tour, printing one line per point."""
    print("1. a query fails; are its siblings still running afterwards?")
    print("   asyncio.gather :", await _gather_leaves_zombies() or "none")
    print("   cancelscope    :", await _scope_cancels_siblings() or "none")

    print("2. cancellation is level-triggered: swallowing it once does not stop it")
    async with cs.move_on_after(0.1, name="poll") as scope:
        for _attempt in range(100):
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError as exc:
                print("   swallowed:", exc)
                await asyncio.sleep(0)  # the next await is cancelled again
    print("   moved on:", scope.cancelled_caught)

    print("3. a timeout says who cancelled and why; a shield lets cleanup finish")
    try:
        async with cs.with_timeout(0.1, name="checkout"):
            try:
                await asyncio.sleep(1)
            finally:
                async with cs.non_cancellable(name="cleanup") as cleanup:
                    await asyncio.sleep(0.05)
                    print("   cleanup done; cancel requested:", cleanup.cancel_requested.done())
    except TimeoutError as exc:  # TimeoutFailure is a TimeoutError too
        print(f"   {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    if sys.argv[1:]:
        print(__doc__)
        sys.exit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
    asyncio.run(main())
