"""`python -m btc_orders.services.openapi_documents --write docs/openapi`: the committed OpenAPI documents.

Builds each HTTP service's app as it serves (building an app does no I/O: no database or
service is reached) and writes `btc_price.json`, `create_buy_order.json`,
`fetch_buy_orders.json` and `gateway.json`: the public API behind the gateway (create and fetch,
without the per-service probes). `--check` writes nothing and exits 1 when a committed document
differs.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from btc_orders.openapi import SHARED_OPERATIONS
from btc_orders.services.btc_price.app import create_app as btc_price
from btc_orders.services.create_buy_order.app import create_app as create_buy_order
from btc_orders.services.fetch_buy_orders.app import create_app as fetch_buy_orders
from btc_orders.settings import BtcPriceSettings, CreateBuyOrderSettings, FetchBuyOrdersSettings

COMMAND = "python -m btc_orders.services.openapi_documents --write docs/openapi"
# Never reached: an app is built without I/O, and only its settings' URLs must be well formed.
_NOWHERE_DB = "postgresql://unused@127.0.0.1:9/unused"
_NOWHERE_HTTP = "http://127.0.0.1:9"
PUBLIC_SERVICES = ("create_buy_order", "fetch_buy_orders")
GATEWAY_TITLE = "BTC buy orders"
GATEWAY_DESCRIPTION = (
    "The public API behind the gateway: one origin serves `PUT /buy_order`, `GET /capacity` (create_buy_order) "
    "and `GET /buy_orders`, `GET /buy_orders/{id}` (fetch_buy_orders), so the 201's relative `Location` leads "
    "to the order. Each service also serves its own document at `/openapi.json`, with its probes."
)


def service_documents() -> dict[str, dict[str, Any]]:
    """What each service serves at `/openapi.json`."""
    apps = {
        "btc_price": btc_price(BtcPriceSettings(COINBASE_API_URL=_NOWHERE_HTTP)),
        "create_buy_order": create_buy_order(
            CreateBuyOrderSettings(WRITE_MODEL_DB_URL=_NOWHERE_DB, BTC_PRICE_URL=_NOWHERE_HTTP)
        ),
        "fetch_buy_orders": fetch_buy_orders(FetchBuyOrdersSettings(READ_MODEL_DB_URL=_NOWHERE_DB)),
    }
    return {name: app.openapi() for name, app in apps.items()}


def gateway_document(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One document for the public API: the create and fetch operations, their schemas merged."""
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
    args = parser.parse_args()
    if not args.write and not args.check:
        parser.error("give --write DIR or --check DIR")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    files = rendered(service_documents())
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
