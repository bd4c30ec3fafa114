"""chaosfm tune: the config, a study shared by two processes, budgets, stale trials, resume."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from chaosfm._config import ConfigError, parse_config, read_config
from chaosfm.jobs._tune_study import open_study
from chaosfm.jobs._common import DEFAULT_CUTOFF_FRACTION
from chaosfm.jobs.tune import TuneConfig, predictor_with, run, tuning_frame
from chaosfm.predictor import PredictorConfig, StreamConfig


def write_market(path, n=80):
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    pd.DataFrame({
        "timestamp": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        "open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0,
    }).to_csv(path, index=False)
    return path


def settings(tmp_path, **values):
    data = {
        "data": str(write_market(tmp_path / "market.csv")), "length": None, "cutoff_fraction": 0.9,
        "max_memory": 32, "horizon": 2, "trials": 4, "out": str(tmp_path / "tune"),
        "heartbeat_seconds": 1, "base": {"compilation_cache": False},
    }
    return parse_config(TuneConfig, {**data, **values}, "test")


def quadratic(predictor: PredictorConfig) -> float:
    """A cheap stand-in objective (the predictor's walk-forward score costs a compile per trial)."""
    return (np.log(predictor.orchestrator.epsilon) + 2.0) ** 2 + predictor.cusum.slack


def complete(study):
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


def test_config_names_bad_keys_and_ranges(tmp_path):
    with pytest.raises(ConfigError, match="orchestrator.epsilonn' is not a predictor setting; orchestrator has: epsilon"):
        settings(tmp_path, space={"orchestrator.epsilonn": {"low": 0.1, "high": 1}})
    with pytest.raises(ConfigError, match="integer"):
        settings(tmp_path, space={"signature.depth": {"low": 2, "high": 4}})
    with pytest.raises(ConfigError, match="below high"):
        settings(tmp_path, space={"cusum.slack": {"low": 1, "high": 0.5}})
    with pytest.raises(ConfigError, match="log range"):
        settings(tmp_path, space={"cusum.slack": {"low": 0, "high": 1, "log": True}})
    with pytest.raises(ConfigError, match="unknown key 'trails'"):
        settings(tmp_path, trails=3)


def test_predictor_with_sets_dotted_settings_and_validates():
    tuned = predictor_with(PredictorConfig(), {"signature.depth": 2, "hoelder_threshold": 0.3})
    assert tuned.signature.depth == 2 and tuned.hoelder_threshold == 0.3
    assert tuned.signature.window == PredictorConfig().signature.window
    with pytest.raises(ConfigError, match="signature.depth"):
        predictor_with(PredictorConfig(), {"signature.depth": 9})


WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from chaosfm._config import read_config
    from chaosfm.jobs.tune import TuneConfig, run

    ready = Path(sys.argv[2])
    first = []

    def score(predictor):
        if not first:  # both workers hold a trial at once before either goes on
            first.append(1)
            (ready / sys.argv[3]).touch()
            deadline = time.time() + 120
            while len(list(ready.iterdir())) < 2 and time.time() < deadline:
                time.sleep(0.05)
        time.sleep(0.2)
        return (np.log(predictor.orchestrator.epsilon) + 2.0) ** 2 + predictor.cusum.slack

    run(read_config(TuneConfig, sys.argv[1]), score=score)
""")


def two_workers(tmp_path, config, environments=({}, {})):
    """Two WORKER processes started at once on ``config``, each with its extra environment
    variables; the study they filled."""
    path = tmp_path / "tune.yaml"
    path.write_text(__import__("yaml").safe_dump(config.model_dump(mode="json")))
    (tmp_path / "ready").mkdir()
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(tmp_path / "ready"), name],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **extra})
        for name, extra in zip(("a", "b"), environments)
    ]
    for worker in workers:
        output, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, output
    return open_study(config)  # the same storage URL handling the workers had


def check_exact_budget(study, config):
    """``config.trials`` complete trials, by both workers, each point once; best.yaml is the best."""
    trials = study.get_trials()
    done = complete(study)
    assert len(done) == config.trials  # not one fewer, not one more: no trial lost, none past the budget
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)]
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.PRUNED)
    assert len({t.number for t in done}) == config.trials
    assert len({tuple(sorted(t.params.items())) for t in done}) == config.trials  # no point evaluated twice
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both processes ran trials
    assert sum(bool(t.user_attrs.get("base")) for t in trials) == 1  # base queued once
    best = read_config(StreamConfig, config.out / "best.yaml")  # what `chaosfm stream --config` reads
    winner = min(done, key=lambda t: t.value)
    assert best.predictor.orchestrator.epsilon == winner.params["orchestrator.epsilon"]
    assert best.predictor.signature.depth == winner.params["signature.depth"]
    table = pd.read_csv(config.out / "trials.csv")
    assert (table["state"] == "COMPLETE").sum() == config.trials


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study_with_an_exact_budget(tmp_path):
    config = settings(tmp_path, trials=8)
    check_exact_budget(two_workers(tmp_path, config), config)


def check_stale_trial_requeued(config, silence):
    """A trial asked by hand, as a worker killed after one heartbeat left it, ``silence`` seconds
    later: the next worker fails it, re-runs its point and completes the budget of 3."""
    assert config.trials == 3
    study = open_study(config)
    assert study.get_trials()[0].state == TrialState.WAITING  # the base config, queued by the creator
    stale = study.ask()  # pops the base trial, as a worker about to be killed would
    stale.suggest_float("orchestrator.epsilon", 0.02, 1.0, log=True)
    study._storage.record_heartbeat(stale._trial_id)
    time.sleep(silence)
    metrics = run(config, score=quadratic)
    trials = study.get_trials()
    assert trials[stale.number].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == stale.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params["orchestrator.epsilon"] == stale.params["orchestrator.epsilon"]
    assert len(complete(study)) == 3 and metrics["trials"]["complete"] == 3


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() by hand, as a killed worker did
def test_a_stale_trial_is_failed_and_requeued_and_the_budget_still_completes(tmp_path):
    # More than two heartbeat intervals of silence: SQLite's clock, which Optuna reads for both
    # the heartbeat and the staleness check, has one-second resolution and the check is strict,
    # so 2.5 s could read as exactly the 2 s grace period and leave the trial running.
    check_stale_trial_requeued(settings(tmp_path, trials=3), silence=3.5)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_worker_waits_for_the_last_slot_a_dead_worker_holds_and_reruns_it(tmp_path):
    config = settings(tmp_path, trials=3)
    study = open_study(config)
    stale = study.ask()  # a worker that dies at once, holding one of the three slots
    study._storage.record_heartbeat(stale._trial_id)
    metrics = run(config, score=quadratic)  # runs two, then waits for the third rather than stop
    assert metrics["trials"]["complete"] == 3 and metrics["trials"]["fail"] == 1
    assert [t.system_attrs.get("failed_trial") for t in complete(study)].count(stale.number) == 1


def test_a_worker_whose_trial_was_failed_as_stale_meanwhile_goes_on(tmp_path):
    # A machine cut off for more than two heartbeats: the others failed its running trial and
    # queued the point again. Its late result is refused by Optuna; the worker must carry on.
    config = settings(tmp_path, trials=3)
    calls = []

    def cut_off(predictor: PredictorConfig) -> float:
        calls.append(predictor)
        if len(calls) == 1:
            study = optuna.load_study(study_name=config.study, storage=config.storage_url())
            (running,) = study.get_trials(states=(TrialState.RUNNING,))
            study._storage.set_trial_state_values(running._trial_id, TrialState.FAIL)
        return quadratic(predictor)

    metrics = run(config, score=cut_off)
    assert metrics["trials"]["complete"] == 3 and metrics["trials"]["fail"] == 1
    assert len(calls) == 4  # the late result was dropped and three more points scored


def test_an_interrupted_study_resumes_to_its_new_budget(tmp_path):
    first = run(settings(tmp_path, trials=2), score=quadratic)
    again = run(settings(tmp_path, trials=2), score=quadratic)  # nothing left to do
    more = run(settings(tmp_path, trials=5), score=quadratic)
    assert first["trials"]["complete"] == again["trials"]["complete"] == 2
    assert more["trials"]["complete"] == 5 and more["trials"]["pruned"] == 0
    assert more["best_value"] <= first["best_value"]
    assert more["base_value"] == quadratic(PredictorConfig())  # trial 0 is the base config
    metrics = pd.read_json(tmp_path / "tune" / "metrics.json", typ="series")
    # The one cutoff rule of every command: the first 72 of 80 rows (0.9) are tuned on, day 72.
    assert metrics["trained_through"] == {"market": "2020-03-12T00:00:00"}


def test_the_default_cutoff_is_the_one_rule_of_every_command(tmp_path):
    # Tune's default cutoff was 0.7 of the rows; it is now every command's 0.8.
    data = {"data": str(write_market(tmp_path / "market.csv")), "length": None, "max_memory": 32, "horizon": 2}
    config = parse_config(TuneConfig, data, "test")
    assert config.cutoff_fraction == DEFAULT_CUTOFF_FRACTION == 0.8
    frame = tuning_frame(config)
    assert len(frame) == 64 and frame["timestamp"].iloc[-1] == pd.Timestamp("2020-03-04")  # day 64 of 80
    for cutoff in ("2020-02-15", "market=2020-02-15"):
        frame = tuning_frame(parse_config(TuneConfig, {**data, "cutoff": cutoff}, "test"))
        assert frame["timestamp"].iloc[-1] == pd.Timestamp("2020-02-15") and len(frame) == 46
    with pytest.raises(ConfigError, match="one fold needs max_memory \\+ horizon = 34"):
        tuning_frame(parse_config(TuneConfig, {**data, "cutoff": "2020-01-20"}, "test"))


def test_a_worker_with_a_different_objective_is_refused(tmp_path):
    run(settings(tmp_path, trials=1), score=quadratic)
    with pytest.raises(ConfigError, match="different objective: horizon .*horizon: 2 there, 3 here"):
        run(settings(tmp_path, trials=2, horizon=3), score=quadratic)
    with pytest.raises(ConfigError, match="storage 'nosuchdb://x' cannot be opened"):
        open_study(settings(tmp_path, storage="nosuchdb://x"))


def test_the_preset_config_parses_and_searches_the_default_space():
    from pathlib import Path

    from chaosfm.jobs.tune import DEFAULT_SPACE

    preset = read_config(TuneConfig, Path(__file__).parents[2] / "configs" / "tune-predictor.yaml")
    assert preset.space == DEFAULT_SPACE and preset.trials == 20 and preset.data == "sp500"


def test_a_point_that_cannot_be_scored_fails_its_trial_and_the_search_goes_on(tmp_path):
    def fragile(predictor):
        if predictor.cusum.slack > 0.75:
            raise ValueError("forecaster 'online_predictor' returned non-finite samples")
        return quadratic(predictor)

    metrics = run(settings(tmp_path, trials=4), score=fragile)
    table = pd.read_csv(tmp_path / "tune" / "trials.csv")
    failed = table[table["state"] == "FAIL"]
    assert metrics["trials"]["complete"] == 4 and metrics["trials"]["fail"] == len(failed) >= 1
    assert (failed["params.cusum.slack"] > 0.75).all() and failed["error"].str.contains("non-finite").all()
    assert (table.loc[table["state"] == "COMPLETE", "params.cusum.slack"] <= 0.75).all()
