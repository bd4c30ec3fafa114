"""A mistyped command or flag is reported at once: exit 2, one line, JAX never imported, and under
0.5 s of CPU for the whole ``chaosfm`` process (Python start-up included)."""

import json
import resource
import subprocess
import sys

import pytest

CPU_LIMIT = 0.5
"""Seconds of CPU (user + system) for the whole child process: the Done-when criterion."""

CHILD = """
import json, sys, time
from chaosfm.cli import main
code = main(json.loads(sys.argv[1]))
heavy = sorted(name for name in ("jax", "numpy", "pandas", "optuna", "chaosfm.jobs") if name in sys.modules)
print(json.dumps({"code": code, "heavy": heavy, "cpu": time.process_time()}))
"""

BAD = [
    (["evalute"], "invalid choice: 'evalute'"),
    (["evaluate", "--bogus"], "unrecognized arguments: --bogus"),
    (["evaluate", "--horizon", "five"], "argument --horizon: invalid int value: 'five'"),
    (["tune", "--data", "sp500", "--set", "trials"], "argument --set: 'trials': expected KEY=VALUE"),
    (["stage", "sft", "--steps", "3", "--epochs", "1", "--out", "x"], "--epochs: not allowed with argument --steps"),
    (["train", "--out", "x"], "the following arguments are required: --config"),
]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    before = _children_cpu()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return done, _children_cpu() - before


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(argv) for argv, _ in BAD])
def test_a_bad_command_or_flag_exits_2_at_once_without_jax(argv, message):
    done, cpu = _run([sys.executable, "-c", CHILD, json.dumps(argv)])
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stderr
    result = json.loads(lines[-1])
    assert result["code"] == 2
    assert result["heavy"] == []  # not JAX, nor the array stack, nor any job
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("chaosfm: error: ") and message in err[0], err
    assert result["cpu"] <= cpu + 0.05  # the child's own clock agrees with the parent's measure
    assert cpu < CPU_LIMIT, f"{' '.join(argv)}: {cpu:.3f} s of CPU"


def test_the_console_entry_point_reports_a_typo_at_once():
    done, cpu = _run([sys.executable, "-m", "chaosfm.cli", "evalute"])
    assert done.returncode == 2 and done.stdout == ""
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'evalute'" in err[0]
    assert cpu < CPU_LIMIT, f"{cpu:.3f} s of CPU"
