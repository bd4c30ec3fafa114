"""``chaosfm demo``: the models it trains are the shipped configs."""

import re
from pathlib import Path

import yaml

from chaosfm.jobs.demo import DemoConfig, demo_config, demo_train_files


def _tokenizer_seed(config: dict) -> int:
    """The seed a tokenizer fit uses: its own ``tokenizer.seed`` if given (it must equal the run's),
    else the run's one ``train.seed``."""
    seed = config["tokenizer"].get("seed")
    return config["train"]["seed"] if seed is None else seed


def test_demo_models_are_the_shipped_configs():
    # The demo trains what configs/*.yaml describe (its own data options and fewer steps aside).
    configs = Path(__file__).parents[2] / "configs"
    names = {"sp500-gpt": "gpt-tiny", "sp500-mamba": "mamba-tiny",
             "lorenz-gpt": "lorenz-gpt", "lorenz-mamba": "lorenz-mamba"}
    files = demo_train_files(fast=False)
    assert set(files) == set(names)
    for run, config in names.items():
        shipped = yaml.safe_load((configs / f"{config}.yaml").read_text())
        demo = files[run][1].model_dump()
        assert demo["model"] == shipped["model"], run
        # tokenizer.seed is now optional (a run has one seed): compare every other key as given,
        # and the seed the fit actually uses.
        given = {k: v for k, v in demo["tokenizer"].items() if v is not None and k != "seed"}
        assert given == {**{"options": {}, "steps": 2000}, **{
            k: v for k, v in shipped["tokenizer"].items() if k != "seed"}}, run
        assert _tokenizer_seed(demo) == _tokenizer_seed(shipped), run
        for key in ("steps", "batch_size", "learning_rate", "warmup_steps"):
            assert demo["train"][key] == shipped["train"][key], (run, key)


def test_fast_demo_trains_only_the_lorenz_models_in_its_own_folder():
    assert set(demo_train_files(fast=True)) == {"lorenz-gpt", "lorenz-mamba"}
    config = DemoConfig()
    assert re.fullmatch(r"runs/demo-\d{8}-\d{6}", config.out.as_posix()) and config.fast is False and config.models
    evaluation = demo_config(Path("x"), fast=True, runs={"lorenz63": ["r"]})
    assert [d.name for d in evaluation.datasets] == ["sp500", "lorenz63"]
    assert evaluation.datasets[1].runs == ["r"] and evaluation.out == Path("x")
