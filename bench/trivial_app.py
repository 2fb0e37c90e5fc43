"""The ceiling for the HTTP services: trivial FastAPI endpoints, run under the same gunicorn
settings (docker/gunicorn.conf.py, uvicorn workers) by bench/suite.py.

`GET /ping` is the read ceiling; `PUT /buy_order` answers 201 without reading the body, so that
wrk running bench/put.lua against it shows the load generator's own ceiling.
"""

from fastapi import FastAPI
from fastapi.responses import Response

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}


@app.put("/buy_order")
async def put_buy_order() -> Response:
    return Response(b'{"ok":true}', status_code=201, media_type="application/json")
