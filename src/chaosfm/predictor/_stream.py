"""``run_stream``: the library function behind ``chaosfm stream``.

Runs the online predictor over a series (an array) or over CSV lines (stdin), writes
``predictions.csv``, ``telemetry.csv``, ``metrics.json`` and ``telemetry.png`` into ``out_dir``,
and returns the metrics.

Bad input (NaN, inf, not a number, a non-positive value with log increments): with
``config.on_bad_line == "raise"`` (default) a :class:`chaosfm.data.DataError` naming the input
line is raised; the files are still written for every good line before it, and the predictor's
state is the last good one. With ``"skip"`` the line is recorded in ``metrics["bad_lines"]``
(line number and message), skipped, and the run goes on from the last good state.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from chaosfm._artifacts import atomic_write_text, nan_to_none, write_json
from chaosfm.data import DataError, NonFiniteError, NonNumericError, NonPositivePriceError
from chaosfm.predictor._config import StreamConfig
from chaosfm.predictor._predictor import init_predictor, packed_step, warm_start
from chaosfm.predictor._telemetry import FLAGS, plot_telemetry, telemetry_record


def _parse_lines(lines: Iterable[str], column: str) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, timestamp or None, raw value text)`` per data line.

    A line is one value, or a CSV row; a first row naming ``column`` is a header.
    """
    header: list[str] | None = None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        row = next(csv.reader([text]))
        if header is None and number == 1 and column in [c.strip().lower() for c in row]:
            header = [c.strip().lower() for c in row]
            continue
        if header is not None:
            record = dict(zip(header, row))
            stamp = record.get("timestamp", record.get("date"))
            yield number, stamp, record.get(column)
        else:
            yield number, None, row[-1] if len(row) > 1 else row[0]


def _value(text: str | None, line: int, column: str, log: bool, source: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise NonNumericError(f"{text!r} is not a number", source=source, row=line - 1, line=line, column=column) from None
    if not np.isfinite(value):
        raise NonFiniteError(f"value {text!r} is NaN or infinite", source=source, row=line - 1, line=line, column=column)
    if log and value <= 0:
        raise NonPositivePriceError(
            f"{value:g} <= 0 cannot take log increments", source=source, row=line - 1, line=line, column=column
        )
    return value


def run_stream(
    config: StreamConfig,
    out_dir: Path,
    *,
    series: np.ndarray | None = None,
    timestamps: Any = None,
    lines: Iterable[str] | None = None,
    on_prediction: Callable[[dict[str, Any]], None] | None = None,
    on_bad_line: Callable[[DataError], None] | None = None,
) -> dict[str, Any]:
    """Run the predictor over ``series`` or ``lines``; write the outputs; return the metrics.

    Args:
        config: the stream and predictor configuration.
        out_dir: created if missing; files are written atomically.
        series: ``(T,)`` values (e.g. a frame's close column), or
        timestamps: optional ``(T,)`` labels of ``series``, copied to the CSVs.
        lines: CSV text lines (stdin): one value per line, or rows with a header naming
            ``config.column``. Exactly one of ``series`` and ``lines`` is given.
        on_prediction: called after every observation with its prediction row (flush it).
        on_bad_line: called with the error of every line skipped (``on_bad_line="skip"``), as it
            happens, so a live feed can report it at once.

    Returns:
        metrics: CRPS, MAE and directional accuracy of the predictor and of the random walk,
        step latency p50/p99 (ms, after warm-up), counts of each flag, bad lines.

    Raises:
        DataError: a bad line with ``on_bad_line="raise"`` (outputs up to it are written first).
    """
    from chaosfm.evaluate import crps, directional_accuracy, mae

    if (series is None) == (lines is None):
        raise ValueError("give exactly one of series= and lines=")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor_config = config.predictor
    log = predictor_config.increments == "log"
    source = "<stdin>" if lines is not None else "<series>"
    if series is not None:
        values = np.asarray(series, dtype=np.float64).ravel()
        stamps = list(timestamps) if timestamps is not None else [None] * len(values)
        if len(stamps) != len(values):
            raise ValueError(f"{len(stamps)} timestamps for {len(values)} values")
        items: Iterable[tuple[int, Any, Any]] = (
            (i + 1, stamps[i], values[i]) for i in range(len(values))
        )
    else:
        items = _parse_lines(lines, config.column.lower())

    key = jax.random.key(config.seed)
    key, key_init, key_warm = jax.random.split(key, 3)
    step = packed_step(predictor_config)
    state = None
    started = False
    prediction_rows: list[dict[str, Any]] = []
    telemetry_rows: list[dict[str, Any]] = []
    sample_rows: list[np.ndarray] = []
    bad_lines: list[dict[str, Any]] = []
    pending: DataError | None = None
    for line, stamp, raw in items:
        try:
            value = _value(raw, line, config.column, log, source)
        except DataError as error:
            if config.on_bad_line == "raise":
                pending = error
                break
            bad_lines.append({"line": line, "error": str(error)})
            if on_bad_line is not None:
                on_bad_line(error)
            continue
        if state is None:
            state = step.pack(init_predictor(predictor_config, value, key=key_init))
            previous_samples = None
            previous_value = value
            count = 0
            continue
        begin = time.perf_counter()
        packed_out, state = step(state, np.float32(value))
        out = step.output(packed_out)  # one host copy of two small vectors
        wall = time.perf_counter() - begin
        count += 1
        if not started and out.warm:
            state = step.pack(warm_start(step.unpack(state), predictor_config, key=key_warm))
            started = True
        row = telemetry_record(count, out, value, wall)
        row["line"], row["timestamp"] = line, stamp
        telemetry_rows.append(row)
        prediction = {
            "line": line,
            "timestamp": stamp,
            "observed": value,
            "previous": previous_value,
            "prediction_next": float(out.prediction),
            "q10_next": float(np.quantile(out.samples, 0.1)),
            "q90_next": float(np.quantile(out.samples, 0.9)),
            "warm": bool(out.warm),
        }
        prediction_rows.append(prediction)
        if previous_samples is not None:
            sample_rows.append(previous_samples)
        previous_samples = np.asarray(out.samples, np.float64)
        previous_value = value
        if on_prediction is not None:
            on_prediction(prediction)

    metrics = _metrics(prediction_rows, telemetry_rows, sample_rows, predictor_config.warmup, crps, mae, directional_accuracy)
    metrics["bad_lines"] = bad_lines
    metrics["observations"] = len(prediction_rows) + (state is not None)
    _write(out_dir, prediction_rows, telemetry_rows, metrics, config.plot)
    if pending is not None:
        raise pending
    return metrics


def _metrics(prediction_rows, telemetry_rows, sample_rows, warmup, crps, mae, directional_accuracy) -> dict[str, Any]:
    """Score one-step predictions made after warm-up against what came next."""
    metrics: dict[str, Any] = {}
    # Prediction made at row i is of the observation at row i + 1.
    scored = [i for i in range(len(prediction_rows) - 1) if prediction_rows[i]["warm"]]
    if scored:
        observed = np.array([prediction_rows[i + 1]["observed"] for i in scored])
        point = np.array([prediction_rows[i]["prediction_next"] for i in scored])
        last = np.array([prediction_rows[i]["observed"] for i in scored])
        # sample_rows[j] holds the samples made at row j (j = i) for row i + 1.
        samples = np.stack([sample_rows[i] for i in scored], axis=1)  # (S, T)
        # Random-walk reference: last value plus Gaussian noise at the causal increment scale.
        increments = np.diff([r["observed"] for r in prediction_rows])
        scale = np.array([max(np.std(increments[max(0, i - 100) : i]), 1e-12) if i > 1 else 1.0 for i in scored])
        rng = np.random.default_rng(0)
        walk = last[None, :] + scale[None, :] * rng.standard_normal((samples.shape[0], len(scored)))
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


def _write(out_dir: Path, prediction_rows, telemetry_rows, metrics, plot: bool) -> None:
    for name, rows in (("predictions.csv", prediction_rows), ("telemetry.csv", telemetry_rows)):
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()))
            writer.writeheader()
            writer.writerows(rows)
        atomic_write_text(out_dir / name, buffer.getvalue())
    write_json(out_dir / "metrics.json", nan_to_none(metrics))
    if plot and telemetry_rows:
        plot_telemetry(telemetry_rows, out_dir / "telemetry.png")
