"""What a process prints about the URLs it was given never carries a password, for any element of
a `;`-separated list (a RabbitMQ cluster's nodes in AMQP_URL)."""

import contextlib
from pathlib import Path

import pytest

from btc_orders import settings

SECRETS = ("first-secret", "second-secret", "third-secret")
GOOD_POSTGRES = "postgresql://btc:first-secret@127.0.0.1:5432/btc"

AMQP_LISTS = [
    # a later element malformed: the line naming AMQP_URL must not repeat any element's password
    "amqp://a:first-secret@h1:5672/%2F;amqp://b:second-secret@h2:notaport/%2F",
    "amqp://a:first-secret@h1:5672/%2F;amqp://b:second-secret@h2:99999/%2F;amqp://c:third-secret@h3/%2F",
    "amqp://a:first-secret@h1:5672/%2F;amqx://b:second-secret@h2/%2F",
    # pika's own message quotes what follows `?heartbeat=`: each element is parsed on its own
    "amqp://a:first-secret@h1:5672/%2F?heartbeat=abc;amqp://b:second-secret@h2/%2F?heartbeat=abc",
]
POSTGRES_URLS = [
    "postgresql://btc:first-secret@db1:5432,db2:99999/btc?target_session_attrs=read-write",
    "mysql://btc:first-secret@db1/btc",
]


def _stopping_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], **environment: str
) -> str:
    monkeypatch.chdir(tmp_path)  # no .env
    for variable, value in {
        "WRITE_MODEL_DB_URL": GOOD_POSTGRES,
        "READ_MODEL_DB_URL": GOOD_POSTGRES,
        "AMQP_URL": "amqp://a:first-secret@h1:5672/%2F",
        **environment,
    }.items():
        monkeypatch.setenv(variable, value)
    with contextlib.suppress(SystemExit):
        settings.load(settings.OutboxRelaySettings)
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.mark.parametrize("amqp_url", AMQP_LISTS)
def test_no_element_of_an_amqp_list_shows_its_password(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = _stopping_line(monkeypatch, tmp_path, capsys, AMQP_URL=amqp_url)
    for secret in SECRETS:
        assert secret not in printed, printed


@pytest.mark.parametrize("postgres_url", POSTGRES_URLS)
def test_a_refused_database_url_does_not_show_its_password(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = _stopping_line(monkeypatch, tmp_path, capsys, WRITE_MODEL_DB_URL=postgres_url)
    for secret in SECRETS:
        assert secret not in printed, printed
