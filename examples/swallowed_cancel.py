"""A swallowed cancellation: `python examples/swallowed_cancel.py`.

A batch worker is written the way many are: "one bad job must not kill the worker", so
each job sits in ``try/except BaseException``. That also catches the CancelledError when
the batch is cancelled half-way.

* plain asyncio: ``task.cancel()`` is one-shot. The worker catches it, logs "job failed",
  and goes on to process every remaining job; and the error it caught says nothing about
  who cancelled it, or why.
* cancelscope: the cancellation is level-triggered. The worker catches the first
  CancelledError, but every later ``await`` inside the cancelled scope raises again, so no
  further job completes, and each error says ``cancelled by scope 'batch': <reason>``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import cancelscope as cs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # the examples' shared helper, beside this file

JOBS = 10
CANCEL_AFTER = 3  # jobs done when the batch is cancelled


async def process(job: int) -> None:
    await asyncio.sleep(0)  # one suspension point per job, like any I/O


async def worker(done: list[int], seen: list[str], cancel_now: asyncio.Event) -> None:
    for job in range(JOBS):
        try:
            await process(job)
            done.append(job)
            if len(done) == CANCEL_AFTER:
                cancel_now.set()
                await asyncio.sleep(0)  # the cancellation lands here
        except BaseException as exc:  # the bug: "never let one job kill the worker"
            seen.append(str(exc) or repr(exc))


async def with_plain_asyncio() -> dict[str, object]:
    done: list[int] = []
    seen: list[str] = []
    cancel_now = asyncio.Event()
    task = asyncio.ensure_future(worker(done, seen, cancel_now))
    await cancel_now.wait()
    task.cancel()
    await task  # the worker finishes normally: the cancellation was swallowed
    return {"after": len(done) - CANCEL_AFTER, "seen": seen}


async def with_cancelscope() -> dict[str, object]:
    done: list[int] = []
    seen: list[str] = []
    cancel_now = asyncio.Event()
    try:
        async with cs.cancellable(name="batch") as scope:
            scope.spawn(worker, done, seen, cancel_now)
            await cancel_now.wait()
            scope.cancel("shutting down")
    except cs.CancelledFailure:
        pass
    return {"after": len(done) - CANCEL_AFTER, "seen": seen}


def run_all() -> dict[str, dict[str, object]]:
    return {
        "plain": asyncio.run(with_plain_asyncio()),
        "cancelscope": asyncio.run(with_cancelscope()),
    }


def _jobs(n: object) -> str:
    return f"{n} more job{'s' if n != 1 else ''} done"


def scenario() -> dict[str, object]:
    """The demo's protocol: run both versions and summarise them."""
    r = run_all()
    plain_after, ours_after = r["plain"]["after"], r["cancelscope"]["after"]
    return {
        "incident": "try/except swallows a cancellation",
        "plain": f"worker went on: {_jobs(plain_after)}",
        "cancelscope": f"worker stopped: {_jobs(ours_after)}",
        "fixed": plain_after != 0 and ours_after == 0,
        "details": r,
        "more": [
            {
                "name": "who_cancelled",
                "incident": "who cancelled me, and why?",
                "plain": f"{_first(r['plain'])}: no who, no why",
                "cancelscope": _first(r["cancelscope"]),
                "fixed": _first(r["plain"]) == "CancelledError()"
                and "scope 'batch'" in _first(r["cancelscope"]),
            },
        ],
    }


def _first(result: dict[str, object]) -> str:
    seen = result["seen"]
    assert isinstance(seen, list)
    return str(seen[0]) if seen else "nothing"


def main() -> None:
    r = run_all()
    print(f"A worker with try/except BaseException around each of {JOBS} jobs is cancelled "
          f"after {CANCEL_AFTER}.")
    print_table(
        ["", "task.cancel()", "scope.cancel('shutting down')"],
        [
            ["jobs done after the cancel", str(r["plain"]["after"]),
             str(r["cancelscope"]["after"])],
            ["the except block caught", _first(r["plain"]), _first(r["cancelscope"])],
        ],
    )


if __name__ == "__main__":
    main()
