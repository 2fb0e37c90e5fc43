"""`python -m btc_orders.openapi --write docs/openapi`: the committed OpenAPI documents.

Builds each HTTP service's app as it serves (against throwaway, migrated databases on the
Postgres named by `--pg-url`, default `$TEST_PG_URL` or the local one, dropped afterwards) and
writes `btc_price.json`, `create_buy_order.json`, `fetch_buy_orders.json` and `gateway.json`: the
public API behind the gateway (create and fetch, without the per-service probes). `--check`
writes nothing and exits 1 when a committed document differs.
"""

import argparse
import json
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
COMMAND = "python -m btc_orders.openapi --write docs/openapi"
PUBLIC_SERVICES = ("create_buy_order", "fetch_buy_orders")
GATEWAY_TITLE = "BTC buy orders"
GATEWAY_DESCRIPTION = (
    "The public API behind the gateway: one origin serves `PUT /buy_order`, `GET /capacity` (create_buy_order) "
    "and `GET /buy_orders`, `GET /buy_orders/{id}` (fetch_buy_orders), so the 201's relative `Location` leads "
    "to the order. Each service also serves its own document at `/openapi.json`, with its probes."
)


@contextmanager
def throwaway_databases(pg_url: str) -> Iterator[tuple[str, str]]:
    """Two migrated databases (write and read model); their SQLAlchemy URLs."""
    from btc_orders.services.migration.__main__ import migrate

    suffix = uuid.uuid4().hex[:12]
    names = (f"openapi_write_{suffix}", f"openapi_read_{suffix}")
    admin = psycopg2.connect(pg_url, connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            for name in names:
                cursor.execute(f'CREATE DATABASE "{name}"')
        urls = tuple(
            make_url(pg_url).set(drivername="postgresql+psycopg2", database=name).render_as_string(hide_password=False)
            for name in names
        )
        migrate("write_model", urls[0])
        migrate("read_model", urls[1])
        yield urls[0], urls[1]
    finally:
        with admin.cursor() as cursor:
            for name in names:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def service_documents(write_url: str, read_url: str) -> dict[str, dict[str, Any]]:
    """What each service serves at `/openapi.json`."""
    from btc_orders.services.btc_price.app import create_app as btc_price
    from btc_orders.services.create_buy_order.app import create_app as create_buy_order
    from btc_orders.services.fetch_buy_orders.app import create_app as fetch_buy_orders
    from btc_orders.settings import BtcPriceSettings, CreateBuyOrderSettings, FetchBuyOrdersSettings

    apps = {
        "btc_price": btc_price(BtcPriceSettings(COINBASE_API_URL="http://127.0.0.1:9")),
        "create_buy_order": create_buy_order(
            CreateBuyOrderSettings(WRITE_MODEL_DB_URL=write_url, BTC_PRICE_URL="http://127.0.0.1:9")
        ),
        "fetch_buy_orders": fetch_buy_orders(FetchBuyOrdersSettings(READ_MODEL_DB_URL=read_url)),
    }
    return {name: app.openapi() for name, app in apps.items()}


def gateway_document(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One document for the public API: the create and fetch operations, their schemas merged."""
    from btc_orders.openapi import SHARED_OPERATIONS

    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for service in PUBLIC_SERVICES:
        document = documents[service]
        for path, item in document["paths"].items():
            if path in SHARED_OPERATIONS:
                continue
            if path in paths:
                raise SystemExit(f"{path} is served by two services")
            paths[path] = item
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            if schemas.setdefault(name, schema) != schema:
                raise SystemExit(f"the schema {name} differs between the services: rename one")
    first = documents[PUBLIC_SERVICES[0]]
    return {
        "openapi": first["openapi"],
        "info": {"title": GATEWAY_TITLE, "description": GATEWAY_DESCRIPTION, "version": first["info"]["version"]},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def rendered(documents: dict[str, dict[str, Any]]) -> dict[str, str]:
    """File name -> text, as committed."""
    every = {**documents, "gateway": gateway_document(documents)}
    return {
        f"{name}.json": json.dumps(document, indent=2, ensure_ascii=False) + "\n" for name, document in every.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, metavar="DIR", help="write the documents into DIR (docs/openapi)")
    parser.add_argument("--check", type=Path, metavar="DIR", help="exit 1 when DIR's documents differ")
    parser.add_argument("--pg-url", default=os.environ.get("TEST_PG_URL", DEFAULT_PG_URL))
    args = parser.parse_args()
    if not args.write and not args.check:
        parser.error("give --write DIR or --check DIR")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    with throwaway_databases(args.pg_url) as (write_url, read_url):
        files = rendered(service_documents(write_url, read_url))
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (args.write / name).write_text(content)
        print(f"wrote {', '.join(sorted(files))} into {args.write}")
        return 0
    stale = [name for name, content in files.items() if not (args.check / name).is_file()
             or (args.check / name).read_text() != content]  # fmt: skip
    if stale:
        print(f"{', '.join(stale)} differ from what the services serve: run {COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
