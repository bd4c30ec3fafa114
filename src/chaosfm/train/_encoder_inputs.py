"""What a JEPA encoder reads from candles: standardised features, or the codes of a candle tokenizer.

One object, :class:`EncoderInputs`, turns a market frame into per-asset streams for every user of
a pretrained encoder (pretraining, its held-out collapse check, the probes and the
:class:`~chaosfm.forecasters.JEPAForecaster`, Multiverse Crossing, the leakage study), so they all
read candles the same way:

* ``features``: the seven causal candle features of :data:`FEATURES`, standardised by a
  :class:`FeatureScaler` fitted on the training rows;
* ``codes``: one int32 code per candle from a fitted FSQ or VQ-VAE tokenizer (``patch = 1``);
  the encoder embeds them. The tokenizer's ``trained_through`` is an upstream record of
  everything the encoder computes.

Both keep the raw features beside the inputs: the probes' targets (next returns, realized
volatility) are read from them, whatever the encoder reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chaosfm._config import ConfigError
from chaosfm.data import DataError, TrainedThrough, candle_features, frame_kind, require_ohlc

__all__ = ["FEATURES", "EncoderInputs", "EncoderStream", "FeatureScaler", "check_candle_tokenizer", "feature_streams"]

FEATURES = ("symlog_return", "body", "upper_wick", "lower_wick", "range", "realized_vol", "volume_z")


@dataclass(frozen=True)
class FeatureScaler:
    """Per-feature mean and std of the training rows; applied to every later row."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, streams: Mapping[str, np.ndarray]) -> "FeatureScaler":
        rows = np.concatenate([np.asarray(s, np.float64) for s in streams.values()])
        std = rows.std(axis=0)
        return cls(rows.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, np.float64) - self.mean) / self.std).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FeatureScaler":
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64))


def _feature_rows(frame: pd.DataFrame, vol_window: int) -> dict[str, tuple[np.ndarray, pd.Series, np.ndarray]]:
    """Per asset: features ``(T, F)`` of the rows past the warm-up, their timestamps, and their
    positions among the asset's rows."""
    if frame_kind(frame) != "market":
        raise DataError("a JEPA encoder needs market data (open, high, low, close, volume)", rule="market frame")
    require_ohlc(frame, "a JEPA encoder (candle features)")
    features = candle_features(frame, vol_window=vol_window, volume_window=vol_window)
    out = {}
    for asset, part in features.groupby("asset", sort=False):
        values = part[list(FEATURES)].to_numpy(np.float64)
        keep = np.all(np.isfinite(values), axis=1)
        out[str(asset)] = (values[keep], part["timestamp"][keep].reset_index(drop=True), np.flatnonzero(keep))
    return out


def feature_streams(frame: pd.DataFrame, vol_window: int = 20) -> dict[str, tuple[np.ndarray, pd.Series]]:
    """Per asset: causal candle features ``(T, F)`` (warm-up rows dropped) and their timestamps."""
    return {asset: (values, stamps) for asset, (values, stamps, _) in _feature_rows(frame, vol_window).items()}


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
    """One asset's candles as an encoder reads them.

    Attributes:
        features: raw causal candle features ``(T, F)`` (targets are computed from them).
        inputs: what the encoder reads, row for row: standardised features ``(T, F)`` float32,
            or codes ``(T,)`` int32.
        stamps: the rows' timestamps ``(T,)``.
    """

    features: np.ndarray
    inputs: np.ndarray
    stamps: pd.Series


@dataclass(frozen=True)
class EncoderInputs:
    """The scaler (always fitted: features are kept for targets) and, for a code-reading encoder,
    its tokenizer."""

    scaler: FeatureScaler
    vol_window: int = 20
    tokenizer: Any = None

    @property
    def kind(self) -> str:
        return "codes" if self.tokenizer is not None else "features"

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary, 0 for features (the value of ``JEPAConfig.vocab_size``)."""
        return int(self.tokenizer.vocab_size) if self.tokenizer is not None else 0

    @property
    def upstream_trained_through(self) -> TrainedThrough | None:
        """What the tokenizer saw (None for features: the scaler saw what the encoder saw)."""
        return self.tokenizer.trained_through if self.tokenizer is not None else None

    def streams(self, frame: pd.DataFrame) -> dict[str, EncoderStream]:
        """Per asset, its rows past the feature warm-up (and the tokenizer's) as :class:`EncoderStream`."""
        rows = _feature_rows(frame, self.vol_window)
        if self.tokenizer is None:
            return {asset: EncoderStream(values, self.scaler(values), stamps) for asset, (values, stamps, _) in rows.items()}
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
    def load(cls, root: Path, scaler: FeatureScaler, vol_window: int, tokenizer_dir: str | None) -> "EncoderInputs":
        """The inputs of a pretrain run folder (its tokenizer from ``root / tokenizer_dir``)."""
        if tokenizer_dir is None:
            return cls(scaler, vol_window)
        from chaosfm.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(root / tokenizer_dir)
        check_candle_tokenizer(tokenizer, str(root / tokenizer_dir))
        return cls(scaler, vol_window, tokenizer)
