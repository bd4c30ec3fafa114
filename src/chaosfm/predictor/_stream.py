"""``run_stream``: the online predictor over a series (an array) or over text lines (stdin, a feed).

Lines are CSV (a header naming the column, or one value per line) or JSON objects
(``{"timestamp": ..., "close": ...}``), one observation each.

It returns a :class:`StreamResult`: the metrics, one prediction row and one telemetry row per
observation, and the bad line that stopped the stream, if one did. The ``chaosfm stream`` job
writes them (``predictions.csv``, ``telemetry.csv``, ``metrics.json``, ``telemetry.png``).

Bad input (NaN, inf, not a number, a value the predictor's dtype cannot hold, a non-positive value with log
increments; on stdin every rule :func:`chaosfm.data.validate` applies to a file, timestamp order
included, and an unreadable CSV row): with ``config.on_bad_line == "raise"`` (default) the stream
stops at the first bad line and the result carries its :class:`chaosfm.data.DataError` (naming
the input line) beside the rows of every good line before it; the predictor's state is the last
good one. With ``"skip"`` the line is recorded in ``metrics["bad_lines"]`` (row, line number
and message), skipped, and the run goes on from the last good state; the predictor is stepped with
NaN for it (a missing observation: state kept, counted towards ``degraded_inference``, no row
written). A KeyboardInterrupt (SIGINT)
ends the stream as the input's end would: the rows so far are returned
(``StreamResult.interrupted``) and the final snapshot is written. A feed that may send rows
again after a reconnect (``resends=True``) has them skipped and counted, not reported as bad:
see :class:`Resent`.

The columns of a prediction row are :data:`PREDICTION_COLUMNS` (its docstring says what each
holds); a series (file mode) shows its progress over rows on a terminal (``chaosfm._progress``).

Operations: the predictor's programs are compiled, or loaded from the persistent
compilation cache and their exports, by a warm-up pass before the first observation
(``_warm.py``, ``_export.py``); ``config.snapshot`` is rewritten
atomically every ``snapshot_every`` steps and at the end, and ``config.restore`` resumes from one
(``_snapshot.py``); ``config.metrics_port`` serves the telemetry to Prometheus while the run lasts
(``_metrics_server.py``); ``config.deterministic`` pins precision and PRNG (``_warm.py``).
``config.x64`` says the run must compute in float64: JAX's x64 must then be on (the job turns it
on, :func:`chaosfm._config.enable_x64`); the stream computes in whatever the process does and
records it as ``metrics["x64"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import numpy as np
import pandas as pd

from chaosfm._artifacts import nan_to_none
from chaosfm._progress import compiling, progress
from chaosfm.data import DataError
from chaosfm.evaluate import crps, directional_accuracy, mae
from chaosfm.forecasters import ACI_LEVELS, RandomWalk, aci_init, aci_samples, aci_update
from chaosfm.predictor._config import StreamConfig
from chaosfm.predictor._lines import Resent, _Lines, _series_items
from chaosfm.predictor._metrics_server import MetricsServer
from chaosfm.predictor._packed_step import packed_step
from chaosfm.predictor._snapshot import Snapshot, SnapshotError, StreamProgress, load_snapshot, save_snapshot
from chaosfm.predictor._telemetry import FLAGS, TELEMETRY_COLUMNS, telemetry_record
from chaosfm.predictor._warm import PRNG_IMPL, compilation_cache_dir, deterministic_mode, enable_compilation_cache, warm_up


STREAM_TELEMETRY_COLUMNS = (*TELEMETRY_COLUMNS, "row", "line", "timestamp")
"""The columns of a stream's telemetry row (``row``, ``line``, ``timestamp`` as in a prediction row)."""
PREDICTION_COLUMNS = ("row", "line", "timestamp", "observed", "previous", "prediction_next", "0.1", "0.9", "warm")
"""The columns of a prediction row, one per observation after the first:

- ``row``: the observation's 0-based data row (as :func:`chaosfm.data.validate` numbers rows in
  its errors): the position in the streamed series of a file or dataset (one asset, after
  ``--length``); on stdin or a feed, the data lines read so far (header not counted, bad lines
  counted).
- ``line``: its 1-based line in the text read (stdin, a feed; the header counts), empty for a
  file or dataset: a loaded frame's rows are no longer its file's lines (a Parquet file or a
  built-in dataset has none; a repair may sort or drop rows).
- ``timestamp``: as read (empty when the input has none).
- ``observed``, ``previous``: this observation and the one before it.
- ``prediction_next``: the mean of the predictor's one-step samples of the next observation.
- ``0.1``, ``0.9``: their 10% and 90% quantiles, named as ``chaosfm forecast`` names quantile
  columns (``forecasts.parquet``, Chronos' ``predict_df``).
- ``warm``: whether the predictor was past its warm-up period (only warm rows are scored).

With calibration (``calibration_gamma``), ``level_0.1`` and ``level_0.9`` follow: the levels the
samples were read at to give ``0.1`` and ``0.9``.
"""


class StreamResult(NamedTuple):
    """What a stream produced.

    Attributes:
        metrics: scores beside the random walk, latency, flags, bad lines, start-up (see
            :func:`run_stream`).
        predictions: one row per observation: the value, the prediction of the next one and its
            10% and 90% quantiles, whether the predictor was warm.
        telemetry: one row per step: Hölder exponent, CUSUM, kernel weights, flags, step time.
        error: the bad line that stopped the stream (``on_bad_line="raise"``), or None.
        interrupted: a KeyboardInterrupt (SIGINT) stopped the stream; the rows are those made
            before it, and the final snapshot was written.
    """

    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    telemetry: list[dict[str, Any]]
    error: DataError | None = None
    interrupted: bool = False


def run_stream(
    config: StreamConfig,
    *,
    series: np.ndarray | None = None,
    timestamps: Any = None,
    lines: Iterable[str] | None = None,
    on_prediction: Callable[[dict[str, Any]], None] | None = None,
    on_bad_line: Callable[[DataError], None] | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    metrics_server: MetricsServer | None = None,
    source: str | None = None,
    resends: bool = False,
    on_resent: Callable[[Resent], None] | None = None,
) -> StreamResult:
    """Run the predictor over ``series`` or ``lines``; return the metrics and the rows.

    Args:
        config: the stream and predictor configuration.
        series: ``(T,)`` values (e.g. a frame's close column), or
        timestamps: optional ``(T,)`` labels of ``series``, copied to the CSVs.
        lines: CSV text lines (stdin): one value per line, or rows with a header naming
            ``config.column``. Exactly one of ``series`` and ``lines`` is given.
        on_prediction: called after every observation with its prediction row (flush it).
        on_bad_line: called with the error of every line skipped (``on_bad_line="skip"``), as it
            happens, so a live feed can report it at once.
        on_ready: called once, when the predictor is ready for the first observation, with
            ``startup_seconds``, ``metrics_url``, ``compilation_cache`` and ``restored_from``.
        metrics_server: serve the telemetry on this :class:`MetricsServer` (left open); by
            default one is started on ``config.metrics_port`` (if set) and closed at the end.
        source: the name of ``lines`` in errors (default ``<stdin>``; a feed's URL).
        resends: ``lines`` come from a feed that may send rows again after a reconnect: a row
            whose timestamp is not after the last good row's is skipped as sent again (counted in
            ``metrics["resent_lines"]``, passed to ``on_resent``; the predictor is not stepped),
            not reported as a bad line, and a header line sent again is passed over. With
            ``config.restore`` the snapshot's last row counts as the last good one.
        on_resent: called with the :class:`Resent` of every row skipped as sent again.

    With ``config.restore`` the run continues from a snapshot: the predictor state, its PRNG keys
    and the last prediction (scored against the first new value) come from the file, and a
    ``series`` resumes after the snapshot's last line (its timestamp must match); ``lines`` are
    all new. ``config.seed`` is then unused. A restored run predicts exactly what an uninterrupted
    one would have (bit for bit in deterministic mode on the same machine).

    Returns:
        A :class:`StreamResult` whose metrics hold CRPS, MAE and directional accuracy of the
        predictor and of the random walk,
        step latency p50/p99 (ms, after warm-up), counts of each flag, bad lines;
        ``startup_seconds`` (from the call to the predictor being ready for its first
        observation: compilation cache, restore, step compiled or loaded by the warm-up pass,
        metrics endpoint up), ``first_step_ms`` (the first prediction's step) and
        ``programs`` (how each of the predictor's programs was made: ``"traced"`` without a
        cache, ``"exported"`` traced and written to it, ``"loaded"`` from it).

    Raises:
        SnapshotError: ``config.restore`` is damaged, of another format, of another config, or of
            another float dtype than this process computes in.
        ValueError: ``config.x64`` is set but JAX's x64 is off in this process.
    """
    begin = time.perf_counter()
    if (series is None) == (lines is None):
        raise ValueError("give exactly one of series= and lines=")
    if config.x64 and not jax.config.jax_enable_x64:
        # Switching it on here would change every array the caller makes from now on: the caller
        # (the job) decides, before it creates any.
        raise ValueError("x64 is set but JAX computes in float32 here: call chaosfm._config.enable_x64(True)"
                         " (or set CHAOSFM_X64=1) before creating any array")
    with deterministic_mode(config.deterministic):
        return _run(config, series, timestamps, lines, on_prediction, on_bad_line, on_ready, metrics_server, begin,
                    source=source, resends=resends, on_resent=on_resent)


def _run(config, series, timestamps, lines, on_prediction, on_bad_line, on_ready, server, begin, *, source,
         resends, on_resent):
    predictor_config = config.predictor
    log = predictor_config.increments == "log"
    cache = enable_compilation_cache(compilation_cache_dir(config.cache_dir)) if config.compilation_cache else None
    restored = _restore(config) if config.restore is not None else None
    key = jax.random.key(config.seed, impl=PRNG_IMPL if config.deterministic else None)
    key, key_init, key_warm = jax.random.split(key, 3)
    # A cold start compiles for tens of seconds (docs/predictor.md): say so rather than sit silent.
    with compiling("the online predictor"):
        # Exported programs live beside the compilation cache: with both, a restart neither traces
        # nor compiles (_export.py).
        step = packed_step(predictor_config, export_dir=cache / "exports" if cache is not None else None)
        training_compile = (warm_up(step, predictor_config, key=key_warm, codec=config.snapshot is not None)
                            if config.warm_up else None)

    source = source or "<stdin>"
    if series is not None:
        values = np.asarray(series, dtype=np.float64).ravel()
        stamps = list(timestamps) if timestamps is not None else [None] * len(values)
        if len(stamps) != len(values):
            raise ValueError(f"{len(stamps)} timestamps for {len(values)} values")
        first = _resume_position(config.restore, restored.stream, stamps) if restored is not None else 0
        items = progress(_series_items(values, stamps, first, config.column, log, step.dtype), "streaming",
                         total=len(values) - first)
    else:
        parser = _Lines(config.column.lower(), log, source, step.dtype, resends=resends)
        if resends and restored is not None and restored.stream.timestamp is not None:
            parser.resume_after(restored.stream.timestamp, restored.stream.previous_value)
        items = parser(lines)

    state = None
    started, count, previous_value, previous_samples = False, 0, None, None
    gamma = config.calibration_gamma
    aci = aci_init((gamma,), 1, 1) if gamma else None
    previous_quantiles = None
    carried: list[dict[str, Any]] = []  # the restored last prediction: scored, not rewritten
    last_line, last_stamp = 0, None
    if restored is not None:
        resumed = restored.stream
        state = step.pack(restored.state)
        started, count, key_warm = resumed.started, resumed.steps, resumed.key
        previous_value, previous_samples = resumed.previous_value, resumed.previous_samples
        carried = [resumed.last_prediction] if resumed.last_prediction is not None else []
        last_line, last_stamp = resumed.line, resumed.timestamp
        if aci is not None and resumed.calibration_levels is not None:
            aci = aci._replace(levels=np.asarray(resumed.calibration_levels, np.float64).reshape(aci.levels.shape))
            previous_quantiles = resumed.previous_quantiles

    def save() -> None:
        position = StreamProgress(
            line=last_line, timestamp=last_stamp, steps=count, started=started, key=key_warm,
            previous_value=previous_value, previous_samples=previous_samples,
            last_prediction=(carried + prediction_rows)[-1] if carried or prediction_rows else None,
            calibration_levels=None if aci is None else aci.levels.reshape(-1),
            previous_quantiles=previous_quantiles,
        )
        save_snapshot(step.unpack(state), config.snapshot, config=predictor_config, stream=position)

    own_server = server is None and config.metrics_port is not None
    if own_server:
        server = MetricsServer(config.metrics_port)
    startup_seconds = time.perf_counter() - begin
    ready = {
        "startup_seconds": startup_seconds,
        "metrics_url": server.url if server is not None else None,
        "compilation_cache": str(cache) if cache is not None else None,
        "restored_from": str(config.restore) if config.restore is not None else None,
    }
    if on_ready is not None:
        on_ready(ready)

    prediction_rows: list[dict[str, Any]] = []
    telemetry_rows: list[dict[str, Any]] = []
    sample_rows: list[np.ndarray] = []
    bad_lines: list[dict[str, Any]] = []
    resent_lines = 0
    snapshots = 0
    pending: DataError | None = None
    interrupted = False
    try:
        try:
            for data_row, line, stamp, value in items:
                if isinstance(value, Resent):  # nothing is missing: the predictor already saw this row
                    resent_lines += 1
                    if on_resent is not None:
                        on_resent(value)
                    continue
                if isinstance(value, DataError):
                    error = value
                    if config.on_bad_line == "raise" or error.row is None:  # no row: the header, nothing to skip
                        pending = error
                        break
                    bad_lines.append({"row": data_row, "line": line, "error": str(error)})
                    if on_bad_line is not None:
                        on_bad_line(error)
                    if state is not None:
                        # A missing observation: the step keeps the state but counts it towards
                        # degraded_inference (shown on the next good line's telemetry row).
                        _, state = step(state, step.value(np.nan))
                    continue
                # A snapshot's ``line`` is where a restore resumes: rows done of a series, the last
                # line read of a feed.
                last_line, last_stamp = data_row + 1 if line is None else line, None if stamp is None else str(stamp)
                if state is None:
                    state = step.init(step.value(value), key_init)
                    previous_value = value
                    continue
                start = time.perf_counter()
                packed_out, state = step(state, step.value(value))
                out = step.output(packed_out)  # one host copy of two small vectors
                wall = time.perf_counter() - start
                count += 1
                if not started and out.warm:
                    state = step.warm_start(state, key_warm)
                    started = True
                row = telemetry_record(count, out, value, wall)
                row["row"], row["line"], row["timestamp"] = data_row, line, stamp  # as STREAM_TELEMETRY_COLUMNS
                telemetry_rows.append(row)
                if server is not None:
                    server.observe(row)
                samples = np.asarray(out.samples, np.float64)
                if aci is not None and out.warm:
                    if previous_quantiles is not None:  # the last prediction's misses move the levels
                        aci = aci_update(aci, 0, np.array([value]), previous_quantiles[None, None], np.ones(1), (gamma,))
                    samples, previous_quantiles = aci_samples(samples, aci.levels[0, 0, 0])
                prediction = dict(zip(PREDICTION_COLUMNS, (
                    data_row, line, stamp, value, previous_value, float(out.prediction),
                    float(np.quantile(samples, 0.1)), float(np.quantile(samples, 0.9)), bool(out.warm))))
                if aci is not None:  # the levels the 0.1 and 0.9 columns were read at
                    grid = list(ACI_LEVELS)
                    prediction["level_0.1"] = float(aci.levels[0, 0, 0, grid.index(0.1)])
                    prediction["level_0.9"] = float(aci.levels[0, 0, 0, grid.index(0.9)])
                if previous_samples is not None:  # before the row: an interrupt between them leaves both usable
                    sample_rows.append(previous_samples)
                prediction_rows.append(prediction)
                previous_samples = samples
                previous_value = value
                if on_prediction is not None:
                    on_prediction(prediction)
                if config.snapshot_every and count % config.snapshot_every == 0:
                    save()
                    snapshots += 1
        except KeyboardInterrupt:  # SIGINT (or SIGTERM made one): keep what was made and snapshot it
            interrupted = True
        if config.snapshot is not None and state is not None:
            save()
            snapshots += 1
    finally:
        if own_server:
            server.close()

    metrics = _metrics(carried + prediction_rows, telemetry_rows, sample_rows, predictor_config.warmup, log)
    metrics["bad_lines"] = bad_lines
    metrics["resent_lines"] = resent_lines
    metrics["observations"] = len(prediction_rows) + (state is not None and restored is None)
    metrics["startup_seconds"] = startup_seconds
    metrics["first_step_ms"] = telemetry_rows[0]["step_seconds"] * 1e3 if telemetry_rows else None
    metrics.update({k: v for k, v in ready.items() if k != "startup_seconds"})
    metrics["deterministic"] = config.deterministic
    metrics["x64"] = step.dtype == np.float64  # what the run computed in, asked for or not
    metrics["dtype"] = step.dtype.name
    metrics["snapshots_written"] = snapshots
    if training_compile is not None:  # a short stream may end before the background compile does
        training_compile.join()
    metrics["programs"] = dict(step.status)  # per program: traced, exported (written) or loaded
    metrics["interrupted"] = interrupted
    return StreamResult(nan_to_none(metrics), prediction_rows, telemetry_rows, pending, interrupted)


def _restore(config: StreamConfig) -> Snapshot:
    snapshot = load_snapshot(config.restore)
    if snapshot.stream is None:
        raise SnapshotError(f"{config.restore}: holds a predictor state but no stream progress; not resumable")
    if snapshot.config != config.predictor:
        stored, given = _flat(snapshot.config.model_dump()), _flat(config.predictor.model_dump())
        differ = [f"predictor.{k}: snapshot {stored.get(k)!r}, this run {given.get(k)!r}"
                  for k in sorted(set(stored) | set(given)) if stored.get(k) != given.get(k)]
        raise SnapshotError(f"{config.restore}: written with another predictor config ({'; '.join(differ)});"
                            " run with the config it was written with")
    return snapshot


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _resume_position(path, progress: StreamProgress, stamps: list[Any]) -> int:
    """Index of the first row of ``series`` after the snapshot's last observation."""
    position = progress.line
    if position > len(stamps):
        raise SnapshotError(f"{path}: the snapshot ends at row {position}; the series has only {len(stamps)} rows")
    if progress.timestamp is not None and position >= 1 and stamps[position - 1] is not None:
        if str(stamps[position - 1]) != progress.timestamp:
            raise SnapshotError(
                f"{path}: the snapshot's last observation is at {progress.timestamp}, but row {position} of"
                f" this series is at {stamps[position - 1]}: not the series it was taken on"
            )
    return position


def _metrics(prediction_rows, telemetry_rows, sample_rows, warmup, log) -> dict[str, Any]:
    """Score one-step predictions made after warm-up against what came next, beside the random walk."""
    metrics: dict[str, Any] = {}
    # Prediction made at row i is of the observation at row i + 1.
    scored = [i for i in range(len(prediction_rows) - 1) if prediction_rows[i]["warm"]]
    if scored:
        observed = np.array([prediction_rows[i + 1]["observed"] for i in scored])
        point = np.array([prediction_rows[i]["prediction_next"] for i in scored])
        last = np.array([prediction_rows[i]["observed"] for i in scored])
        # sample_rows[j] holds the samples made at row j (j = i) for row i + 1.
        samples = np.stack([sample_rows[i] for i in scored], axis=1)  # (S, T)
        walk = _random_walk(np.array([r["observed"] for r in prediction_rows]), scored, samples.shape[0], log)
        metrics["predictor"] = {
            "crps": float(np.mean(crps(samples, observed))),
            "mae": float(mae(point, observed)),
            "directional_accuracy": float(directional_accuracy(point, observed, last)),
        }
        metrics["random_walk"] = {
            "crps": float(np.mean(crps(walk, observed))),
            "mae": float(mae(last, observed)),
            "directional_accuracy": float(directional_accuracy(last, observed, last)),
        }
        metrics["scored_steps"] = len(scored)
    latency = np.array([r["step_seconds"] for r in telemetry_rows if r["warm"]][5:]) * 1e3
    metrics["latency_ms"] = (
        {"p50": float(np.percentile(latency, 50)), "p99": float(np.percentile(latency, 99))}
        if latency.size
        else {"p50": None, "p99": None}
    )
    metrics["flags"] = {flag: int(sum(r[flag] for r in telemetry_rows)) for flag in FLAGS}
    return metrics


def _random_walk(values: np.ndarray, rows: list[int], num_samples: int, log: bool) -> np.ndarray:
    """One-step samples ``(S, T)`` of the random-walk baseline (:class:`~chaosfm.forecasters.RandomWalk`)
    from the history up to each scored row: the stream's reference, the same model ``chaosfm
    evaluate`` scores. Its volatility window is cut short where the history is shorter, and with
    fewer than two increments the walk has no spread."""
    column = "close" if log else "x0"  # log increments: a price (log space); otherwise levels
    frame = pd.DataFrame({"asset": "stream", "timestamp": np.arange(len(values)), column: values})
    key = jax.random.key(0)
    out = np.empty((num_samples, len(rows)))
    fitted: dict[int, RandomWalk] = {}
    for j, i in enumerate(rows):
        if i < 2:  # no increment to measure a volatility on yet (a stream restored mid-way): no spread
            out[:, j] = values[i]
            continue
        window = min(RandomWalk().window, i)
        if window not in fitted:
            fitted[window] = RandomWalk(window=max(window, 2)).fit(frame.iloc[: max(window, 2) + 1])
        context = frame.iloc[max(0, i - window) : i + 1]
        out[:, j] = fitted[window].forecast(context, 1, num_samples, key=jax.random.fold_in(key, i)).samples[:, 0, 0]
    return out
