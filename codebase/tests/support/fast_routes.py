"""An app's routes as FastAPI alone answers them: its `web.FastRoute` layers taken out.

The route is the contract that a fast route must answer by; the in-process route tests run both
ways. Call before the app's first request (Starlette builds its middleware stack then).
"""

import typing

from fastapi import FastAPI

from btc_orders.web import FastRoute


def without_fast_routes(app: FastAPI) -> FastAPI:
    app.user_middleware = [layer for layer in app.user_middleware if typing.get_origin(layer.cls) is not FastRoute]
    return app


def fast_routes_of(app: FastAPI) -> int:
    return sum(typing.get_origin(layer.cls) is FastRoute for layer in app.user_middleware)
