"""The ``chaosfm`` command: parses flags into a job's config, calls the job, prints.

Errors print one line and exit 2 (bad input: data, config, arguments) or 1 (a bug in chaosfm);
``--debug`` shows the traceback. Parsing imports neither JAX nor the library: a mistyped command
or flag is reported at once.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from chaosfm import __version__
from chaosfm.cli import _agent, _backtest, _bench, _data, _evaluate, _multitask, _stream, _tokenize, _train, _world
from chaosfm.cli import _config_size
from chaosfm.cli import _greeks
from chaosfm.cli import _inspect
from chaosfm.cli import _shard
from chaosfm.cli._parser import HELP_FOOTER, Parser, UsageError, name_commands


def build_parser() -> Parser:
    """The ``chaosfm`` parser: one subcommand per job, the common flags from one definition each."""
    parser = Parser(
        prog="chaosfm",
        description="Forecast chaotic and financial time series, and tell the truth about how well it did.",
        epilog=HELP_FOOTER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors (anywhere on the line)")
    parser.add_argument("--version", action="version", version=f"chaosfm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _data.add(commands)
    _evaluate.add(commands)
    _backtest.add(commands)
    _tokenize.add(commands)
    _train.add_train(commands)
    _shard.add(commands)
    _train.add_stages(commands)
    _train.add_sampling(commands)
    _stream.add(commands)
    _stream.add_tune(commands)
    _multitask.add(commands)
    _world.add(commands)
    _agent.add(commands)
    _evaluate.add_demo(commands)
    _config_size.add(commands)
    _greeks.add(commands)
    _inspect.add(commands)
    _bench.add(commands)
    _own(parser)
    return parser


def _own(parser: argparse.ArgumentParser) -> None:
    """Let each (sub)command's namespace name its parser, so an argument no parser took is reported
    by the command it was meant for, with that command's flags to suggest from."""
    parser.set_defaults(cli_parser=parser)
    name_commands(parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _own(sub)


def _split_debug(args: list[str]) -> tuple[list[str], bool]:
    """``args`` without ``--debug`` (accepted anywhere before a ``--``), and whether it was there."""
    end = args.index("--") if "--" in args else len(args)
    kept = [arg for arg in args[:end] if arg != "--debug"] + args[end:]
    return kept, len(kept) != len(args)


def _is_bad_input(error: BaseException) -> bool:
    if isinstance(error, (UsageError, FileNotFoundError, IsADirectoryError, PermissionError)):
        return True
    from chaosfm._artifacts import ArtifactError
    from chaosfm._config import ConfigError
    from chaosfm.data import DataError

    return isinstance(error, (DataError, ConfigError, ArtifactError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chaosfm`` console script; returns the exit code."""
    args_list, debug = _split_debug(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(args_list)
        if extras:
            args.cli_parser.unrecognized(extras)
        if not hasattr(args, "run"):
            args.cli_parser.print_help()
            return 0 if args.command is None and not args_list else 2
        code = args.run(args)
    except KeyboardInterrupt:
        print("chaosfm: interrupted", file=sys.stderr)
        return 130
    except SystemExit as done:  # --help, --version
        return int(done.code or 0)
    except Exception as error:  # noqa: BLE001 - the one place that turns errors into exit codes
        bad_input = _is_bad_input(error)
        if debug:
            traceback.print_exc()
        kind = "error" if bad_input else f"internal error ({type(error).__name__}; rerun with --debug for the trace)"
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())  # one line
        print(f"chaosfm: {kind}: {message}", file=sys.stderr)
        return 2 if bad_input else 1
    return int(code or 0)
