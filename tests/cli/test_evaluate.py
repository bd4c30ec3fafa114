"""``chaosfm evaluate`` on a user's trajectory: ``--lyapunov`` and ``--dt`` (and their config keys),
the warning when VPT cannot be computed, one-line errors for bad values, the per-channel table."""

import numpy as np
import pandas as pd
import pytest
import yaml

from chaosfm.cli import main

SMALL = ["--models", "last_value,context_parroting", "--horizon", "20", "--every", "20", "--num-samples", "4",
         "--max-windows", "4", "--set", "protocol.min_context=50", "--set", "protocol.context_length=100"]


def write_trajectory(path, n=300):
    t = 0.05 * np.arange(n)
    pd.DataFrame({"timestamp": t, "x0": np.sin(t) + 0.3 * np.sin(3.1 * t), "x1": np.cos(1.3 * t)}).to_csv(
        path, index=False)
    return path


def test_lyapunov_and_dt_flags_reach_the_config_and_the_scores(tmp_path, capsys):
    data = write_trajectory(tmp_path / "traj.csv")
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(data), "--lyapunov", "0.9056", "--dt", "0.05", *SMALL,
                 "--out", str(out)]) == 0
    protocol = yaml.safe_load((out / "config.yaml").read_text())["protocol"]
    assert (protocol["lyapunov_exponent"], protocol["dt"]) == (0.9056, 0.05)
    printed = capsys.readouterr().out
    assert "VPT of each channel alone" in printed and "x1" in printed
    scores = pd.read_parquet(out / "scores.parquet")
    assert np.isfinite(scores[["valid_prediction_time", "vpt_x0", "vpt_x1"]].to_numpy()).all()


def test_the_flags_and_their_config_keys_are_the_same_setting(tmp_path, monkeypatch, capsys):
    from chaosfm.jobs import evaluate

    seen = {}

    def stand_in(config):
        seen["protocol"] = config.protocol
        raise KeyboardInterrupt  # stop before any work: the parsing is what is tested

    monkeypatch.setattr(evaluate, "run", stand_in)
    assert main(["evaluate", "--data", "x.csv", "--lyapunov", "0.5", "--dt", "0.01"]) == 130
    by_flags = seen["protocol"]
    assert main(["evaluate", "--data", "x.csv", "--set", "protocol.lyapunov_exponent=0.5",
                 "--set", "protocol.dt=0.01"]) == 130
    assert seen["protocol"] == by_flags and (by_flags.lyapunov_exponent, by_flags.dt) == (0.5, 0.01)
    # the flag wins over the key
    assert main(["evaluate", "--data", "x.csv", "--set", "protocol.lyapunov_exponent=2", "--lyapunov", "0.5"]) == 130
    assert seen["protocol"].lyapunov_exponent == 0.5
    capsys.readouterr()


@pytest.mark.parametrize("argv, words", [
    (["--lyapunov", "-0.9"], ["argument --lyapunov", "positive, finite", "'-0.9'"]),
    (["--lyapunov", "inf"], ["argument --lyapunov", "positive, finite"]),
    (["--dt", "0"], ["argument --dt", "positive, finite"]),
    (["--dt", "fast"], ["argument --dt", "'fast' is not a number"]),
    (["--set", "protocol.dt=-1"], ["protocol.dt", "greater than 0"]),
])
def test_a_bad_exponent_or_dt_exits_2_with_one_line_naming_it(tmp_path, capsys, argv, words):
    data = write_trajectory(tmp_path / "traj.csv")
    assert main(["evaluate", "--data", str(data), *argv, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(word in err[0] for word in words), err
    assert not (tmp_path / "eval").exists()


def test_without_an_exponent_evaluate_runs_and_warns_naming_the_flags(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHAOSFM_QUIET", "0")
    data = write_trajectory(tmp_path / "traj.csv")
    assert main(["evaluate", "--data", str(data), *SMALL, "--out", str(tmp_path / "eval")]) == 0
    captured = capsys.readouterr()
    (warning,) = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert all(word in warning for word in ("valid_prediction_time is NaN", "--lyapunov", "--dt", "traj.json"))
    assert "VPT of each channel alone" not in captured.out  # nothing to show


@pytest.mark.parametrize("argv, words", [
    (["--horizon", "100000000"], "no window to score"),
    (["--num-samples", "100000000000"], "samples fit at this horizon"),
    (["--cutoff", "1000"], "no fresh window to score"),  # the timestamps end at 14.95
])
def test_an_evaluation_that_cannot_run_exits_2_with_one_line_saying_why(tmp_path, capsys, argv, words):
    data = write_trajectory(tmp_path / "traj.csv")
    code = main(["evaluate", "--data", str(data), "--models", "last_value", *argv, "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("chaosfm: error: dataset ") and words in err[0]
    assert not (tmp_path / "eval").exists()
