"""What a JEPA encoder reads from market rows: standardised features, or the codes of a candle tokenizer.

One object, :class:`EncoderInputs`, turns a market frame into per-asset streams for every user of
a pretrained encoder (pretraining, its held-out collapse check, the probes and the
:class:`~chaosfm.forecasters.JEPAForecaster`, Multiverse Crossing, the agents' encoder features,
the leakage study), so they all read rows the same way:

* ``features``: causal per-row features standardised by a :class:`FeatureScaler` fitted on the
  training rows. The frame's kind picks the set (:func:`feature_set`): the seven candle features
  of :data:`FEATURES` on a frame with open, high and low, the four of :data:`CLOSE_FEATURES` on a
  close-only frame; on request (``feature_set(frame, "close+indicators")``) the close-only set
  with two indicators, :data:`INDICATOR_FEATURES`, from a frame of either kind. The scaler
  records its set (``scaler.json``'s ``"features"``), and an encoder reads only frames that give
  that set;
* ``codes``: one int32 code per candle from a fitted FSQ or VQ-VAE tokenizer (``patch = 1``);
  the encoder embeds them. The tokenizer's ``trained_through`` is an upstream record of
  everything the encoder computes. Candles only: a close-only frame is refused by name.

Both keep the raw features beside the inputs: the probes' targets (next returns, realized
volatility) are read from them, whatever the encoder reads. Both sets start with
``symlog_return`` (column 0), which the forecasters invert back to log returns.

The close-only set (every feature at row t from closes at or before t):

* ``symlog_return`` and ``realized_vol`` of :func:`chaosfm.data.candle_features`;
* ``log_return_5`` and ``log_return_20``: ln(c[t] / c[t-5]) and ln(c[t] / c[t-20]), the weekly and
  monthly moves, the horizons of the agents' own panel features
  (:func:`chaosfm.agents.market_panel`). A window's daily returns hold them only as sums the
  encoder must learn to form; given outright they stand in for some of the candle shapes a close
  cannot give. ``volume_z`` is left out: a close-only frame may have no volume (``sp500_stocks``
  has none), and one frame kind gives one fixed set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chaosfm._config import ConfigError
from chaosfm.data import (
    DataError,
    TrainedThrough,
    candle_features,
    exogenous_features,
    frame_kind,
    has_ohlc,
    require_ohlc,
    session_clock,
)

__all__ = [
    "CLOSE_FEATURES",
    "FEATURES",
    "INDICATOR_FEATURES",
    "EncoderInputs",
    "EncoderStream",
    "FeatureScaler",
    "check_candle_tokenizer",
    "feature_set",
    "feature_streams",
]

FEATURES = ("symlog_return", "body", "upper_wick", "lower_wick", "range", "realized_vol", "volume_z")
"""The candle feature set: what an encoder reads from a frame with open, high and low."""

CLOSE_FEATURES = ("symlog_return", "realized_vol", "log_return_5", "log_return_20")
"""The close-only feature set: what an encoder reads from a close-only frame (see the module docstring)."""

INDICATOR_FEATURES = (*CLOSE_FEATURES, "rsi_14", "bb_width_20_2")
"""The close-only set and two scale-free indicators of :func:`chaosfm.data.exogenous_features`
(Wilder's RSI, Bollinger band width), causal like the rest; on request (``"close+indicators"``), for
a frame of either kind. Indicators in price units (EMA, MACD, ATR) are left out: a scaler fitted on
training prices does not standardise later price levels."""

_SETS = {FEATURES: "candle features", CLOSE_FEATURES: "close-only features",
         INDICATOR_FEATURES: "close+indicators features"}
_NAMED = {"candles": FEATURES, "close": CLOSE_FEATURES, "close+indicators": INDICATOR_FEATURES}
_INDICATORS = {"rsi_14": "rsi", "bb_width_20_2": "bollinger_width"}  # column -> its indicator
_MOVES = {"log_return_5": 5, "log_return_20": 20}  # close-only feature -> rows of its log return


def _describe(features: tuple[str, ...]) -> str:
    """``"close-only features (symlog_return, ...)"``: a feature set named for error messages."""
    return f"{_SETS.get(features, 'features')} ({', '.join(features)})"


def feature_set(frame: pd.DataFrame, name: str | None = None) -> tuple[str, ...]:
    """The features an encoder reads from ``frame``: :data:`FEATURES` when it has open, high and
    low (:func:`chaosfm.data.has_ohlc`), :data:`CLOSE_FEATURES` when it is close-only; or the set
    ``name`` (``"candles"``, ``"close"``, ``"close+indicators"``)."""
    if name is None:
        return FEATURES if has_ohlc(frame) else CLOSE_FEATURES
    if name not in _NAMED:
        raise ValueError(f"unknown feature set {name!r}; known: {', '.join(_NAMED)}")
    return _NAMED[name]


@dataclass(frozen=True)
class FeatureScaler:
    """Per-feature mean and std of the training rows; applied to every later row.

    Attributes:
        mean: ``(F,)`` mean of each feature over the training rows.
        std: ``(F,)`` its standard deviation (1 where a feature is constant).
        features: the names of the ``F`` features, in order: :data:`FEATURES` or
            :data:`CLOSE_FEATURES` (a run written before close-only encoders has the former).
    """

    mean: np.ndarray
    std: np.ndarray
    features: tuple[str, ...] = FEATURES

    @classmethod
    def fit(cls, streams: Mapping[str, np.ndarray], features: tuple[str, ...] = FEATURES) -> "FeatureScaler":
        """Mean and std over every row of ``streams`` (asset -> ``(T, F)`` values of ``features``)."""
        rows = np.concatenate([np.asarray(s, np.float64) for s in streams.values()])
        std = rows.std(axis=0)
        return cls(rows.mean(axis=0), np.where(std > 0, std, 1.0), tuple(features))

    def __post_init__(self) -> None:
        if tuple(self.features) not in _SETS:
            known = "; ".join(_describe(f) for f in _SETS)
            raise ValueError(f"features: {list(self.features)} is not a feature set an encoder reads ({known})")
        if np.shape(self.mean) != (len(self.features),) or np.shape(self.std) != (len(self.features),):
            raise ValueError(f"mean and std must have one value per feature ({len(self.features)}: "
                             f"{', '.join(self.features)}), got shapes {np.shape(self.mean)} and {np.shape(self.std)}")
        object.__setattr__(self, "features", tuple(self.features))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, np.float64) - self.mean) / self.std).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FeatureScaler":
        """The scaler of :meth:`to_json`; without ``"features"``, the candle set (the only one once).

        Raises:
            KeyError: ``mean`` or ``std`` is missing.
            ValueError: ``features`` is not a known set, or the lengths disagree.
        """
        features = tuple(data.get("features", FEATURES))
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64), features)


def _feature_rows(
    frame: pd.DataFrame, vol_window: int, features: tuple[str, ...] | None = None
) -> dict[str, tuple[np.ndarray, pd.Series, np.ndarray]]:
    """Per asset: ``features`` ``(T, F)`` of the rows past the warm-up, their timestamps, and their
    positions among the asset's rows; ``features`` None means the frame's own set."""
    source = str(frame.attrs.get("name", "<frame>"))
    if frame_kind(frame) != "market":
        raise DataError("a JEPA encoder needs market data (close; open, high, low for candle features)",
                        source=source, rule="market frame")
    given = feature_set(frame)
    features = given if features is None else tuple(features)
    if features != given and features != INDICATOR_FEATURES:  # indicators read closes: any market frame
        kind = "has open, high and low" if has_ohlc(frame) else "is close-only"
        raise DataError(
            f"this JEPA encoder reads {_describe(features)}, but the frame {kind} and gives "
            f"{_describe(given)}; an encoder reads frames of the kind it was pretrained on",
            source=source, rule="the encoder's feature set",
        )
    table = candle_features(frame, vol_window=vol_window, volume_window=vol_window)
    log_close = pd.Series(np.log(frame["close"].to_numpy(np.float64)), index=table.index)  # same rows, same order
    for name, rows in _MOVES.items():
        if name in features:
            table[name] = log_close.groupby(table["asset"].to_numpy(), sort=False).diff(rows)
    wanted = [c for c in features if c in _INDICATORS]
    if wanted:
        indicators = exogenous_features(frame, indicators=[_INDICATORS[c] for c in wanted], calendar=False)
        table[wanted] = indicators[wanted].to_numpy()  # same rows, same order
    out = {}
    for asset, part in table.groupby("asset", sort=False):
        values = part[list(features)].to_numpy(np.float64)
        keep = np.all(np.isfinite(values), axis=1)
        out[str(asset)] = (values[keep], part["timestamp"][keep].reset_index(drop=True), np.flatnonzero(keep))
    return out


def feature_streams(
    frame: pd.DataFrame, vol_window: int = 20, features: tuple[str, ...] | None = None
) -> dict[str, tuple[np.ndarray, pd.Series]]:
    """Per asset: causal features ``(T, F)`` (warm-up rows dropped) and their timestamps.

    Args:
        frame: a validated market frame.
        vol_window: rows of ``realized_vol`` (and of the volume z-score).
        features: the set to read (:data:`FEATURES` or :data:`CLOSE_FEATURES`); None: the frame's
            own (:func:`feature_set`).

    Raises:
        DataError: not a market frame, or ``features`` is not the set the frame gives (naming both).
    """
    rows = _feature_rows(frame, vol_window, features)
    return {asset: (values, stamps) for asset, (values, stamps, _) in rows.items()}


def check_candle_tokenizer(tokenizer: Any, source: str) -> None:
    """A JEPA reads one code per candle (FSQ or VQ-VAE with ``patch = 1``); raise ConfigError otherwise."""
    if not tokenizer.one_code_per_candle:
        per_code = tokenizer.rows_per_code
        why = (f"its patch is {per_code}" if per_code else f"a {tokenizer.name} tokenizer does not encode candles")
        raise ConfigError(
            f"{source}: the JEPA encoder reads one code per candle of an fsq or vqvae tokenizer (patch 1); {why}"
        )


@dataclass(frozen=True)
class EncoderStream:
    """One asset's rows as an encoder reads them.

    Attributes:
        features: raw causal features ``(T, F)`` of the scaler's set (targets are computed from them).
        inputs: what the encoder reads, row for row: standardised features ``(T, F)`` float32,
            or codes ``(T,)`` int32.
        stamps: the rows' timestamps ``(T,)``.
    """

    features: np.ndarray
    inputs: np.ndarray
    stamps: pd.Series


def _clocked(stream: EncoderStream, session: str, unit: float) -> EncoderStream:
    """``stream`` with its rows' session clock (:func:`chaosfm.data.session_clock`) as a last input column."""
    clock = session_clock(stream.stamps, session, unit)
    return EncoderStream(stream.features, np.concatenate([stream.inputs, clock[:, None]], axis=1), stream.stamps)


@dataclass(frozen=True)
class EncoderInputs:
    """The scaler (always fitted: features are kept for targets) and, for a code-reading encoder,
    its tokenizer; for a session-clocked encoder (``JEPAConfig.session``), its session and bar unit,
    and every stream's inputs then end in the clock column."""

    scaler: FeatureScaler
    vol_window: int = 20
    tokenizer: Any = None
    session: str = ""
    clock_unit: float = 0.0

    def __post_init__(self) -> None:
        if self.session and self.tokenizer is not None:
            raise ConfigError("model.session: a session clock needs feature inputs, not tokenizer codes")
        if self.session and not self.clock_unit > 0:
            raise ValueError(f"clock_unit: {self.clock_unit!r} must be positive with session {self.session!r}")

    @property
    def kind(self) -> str:
        return "codes" if self.tokenizer is not None else "features"

    @property
    def features(self) -> tuple[str, ...]:
        """The raw features of every stream (:data:`FEATURES` or :data:`CLOSE_FEATURES`)."""
        return self.scaler.features

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary, 0 for features (the value of ``JEPAConfig.vocab_size``)."""
        return int(self.tokenizer.vocab_size) if self.tokenizer is not None else 0

    @property
    def upstream_trained_through(self) -> TrainedThrough | None:
        """What the tokenizer saw (None for features: the scaler saw what the encoder saw)."""
        return self.tokenizer.trained_through if self.tokenizer is not None else None

    def streams(self, frame: pd.DataFrame) -> dict[str, EncoderStream]:
        """Per asset, its rows past the feature warm-up (and the tokenizer's) as :class:`EncoderStream`.

        Raises:
            DataError: the frame does not give the scaler's feature set (a candle encoder given a
                close-only frame or the reverse: the message names both sets), or a code-reading
                encoder is given a close-only frame.
        """
        if self.tokenizer is not None:
            require_ohlc(frame, f"a JEPA encoder reading {self.tokenizer.name} codes")
        rows = _feature_rows(frame, self.vol_window, self.scaler.features)
        if self.tokenizer is None:
            streams = {asset: EncoderStream(values, self.scaler(values), stamps) for asset, (values, stamps, _) in rows.items()}
            if self.session:
                streams = {asset: _clocked(stream, self.session, self.clock_unit) for asset, stream in streams.items()}
            return streams
        out = {}
        for asset, _, candles in self.tokenizer.series(frame, "JEPA encoder inputs"):
            values, stamps, positions = rows[asset]
            # The tokenizer's own warm-up rows (undefined features) are read as zeros: skip them too.
            warm = int(np.argmax(np.all(np.isfinite(candles), axis=1)))
            keep = positions >= warm
            codes = self.tokenizer.encode_series(candles)  # one per candle: patch 1
            out[asset] = EncoderStream(
                values[keep], codes[positions[keep]].astype(np.int32), stamps[keep].reset_index(drop=True)
            )
        return out

    @classmethod
    def load(cls, root: Path, scaler: FeatureScaler, vol_window: int, tokenizer_dir: str | None,
             session: str = "", clock_unit: float = 0.0) -> "EncoderInputs":
        """The inputs of a pretrain run folder (its tokenizer from ``root / tokenizer_dir``)."""
        if tokenizer_dir is None:
            return cls(scaler, vol_window, session=session, clock_unit=clock_unit)
        from chaosfm.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(root / tokenizer_dir)
        check_candle_tokenizer(tokenizer, str(root / tokenizer_dir))
        return cls(scaler, vol_window, tokenizer)
