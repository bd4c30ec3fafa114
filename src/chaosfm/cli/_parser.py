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


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit 2 itself
        raise UsageError(f"{self.prog}: {message}")


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


_COMMON: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "data": (("--data",), {"help": "dataset names or CSV/Parquet paths, comma-separated"}),
    "cutoff": (("--cutoff",), {
        "help": "last timestamp fitting may see: DATE (or a number), or NAME=DATE,... per asset "
                "(default: each asset's row at 80%% of its rows)"}),
    "seed": (("--seed",), {"type": int, "help": "the run's one seed: every random draw derives from it"}),
    "out": (("--out",), {"type": Path, "help": "where to write: the run folder (for forecast, the table file)"}),
    "config": (("--config",), {"type": Path, "help": "YAML config file; flags override it"}),
    "set": (("--set",), {"action": "append", "metavar": "KEY=VALUE", "dest": "assignments", "type": assignment,
                         "help": "set any config key (dotted, e.g. train.steps=200); repeatable; flags win"}),
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
                                         "help": "strftime format of the timestamps, e.g. '%%d.%%m.%%Y %%H:%%M'"}),
}

READ_FLAGS = ("repair", "sep", "decimal", "dayfirst", "date_format")
"""How data files are read: every command that takes ``--data`` takes these too (config keys of the
same names, one definition: ``jobs._common.ReadOptions``)."""


def common(*names: str, required: tuple[str, ...] = ()) -> list[argparse.ArgumentParser]:
    """Parent parsers of the common flags ``names`` (``required`` ones must be given); ``data``
    brings the :data:`READ_FLAGS` with it."""
    parents = []
    if "data" in names:
        names = (*names, *(flag for flag in READ_FLAGS if flag not in names))
    for name in names:
        flags, options = _COMMON[name]
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument(*flags, **options, **({"required": True} if name in required else {}))
        parents.append(parent)
    return parents


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
