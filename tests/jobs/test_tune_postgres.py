"""chaosfm tune with its study in a real PostgreSQL server (started on loopback by the fixture):
two workers and an exact budget, stale trials, heartbeats in UTC, connections that died while a
worker scored a trial, and storages that cannot be reached."""

import socket

import pytest

from chaosfm._config import ConfigError
from chaosfm.jobs import _tune_study
from chaosfm.jobs._tune_study import open_study

from ._postgres import TIMEZONE, create_database, free_port, postgres_server, require_server
from .test_tune import check_exact_budget, check_stale_trial_requeued, settings, two_workers


@pytest.fixture(scope="module")
def server():
    """One throw-away server for this module's tests: ``(host, port)``."""
    with postgres_server(require_server()) as address:
        yield address


@pytest.fixture
def postgres_url(server, request):
    """A fresh database of the module's server for one test, as ``postgresql://postgres@host:port/db``."""
    return create_database(*server, request.node.name.lower())


def _sql(url, query):
    """Rows of ``query`` run on the database at ``url`` through a plain psycopg2 connection."""
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchall()
    finally:
        connection.close()


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study_with_an_exact_budget(tmp_path, postgres_url):
    config = settings(tmp_path, trials=8, storage=postgres_url)
    # Both create the tables of the empty database at once; the second sits in another time zone
    # (PGTZ), as a second machine may: its heartbeats must not read as hours old to the first.
    study = two_workers(tmp_path, config, environments=({}, {"PGTZ": "America/New_York"}))
    check_exact_budget(study, config)
    metrics = (config.out / "metrics.json").read_text()
    assert postgres_url in metrics and "optuna.db" not in metrics and not (config.out / "optuna.db").exists()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() by hand, as a killed worker did
def test_a_stale_trial_is_failed_and_requeued_in_postgresql(tmp_path, postgres_url):
    # The server's clock has microseconds (SQLite's: seconds), so 2.5 s is past the 2 s grace.
    check_stale_trial_requeued(settings(tmp_path, trials=3, storage=postgres_url), silence=2.5)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_heartbeats_are_written_in_utc_whatever_the_server_and_worker_zones(tmp_path, postgres_url, monkeypatch):
    assert _sql(postgres_url, "SHOW timezone") == [(TIMEZONE,)]  # the server's own zone is not UTC
    monkeypatch.setenv("PGTZ", "America/New_York")  # nor the worker's (libpq sets it per session)
    study = open_study(settings(tmp_path, storage=postgres_url))
    trial = study.ask()
    study._storage.record_heartbeat(trial._trial_id)
    [(offset,)] = _sql(
        postgres_url,
        "SELECT EXTRACT(EPOCH FROM (now() AT TIME ZONE 'UTC') - heartbeat) FROM trial_heartbeats",
    )
    # Seconds since the heartbeat in UTC: a heartbeat in the server's local time would read as
    # 12.75 or 13.75 hours in the future, one in the worker's as 4 or 5 hours in the past.
    assert 0 <= offset < 600


def test_a_connection_the_server_dropped_while_a_trial_ran_is_replaced(tmp_path, postgres_url):
    config = settings(tmp_path, storage=postgres_url)
    study = open_study(config)
    before = len(study.get_trials())
    # What an idle timeout, a restarted server or a NAT does to a worker's pooled connections
    # while it scores a trial for minutes.
    killed = _sql(postgres_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    assert killed and all(ok for (ok,) in killed)
    assert len(study.get_trials()) == before  # not "server closed the connection unexpectedly"


def test_an_unreachable_postgresql_storage_is_a_config_error_without_the_password(tmp_path):
    port = free_port()  # nothing listens there: refused at once
    url = f"postgresql://chaosfm:s3cret@127.0.0.1:{port}/study"
    with pytest.raises(ConfigError) as error:
        open_study(settings(tmp_path, storage=url))
    message = str(error.value)
    assert message.startswith(f"storage 'postgresql://chaosfm:***@127.0.0.1:{port}/study' cannot be opened: ")
    assert "Connection refused" in message and "s3cret" not in message
    with pytest.raises(ConfigError, match=r"\?password=\*\*\*' cannot be opened") as error:
        open_study(settings(tmp_path, storage=f"postgresql://chaosfm@127.0.0.1:{port}/study?password=s3cret"))
    assert "s3cret" not in str(error.value)


@pytest.mark.timeout(120)  # without a connect timeout libpq would wait for this server forever
def test_a_server_that_never_answers_is_given_up_after_the_connect_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(_tune_study, "CONNECT_TIMEOUT_SECONDS", 2)  # libpq's least
    with socket.socket() as silent:  # accepts TCP connections (the kernel does) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://chaosfm:s3cret@127.0.0.1:{silent.getsockname()[1]}/study"
        with pytest.raises(ConfigError, match=r"chaosfm:\*\*\*@127.0.0.1:\d+/study' cannot be opened: .*timeout expired"):
            open_study(settings(tmp_path, storage=url))
