"""``chaosfm stream``: the online predictor over one column of a dataset, over lines on stdin, or
over a live feed (``--data ws://HOST:PORT/PATH`` or ``tcp://HOST:PORT``: ``_feed.py``).

The predictor's own settings and its operations (snapshots, warm start, determinism, the metrics
endpoint) are a :class:`~chaosfm.predictor.StreamConfig` (the file ``--config`` names, and what
``chaosfm tune`` writes as ``best.yaml``); this job adds what to stream and where to write:
``predictions.csv``, ``telemetry.csv``, ``metrics.json`` and ``telemetry.png`` in ``out``.
"""

from __future__ import annotations

import csv
import io
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, atomic_write_text, write_json
from chaosfm._config import ConfigError, enable_x64, read_config
from chaosfm.data import frame_kind
from chaosfm._progress import say
from chaosfm.jobs._common import ReadOptions, finish_run, load_data, out_field, pick_asset
from chaosfm.jobs._feed import Feed, FeedConfig, FeedLost, is_feed
from chaosfm.predictor import (
    PREDICTION_COLUMNS,
    STREAM_TELEMETRY_COLUMNS,
    Resent,
    StreamConfig,
    StreamResult,
    run_stream,
)

__all__ = ["FLAGS", "FeedConfig", "FeedLost", "StreamInterrupted", "StreamJob", "live_lines", "read", "run"]

FLAGS = {name: f"stream.{name}" for name in
         ("column", "seed", "on_bad_line", "snapshot", "snapshot_every", "restore", "metrics_port", "cache_dir",
          "deterministic", "compilation_cache", "warm_up", "calibration_gamma", "x64")}
"""CLI flag -> config key."""

STDIN = "-"


class StreamInterrupted(KeyboardInterrupt):
    """A SIGINT stopped the stream after its outputs (and final snapshot) were written.

    Attributes:
        metrics: ``metrics.json`` as written, over the lines read before the interrupt.
    """

    def __init__(self, metrics: dict[str, Any]):
        super().__init__("interrupted")
        self.metrics = metrics


class StreamJob(ReadOptions):
    """What to stream (``data``: a dataset, a file, ``-`` for lines on stdin, or a feed URL), where
    to write, how a feed reconnects, and the :class:`StreamConfig`."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="built-in name, CSV/Parquet path, - for lines on stdin, or a live feed"
                                  " ws://HOST:PORT/PATH or tcp://HOST:PORT")
    out: Path = out_field("stream", "folder for predictions, telemetry, metrics, plot")
    asset: str | None = Field(None, description="asset of a multi-asset frame (default: the first)")
    length: int | None = Field(None, ge=1, description="stream only the first N rows")
    stream: StreamConfig = Field(default_factory=StreamConfig)
    feed: FeedConfig = Field(default_factory=FeedConfig, description="reconnection of a live feed (--data URL)")

    @property
    def stdin(self) -> bool:
        """The lines come from stdin (``--data -``), which the caller reads."""
        return self.data == STDIN

    @property
    def live(self) -> bool:
        """The input is live (stdin or a feed): predictions as they come, bad lines skipped."""
        return self.stdin or is_feed(self.data)


def read(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> StreamJob:
    """A :class:`StreamJob`: ``path`` is a StreamConfig file (its keys under ``stream``); flag
    ``overrides`` (dotted keys) on top."""
    values = dict(overrides or {})
    stream = {key.split(".", 1)[1]: value for key, value in values.items() if key.startswith("stream.")}
    top = {key: value for key, value in values.items() if not key.startswith("stream.")}
    if (top.get("data") == STDIN or is_feed(top.get("data"))) and "on_bad_line" not in stream:
        # A live feed keeps going past a bad line (reported at once, state kept); a file stops.
        stream["on_bad_line"] = "skip"
    config = read_config(StreamConfig, path, stream, source="command line")
    return read_config(StreamJob, None, {**top, "stream": config.model_dump(mode="json")}, source="command line")


def live_lines(source: Iterable[str], *, buffered: int = 65_536, poll_seconds: float = 0.2,
               name: str = "chaosfm-stdin") -> Iterator[str]:
    """The lines of ``source`` (stdin, or a :class:`~chaosfm.jobs._feed.Feed`), read by a daemon
    thread (called ``name``) into a bounded queue.

    Reading in the main thread would leave a Ctrl-C to chance: the kernel may hand SIGINT to one
    of XLA's threads, and a main thread blocked in ``read`` then sleeps on until the next line
    arrives. Here the main thread waits on the queue ``poll_seconds`` at a time, so Python runs a
    signal's handler within that, whatever thread took the signal. At most ``buffered`` lines
    wait in the queue (the reader blocks beyond that, as a pipe does; a socket's reader then stops
    reading, and the sender is slowed by TCP's flow control). An error of the reader is
    raised where the lines are read.
    """
    pending: queue.Queue = queue.Queue(maxsize=buffered)
    done = object()

    def pump() -> None:
        try:
            for line in source:
                pending.put(line)
        except BaseException as error:  # noqa: BLE001 - handed to the reading thread, not lost
            pending.put(error)
        pending.put(done)

    threading.Thread(target=pump, name=name, daemon=True).start()
    while True:
        try:
            item = pending.get(timeout=poll_seconds)
        except queue.Empty:
            continue
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def run(
    config: StreamJob,
    *,
    lines: Iterable[str] | None = None,
    on_prediction: Callable[[dict[str, Any]], None] | None = None,
    on_bad_line: Callable[[Exception], None] | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    column_given: bool = True,
) -> dict[str, Any]:
    """Stream and write the outputs; return ``metrics.json``.

    Args:
        config: the job.
        lines: the lines of stdin when ``config.data`` is ``-`` (a feed's are read here).
        on_prediction, on_bad_line, on_ready: hooks of :func:`chaosfm.predictor.run_stream`.
        column_given: whether the column was chosen; if not, a trajectory streams ``x0``.

    Raises:
        DataError: a bad line that stopped the stream (``on_bad_line: raise``), after the outputs of
            every good line before it are written.
        FeedLost: (a DataError) a feed that could not be reached again after ``feed.max_retries``
            attempts, naming its URL, after the outputs of every line it sent are written.
        ConfigError: ``out`` is not a writable folder, or ``stream.snapshot``'s folder does not
            exist or is not writable (checked before the first step).
        StreamInterrupted: a KeyboardInterrupt (SIGINT) during the stream, after the outputs of
            every line before it and the final snapshot are written.
    """
    stream = config.stream
    if enable_x64(stream.x64) and not stream.x64:  # CHAOSFM_X64=1 without the key: say so in the run
        stream = stream.model_copy(update={"x64": True})
    hooks = {"on_bad_line": on_bad_line, "on_ready": on_ready}
    lost: list[FeedLost] = []
    if config.stdin:
        _check_outputs(config)
        result = run_stream(stream, lines=lines, on_prediction=on_prediction, **hooks)
    elif config.live:
        if lines is not None:
            raise ValueError(f"lines= is for --data -; the feed {config.data} is read by the job")
        feed = Feed(config.data, config.feed)
        _check_outputs(config)
        result = _stream_feed(feed, stream, lost, on_prediction=on_prediction, **hooks)
    else:
        frame = load_data(config.data, read=config)
        if not column_given and stream.column not in frame.columns and frame_kind(frame) == "trajectory":
            stream = stream.model_copy(update={"column": "x0"})
        if stream.column not in frame.columns:
            raise ConfigError(f"--column {stream.column!r} is not in {config.data}; columns: {list(frame.columns)}")
        part = pick_asset(frame, config.asset, config.data)
        if config.length:
            part = part.iloc[: config.length]
        _check_outputs(config)
        result = run_stream(stream, series=part[stream.column].to_numpy(),
                            timestamps=part["timestamp"].astype(str).tolist(), on_prediction=on_prediction, **hooks)
    write(Path(config.out), result, plot=stream.plot, seed=stream.seed)
    if result.error is not None:
        raise result.error
    if result.interrupted:
        raise StreamInterrupted(result.metrics)
    if lost:
        raise lost[0]
    return result.metrics


def _stream_feed(feed: Feed, stream: StreamConfig, lost: list[FeedLost], **hooks: Any) -> StreamResult:
    """:func:`run_stream` over ``feed``'s lines, read by :func:`live_lines`' thread; a lost feed ends
    the lines as stdin's end would (its error put in ``lost``), so every output is still written.

    A row sent again after a reconnect is skipped by timestamp (``resends``) and noted on stderr.
    """

    def lines() -> Iterator[str]:
        try:
            yield from live_lines(feed, name="chaosfm-feed")
        except FeedLost as error:
            lost.append(error)

    def report_resent(resent: Resent) -> None:
        say(f"chaosfm: {feed.url}, {resent}: skipped")

    try:
        result = run_stream(stream, lines=lines(), source=feed.url, resends=True, on_resent=report_resent, **hooks)
    finally:
        feed.close()
    result.metrics["feed"] = feed.summary()
    return result


def _check_outputs(config: StreamJob) -> None:
    """Fail before the first step, not after the last, on an output that cannot be written: the
    ``out`` folder (created here) and the snapshot's folder.

    Raises:
        ConfigError: naming the path and what is wrong with it.
    """
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise ConfigError(f"out (--out) {out}: cannot write the stream's outputs there"
                          f" ({error.strerror or error})") from None
    snapshot = config.stream.snapshot
    if snapshot is None:
        return
    where, folder = f"stream.snapshot (--snapshot) {snapshot}", Path(snapshot).parent
    if not folder.is_dir():
        raise ConfigError(f"{where}: its folder {folder} does not exist; create it or choose another path")
    if Path(snapshot).is_dir():
        raise ConfigError(f"{where}: is a folder; give a file path (e.g. {Path(snapshot) / 'stream.msgpack'})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: its folder {folder} is not writable")


def write(out: Path, result: StreamResult, *, plot: bool = True, seed: int | None = None) -> None:
    """``predictions.csv``, ``telemetry.csv``, ``metrics.json``, ``telemetry.png`` and ``meta.json``."""
    out.mkdir(parents=True, exist_ok=True)
    tables = (("predictions.csv", result.predictions, PREDICTION_COLUMNS),
              ("telemetry.csv", result.telemetry, STREAM_TELEMETRY_COLUMNS))
    for name, rows, columns in tables:
        buffer = io.StringIO()  # a header even without rows: an empty run still gives readable tables
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()) if rows else list(columns))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / name, buffer.getvalue())
    write_json(out / "metrics.json", result.metrics)
    if plot and result.telemetry:
        from chaosfm.report import stream_telemetry, to_png  # matplotlib: not before the first prediction

        atomic_write_bytes(out / "telemetry.png", to_png(stream_telemetry(result.telemetry, result.predictions)))
    finish_run(out, seed=seed, trained_through=None, kind="stream")
