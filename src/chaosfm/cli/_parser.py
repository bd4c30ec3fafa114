"""The argument parser's building blocks: the common flags (one spelling, one meaning each), and
turning parsed flags into a job's config overrides.

Nothing here imports JAX or the library: a mistyped command or flag is reported before any of it
loads.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """Bad command-line arguments."""


ENVIRONMENT = {
    "CHAOSFM_PROGRESS": "1 shows progress bars even when stderr is not a terminal, 0 hides them",
    "CHAOSFM_QUIET": "1 silences notes on stderr (repairs, where files went)",
    "CHAOSFM_X64": "1 computes in float64 (the same as --x64 where a command has it)",
    "CHAOSFM_CACHE_DIR": "JAX's compilation cache and the predictor's exports (default: the user cache dir)",
    "CHAOSFM_CONFIG_DIR": "where cache.key, the key that signs the predictor's exports, lives",
    "CHAOSFM_WORK_DIR": "where a run whose --out is a URL trains before each copy up (default: the user cache dir)",
}
"""The environment variables chaosfm reads, shown in ``chaosfm --help`` and the README."""

HELP_FOOTER = "environment:\n" + "\n".join(f"  {name:<20} {what}" for name, what in ENVIRONMENT.items()) + (
    "\n\n--debug may go anywhere on the line; it shows the trace of an error.")


class Parser(argparse.ArgumentParser):
    """argparse's parser, with errors raised (not printed and exited) and a suggestion for a
    mistyped choice."""

    def error(self, message: str) -> None:  # argparse would print usage and exit 2 itself
        import re

        from chaosfm._config import did_you_mean

        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = [c.strip().strip("'") for c in choice.group(2).split(",")]
            message = f"{message}{did_you_mean(choice.group(1), options)}"
        command = self.prog.removeprefix("chaosfm").strip()
        raise UsageError(f"{message} (see chaosfm {command + ' ' if command else ''}--help)")

    def unrecognized(self, extras: list[str]) -> None:
        """Fail on arguments no parser took, suggesting this parser's closest flag for each."""
        from chaosfm._config import did_you_mean

        flags = [flag for action in self._actions for flag in action.option_strings]
        hints = {extra: did_you_mean(extra.split("=")[0], flags) for extra in extras if extra.startswith("-")}
        hints = {extra: hint for extra, hint in hints.items() if hint}
        if len(hints) > 1:
            hint = "; " + "; ".join(f"{extra}: {text.removeprefix('; ')}" for extra, text in hints.items())
        else:
            hint = "".join(hints.values())
        self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def assignment(text: str) -> tuple[str, Any]:
    """A ``--set`` value ``KEY=VALUE`` as ``(dotted key, value read as YAML)``: the one reader of
    assignments, run while parsing, so a malformed one is reported before any job loads. Dates read
    as ISO text (every config takes its dates as strings).

    Raises:
        argparse.ArgumentTypeError: naming the assignment and what is wrong with it.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. train.seed=3")
    import yaml  # small and pure Python: still no JAX or NumPy before a bad flag is reported

    try:
        # One value needs no alias, and a few nested ones expand to billions of copies.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(raw, Loader=yaml.SafeLoader)):
            raise argparse.ArgumentTypeError(f"{text[:200]!r}: the value uses a YAML alias (*NAME); write it out")
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML ({problem})") from None
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r}: no value; leave the key out to keep its default")
    return key, _plain(value)


def location(text: str) -> Path | str:
    """A folder flag's value: an fsspec URL (``memory://x``, ``s3://b/x``) stays text, since a Path
    would fold its ``//``; anything else is a Path."""
    from chaosfm._storage import is_url  # no fsspec: is_url only reads the text

    return text if is_url(text) else Path(text)


_COMMON: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "data": (("--data",), {"help": "dataset names or CSV/Parquet paths, comma-separated (default: the config's)"}),
    "cutoff": (("--cutoff",), {
        "help": "last timestamp fitting may see: DATE (or a number), or NAME=DATE,... per asset "
                "(default: each asset's row at 80%% of its rows)"}),
    "seed": (("--seed",), {"type": int, "help": "the run's one seed: every random draw derives from it (default: the "
                                                     "config's, else 0)"}),
    "out": (("--out",), {"type": location,
                         "help": "where to write: the run folder (default: runs/{command}-YYYYmmdd-HHMMSS)"}),
    "config": (("--config",), {"type": Path, "help": "YAML config file; flags override it (default: none, the built-in "
                                                         "defaults)"}),
    "set": (("--set",), {"action": "append", "metavar": "KEY=VALUE", "dest": "assignments", "type": assignment,
                         "help": "set any config key (dotted, e.g. train.steps=200); repeatable; flags win "
                                 "(default: none)"}),
    "resume": (("--resume",), {"action": "store_true", "default": None,
                               "help": "continue from the run folder's newest checkpoint"}),
    "repair": (("--repair",), {"action": "store_true", "default": None,
                               "help": "fix what validation rejects (sort rows, drop duplicate timestamps keeping "
                                       "the last, drop non-finite rows) and list each repair on stderr"}),
    "sep": (("--sep",), {"metavar": "SEP", "help": "CSV separator (default: sniffed among , ; tab |)"}),
    "decimal": (("--decimal",), {"metavar": "MARK",
                                 "help": "CSV decimal mark (default: . or , for a ; file with numbers like 1,5)"}),
    "dayfirst": (("--dayfirst",), {"action": "store_true", "default": None,
                                   "help": "read dates like 03/04/2024 as 3 April (default: month first)"}),
    "date_format": (("--date-format",), {"metavar": "FMT",
                                         "help": "strftime format of the timestamps, e.g. '%%d.%%m.%%Y %%H:%%M' "
                                                 "(default: inferred)"}),
    "x64": (("--x64",), {"action": "store_true", "default": None,
                         "help": "run in float64 (default: float32; also CHAOSFM_X64=1)"}),
}

READ_FLAGS = ("repair", "sep", "decimal", "dayfirst", "date_format")
"""How data files are read: every command that takes ``--data`` takes these too (config keys of the
same names, one definition: ``jobs._common.ReadOptions``)."""


def common(*names: str, required: tuple[str, ...] = (), helps: dict[str, str] | None = None
           ) -> list[argparse.ArgumentParser]:
    """Parent parsers of the common flags ``names`` (``required`` ones must be given; ``helps``
    replaces a flag's help where its default differs); ``data`` brings the :data:`READ_FLAGS` with it.
    ``{command}`` in a help text becomes the command's words joined by ``-`` (:func:`name_commands`)."""
    parents = []
    if "data" in names:
        names = (*names, *(flag for flag in READ_FLAGS if flag not in names))
    for name in names:
        flags, options = _COMMON[name]
        options = {**options, **({"help": helps[name]} if helps and name in helps else {})}
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument(*flags, **options, **({"required": True} if name in required else {}))
        parents.append(parent)
    return parents


def name_commands(parser: argparse.ArgumentParser) -> None:
    """Fill ``{command}`` in the help texts of ``parser``'s flags with its command words
    (``chaosfm stage rl`` -> ``stage-rl``), as the job names its default run folder, and say of
    every switch that it is off unless given."""
    command = "-".join(parser.prog.split()[1:])
    for action in parser._actions:
        if action.help and "{command}" in action.help:
            action.help = action.help.replace("{command}", command)
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction))
        if switch and action.option_strings and action.help and "default" not in action.help:
            action.help += " (default: off)"


def split(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]`` (None stays None)."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def overrides(args: argparse.Namespace, flags: dict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """Config overrides from the parsed flags ``names``: each under its config key (``flags`` maps a
    flag to a dotted key; a flag not in it is a top-level key of the same name), then ``--set``
    assignments under them. The :data:`READ_FLAGS` are always taken when the command has them. A flag
    that was not given is left out."""
    values = dict(getattr(args, "assignments", None) or [])
    for name in (*names, *(flag for flag in READ_FLAGS if flag not in names)):
        value = getattr(args, name, None)
        if value is None:
            continue
        values[flags.get(name, name)] = str(value) if isinstance(value, Path) else value
    return values


def _plain(value: Any) -> Any:
    """A ``--set`` value as a flag would give it: YAML reads ``2010-12-31`` as a date, but every
    config takes dates (cutoffs) as strings."""
    import datetime

    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
