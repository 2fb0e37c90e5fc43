"""Every URL a process prints is masked (`urls.mask`), each element of a list; `AMQP_URL` takes a list."""

from pathlib import Path

import pytest

from btc_orders import settings, urls


@pytest.mark.parametrize(
    ("url", "printed"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
        ("amqps://user:s%40cret@rabbit:5671/orders?heartbeat=10", "amqps://user:***@rabbit:5671/orders?heartbeat=10"),
        ("postgresql://btc:secret@db:5432/write_model", "postgresql://btc:***@db:5432/write_model"),
        (
            "postgresql://btc:secret@db1:5432,db2:5432/btc?target_session_attrs=read-write&connect_timeout=2",
            "postgresql://btc:***@db1:5432,db2:5432/btc?target_session_attrs=read-write&connect_timeout=2",
        ),
        ("postgresql+psycopg2://btc:secret@db/btc", "postgresql+psycopg2://btc:***@db/btc"),
        (
            "postgresql://db/btc?user=btc&password=secret&sslmode=require",
            "postgresql://db/btc?user=btc&password=***&sslmode=require",
        ),
        ("postgresql://btc:pa/ss@word@db/btc", "postgresql://btc:***@db/btc"),  # raw `/` and `@` in a password
        ("host=db user=btc password=secret dbname=btc", "host=db user=btc password=*** dbname=btc"),
    ],
)
def test_a_password_is_masked_and_everything_else_kept(url: str, printed: str) -> None:
    assert urls.mask(url) == printed
    assert "secret" not in printed and "guest:guest" not in printed


@pytest.mark.parametrize(
    "url", ["amqp://guest@rabbit/%2F", "postgresql://btc@db1:5432,db2:5432/btc", "postgresql:///btc", "amqp://rabbit"]
)
def test_a_url_without_a_password_is_printed_as_it_is(url: str) -> None:
    assert urls.mask(url) == url


def test_each_element_of_a_broker_list_is_masked() -> None:
    assert (
        urls.mask("amqp://u:one@node1:5672/vh;amqp://u:two@node2:5672/vh;amqp://node3/vh")
        == "amqp://u:***@node1:5672/vh;amqp://u:***@node2:5672/vh;amqp://node3/vh"
    )


def test_a_list_is_split_into_its_urls() -> None:
    assert urls.elements("amqp://a/v ; amqp://b/v") == ["amqp://a/v", "amqp://b/v"]
    assert urls.elements("amqp://a/v") == ["amqp://a/v"]


def _amqp_url(value: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AMQP_URL", value)
    return settings.load(settings.AmqpSettings).amqp_url


def test_amqp_url_takes_one_url_or_a_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    assert _amqp_url("amqp://guest:guest@127.0.0.1:5672/%2F", monkeypatch) == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert (
        _amqp_url("amqp://u:p@node1:5672/vh ; amqps://u:p@node2:5671/vh", monkeypatch)
        == "amqp://u:p@node1:5672/vh;amqps://u:p@node2:5671/vh"
    )


@pytest.mark.parametrize(
    ("value", "told"),
    [
        ("http://rabbit/vh", "AMQP_URL: must be an amqp:// or amqps:// URL"),
        ("amqp://u:secret@rabbit:99999/vh", "AMQP_URL: 'amqp://u:***@rabbit:99999/vh' is not a valid AMQP URL: Port"),
        (
            "amqp://u:secret@node1/vh;amqp://u:secret@node2:port/vh",
            "AMQP_URL: element 2 of the list ('amqp://u:***@node2:port/vh') is not a valid AMQP URL",
        ),
        ("amqp://node1/vh;;amqp://node2/vh", "AMQP_URL: element 2 of the list ('') is not an amqp:// or amqps:// URL"),
        ("amqp://node1/vh;postgresql://u:secret@db/x", "element 2 of the list ('postgresql://u:***@db/x') is not"),
    ],
)
def test_a_malformed_amqp_url_or_list_element_stops_the_process_with_one_masked_line(
    value: str,
    told: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        _amqp_url(value, monkeypatch)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error: AMQP_URL: ")
    assert told in lines[0]
    assert "secret" not in lines[0]
