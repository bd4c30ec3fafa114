"""What every job does before its own work: resolve the fence, load data, pick assets, build the
device mesh, write a run folder's ``config.yaml`` and ``meta.json``.

One place for each, so every command means the same by ``--cutoff``, ``--data``, ``--seed`` and
``--out``: the default cutoff is :data:`DEFAULT_CUTOFF_FRACTION` of each asset's rows, for every
command.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from chaosfm._artifacts import atomic_write_bytes, write_meta, write_yaml
from chaosfm._config import ConfigError, split_commas
from chaosfm._progress import say
from chaosfm._storage import MANIFEST, copy_tree, filesystem, is_url
from chaosfm.data import DataError, TimeFence, load

DEFAULT_CUTOFF_FRACTION = 0.8
"""With no cutoff, every command fences each asset after its first 80% of rows."""


def default_out(command: str, suffix: str = "") -> Path:
    """Where a command writes when ``--out`` is not given: ``runs/<command>-<YYYYmmdd-HHMMSS><suffix>``
    (local time), a new name each second, so a second run never lands on the first."""
    from datetime import datetime

    return Path("runs") / f"{command}-{datetime.now():%Y%m%d-%H%M%S}{suffix}"


def out_field(command: str, what: str = "the run folder", suffix: str = "", *, url: bool = False) -> Any:
    """The ``out`` field of a job's config: ``what`` to write, defaulting to :func:`default_out`.

    ``url``: the job writes through :func:`run_location`, so ``out`` may be an fsspec URL (kept as
    text; annotate the field ``Path | str``); otherwise a URL is refused, naming the commands that
    take one (a ``Path`` would fold ``memory://x`` into a local folder ``memory:/x``).
    """
    from functools import partial

    field = Field(default_factory=partial(default_out, command, suffix),
                  description=f"{what}{', a local folder or an fsspec URL' if url else ''} "
                              f"(--out; default: runs/{command}-YYYYmmdd-HHMMSS{suffix})")
    # Field() takes no validator; one in its metadata runs as an Annotated one does, so every job's
    # `out: Path = out_field(...)` is checked here without changing its annotation.
    field.metadata.append(BeforeValidator(partial(_url_out if url else _local_out, command)))
    return field


URL_OUT_COMMANDS = ("train",)
"""The commands whose ``--out`` may be an fsspec URL (:func:`run_location`)."""

WORK_DIR_ENV = "CHAOSFM_WORK_DIR"
"""Where a run whose ``--out`` is a URL is trained before it is copied there (default: the user
cache dir's ``chaosfm/work``, from platformdirs)."""


def _url_out(command: str, value: Any) -> Any:
    if isinstance(value, str):
        return value if is_url(value) else Path(value)
    return value


def _local_out(command: str, value: Any) -> Any:
    if isinstance(value, str) and is_url(value):
        commands = ", ".join(f"`chaosfm {name}`" for name in URL_OUT_COMMANDS)
        raise ValueError(
            f"{command} writes to a local folder, not a URL; only {commands} writes its run folder to a URL. "
            "Write it locally, then copy it with `chaosfm data archive FOLDER URL`"
        )
    return value


def work_folder(url: str, process: int = 0) -> Path:
    """The local folder a run at ``url`` is trained in: ``$CHAOSFM_WORK_DIR`` (default: the user
    cache dir's ``chaosfm/work``), then ``<last part of the URL>-<12 hex digits of its sha256>``
    (``-p<process>`` for processes after the first, so processes on one machine never share one)."""
    import hashlib
    import re

    import platformdirs

    configured = os.environ.get(WORK_DIR_ENV)
    root = Path(configured).expanduser() if configured else Path(platformdirs.user_cache_dir("chaosfm")) / "work"
    name = url.rstrip("/")
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", name.rsplit("/", 1)[-1]) or "run"
    return root / f"{tail}-{hashlib.sha256(name.encode()).hexdigest()[:12]}{f'-p{process}' if process else ''}"


def run_location(
    out: str | os.PathLike[str], *, resume: bool, command: str, process: int = 0
) -> tuple[Path, Callable[..., None] | None]:
    """The local folder a job writes its run into, and how it reaches ``out`` when that is a URL.

    A local ``out`` is the folder itself (no mirror: None). For a URL, the job works in
    :func:`work_folder` and calls the returned ``mirror()`` after each checkpoint and at the end,
    which copies the folder to the URL (:func:`chaosfm._storage.copy_tree`: only changed files,
    each sha256 checked, the manifest last). With ``resume`` the URL's folder is first copied down
    (every file checked against its manifest and its source), replacing the work folder's files;
    without it the URL must hold no run yet.

    Raises:
        ConfigError: ``out`` already holds a run and ``resume`` is not given, or its filesystem is
            not installed.
    """
    if not is_url(out):
        return Path(out), None
    url = str(out)
    local = work_folder(url, process)
    fs, root = filesystem(url)
    holds = fs.exists(root) and bool(fs.find(root))
    if resume and holds:
        copied = copy_tree(url, local, what=f"{command} --resume", force=True, partial_source=True)
        (local / MANIFEST).unlink()  # the job changes the folder from here on: it is no longer a copy
        say(f"staged {url} to {local} ({copied.files} files copied, {copied.skipped} already there)")
    elif holds:
        raise ConfigError(
            f"--out {url}: already holds a run; pass --resume to continue it, or choose another URL"
        )
    elif not resume and local.exists():
        shutil.rmtree(local)  # the work folder of a run that never reached the URL: not this run's

    def mirror(step: int | None = None) -> None:
        copy_tree(local, url, what=f"{command} --out", force=True)

    return local, mirror

def _some(names: list[str]) -> list[str]:
    if not names:
        raise ValueError("name at least one dataset")
    return names


DatasetNames = Annotated[list[str], BeforeValidator(split_commas), AfterValidator(_some)]
"""Built-in dataset names or CSV/Parquet paths: a list, or one comma-separated string; never empty."""

Cutoff = str | float | dict[str, str | float] | None
"""A cutoff setting: one timestamp for every asset, one per asset (``{asset: timestamp}``), or
None for the default fraction."""


def parse_cutoff(value: Any) -> Any:
    """``"sp500=2010-12-31,ndx=1996-12-31"`` (a flag) -> a per-asset mapping; anything else as it is."""
    if isinstance(value, str) and "=" in value:
        pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
        return {name.strip(): date.strip() for name, date in pairs}
    return value


def resolve_fence(
    frame: pd.DataFrame,
    cutoff: Cutoff = None,
    cutoff_fraction: float = DEFAULT_CUTOFF_FRACTION,
    embargo: int = 0,
    *,
    key: str = "cutoff",
) -> TimeFence:
    """The fence of a job over ``frame``: ``cutoff`` (one timestamp, one per asset, or
    ``NAME=DATE,...``) or, when it is None, each asset's row at ``cutoff_fraction``.

    Raises:
        ConfigError: naming ``key`` when the cutoff does not fit the data.
    """
    try:
        fence = TimeFence.resolve(frame, parse_cutoff(cutoff), cutoff_fraction, embargo)
    except DataError as error:
        raise ConfigError(f"{key}: {error}") from None
    if not fence.before(frame).any():
        raise ConfigError(f"{key}: no rows at or before the cutoff {fence.cutoff!s}")
    return fence


def available_memory() -> int | None:
    """Bytes of memory this process may still allocate: the system's available memory, or the
    container's (cgroup v2) limit less its use when that is smaller; None when neither is known."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, min(found)) if found else None


class ReadOptions(BaseModel):
    """How a job reads its data files: the config keys of ``--repair``, ``--sep``, ``--decimal``,
    ``--dayfirst`` and ``--date-format``, one definition every job's config takes in (a mixin:
    ``class EvaluateConfig(ReadOptions)``) and :func:`load_data` reads."""

    repair: bool = Field(False, description="fix what validation rejects (sort, drop bad rows) and list each repair")
    sep: str | None = Field(None, min_length=1, description="CSV separator (default: sniffed among , ; tab |)")
    decimal: str | None = Field(None, min_length=1, max_length=1,
                                description="CSV decimal mark (default: . or , for a ; file written 1,5)")
    dayfirst: bool = Field(False, description="read 03/04/2024 as 3 April")
    date_format: str | None = Field(None, description="strftime format of the timestamps, e.g. %d.%m.%Y %H:%M")

    def read_options(self) -> dict[str, Any]:
        """The ``load`` options these settings mean (only those that differ from the defaults)."""
        values = {"repair": self.repair, "sep": self.sep, "decimal": self.decimal, "dayfirst": self.dayfirst,
                  "date_format": self.date_format}
        return {key: value for key, value in values.items() if value not in (None, False)}


def load_data(
    names: str | Sequence[str], options: Mapping[str, Any] | None = None, read: ReadOptions | None = None
) -> pd.DataFrame:
    """One validated frame of the named datasets or files (comma-joined into one load).

    Args:
        names: dataset names or paths.
        options: ``load`` options of this dataset (a config's ``options`` key); they win over ``read``.
        read: the job's :class:`ReadOptions` (``--repair``, ``--sep``, ...).
    """
    joined = names if isinstance(names, str) else ",".join(names)
    return load(joined, **{**(read.read_options() if read is not None else {}), **dict(options or {})})


def pick_asset(frame: pd.DataFrame, asset: str | None, source: str = "--data") -> pd.DataFrame:
    """The rows of ``asset`` (default: the first asset), index reset, attrs kept.

    Raises:
        ConfigError: the asset is not in the frame.
    """
    names = [str(a) for a in pd.unique(frame["asset"])]
    chosen = names[0] if asset is None else str(asset)
    if chosen not in names:
        raise ConfigError(f"--asset {chosen!r} is not in {source}; assets: {names}")
    part = frame[frame["asset"].astype(str) == chosen].reset_index(drop=True)
    part.attrs = dict(frame.attrs)
    return part


def write_config(out: Path, config: BaseModel | Mapping[str, Any]) -> None:
    """``config.yaml``: the resolved config of the run (what a re-run needs)."""
    out.mkdir(parents=True, exist_ok=True)
    values = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    write_yaml(out / "config.yaml", values)


def finish_run(out: Path, *, seed: int | None, trained_through: Any = None, **extra: Any) -> None:
    """``meta.json`` last, once every file of the run is written: versions, the run's one seed,
    ``trained_through`` and the sha256 of every file."""
    write_meta(out, seed=seed, trained_through=trained_through, extra=extra or None)


LOSS_PLOT_FILE = "loss.png"


def write_loss_plot(out: Path, *, loss_label: str = "loss", title: str = "training loss") -> Path | None:
    """Draw ``out/log.jsonl`` into ``out/loss.png``: training loss (raw and smoothed) and held-out
    loss against step (:func:`chaosfm.report.loss_curve`). A training job calls it at each
    checkpoint and at the end.

    Returns:
        The file written, or None while the log holds no loss yet.
    """
    from chaosfm.report import loss_curve  # matplotlib only for the jobs that draw

    log = Path(out) / "log.jsonl"
    if not log.is_file():
        return None
    records = []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the line a killed run was writing; the loop drops it on resume too
    if not any("loss" in r or "val_loss" in r for r in records):
        return None
    path = Path(out) / LOSS_PLOT_FILE
    atomic_write_bytes(path, loss_curve(records, loss_label=loss_label, title=title))
    return path


_MAY_CHANGE_ON_RESUME = {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "eval_every"}
"""``train:`` keys a resumed run may change: how long it runs and how often it reports."""


def check_resume(saved: Mapping[str, Any], current: Mapping[str, Any], sections: Sequence[str]) -> None:
    """Resuming must not change what the run computes: every key of ``sections`` but the loop's
    length and reporting must be as the run being resumed recorded it.

    Raises:
        ConfigError: naming the first key that differs.
    """
    for section in sections:
        before, now = saved.get(section) or {}, current.get(section) or {}
        for name in sorted(set(before) | set(now)):
            if section == "train" and name in _MAY_CHANGE_ON_RESUME:
                continue
            if before.get(name) != now.get(name):
                raise ConfigError(
                    f"{section}.{name}: is {now.get(name)!r} but the run being resumed used "
                    f"{before.get(name)!r}; resume with the same config or start a new folder"
                )
