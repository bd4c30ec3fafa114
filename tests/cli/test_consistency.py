"""One CLI: one spelling per flag meaning, a shown default for every optional flag, suggestions for
typos, ``--debug`` anywhere, one error prefix, real nested subcommands, default run folders."""

import argparse
import re
from collections import defaultdict
from pathlib import Path

import pytest

from chaosfm import __version__
from chaosfm.cli import build_parser, main
from chaosfm.cli._parser import ENVIRONMENT


def _flags():
    """``(command, action)`` for every optional flag of every (nested) subcommand."""

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])
            elif action.option_strings:
                yield " ".join(path), action

    return list(walk(build_parser(), []))


RETIRED = {"--context-len": "--context-length", "--samples": "--num-samples", "--step": "--every",
           "--max-folds": "--max-windows", "--max-origins": "--max-windows", "--pretrain-cutoff": "--cutoff"}
"""Spellings that meant the same as another flag; none may come back."""

SAME_FLAG_OTHER_DEST = {"--run"}
"""Flags whose argparse destination differs by command though the meaning is one (a run folder of an
earlier command)."""


def test_one_spelling_per_flag_and_one_flag_per_meaning():
    destinations, spellings = defaultdict(set), defaultdict(set)
    for command, action in _flags():
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        assert len(action.option_strings) == 1, (command, action.option_strings)  # no aliases
        flag = action.option_strings[0]
        assert flag not in RETIRED, f"{command}: {flag} is spelled {RETIRED[flag]} everywhere"
        destinations[flag].add(action.dest)
        spellings[action.dest].add(flag)
    assert {d: f for d, f in spellings.items() if len(f) > 1} == {}
    assert {f: d for f, d in destinations.items() if len(d) > 1 and f not in SAME_FLAG_OTHER_DEST} == {}


def test_shared_flags_mean_one_thing_and_name_their_unit():
    for command, action in _flags():
        flag, text = action.option_strings[-1], action.help or ""
        if flag == "--steps":  # optimizer updates, never rollout steps or rows
            assert "optimizer updates" in text, (command, text)
        if flag == "--every":
            assert "rows between" in text, (command, text)
        if flag == "--horizon":
            assert re.search(r"\b(rows|codes|days|steps)\b", text), (command, text)
        if flag == "--num-samples":
            assert "sample" in text, (command, text)


def test_every_optional_flag_shows_its_default():
    missing = [(command, action.option_strings[-1]) for command, action in _flags()
               if not action.required and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))
               and "default" not in (action.help or "")]
    assert missing == []


def test_out_defaults_to_a_new_run_folder_named_after_the_command(capsys):
    from chaosfm.jobs.evaluate import EvaluateConfig
    from chaosfm.jobs.stage import StageConfig

    out = EvaluateConfig.model_validate({"datasets": [{"name": "sp500"}]}).out
    assert re.fullmatch(r"runs/evaluate-\d{8}-\d{6}", out.as_posix())
    assert re.fullmatch(r"runs/stage-rl-\d{8}-\d{6}", StageConfig.model_validate({"stage": "rl"}).out.as_posix())
    # No command requires --out any more, and the help says where a run goes.
    assert main(["stage", "rl", "--help"]) == 0
    assert "runs/stage-rl-YYYYmmdd-HHMMSS" in "".join(capsys.readouterr().out.split())  # however it wraps
    assert not [command for command, action in _flags() if action.dest == "out" and action.required]


@pytest.mark.parametrize(("argv", "suggestion"), [
    (["evalute"], "did you mean 'evaluate'?"),
    (["evaluate", "--hoirzon", "3"], "did you mean '--horizon'?"),
    (["tokenize", "--tokenizer", "fqs"], "did you mean 'fsq'?"),
    (["stage", "sfr"], "did you mean 'sft'?"),
])
def test_a_typo_gets_a_suggestion_on_one_line_with_one_prefix(argv, suggestion, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and suggestion in err[0], err
    assert err[0].startswith("chaosfm: error: ") and err[0].count("chaosfm:") == 1, err[0]


def test_datasets_and_models_get_suggestions(tmp_path, capsys):
    assert main(["evaluate", "--data", "sp5000", "--out", str(tmp_path / "a")]) == 2
    assert "did you mean 'sp500'?" in capsys.readouterr().err
    assert main(["evaluate", "--data", "sp500", "--models", "garh", "--out", str(tmp_path / "b")]) == 2
    assert "did you mean 'garch'?" in capsys.readouterr().err
    assert main(["forecast", "--model", "garh", "--data", "sp500", "--horizon", "2",
                 "--out", str(tmp_path / "c.csv")]) == 2
    assert "did you mean 'garch'?" in capsys.readouterr().err
    config = tmp_path / "typo.yaml"
    config.write_text("protocol: {horizn: 3}\n")
    assert main(["evaluate", "--config", str(config), "--data", "sp500", "--out", str(tmp_path / "d")]) == 2
    assert "did you mean 'horizon'?" in capsys.readouterr().err


def test_debug_is_taken_anywhere_on_the_line(capsys):
    for argv in (["--debug", "evaluate", "--horizon", "x"], ["evaluate", "--horizon", "x", "--debug"],
                 ["evaluate", "--debug", "--horizon", "x"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "invalid int value: 'x'" in err, argv
    assert main(["evaluate", "--horizon", "x"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_version_and_the_environment_in_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"chaosfm {__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ENVIRONMENT:
        assert name in out
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert all(name in readme for name in ENVIRONMENT)


def test_nested_commands_are_real_subcommands_with_their_own_help(capsys):
    for argv, own in ((["stage", "rl", "--help"], "--kl-coef"), (["tokenize", "analyze", "--help"], "--ngram"),
                      (["tokenize", "inspect", "--help"], "run_dir")):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: chaosfm {' '.join(argv[:2])}") and own in out, argv
    # A stage's flags belong to the stages that use them.
    assert main(["stage", "pretrain", "--kl-coef", "0.1"]) == 2
    assert "unrecognized arguments: --kl-coef" in capsys.readouterr().err
