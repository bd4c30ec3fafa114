"""``AbstractTokenizer``: what every tokenizer implements, and the checks and files they share.

A tokenizer turns a validated frame into integer codes a sequence model reads, and codes back into
the values it tokenised (candle features for FSQ and VQ-VAE, raw channel values for bins). It is
fitted on training rows only: ``fit`` takes an optional :class:`~chaosfm.data.TimeFence` and
raises :class:`~chaosfm.data.LeakageError` if any row is past its cutoff, and it records
``trained_through`` (the last timestamp of every asset it saw) so the evaluator can classify the
windows scored downstream.

On disk a tokenizer is a folder with ``tokenizer.json`` (kind, config, normalisation statistics,
``trained_through``) and ``model.eqx`` (the array leaves, written by
``eqx.tree_serialise_leaves``). Nothing is pickled: loading reads numbers, never code. When the
folder is a run folder with a ``meta.json``, loading checks every file's sha256 first.
"""

from __future__ import annotations

import abc
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import equinox as eqx
import numpy as np
import pandas as pd

from chaosfm._artifacts import META, atomic_write_bytes, verify_run, write_json
from chaosfm._config import ConfigError
from chaosfm.data import (
    DataError,
    EmptyDataError,
    MissingColumnError,
    NonFiniteError,
    TimeFence,
    TrainedThrough,
    trained_through_from_json,
    trained_through_to_json,
)

CONFIG_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.eqx"


@dataclass(frozen=True)
class ContextInput:
    """A forecast's prompt: codes ``(N,)``, the row of ``rows`` each ends at ``(N,)``, the rows
    they were read from (the context, possibly without its oldest rows), and the tokenizer's
    state for decoding the forecast."""

    codes: np.ndarray
    ends: np.ndarray
    rows: pd.DataFrame
    state: Any


class AbstractTokenizer(abc.ABC):
    """Frames to int32 codes and back; fitted on training data only.

    Attributes:
        name: short name used in configs and on disk (``"fsq"``, ``"vqvae"``, ``"bins"``).
        trained_through: the last timestamp of every asset the fit saw; ``None`` before ``fit``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    trained_through: TrainedThrough | None

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct codes, special tokens included."""

    @property
    @abc.abstractmethod
    def special_tokens(self) -> int:
        """Codes ``0 .. special_tokens - 1`` are reserved (PAD, EOS) and never encode data."""

    @property
    @abc.abstractmethod
    def value_names(self) -> tuple[str, ...]:
        """Names of the values ``decode`` returns (features or channels), in order."""

    @abc.abstractmethod
    def fit(
        self,
        frame: pd.DataFrame,
        *,
        key: Any = None,
        steps: int | None = None,
        fence: TimeFence | None = None,
        val_fraction: float = 0.0,
        eval_every: int | None = None,
    ) -> AbstractTokenizer:
        """Fit on ``frame`` (every row at or before ``fence``'s cutoff) and return self.

        A tokenizer that learns by gradient keeps the last ``val_fraction`` of each asset's rows
        out of its gradient and records its loss on them (``val_loss`` in ``history``) every
        ``eval_every`` steps (None: a tenth of ``steps``); the others accept and ignore both."""

    @abc.abstractmethod
    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """int32 codes of ``frame``, asset after asset in frame order."""

    @abc.abstractmethod
    def series(self, frame: pd.DataFrame, what: str = "series") -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(asset, row positions, values)`` per asset: what :meth:`encode_series` reads."""

    @abc.abstractmethod
    def encode_series(self, values: np.ndarray) -> np.ndarray:
        """int32 codes of one asset's values from :meth:`series` (no pandas on this path)."""

    @abc.abstractmethod
    def decode(self, codes: Any, **context: Any) -> np.ndarray:
        """Values (``value_names``) reconstructed from the codes of one series."""

    @abc.abstractmethod
    def tokens(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Long frame ``asset, timestamp, code`` (bins add ``channel``): each code and the last
        timestamp it depends on."""

    @abc.abstractmethod
    def targets(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``asset, timestamp`` and the true values the tokenizer reconstructs, row for row
        (NaN where a value is undefined, e.g. feature warm-up)."""

    @abc.abstractmethod
    def reconstruct(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``decode(encode(frame))`` laid out like :meth:`targets` (NaN where not covered)."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` and ``model.eqx`` into ``directory``; return it."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: str | Path) -> AbstractTokenizer:
        """Read a tokenizer written by :meth:`save` (hashes checked when there is a meta.json)."""

    # --- code streams: what a sequence model reads (no caller branches on the kind) ------------

    @property
    @abc.abstractmethod
    def target_columns(self) -> tuple[str, ...]:
        """The frame columns a forecast decoded from these codes predicts (``close`` for candle
        tokenizers, the tokenised channels for bins)."""

    @property
    def channels_per_row(self) -> int | None:
        """Codes per row when each row gives several interleaved codes (bins); None otherwise."""
        return None

    @property
    def rows_per_code(self) -> int | None:
        """Rows (candles) per code when one code covers several rows (a candle patch); None otherwise."""
        return None

    @property
    def learns_by_gradient(self) -> bool:
        """True when :meth:`fit` runs optimiser steps (``steps`` matters); False for a fit that
        only reads statistics."""
        return False

    @property
    def one_code_per_candle(self) -> bool:
        """True when every candle of a market frame becomes exactly one code (what a JEPA reads)."""
        return False

    @abc.abstractmethod
    def check_encodable(self, frame: pd.DataFrame, source: str) -> None:
        """Raise :class:`ConfigError`, naming ``source``, if this tokenizer cannot encode ``frame``."""

    @abc.abstractmethod
    def stream_length(self, rows: int) -> int:
        """Codes in the stream of one asset of ``rows`` rows."""

    def stream_scales(self, frame: pd.DataFrame) -> dict[str, np.ndarray] | None:
        """Per asset, the state its code stream is encoded with, from ``frame`` (training rows
        only): the mean-abs scale of bins; None for tokenizers that need none."""
        return None

    @abc.abstractmethod
    def code_stream(self, values: np.ndarray, scale: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """One asset's values (as :meth:`series` gives them) as a flat int32 code stream ``(N,)``
        and, per code, the row (within the asset) it ends at ``(N,)``."""

    def code_streams(
        self, frame: pd.DataFrame, scales: Mapping[str, Any] | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per asset, :meth:`code_stream` of its rows (``scales`` from :meth:`stream_scales`)."""
        return {
            asset: self.code_stream(values, None if scales is None else scales.get(asset))
            for asset, _, values in self.series(frame, "encode")
        }

    # --- forecasting: a context in, sampled codes out (Chronos' input/output transforms) ---------

    @abc.abstractmethod
    def context_input(self, context: pd.DataFrame, max_codes: int) -> ContextInput:
        """The prompt of a forecast from one asset's ``context`` rows: at most ``max_codes`` codes,
        the last ending at the context's last row, and the state :meth:`forecast_output` needs."""

    @abc.abstractmethod
    def horizon_codes(self, horizon: int) -> int:
        """Codes to sample for a forecast of ``horizon`` rows."""

    @abc.abstractmethod
    def forecast_output(self, drawn: np.ndarray, state: Any, horizon: int) -> np.ndarray:
        """Sample paths ``(S, horizon, C)`` of :attr:`target_columns`, in their units, from sampled
        codes ``(S, horizon_codes(horizon))`` and the state of :meth:`context_input`."""

    def return_decoder(self) -> Any:
        """``codes (n,) -> per-code log returns (n,)`` as a JAX function (a reward of RL).

        Raises:
            ConfigError: this tokenizer decodes no returns.
        """
        raise ConfigError(
            f"a {self.name} tokenizer decodes no returns; returns come from a candle tokenizer (fsq, vqvae)"
        )

    @property
    def is_fitted(self) -> bool:
        return self.trained_through is not None

    def require_fitted(self, what: str) -> None:
        if not self.is_fitted:
            raise ConfigError(f"{type(self).__name__}.{what}: the tokenizer is not fitted; call fit first")


# --------------------------------------------------------------------------------------------
# Input checks: bad input is a DataError or ConfigError naming the problem, never a JAX trace.


def check_frame(frame: Any, columns: Sequence[str], what: str) -> pd.DataFrame:
    """Check ``frame`` is a non-empty DataFrame with ``asset, timestamp`` and finite ``columns``.

    Raises:
        EmptyDataError, MissingColumnError, NonFiniteError: naming the row and column.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}", rule="frame")
    source = str(frame.attrs.get("name", "<frame>"))
    if len(frame) == 0:
        raise EmptyDataError(f"{what}: the frame has no rows", source=source)
    missing = [c for c in ("asset", "timestamp", *columns) if c not in frame.columns]
    if missing:
        raise MissingColumnError(
            f"{what}: the frame lacks column(s) {missing}; pass a frame from chaosfm.data.load "
            "or chaosfm.data.validate",
            source=source,
        )
    for column in columns:
        try:
            values = frame[column].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{what}: column is not numeric", source=source, column=column,
                            rule="numeric values") from None
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise NonFiniteError(
                f"{what}: {values[row]} is not a finite number ({int(bad.sum())} such row(s))",
                source=source, row=row, column=column,
            )
    return frame


def check_fence(frame: pd.DataFrame, fence: TimeFence | None, what: str) -> None:
    """Raise :class:`~chaosfm.data.LeakageError` if ``frame`` crosses ``fence``'s cutoff."""
    if fence is not None:
        fence.check(frame, what)


def check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def asset_slices(frame: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """``(asset, row positions)`` per asset, assets in order of first appearance."""
    labels, assets = pd.factorize(frame["asset"], sort=False)
    if len(assets) == 1:
        return [(str(assets[0]), np.arange(len(labels)))]
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=len(assets)))[:-1]
    return [(str(a), rows) for a, rows in zip(assets, np.split(order, bounds))]


def check_codes(codes: Any, vocab_size: int, special: int) -> np.ndarray:
    """``codes`` as an int array of rank 1 or 2 with every entry in ``[special, vocab_size)``."""
    array = np.asarray(codes)
    if array.dtype.kind not in "iu":
        raise DataError(f"decode: codes must be integers, got dtype {array.dtype}", rule="integer codes")
    if array.ndim not in (1, 2) or array.shape[-1] == 0:
        raise DataError(f"decode: codes must have shape (codes,) or (batch, codes), got {array.shape}",
                        rule="code shape")
    low, high = int(array.min()), int(array.max())
    if low < special or high >= vocab_size:
        raise DataError(
            f"decode: codes must lie in [{special}, {vocab_size}), got values in [{low}, {high}]",
            rule="codes in vocabulary",
        )
    return array.astype(np.int32)


# --------------------------------------------------------------------------------------------
# Files.


def write_tokenizer(directory: str | Path, header: Mapping[str, Any], leaves: Any) -> Path:
    """Write ``tokenizer.json`` (``header``) and ``model.eqx`` (``leaves``) atomically."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, leaves)
    atomic_write_bytes(root / WEIGHTS_FILE, buffer.getvalue())
    write_json(root / CONFIG_FILE, dict(header))
    return root


def read_header(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read ``tokenizer.json`` (after checking hashes if the folder has a ``meta.json``)."""
    root = Path(directory)
    if (root / META).is_file():
        verify_run(root)
    path = root / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {root} holds no saved tokenizer")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: damaged ({error})") from None
    if kind is not None and header.get("kind") != kind:
        raise ConfigError(f"{path}: holds a {header.get('kind')!r} tokenizer, not {kind!r}")
    return header


def read_leaves(directory: str | Path, like: Any) -> Any:
    """Read ``model.eqx`` into a pytree shaped like ``like``."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        with open(path, "rb") as stream:
            return eqx.tree_deserialise_leaves(stream, like)
    except (ValueError, RuntimeError, EOFError) as error:
        raise ConfigError(f"{path}: does not match tokenizer.json ({error})") from None


def fence_record(record: TrainedThrough | None) -> Any:
    return trained_through_to_json(record)


def fence_from_record(record: Any) -> TrainedThrough | None:
    return trained_through_from_json(record)
