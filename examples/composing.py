"""The patterns of docs/composing.md: run it with `python examples/composing.py`."""

import asyncio
import sqlite3
import threading

import cancelscope as cs


def download(token: cs.CancelToken) -> str:
    """A blocking 'download' that stops when its token fires."""
    token.wait_blocking(10)  # stands in for reading chunks and checking the token
    token.raise_if_cancelled()
    return "finished"


async def query(name: str, seconds: float, stopped: list[str]) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        stopped.append(name)
        raise
    return f"rows from {name}"


def read_rows(loop: asyncio.AbstractEventLoop, queue: "asyncio.Queue[int]") -> None:
    """A synchronous pipeline stage in a thread: produces a row a millisecond until stopped."""
    token = cs.current_token()
    assert token is not None
    n = 0
    while not token.wait_blocking(0.001):  # the pacing doubles as the cancellation check
        n += 1
        loop.call_soon_threadsafe(queue.put_nowait, n)
    token.raise_if_cancelled()


def run_query(conn: sqlite3.Connection, sql: str) -> list[tuple[int]]:
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        token = cs.current_token()
        if token is not None:
            token.raise_if_cancelled()  # interrupted because we were cancelled
        raise


async def main() -> None:
    loop = asyncio.get_running_loop()

    # 1. Timeout with cancellation: the work stops, in a task and in a thread.
    try:
        async with cs.with_timeout(0.05, name="fetch"):
            await asyncio.sleep(10)
    except cs.TimeoutFailure as exc:
        print("1.", exc)
    try:
        await cs.to_thread(download, cs.CancelToken.after(0.05))
    except cs.TimeoutFailure as exc:
        print("1. download:", exc)

    # 2. Cancel the race losers: the slow replica is stopped before race() returns.
    stopped: list[str] = []
    winner = await cs.race(query("primary", 0.01, stopped), query("replica", 10, stopped))
    print("2.", winner, "| stopped:", stopped)

    # 3. Pass a signal through a pipeline: one cancel stops the thread stage too.
    queue: asyncio.Queue[int] = asyncio.Queue()
    async with cs.move_on_after(None, name="pipeline") as pipeline:
        pipeline.spawn(cs.to_thread, read_rows, loop, queue)
        total = 0
        for _ in range(3):
            total += await queue.get()
        pipeline.cancel("consumer has enough")
        await asyncio.sleep(0)
    print("3. consumed", total, "| pipeline:", pipeline.cancel_reason)

    # 4. A watchdog step that cancels its siblings, with a reason.
    limit_hit = asyncio.Event()
    record: list[str] = []

    async def step(name: str) -> None:
        try:
            if name == "a":
                limit_hit.set()  # pretend step a found memory over the limit
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            record.append(name)
            raise

    async with cs.move_on_after(None, name="job") as job:
        job.spawn(step, "a")
        job.spawn(step, "b")

        async def watchdog() -> None:
            await limit_hit.wait()
            job.cancel("watchdog: memory over limit")

        job.spawn(watchdog)
    print("4.", job.cancel_reason, "| stopped:", sorted(record))

    # 5. Cancel from an external request: another thread fires a token.
    token = cs.CancelToken()
    started = threading.Event()
    requester = threading.Thread(
        target=lambda: started.wait(10) and token.cancel("cancelled by the user")
    )
    requester.start()
    try:
        async with cs.CancellationScope(token=token, name="job 42"):
            started.set()
            await asyncio.sleep(10)
    except cs.CancelledFailure as exc:
        print("5.", exc)
    requester.join()

    # 6. Interrupt a running SQLite query from on_cancel.
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    async with cs.move_on_after(0.05, name="report") as report:
        report.on_cancel(conn.interrupt)
        await cs.to_thread(run_query, conn, endless)
    conn.close()
    print("6. query interrupted:", report.cancelled_caught)


if __name__ == "__main__":
    asyncio.run(main())
