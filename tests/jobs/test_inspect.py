"""``chaosfm inspect`` (``jobs.inspect``): the parameter report of a tiny train run, end to end."""

import json

import equinox as eqx
import jax
import pandas as pd
import pytest

from chaosfm._artifacts import ArtifactError
from chaosfm._config import ConfigError
from chaosfm.cli._main import main
from chaosfm.jobs import inspect
from chaosfm.jobs import train as train_job
from chaosfm.jobs.train import parse_train_run_file
from chaosfm.train import load_run

pytestmark = pytest.mark.slow  # the tiny train run alone takes ~17 s on a shared 2-core machine


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect") / "run"
    train_job.run(parse_train_run_file({
        "data": {"names": "lorenz63", "options": {"length": 600}, "embargo": 10},
        "tokenizer": {"kind": "bins", "options": {"vocab_size": 34, "kind": "quantile"}},
        "model": {"kind": "gpt", "context_length": 16, "d_model": 16, "n_layers": 1},
        "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1},
        "out": str(out),
    }))
    return out


def test_inspect_reports_every_parameter_of_the_run(trained, tmp_path):
    report = inspect.run(inspect.read(None, {"run": str(trained), "out": str(tmp_path / "report")}))
    model, meta = load_run(trained)
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))
    assert report["total"] == sum(leaf.size for leaf in leaves) == report["parameters"]["count"].sum()
    summary = dict(zip(report["summary"]["key"], report["summary"]["value"]))
    assert summary["model.kind"] == "gpt" and summary["model.d_model"] == "16"
    assert summary["config.model.n_layers"] == "1" and summary["seed"] == str(meta["seed"])
    written = pd.read_csv(tmp_path / "report" / "parameters.csv")
    assert written["name"].tolist() == report["parameters"]["name"].tolist()
    assert json.loads((tmp_path / "report" / "inspect.json").read_text())["total_parameters"] == report["total"]


def test_inspect_errors_and_cli(trained, tmp_path, capsys):
    with pytest.raises(ConfigError, match="model_config.json"):
        inspect.run(inspect.InspectConfig(run=tmp_path))
    assert main(["inspect", str(trained)]) == 0
    assert "parameters:" in capsys.readouterr().out
    (trained / "model.eqx").write_bytes(b"damaged")
    with pytest.raises(ArtifactError, match="model.eqx"):
        inspect.run(inspect.InspectConfig(run=trained))
    assert main(["inspect", str(trained)]) == 2
