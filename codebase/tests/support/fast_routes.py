"""An app's routes as FastAPI alone answers them: its `web.FastRoute` layers taken out.

The route is the contract that a fast route must answer by; the in-process route tests run both
ways, and their property tests draw requests with `mostly`. Call `without_fast_routes` before
the app's first request (Starlette builds its middleware stack then).
"""

import typing
from typing import TypeVar

from fastapi import FastAPI
from hypothesis import strategies as st

from btc_orders.web import FastRoute


def without_fast_routes(app: FastAPI) -> FastAPI:
    app.user_middleware = [layer for layer in app.user_middleware if typing.get_origin(layer.cls) is not FastRoute]
    return app


def fast_routes_of(app: FastAPI) -> int:
    return sum(typing.get_origin(layer.cls) is FastRoute for layer in app.user_middleware)


_Value = TypeVar("_Value")


def mostly(good: list[_Value], bad: list[_Value]) -> st.SearchStrategy[_Value]:
    """One of `good` two times in three, else one of `bad`: whole well-formed requests stay common."""
    return st.sampled_from(good) | st.sampled_from(good) | st.sampled_from(bad)
