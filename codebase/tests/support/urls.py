"""Service URLs in the forms users are given: libpq's multi-host form, a broker list."""

from urllib.parse import urlsplit, urlunsplit

from tests.support.services import free_port


def multi_host(url: str) -> str:
    """Postgres `url` as libpq's multi-host form whose first host refuses (nothing listens on its port)."""
    scheme, _, rest = url.partition("://")
    credentials, _, location = rest.rpartition("@")
    host_port, _, path = location.partition("/")
    user = f"{credentials}@" if credentials else ""
    return f"{scheme}://{user}127.0.0.1:{free_port()},{host_port}/{path}?target_session_attrs=read-write"


def at_port(amqp_url: str, port: int, password: str | None = None) -> str:
    """`amqp_url` at another port of loopback (and with another password)."""
    parts = urlsplit(amqp_url)
    user = parts.username or "guest"
    secret = password if password is not None else parts.password or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@127.0.0.1:{port}"))


def broker_list(amqp_url: str) -> str:
    """A list of two brokers whose first refuses (nothing listens on its port) and whose second is `amqp_url`."""
    return f"{at_port(amqp_url, free_port())};{amqp_url}"
