"""The Optuna study behind ``chaosfm tune``: shared storage, per-trial TPE seeds, the budget.

Every worker opens the same study in an RDB storage (SQLite file or any SQLAlchemy URL) with
heartbeats: a running trial whose worker stops beating for two intervals is failed by the next
worker and its parameters queued again. The worker that creates the study records what a trial's
value depends on (``objective_fingerprint``) and queues the base config; a worker whose settings
differ is refused. The budget counts live trials (complete, running, waiting) by trial number.
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
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=config.heartbeat_seconds,
                    grace_period=2 * config.heartbeat_seconds,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=config.retries
                    ),
                )
            break
        except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many kinds for a bad URL
            # Two workers creating the tables of a new database at once: the loser sees them
            # half made ("already exists", a duplicate version row); the next attempt finds them.
            if attempt < 2 and any(s in str(error) for s in ("already exists", "UNIQUE", "locked")):
                time.sleep(0.5 + attempt)
                continue
            raise ConfigError(f"storage {redacted(url)!r} cannot be opened: {error}") from None
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
    """The storage URL without its password (it goes into metrics.json)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL failed earlier, when the study opened
        return url
