"""Zombie queries: one query fails, its siblings keep their pool connections.

Run it with `python examples/zombie_queries.py` (SQLite, embedded) or
`python examples/zombie_queries.py --postgres postgresql://user@host/db` (asyncpg).

A request runs three queries at once; one fails. With `asyncio.gather` the failure reaches
the caller, but the two other queries go on, holding their pool connections until they end:
under a burst of such requests the pool runs dry and healthy requests cannot get a
connection. With a cancelscope scope the failure cancels the siblings, the queries are
really interrupted in the database (`sqlite3.Connection.interrupt()`, or asyncpg's cancel
request to PostgreSQL) and the connections return to the pool at once.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import print_table

import cancelscope as cs

POOL_SIZE = 4
LONG_QUERY_SECONDS = 1.0  # what a "long" query costs when nobody interrupts it
FAIL_AFTER = 0.05  # the failing query fails this long after it starts
ACQUIRE_TIMEOUT = 0.25  # a request waiting longer than this for a connection gives up
BURST = 6  # requests in the burst, one every BURST_GAP seconds
BURST_GAP = 0.1


class PoolExhausted(Exception):
    """No connection became free within ACQUIRE_TIMEOUT."""


class Backend(abc.ABC):
    """A database behind a pool that counts the connections in use over time."""

    def __init__(self) -> None:
        self.in_use = 0
        self.interrupted = 0
        self.idle = asyncio.Event()  # set while no connection is in use
        self.idle.set()

    def _held(self, delta: int) -> None:
        self.in_use += delta
        if self.in_use:
            self.idle.clear()
        else:
            self.idle.set()

    @abc.abstractmethod
    def connection(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A connection from the pool, counted in ``in_use`` while held."""

    @abc.abstractmethod
    async def long_query(self, conn: Any) -> object:
        """A query that takes LONG_QUERY_SECONDS unless interrupted."""

    @abc.abstractmethod
    async def failing_query(self, conn: Any) -> object:
        """A query that fails after FAIL_AFTER seconds."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything."""


# --------------------------------------------------------------------------- SQLite


def _sleep_ms(ms: int) -> int:
    time.sleep(ms / 1000)
    return ms


class SQLite(Backend):
    """SQLite in memory; each query runs in a worker thread on a pooled connection."""

    ROWS = 100  # the long query sleeps 10 ms per row: interruptible between rows

    def __init__(self) -> None:
        super().__init__()
        self._free: asyncio.Queue[sqlite3.Connection] = asyncio.Queue()
        for _ in range(POOL_SIZE):
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            conn.create_function("sleep_ms", 1, _sleep_ms)
            self._free.put_nowait(conn)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[sqlite3.Connection]:
        try:
            conn = await asyncio.wait_for(self._free.get(), ACQUIRE_TIMEOUT)
        except asyncio.TimeoutError:
            raise PoolExhausted(f"no connection free within {ACQUIRE_TIMEOUT}s") from None
        self._held(1)
        try:
            yield conn
        finally:
            self._held(-1)
            self._free.put_nowait(conn)

    async def _run(self, conn: sqlite3.Connection, sql: str) -> list[Any]:
        """Run ``sql`` in a thread; on cancellation interrupt it and wait for the thread."""
        stop = threading.Event()

        def work() -> list[Any]:
            if stop.is_set():  # cancelled before the thread got to it
                raise sqlite3.OperationalError("interrupted")
            return conn.execute(sql).fetchall()

        done = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            stop.set()
            conn.interrupt()  # the statement stops at its next step, in the thread
            async with cs.non_cancellable():  # the connection is busy until the thread returns
                with contextlib.suppress(sqlite3.OperationalError):
                    await done
            self.interrupted += 1
            raise

    async def long_query(self, conn: sqlite3.Connection) -> object:
        sql = (
            f"WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < "
            f"{self.ROWS}) SELECT count(sleep_ms({int(LONG_QUERY_SECONDS * 1000) // self.ROWS}))"
            f" FROM n"
        )
        return await self._run(conn, sql)

    async def failing_query(self, conn: sqlite3.Connection) -> object:
        await self._run(conn, f"SELECT sleep_ms({int(FAIL_AFTER * 1000)})")
        return await self._run(conn, "SELECT * FROM no_such_table")

    async def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().close()


# --------------------------------------------------------------------------- PostgreSQL


class Postgres(Backend):
    """PostgreSQL through an asyncpg pool; asyncpg cancels a running query when cancelled."""

    def __init__(self, pool: Any) -> None:
        super().__init__()
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str) -> Postgres:
        import asyncpg

        return cls(await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE))

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        try:
            conn = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT)
        except asyncio.TimeoutError:
            raise PoolExhausted(f"no connection free within {ACQUIRE_TIMEOUT}s") from None
        self._held(1)
        try:
            yield conn
        finally:
            # Cleanup must finish even in a cancelled scope (level-triggered: every await
            # there is cancelled again): shield it. release() waits for a cancelled query's
            # cancel request to land and the connection to reset.
            async with cs.non_cancellable():
                await self._pool.release(conn)
            self._held(-1)

    async def long_query(self, conn: Any) -> object:
        try:
            return await conn.fetchval(f"SELECT pg_sleep({LONG_QUERY_SECONDS})")
        except asyncio.CancelledError:
            self.interrupted += 1  # asyncpg sent PostgreSQL a cancel request for it
            raise

    async def failing_query(self, conn: Any) -> object:
        return await conn.fetchval(f"SELECT pg_sleep({FAIL_AFTER}), 1 / 0")

    async def close(self) -> None:
        await self._pool.close()


# --------------------------------------------------------------------------- requests


async def _query(db: Backend, which: str) -> object:
    async with db.connection() as conn:
        if which == "fail":
            return await db.failing_query(conn)
        return await db.long_query(conn)


QUERIES = ("long", "fail", "long")


async def request_with_gather(db: Backend) -> None:
    """Plain asyncio: the first failure propagates; the other queries run on."""
    await asyncio.gather(*(_query(db, q) for q in QUERIES))


async def request_with_scope(db: Backend) -> None:
    """cancelscope: the first failure cancels the sibling queries, and the scope waits."""
    async with cs.cancellable(name="request") as scope:
        for q in QUERIES:
            scope.spawn(_query, db, q, name=f"query-{q}")


Request = Callable[[Backend], Awaitable[None]]


async def one_request(db: Backend, request: Request) -> tuple[int, float]:
    """Run one request; return the connections held right after it failed, and for how long."""
    with contextlib.suppress(Exception):
        await request(db)
    held = db.in_use
    failed_at = time.monotonic()
    await db.idle.wait()  # how long the zombies keep their connections
    return held, time.monotonic() - failed_at


async def burst(db: Backend, request: Request) -> tuple[list[int], int]:
    """BURST requests, BURST_GAP apart; sample the connections in use; count pool timeouts."""
    exhausted = 0

    async def one() -> None:
        nonlocal exhausted
        try:
            await request(db)
        except Exception as exc:
            leaves = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
            exhausted += any(isinstance(e, PoolExhausted) for e in leaves)

    samples: list[int] = []
    tasks = []
    for _ in range(BURST):
        tasks.append(asyncio.ensure_future(one()))
        for _ in range(2):
            await asyncio.sleep(BURST_GAP / 2)
            samples.append(db.in_use)
    await asyncio.gather(*tasks)
    while db.in_use:
        await asyncio.sleep(BURST_GAP / 2)
        samples.append(db.in_use)
    return samples, exhausted


async def compare(make: Callable[[], Awaitable[Backend]]) -> dict[str, dict[str, object]]:
    """Run the single request and the burst with gather and with a scope."""
    results: dict[str, dict[str, object]] = {}
    for label, request in (("gather", request_with_gather), ("cancelscope", request_with_scope)):
        db = await make()
        try:
            held, seconds = await one_request(db, request)
            samples, exhausted = await burst(db, request)
        finally:
            await db.close()
        results[label] = {
            "held": held,
            "seconds": seconds,
            "interrupted": db.interrupted,
            "samples": samples,
            "exhausted": exhausted,
        }
    return results


def _spark(samples: object) -> str:
    assert isinstance(samples, list)
    return "".join(str(n) for n in samples)


def _rows(results: dict[str, dict[str, object]]) -> list[list[str]]:
    g, c = results["gather"], results["cancelscope"]
    return [
        ["connections held after the failure", str(g["held"]), str(c["held"])],
        ["...until returned to the pool", f"{g['seconds']:.2f}s", f"{c['seconds']:.2f}s"],
        ["queries interrupted in the database", str(g["interrupted"]), str(c["interrupted"])],
        [f"burst of {BURST}: in use every {BURST_GAP / 2}s", _spark(g["samples"]),
         _spark(c["samples"])],
        [f"burst: requests refused (pool of {POOL_SIZE})", str(g["exhausted"]),
         str(c["exhausted"])],
    ]


async def _sqlite() -> Backend:
    return SQLite()


def scenario(dsn: str | None = None) -> dict[str, object]:
    """Run the comparison (SQLite, or PostgreSQL at ``dsn``); return the demo's summary cells."""

    async def make() -> Backend:
        return await (Postgres.open(dsn) if dsn else _sqlite())

    results = asyncio.run(compare(make))
    g, c = results["gather"], results["cancelscope"]
    return {
        "incident": "zombie queries",
        "plain": f"{g['held']} connections held on; {g['exhausted']}/{BURST} refused in a burst",
        "cancelscope": f"{c['held']} held; {c['exhausted']}/{BURST} refused",
        "fixed": bool(g["held"]) and bool(g["exhausted"]) and not c["held"]
        and not c["exhausted"],
        "rows": _rows(results),
    }


def main() -> None:
    """Print the before/after table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="DSN", help="use this PostgreSQL (needs asyncpg)")
    args = parser.parse_args()
    result = scenario(args.postgres)
    where = "PostgreSQL (asyncpg)" if args.postgres else "SQLite (embedded)"
    print(f"Zombie queries on {where}: 3 queries per request, one fails.\n")
    rows = result["rows"]
    assert isinstance(rows, list)
    print_table(["", "asyncio.gather", "cancelscope"], rows)


if __name__ == "__main__":
    main()
