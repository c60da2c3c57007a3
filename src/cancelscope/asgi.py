"""ASGI integration: cancel each HTTP request's handler when its client disconnects.

``app = CancelOnDisconnect(app, timeout=30)`` (or, in Starlette and FastAPI,
``app.add_middleware(CancelOnDisconnect, timeout=30)``). Needs no framework: only the ASGI
protocol. See docs/web.md.
"""

from ._asgi import CancelOnDisconnect as CancelOnDisconnect
from ._asgi import request_scope as request_scope

__all__ = ["CancelOnDisconnect", "request_scope"]

for _obj in (CancelOnDisconnect, request_scope):
    _obj.__module__ = __name__
del _obj
