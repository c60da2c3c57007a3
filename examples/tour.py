"""The README's tour of cancelscope: run it with `python examples/tour.py`."""

import asyncio

import cancelscope as cs


async def query(replica: int) -> str:
    await asyncio.sleep({1: 0.01, 2: 0.05}.get(replica, 10))  # replica 3 is slow
    if replica == 2:
        raise ConnectionError(f"replica {replica} is down")
    return f"rows from replica {replica}"


async def main() -> None:
    # 1. Children belong to their scope: one fails, its siblings are cancelled and awaited.
    try:
        async with cs.cancellable(name="request") as scope:
            handles = [scope.spawn(query, n, name=f"replica-{n}") for n in (1, 2, 3)]
    except Exception as group:  # an ExceptionGroup of the children's failures
        print("1.", repr(group.exceptions[0]), [h.name for h in handles if h.cancelled()])

    # 2. Cancellation is level-triggered: swallowing the CancelledError does not stop it.
    async with cs.move_on_after(0.1, name="poll") as scope:
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError as exc:
                print("2. swallowed:", exc)
                await asyncio.sleep(0)  # ...and the next await is cancelled again
    print("2. moved on:", scope.cancelled_caught)

    # 3. A timeout says who cancelled, and why; a shield lets cleanup finish.
    try:
        async with cs.with_timeout(0.1, name="checkout"):
            try:
                await asyncio.sleep(1)
            finally:
                async with cs.non_cancellable(name="cleanup") as cleanup:
                    await asyncio.sleep(0.05)  # runs to completion
                    print("3. cleanup done; cancel requested:", cleanup.cancel_requested.done())
    except cs.TimeoutFailure as exc:
        print("3.", exc, "| a TimeoutError too:", isinstance(exc, TimeoutError))


if __name__ == "__main__":
    asyncio.run(main())
