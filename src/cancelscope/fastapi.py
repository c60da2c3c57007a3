"""FastAPI integration: the request's `CancellationScope` as a dependency.

Needs FastAPI (``pip install 'asyncio-cancelscope[fastapi]'``) and `CancelOnDisconnect`
on the application::

    from cancelscope.asgi import CancelOnDisconnect
    from cancelscope.fastapi import RequestScope

    app = FastAPI()
    app.add_middleware(CancelOnDisconnect, timeout=30)

    @app.get("/report")
    async def report(scope: RequestScope) -> dict[str, str]:
        scope.spawn(refresh_cache)        # a child that cannot outlive the request
        return {"deadline": str(scope.deadline)}
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ._asgi import request_scope as _request_scope
from ._scope import CancellationScope

__all__ = ["RequestScope", "request_scope"]


async def request_scope(request: Request) -> CancellationScope:
    """FastAPI dependency: the `CancellationScope` `CancelOnDisconnect` opened for the request.

    ``async`` on purpose, so FastAPI resolves it in the request's task rather than in a
    worker thread. Raises `RuntimeError` if the middleware is missing.
    """
    return _request_scope(request.scope)


RequestScope = Annotated[CancellationScope, Depends(request_scope)]
"""``scope: RequestScope`` in an endpoint's parameters: the request's `CancellationScope`."""
