"""``chaosfm bench chaos`` end to end on a tiny setting: the run folder, the same windows for every
model, the intervals and ratios against an independent recomputation, errors before any work."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.evaluate import bootstrap_interval
from chaosfm.jobs import bench_chaos

TINY = {
    "systems": ["henon"],
    "models": ["last_value", "context_parroting", "ngrc", "flow_mamba"],
    "model_options": {
        "ngrc": {"taps": 2, "ridge": 1e-6},
        "flow_mamba": {"d_model": 8, "n_layers": 1, "d_state": 4, "head_dim": 4, "mlp_width": 8, "mlp_layers": 1,
                       "window": 16, "batch_size": 4, "steps": 3, "ridge": [1e-8], "validation_windows": 2},
    },
    "reference": "ngrc",
    "length": 500,
    "test_trajectories": 3,
    "windows": 2,
    "context_length": 100,
    "num_samples": 4,
    "n_bootstrap": 200,
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "run"
    config = bench_chaos.read(None, {**TINY, "out": str(out)})
    return bench_chaos.run(config), out, config


def test_run_folder_holds_what_a_reader_needs(bench):
    metrics, out, _ = bench
    for name in ("windows.csv", "summary.csv", "table.md", "vpt.png", "report.html", "metrics.json",
                 "config.yaml", "meta.json"):
        assert (out / name).is_file(), name
    assert (out / "vpt.png").read_bytes().startswith(b"\x89PNG")
    assert "Chaotic systems: valid prediction time" in (out / "report.html").read_text()
    table = (out / "table.md").read_text()
    assert table.count("| henon (cap") == 4 and "VPT / ngrc" in table  # one row per model
    wide = [line for line in table.splitlines() if line.startswith("| henon (")][0]  # one row per system
    means = pd.read_csv(out / "summary.csv").set_index("model")["vpt_mean"]
    assert wide.split(" | ")[1:] == [f"{means[m]:.2f}" for m in TINY["models"][:-1]] + [f"{means[TINY['models'][-1]]:.2f} |"]
    assert json.loads((out / "metrics.json").read_text())["windows"] == metrics["windows"] == 4 * 3 * 2


def test_every_model_is_scored_on_the_same_fresh_windows_of_independent_trajectories(bench):
    _, out, config = bench
    windows = pd.read_csv(out / "windows.csv")
    assert set(windows["window_class"]) == {"fresh"}
    assert sorted(set(windows["trajectory"])) == [1001, 1002, 1003]  # seeds other than the training one
    keys = {model: sorted(zip(part["trajectory"], part["origin"])) for model, part in windows.groupby("model")}
    assert len({tuple(k) for k in keys.values()}) == 1
    cutoff_row = int(config.cutoff_fraction * config.length) - 1
    assert windows["origin"].min() > cutoff_row + config.embargo - 1


def test_summary_agrees_with_a_recomputation_from_the_windows(bench):
    _, out, config = bench
    windows = pd.read_csv(out / "windows.csv")
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    per_trajectory = windows.groupby(["model", "trajectory"])["valid_prediction_time"].mean()
    for model in config.models:
        vpt = windows.loc[windows.model == model, "valid_prediction_time"]
        assert summary.loc[model, "vpt_mean"] == pytest.approx(vpt.mean())
        assert summary.loc[model, "vpt_median"] == pytest.approx(vpt.median())
        ours, theirs = per_trajectory[model].to_numpy(), per_trajectory["ngrc"].to_numpy()
        assert summary.loc[model, "vpt_ratio"] == pytest.approx(ours.mean() / theirs.mean())
        interval = bootstrap_interval([ours], n_resamples=200, seed=[0, list(config.models).index(model)])
        assert summary.loc[model, "vpt_mean_low"] == pytest.approx(interval["ci_low"])
    assert summary.loc["ngrc", "vpt_ratio"] == pytest.approx(1.0)
    assert summary.loc["ngrc", "vpt_ratio_low"] == pytest.approx(1.0)  # paired: a model against itself


def test_bad_names_fail_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="systems: unknown"):
        bench_chaos.run(bench_chaos.read(None, {**TINY, "systems": ["lorenz99"], "out": str(tmp_path / "a")}))
    with pytest.raises(ConfigError, match="models: unknown"):
        bench_chaos.run(bench_chaos.read(None, {**TINY, "models": ["esm"], "out": str(tmp_path / "b")}))
    with pytest.raises(ConfigError, match="reference"):
        bench_chaos.run(bench_chaos.read(None, {**TINY, "reference": "esn", "out": str(tmp_path / "c")}))
    with pytest.raises(ConfigError, match="model_options.ngrc"):
        bench_chaos.run(bench_chaos.read(None, {**TINY, "model_options": {"ngrc": {"tapz": 2}},
                                                "out": str(tmp_path / "d")}))
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_fast_flag_reaches_the_config():
    config = bench_chaos.read(None, {}, fast=True)
    assert config.systems == bench_chaos.FAST["systems"] and config.length == bench_chaos.FAST["length"]
    result = subprocess.run([sys.executable, "-m", "chaosfm.cli", "bench", "chaos", "--help"], capture_output=True,
                            text=True)
    assert result.returncode == 0 and "--fast" in result.stdout


def test_zero_shot_model_is_scored_only_on_systems_it_never_saw(tmp_path):
    tiny_flow = TINY["model_options"]["flow_mamba"]
    config = bench_chaos.read(None, {
        **TINY, "systems": ["henon", "lozi"], "models": ["last_value", "context_parroting"], "model_options": {},
        "reference": "context_parroting", "test_trajectories": 2,
        "zero_shot": {"options": {**tiny_flow, "normalisation": "context", "readout": "context"}, "systems": ["lozi"]},
        "out": str(tmp_path / "zero"),
    })
    metrics = bench_chaos.run(config)
    windows = pd.read_csv(tmp_path / "zero" / "windows.csv")
    zero = windows[windows.model == "zero_shot"]
    assert set(zero["system"]) == {"henon"} and set(zero["window_class"]) == {"fresh"}
    assert metrics["zero_shot"]["pretrained_on"] == ["lozi"] and metrics["zero_shot"]["scored_on"] == ["henon"]
    against = {row["against"]: row for row in metrics["zero_shot"]["against"]}
    henon = windows[windows.system == "henon"].groupby("model")["valid_prediction_time"].mean()
    assert against["context_parroting"]["median_difference"] == pytest.approx(
        henon["zero_shot"] - henon["context_parroting"])
    assert "Zero-shot: pretrained on lozi" in (tmp_path / "zero" / "table.md").read_text()
    with pytest.raises(ConfigError, match="one dimension"):
        bench_chaos.run(bench_chaos.read(None, {**TINY, "zero_shot": {"systems": ["lozi", "lorenz63"]},
                                                "out": str(tmp_path / "bad")}))


def test_systems_scored_in_worker_processes_give_the_serial_result(tmp_path):
    settings = {**TINY, "systems": ["henon", "lozi"], "models": ["last_value", "context_parroting", "ngrc"],
                "model_options": {"ngrc": TINY["model_options"]["ngrc"]}, "test_trajectories": 2}
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"workers-{workers}"
        bench_chaos.run(bench_chaos.read(None, {**settings, "workers": workers, "out": str(out)}))
        runs[workers] = pd.read_csv(out / "windows.csv")
    pd.testing.assert_frame_equal(runs[1], runs[2])
    assert set(runs[2]["system"]) == {"henon", "lozi"}


def test_shipped_lorenz63_config_runs_every_model_at_its_defaults():
    from pathlib import Path

    config = bench_chaos.read(Path(__file__).parents[2] / "configs" / "bench-lorenz63.yaml")
    assert config.systems == ["lorenz63"] and config.model_options == {} and config.windows == 10
    default = bench_chaos.read(None, {})  # the full run: the bench's smaller fits
    assert default.model_options == {n: o for n, o in bench_chaos.BENCH_OPTIONS.items() if n in default.models}
