"""URLs as a process may print them: every password masked (`mask`), and broker lists split (`elements`).

One function masks what any line of the suite prints: a Postgres URL (libpq's multi-host form
included, and a `password=` parameter), an AMQP URL, or a `;`-separated list of them (each
element masked), e.g. `amqp://user:***@host/vh;amqp://user:***@other/vh`.
"""

import re

HIDDEN = "***"
LIST_SEPARATOR = ";"
# `password=...` (libpq's URL parameter or key/value form, `sslpassword` too), up to `&`, a blank or `;`
_PASSWORD_PARAMETER = re.compile(r"(?i)(\b\w*password\s*=\s*)('[^']*'|[^&\s;#]*)")
_HIDDEN_PARAMETER = rf"\g<1>{HIDDEN}"


def elements(value: str) -> list[str]:
    """The URLs of a `;`-separated list (one URL is a list of one), blanks around each removed.

    An empty element is kept (as ""), for the caller to refuse it."""
    return [element.strip() for element in value.split(LIST_SEPARATOR)]


def mask(url_or_list: str) -> str:
    """`url_or_list` with every password replaced by `***`, each element of a list on its own.

    The user, hosts, ports, path and other parameters are kept as written; a URL without a password
    is returned unchanged.
    """
    return LIST_SEPARATOR.join(_mask_one(element) for element in url_or_list.split(LIST_SEPARATOR))


def _mask_one(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    if not separator:
        return _PASSWORD_PARAMETER.sub(_HIDDEN_PARAMETER, url)  # a key/value conninfo, or not a URL
    # The credentials end at the last `@` before the query: a password written with a raw `/` or `@`
    # is masked whole too.
    before_query = re.split(r"[?#]", rest, maxsplit=1)[0]
    at = before_query.rfind("@")
    if at >= 0:
        user, has_password, _password = before_query[:at].partition(":")
        if has_password:
            rest = f"{user}:{HIDDEN}{rest[at:]}"
    return f"{scheme}://{_PASSWORD_PARAMETER.sub(_HIDDEN_PARAMETER, rest)}"
