"""Cleanup that must finish, and must not hang: `python examples/shielded_cleanup.py`.

A request commits three records to a store; the server shuts down while the commit is
half-way. The commit must not be cut in the middle, but the shutdown must not wait forever
either, and the commit should know that a shutdown is waiting so it can skip optional work.

* plain asyncio: ``await asyncio.shield(commit())``. The request itself is cancelled at
  once and ends; the commit goes on as an orphan task that nobody owns, and when the server
  then closes its loop the orphan is cancelled half-way: records are lost. Nothing bounds
  the commit, and the commit cannot tell that a shutdown is waiting.
* cancelscope: ``async with cs.non_cancellable()`` around ``cs.with_timeout(...)``. The
  shield holds, the request ends only after the commit, the commit reads
  ``shield.cancel_requested`` (resolved, with the reason) and skips its optional cache
  warm-up; and if the store hangs, the timeout ends the commit with a `TimeoutFailure`
  that names it, so the shutdown is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import cancelscope as cs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # the examples' shared helper, beside this file

RECORDS = 3
WRITE_TIME = 0.05  # each write; the shutdown arrives after the first one


class Store:
    """A store whose writes take a while (or forever, when it hangs)."""

    def __init__(self, hangs: bool = False) -> None:
        self.records: list[int] = []
        self.hangs = hangs
        self.first_written = asyncio.Event()
        self.cache_warmed = False

    async def write(self, record: int) -> None:
        if self.hangs and record > 0:
            await asyncio.Event().wait()
        await asyncio.sleep(WRITE_TIME)
        self.records.append(record)
        self.first_written.set()


async def commit(store: Store, shield: cs.CancellationScope | None = None) -> str:
    """Write every record, then warm the cache unless a shutdown is waiting."""
    for record in range(RECORDS):
        await store.write(record)
    if shield is not None and shield.cancel_requested.done():
        return f"skipped warm-up: {shield.cancel_requested.result().reason}"
    await asyncio.sleep(0)
    store.cache_warmed = True
    return "warmed the cache"


# --------------------------------------------------------------------------- plain asyncio


async def plain_server(store: Store) -> dict[str, object]:
    async def request() -> None:
        await asyncio.shield(commit(store))

    task = asyncio.ensure_future(request())
    await store.first_written.wait()
    task.cancel()  # the server shuts down
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {
        "at_end": len(store.records),
        "orphans": len(asyncio.all_tasks()) - 1,
        "noticed": "no (nothing to ask)",
    }


def with_plain_asyncio(hangs: bool = False) -> dict[str, object]:
    store = Store(hangs)
    result = asyncio.run(plain_server(store))  # closing the loop cancels the orphan
    result["written"] = len(store.records)
    return result


# --------------------------------------------------------------------------- cancelscope


async def cs_server(store: Store) -> dict[str, object]:
    outcome: dict[str, object] = {"noticed": "-"}

    async def request() -> None:
        bound = 1.0 if not store.hangs else 0.1
        async with cs.non_cancellable(name="commit") as shield, cs.with_timeout(
            bound, name="commit-deadline"
        ):
            outcome["noticed"] = await commit(store, shield)

    try:
        async with cs.cancellable(name="server") as server:
            server.spawn(request)
            await store.first_written.wait()
            server.cancel("server shutting down")
    except BaseException as exc:  # the request's TimeoutFailure comes as a group of one
        group = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
        outcome["noticed"] = f"{type(group[0]).__name__}: {group[0]}"
    outcome["at_end"] = len(store.records)
    outcome["orphans"] = len(asyncio.all_tasks()) - 1
    return outcome


def with_cancelscope(hangs: bool = False) -> dict[str, object]:
    store = Store(hangs)
    result = asyncio.run(cs_server(store))
    result["written"] = len(store.records)
    return result


if sys.version_info < (3, 11):  # pragma: no cover - 3.10
    from exceptiongroup import BaseExceptionGroup


def run_all() -> dict[str, dict[str, object]]:
    return {
        "plain": with_plain_asyncio(),
        "cancelscope": with_cancelscope(),
        "hung_plain": with_plain_asyncio(hangs=True),
        "hung_cancelscope": with_cancelscope(hangs=True),
    }


def scenario() -> dict[str, object]:
    """The demo's protocol: run both versions and summarise them."""
    r = run_all()
    plain, ours = r["plain"], r["cancelscope"]
    return {
        "incident": "shutdown cuts a shielded commit half-way",
        "plain": f"{plain['written']} of {RECORDS} records written, the rest lost",
        "cancelscope": f"{ours['written']} of {RECORDS} written; bounded, and told why",
        "fixed": plain["written"] != RECORDS and ours["written"] == RECORDS,
        "details": r,
    }


def main() -> None:
    r = run_all()
    plain, ours = r["plain"], r["cancelscope"]
    print(f"The server shuts down while a request commits {RECORDS} records (1 written).")
    print_table(
        ["", "asyncio.shield(commit())", "cs.non_cancellable() + cs.with_timeout()"],
        [
            ["records written in the end", f"{plain['written']} of {RECORDS}",
             f"{ours['written']} of {RECORDS}"],
            ["when the request ended", f"{plain['at_end']} written, commit still running",
             f"{ours['at_end']} written, commit finished"],
            ["tasks left running then", str(plain["orphans"]), str(ours["orphans"])],
            ["commit saw the shutdown", str(plain["noticed"]), str(ours["noticed"])],
            ["if the store hangs", f"{r['hung_plain']['orphans']} orphan, killed at loop close",
             str(r["hung_cancelscope"]["noticed"])],
        ],
    )


if __name__ == "__main__":
    main()
