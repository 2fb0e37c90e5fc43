"""Container HEALTHCHECK for the HTTP services (slim images have no curl).

    python /app/healthcheck.py PORT_VARIABLE [DEFAULT_PORT]

Exits 0 when GET http://127.0.0.1:$PORT_VARIABLE/healthz answers 200 within 3 s, else 1.
"""

import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: healthcheck.py PORT_VARIABLE [DEFAULT_PORT]", file=sys.stderr)
        return 2
    port = os.environ.get(argv[1]) or (argv[2] if len(argv) == 3 else "")
    if not port:
        print(f"healthcheck: {argv[1]} is not set", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
