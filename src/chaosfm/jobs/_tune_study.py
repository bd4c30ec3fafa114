"""The Optuna study behind ``chaosfm tune``: shared storage, per-trial TPE seeds, the budget.

Every worker opens the same study in an RDB storage (SQLite file or any SQLAlchemy URL) with
heartbeats: a running trial whose worker stops beating for two intervals is failed by the next
worker and its parameters queued again. The worker that creates the study records what a trial's
value depends on (``objective_fingerprint``) and queues the base config; a worker whose settings
differ is refused. The budget counts live trials (complete, running, waiting) by trial number.

SQLite is the embedded default (one machine); PostgreSQL serves workers on several machines
(``engine_for`` holds what each backend needs).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaosfm._config import ConfigError
from chaosfm.predictor import PredictorConfig

if TYPE_CHECKING:
    from chaosfm.jobs.tune import TuneConfig

CONNECT_TIMEOUT_SECONDS = 10
"""How long a PostgreSQL worker waits for the server to answer before the storage is refused."""


def _sampler(seed: int, trial_number: int):
    import optuna

    # constant_liar: a trial still running elsewhere counts as a bad result, so parallel workers
    # do not all sample around the same optimum.
    return optuna.samplers.TPESampler(seed=(seed * 1_000_003 + trial_number) % 2**32, constant_liar=True)


def per_trial_tpe(seed: int):
    """TPE whose random state is reseeded per trial from ``(seed, trial number)``."""
    import optuna

    class PerTrialTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._current: dict[int, Any] = {}

        def _for(self, trial) -> Any:
            if trial.number not in self._current:
                self._current = {trial.number: _sampler(seed, trial.number)}
            return self._current[trial.number]

        def infer_relative_search_space(self, study, trial):
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            self._for(trial).after_trial(study, trial, state, values)

    return PerTrialTPE()


def open_study(config: TuneConfig):
    """The shared study (created by the first worker, which queues the base config as trial 0)."""
    import optuna

    url = config.storage_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        try:
            opened, engine = engine_for(url)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    opened,
                    engine_kwargs=engine,
                    heartbeat_interval=config.heartbeat_seconds,
                    grace_period=2 * config.heartbeat_seconds,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=config.retries
                    ),
                )
            heartbeats_in_utc(storage)
            break
        except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many kinds for a bad URL
            # Two workers creating the tables of a new database at once: the loser sees them
            # half made ("already exists", a duplicate version row: SQLite says "UNIQUE",
            # PostgreSQL "duplicate key"); the next attempt finds them.
            if attempt < 2 and any(s in str(error) for s in RACES):
                time.sleep(0.5 + attempt)
                continue
            raise ConfigError(f"storage {redacted(url)!r} cannot be opened: {_reason(error, url)}") from None
    sampler = per_trial_tpe(config.seed)
    objective = objective_fingerprint(config)
    try:
        study = optuna.create_study(storage=storage, study_name=config.study, sampler=sampler, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=config.study, sampler=sampler)
        recorded = study.user_attrs.get("objective")
        if recorded is not None and recorded != objective:
            differ = sorted(k for k in set(recorded) | set(objective) if recorded.get(k) != objective.get(k))
            raise ConfigError(
                f"study {config.study!r} in {redacted(url)} scores a different objective: {', '.join(differ)}"
                f" differ from this config (e.g. {differ[0]}: {recorded.get(differ[0])!r} there,"
                f" {objective.get(differ[0])!r} here); use the same settings or another --study"
            )
        return study
    study.set_user_attr("objective", objective)
    base = {}
    for path, bounds in config.space.items():
        value = base_value(config.base.predictor, path)
        if bounds.low <= value <= bounds.high:
            base[path] = value
    study.enqueue_trial(base, user_attrs={"base": True})
    return study


RACES = ("already exists", "UNIQUE", "duplicate key", "locked", "deadlock detected")
"""Words of the errors two workers meet when both create a new database's tables at once."""


def engine_for(url: str) -> tuple[str, dict[str, Any]]:
    """The URL Optuna opens and the SQLAlchemy engine settings of its backend.

    Args:
        url: the storage URL as the user gave it.

    Returns:
        ``(url, engine_kwargs)`` for :class:`optuna.storages.RDBStorage`.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Workers on one machine take turns on the file's write lock: wait for it (120 s) rather
        # than fail a trial with "database is locked".
        return url, {"connect_args": {"timeout": 120}}
    # A worker's pooled connections sit idle while it scores a trial (minutes); a server, proxy or
    # NAT that closed them meanwhile would crash the next query. Test each before use (Optuna
    # does so only for MySQL).
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() != "postgresql":
        return url, engine
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the driver chaosfm installs is
        # psycopg2. An explicit postgresql+driver:// is left as it is.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_driver_name() in ("psycopg2", "psycopg"):
        query = {key: str(value) for key, value in parsed.query.items()}
        # libpq waits for an unreachable host as long as TCP does (minutes): fail fast instead, as
        # SQLite's timeout does; ?connect_timeout=N in the URL overrides it.
        engine["connect_args"] = {"connect_timeout": int(query.get("connect_timeout", CONNECT_TIMEOUT_SECONDS))}
    return parsed.render_as_string(hide_password=False), engine


def heartbeats_in_utc(storage) -> None:
    """Make every PostgreSQL session of ``storage`` keep time in UTC.

    Optuna stores a heartbeat as the server's ``now()`` in a column without a time zone, that is
    as the wall clock of the session's zone, and compares it with ``now()`` read the same way.
    That zone is the server's, or a worker's ``PGTZ`` (which beats ``options=-c timezone=`` in the
    URL, so that cannot be the fix): a worker in another zone reads every other worker's trial as
    hours stale and fails it, and a daylight-saving jump fails all running trials (or keeps dead
    ones alive for an hour). ``SET TIME ZONE`` on each new connection wins over both.
    """
    import sqlalchemy

    engine = storage.engine
    if engine.dialect.name != "postgresql":
        return  # SQLite's CURRENT_TIMESTAMP is UTC already

    @sqlalchemy.event.listens_for(engine, "connect", insert=True)
    def _utc(connection, record) -> None:
        autocommit = connection.autocommit
        connection.autocommit = True  # a SET inside a transaction is undone by its rollback
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        connection.autocommit = autocommit

    engine.dispose()  # the connections that created the tables predate the listener


def _reason(error: Exception, url: str) -> str:
    """The driver's one-line message of why the storage did not open, without the password."""
    from sqlalchemy.engine import make_url

    text = str(getattr(error, "orig", None) or error)  # the driver's words, not SQLAlchemy's wrapping
    reason = "; ".join(line.strip() for line in text.splitlines() if line.strip())  # libpq: several lines
    try:
        parsed = make_url(url)
        secrets = [parsed.password, parsed.query.get("password")]
    except Exception:  # noqa: BLE001 - an unparsable URL has no password to hide
        secrets = []
    for secret in secrets:
        if secret and isinstance(secret, str):
            reason = reason.replace(secret, "***")
    return reason


def objective_fingerprint(config: TuneConfig) -> dict[str, Any]:
    """What a trial's value depends on: workers of one study must agree on all of it."""
    keys = ("data", "asset", "cutoff", "cutoff_fraction", "length", "max_memory", "horizon", "step",
            "max_folds", "num_samples", "metric", "seed", "space")
    return {**config.model_dump(mode="json", include=set(keys)), "predictor": config.base.predictor.model_dump(mode="json")}


def base_value(predictor: PredictorConfig, path: str) -> Any:
    node: Any = predictor
    for part in path.split("."):
        node = getattr(node, part)
    return node


def live_trials(study) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))


def work_left(study, budget: int) -> bool:
    """A queued trial (the base config, a retry) or a free slot: asking will not add a surplus row."""
    live = live_trials(study)
    return len(live) < budget or any(t.state.name == "WAITING" for t in live)


def redacted(url: str) -> str:
    """The storage URL without its password, in the user part or as ``?password=`` (libpq takes
    both); it goes into metrics.json and error messages."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        if "password" in parsed.query:
            parsed = parsed.update_query_dict({"password": "***"})
        return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except Exception:  # noqa: BLE001 - an unparsable URL failed earlier, when the study opened
        return url
