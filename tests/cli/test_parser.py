"""The parser's building blocks: ``--set`` assignments, the common flags, flags into overrides."""

import argparse

import pytest
from pydantic import BaseModel, ConfigDict

from chaosfm._config import read_config
from chaosfm.cli._parser import Parser, UsageError, assignment, common, overrides


class _Train(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    steps: int = 10


class _Run(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: _Train = _Train()
    cutoff: str | None = None


def test_assignments_read_values_as_yaml_and_dates_as_text():
    cases = {
        "train.seed=3": ("train.seed", 3),
        "model.levels=[4, 4]": ("model.levels", [4, 4]),
        "name=sp500": ("name", "sp500"),
        "lr=0.5": ("lr", 0.5),
        "flag=true": ("flag", True),
        "data.names=sp500,ndx": ("data.names", "sp500,ndx"),
        "text=": ("text", ""),
        "cutoff=2010-12-31": ("cutoff", "2010-12-31"),
        "cutoffs={a: 2010-12-31}": ("cutoffs", {"a": "2010-12-31"}),
    }
    for text, expected in cases.items():
        assert assignment(text) == expected, text


@pytest.mark.parametrize("bad, rule", [
    ("train.seed", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"), ("train..seed=3", "expected KEY=VALUE"),
    (".seed=3", "expected KEY=VALUE"), ("x=[1, 2", "not valid YAML"), ("train.seed=null", "no value"),
    # Nested aliases expand to billions of copies when walked: refused before they are built.
    ("x=[&a [1, 1, 1], &b [*a, *a, *a], [*b, *b, *b]]", "uses a YAML alias"),
])
def test_a_bad_assignment_is_named_with_what_is_wrong(bad, rule):
    with pytest.raises(argparse.ArgumentTypeError, match=rf"'{bad}': .*{rule}" if "[" not in bad else rule):
        assignment(bad)
    parser = Parser(prog="chaosfm test", parents=common("set"))
    with pytest.raises(UsageError, match=rf"argument --set: .*{rule}.*\(see chaosfm test --help\)"):
        parser.parse_args(["--set", bad])


def test_flags_win_over_assignments_which_reach_nested_keys():
    parser = Parser(prog="chaosfm test", parents=common("seed", "cutoff", "set"))
    args = parser.parse_args(["--set", "train.seed=4", "--set", "train.steps=7", "--set", "cutoff=2001-01-01",
                              "--cutoff", "2002-02-02"])
    values = overrides(args, {"seed": "train.seed"}, ("seed", "cutoff"))
    assert values == {"train.seed": 4, "train.steps": 7, "cutoff": "2002-02-02"}
    config = read_config(_Run, None, values)
    assert (config.train.seed, config.train.steps, config.cutoff) == (4, 7, "2002-02-02")
    args = parser.parse_args(["--set", "train.seed=4", "--seed", "9"])
    assert read_config(_Run, None, overrides(args, {"seed": "train.seed"}, ("seed",))).train.seed == 9
