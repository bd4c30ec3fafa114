"""Bin tokenizer: mean-abs scaling of the context and bins, per channel (Chronos style).

Dimension letters: T time steps, C channels, B bins (``vocab_size - 2``).

Following Chronos (Ansari et al. 2024, Sec. 3.1), each channel of a context is divided by its mean
absolute value (1 when that is 0) and the scaled value is put in one of ``B`` bins; codes ``0``
(PAD) and ``1`` (EOS) are reserved, so bin ``b`` is code ``b + 2``. Decoding maps a code to its
bin's centre times the scale.

- ``kind="uniform"``: ``B`` centres evenly spaced on ``[low, high]`` (Chronos: ``[-15, 15]``),
  boundaries half-way between centres; nothing to fit.
- ``kind="quantile"``: boundaries at the ``1/B, ..., (B-1)/B`` quantiles and centres at the
  ``(b + 1/2)/B`` quantiles of the scaled training values of each channel, so every bin is equally
  used on the training data. The training series are cut into contexts of ``context_length``
  values, each scaled by its own mean-abs, as they will be at encoding time. Only rows passed to
  ``fit`` (at or before the fence) are used.

``encode(frame)`` treats each asset's rows as one context: the scale of a channel is the mean-abs
of that asset's values in ``frame``. Give it the context window, not the whole history, when the
codes feed a forecast (the scale must not see the future).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal, final

import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from chaosfm._config import ConfigError, require_int
from chaosfm.data import DataError, TimeFence, target_columns, trained_through
from chaosfm.tokenizers._base import (
    AbstractTokenizer,
    ContextInput,
    asset_slices,
    check_codes,
    check_fence,
    check_frame,
    fence_from_record,
    fence_record,
    read_header,
    read_leaves,
    write_tokenizer,
)

PAD = 0
EOS = 1
_SPECIAL = 2


@dataclasses.dataclass(frozen=True)
class BinConfig:
    """Bin tokenizer settings."""

    vocab_size: int = 4096  # codes including PAD and EOS (Chronos: 4096)
    kind: Literal["uniform", "quantile"] = "uniform"
    low: float = -15.0  # uniform: centre of the first bin, in units of the context's mean-abs
    high: float = 15.0  # uniform: centre of the last bin
    context_length: int = 512  # quantile: values per context when fitting the quantiles
    columns: tuple[str, ...] | None = None  # channels; default: close, or every x0..xk

    def __post_init__(self) -> None:
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, (int, np.integer)):
            raise ConfigError(f"vocab_size must be an integer >= 3, got {self.vocab_size!r}")
        if self.vocab_size <= _SPECIAL:
            raise ConfigError(
                f"vocab_size {self.vocab_size} leaves {max(self.vocab_size - _SPECIAL, 0)} bins after "
                f"the {_SPECIAL} special tokens (PAD, EOS); it must be >= 3"
            )
        if self.kind not in ("uniform", "quantile"):
            raise ConfigError(f"kind must be 'uniform' or 'quantile', got {self.kind!r}")
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.low < self.high):
            raise ConfigError(f"need finite low < high, got low={self.low}, high={self.high}")
        require_int(self.context_length, "context_length", 2)
        if self.columns is not None:
            columns = (self.columns,) if isinstance(self.columns, str) else tuple(self.columns)
            if not columns:
                raise ConfigError("columns must name at least one column (or be left unset)")
            object.__setattr__(self, "columns", columns)

    @property
    def bins(self) -> int:
        return self.vocab_size - _SPECIAL


def mean_abs_scale(values: Float[np.ndarray, "T C"]) -> Float[np.ndarray, " C"]:
    """Chronos' scale of a context: mean absolute value per channel, 1 where that is 0."""
    scale = np.mean(np.abs(values), axis=0)
    return np.where(scale > 0, scale, 1.0)


@final
class BinTokenizer(AbstractTokenizer):
    """Values to bin codes, per channel, after mean-abs scaling of the context.

    Example:
        >>> tokenizer = BinTokenizer(kind="quantile").fit(train)
        >>> codes, scale = tokenizer.encode_values(context)   # (T, C) int32, (C,)
        >>> values = tokenizer.decode(codes, scale=scale)      # (T, C)
    """

    name: ClassVar[str] = "bins"
    config_class: ClassVar[type] = BinConfig
    PAD: ClassVar[int] = PAD
    EOS: ClassVar[int] = EOS

    def __init__(self, config: BinConfig | None = None, **options: Any):
        base = config if config is not None else BinConfig()
        try:
            self.config = dataclasses.replace(base, **options) if options else base
        except TypeError as error:
            allowed = ", ".join(f.name for f in dataclasses.fields(BinConfig))
            raise ConfigError(f"BinTokenizer: {error}; allowed options: {allowed}") from None
        self.trained_through = None
        self.columns: tuple[str, ...] | None = self.config.columns
        self._centres: np.ndarray | None = None  # (C, B)
        self._boundaries: np.ndarray | None = None  # (C, B - 1)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def special_tokens(self) -> int:
        return _SPECIAL

    @property
    def value_names(self) -> tuple[str, ...]:
        self.require_fitted("value_names")
        return self.columns

    def fit(
        self,
        frame: pd.DataFrame,
        *,
        key: Any = None,
        steps: int | None = None,
        fence: TimeFence | None = None,
        val_fraction: float = 0.0,
        eval_every: int | None = None,
    ) -> BinTokenizer:
        """Choose the channels, fit quantile bins if asked, record ``trained_through``.

        ``key``, ``steps``, ``val_fraction`` and ``eval_every`` are accepted for a common signature
        and unused: nothing is random or trained by gradient here.
        """
        what = "BinTokenizer.fit"
        columns = self._columns_of(frame, what)
        check_frame(frame, columns, what)
        check_fence(frame, fence, what)
        bins = self.config.bins
        if self.config.kind == "uniform":
            centres = np.linspace(self.config.low, self.config.high, bins)
            boundaries = (centres[1:] + centres[:-1]) / 2
            self._centres = np.tile(centres, (len(columns), 1))
            self._boundaries = np.tile(boundaries, (len(columns), 1))
        else:
            scaled = self._scaled_contexts(frame, columns)  # (values, C)
            self._boundaries = np.quantile(scaled, np.arange(1, bins) / bins, axis=0).T
            self._centres = np.quantile(scaled, (np.arange(bins) + 0.5) / bins, axis=0).T
        # model.eqx holds float32; round now so a reloaded tokenizer gives the same codes.
        self._centres = self._centres.astype(np.float32).astype(np.float64)
        self._boundaries = self._boundaries.astype(np.float32).astype(np.float64)
        self.columns = columns
        self.trained_through = trained_through(frame)
        return self

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """int32 codes ``(rows, C)``: each asset's rows scaled as one context, assets in turn."""
        parts = [self.encode_values(values)[0] for _, _, values in self.series(frame, "encode")]
        return np.concatenate(parts).astype(np.int32)

    def encode_values(
        self, values: Float[np.ndarray, "T C"], scale: Any = None
    ) -> tuple[Int[np.ndarray, "T C"], Float[np.ndarray, " C"]]:
        """Codes of one context ``(T, C)`` (or ``(T,)`` for one channel) and the scale used.

        Args:
            values: the context, finite.
            scale: per-channel scale; default the context's mean-abs.
        """
        self.require_fitted("encode")
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != len(self.columns):
            raise DataError(
                f"encode: expected values of shape (T >= 1, {len(self.columns)}), got {np.shape(values)}",
                rule="value shape",
            )
        if not np.isfinite(x).all():
            row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise DataError("encode: values must be finite", row=row, rule="finite values")
        scale = mean_abs_scale(x) if scale is None else np.broadcast_to(np.asarray(scale, float), (x.shape[1],))
        scaled = x / scale[None, :]
        codes = np.empty(x.shape, np.int32)
        for c in range(x.shape[1]):
            codes[:, c] = np.searchsorted(self._boundaries[c], scaled[:, c], side="right") + _SPECIAL
        return codes, scale

    def decode(self, codes: Any, **context: Any) -> np.ndarray:
        """Values ``(T, C)`` from codes ``(T, C)`` (or ``(T,)`` with one channel) and ``scale=``.

        PAD and EOS decode to NaN.
        """
        self.require_fitted("decode")
        unknown = set(context) - {"scale"}
        if unknown or "scale" not in context:
            raise ConfigError(
                "BinTokenizer.decode needs scale= (from encode_values or mean_abs_scale of the "
                f"context) and nothing else; got {sorted(context)}"
            )
        array = np.asarray(codes)
        if array.ndim == 1 and len(self.columns) == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] != len(self.columns):
            raise DataError(f"decode: codes must have shape (T, {len(self.columns)}), got {array.shape}",
                            rule="code shape")
        array = check_codes(array, self.vocab_size, 0)
        scale = np.broadcast_to(np.asarray(context["scale"], float), (array.shape[1],))
        bins = np.clip(array - _SPECIAL, 0, self.config.bins - 1)
        values = np.take_along_axis(self._centres.T, bins, axis=0) * scale[None, :]
        return np.where(array < _SPECIAL, np.nan, values)

    # --- code streams and forecasts (the contract of AbstractTokenizer) --------------------------

    @property
    def target_columns(self) -> tuple[str, ...]:
        self.require_fitted("target_columns")
        return self.columns

    @property
    def channels_per_row(self) -> int | None:
        self.require_fitted("channels_per_row")
        return len(self.columns)

    def check_encodable(self, frame: pd.DataFrame, source: str) -> None:
        self.require_fitted("check_encodable")
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ConfigError(f"{source}: lacks column(s) {missing} that this bin tokenizer encodes")

    def stream_length(self, rows: int, frame: pd.DataFrame) -> int:
        """Rows times channels: one code per row and channel, interleaved row by row."""
        return rows * len(self._columns_of(frame, "stream_length"))

    def stream_scales(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per asset, the mean-abs scale of its rows in ``frame`` (the training rows): held-out
        codes of a training stream are scaled as the training codes were."""
        return {asset: mean_abs_scale(values) for asset, _, values in self.series(frame, "stream_scales")}

    def code_stream(self, values: np.ndarray, scale: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Codes row by row, channels interleaved (``x0 x1 x2 x0 x1 x2 ...``); ``scale`` default:
        the values' own mean-abs."""
        codes, _ = self.encode_values(values, scale=scale)  # (T, C)
        return codes.reshape(-1).astype(np.int32), np.repeat(np.arange(len(codes)), codes.shape[1])

    def context_input(self, context: pd.DataFrame, max_codes: int) -> ContextInput:
        """Whole rows of codes, scaled by the context's own mean-abs (Chronos, Sec. 3.1); the
        state is that scale."""
        ((_, _, values),) = self.series(context, "context_input")
        codes, scale = self.encode_values(values)
        channels = codes.shape[1]
        stream, ends = codes.reshape(-1), np.repeat(np.arange(len(codes)), channels)
        keep = max(channels, max_codes // channels * channels)
        return ContextInput(stream[-keep:].astype(np.int32), ends[-keep:], context.reset_index(drop=True), scale)

    def horizon_codes(self, horizon: int) -> int:
        return horizon * len(self.target_columns)

    def forecast_output(self, drawn: np.ndarray, state: Any, horizon: int) -> np.ndarray:
        """Codes ``(S, H * C)`` decoded with the context's scale; PAD and EOS, which encode no
        value, read as the nearest bin."""
        channels = len(self.target_columns)
        drawn = np.maximum(np.asarray(drawn), self.special_tokens)
        paths = drawn.reshape(drawn.shape[0], horizon, channels)  # (S, H, C)
        return np.stack([self.decode(path, scale=state) for path in paths])

    def tokens(self, frame: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for asset, rows, values in self.series(frame, "tokens"):
            codes, _ = self.encode_values(values)
            stamps = frame["timestamp"].to_numpy()[rows]
            for c, column in enumerate(self.columns):
                parts.append(pd.DataFrame(
                    {"asset": asset, "timestamp": stamps, "channel": column, "code": codes[:, c]}
                ))
        return pd.concat(parts, ignore_index=True)

    def targets(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self._layout(frame, [(rows, values) for _, rows, values in self.series(frame, "targets")])

    def reconstruct(self, frame: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for _, rows, values in self.series(frame, "reconstruct"):
            codes, scale = self.encode_values(values)
            parts.append((rows, self.decode(codes, scale=scale)))
        return self._layout(frame, parts)

    def save(self, directory: str | Path) -> Path:
        self.require_fitted("save")
        header = {
            "kind": self.name,
            "format": 1,
            "config": dataclasses.asdict(self.config),
            "columns": list(self.columns),
            "trained_through": fence_record(self.trained_through),
        }
        leaves = (jnp.asarray(self._centres), jnp.asarray(self._boundaries))
        return write_tokenizer(directory, header, leaves)

    @classmethod
    def load(cls, directory: str | Path) -> BinTokenizer:
        header = read_header(directory, cls.name)
        try:
            tokenizer = cls(BinConfig(**header["config"]))
        except TypeError as error:
            raise ConfigError(f"{directory}: tokenizer.json has a bad config ({error})") from None
        channels, bins = len(header["columns"]), tokenizer.config.bins
        like = (jnp.zeros((channels, bins)), jnp.zeros((channels, bins - 1)))
        centres, boundaries = read_leaves(directory, like)
        tokenizer._centres = np.asarray(centres, dtype=np.float64)
        tokenizer._boundaries = np.asarray(boundaries, dtype=np.float64)
        tokenizer.columns = tuple(header["columns"])
        tokenizer.trained_through = fence_from_record(header["trained_through"])
        return tokenizer

    # --- internals -------------------------------------------------------------------------------

    def _columns_of(self, frame: Any, what: str) -> tuple[str, ...]:
        if self.config.columns is not None:
            return self.config.columns
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}", rule="frame")
        columns = tuple(target_columns(frame))
        if not columns:
            raise DataError(f"{what}: the frame has no close or x0..xk column to tokenise", rule="columns")
        return columns

    def encode_series(self, values: Float[np.ndarray, "T C"]) -> Int[np.ndarray, "T C"]:
        """Codes of one context, scaled by its own mean-abs (see :meth:`encode_values`)."""
        return self.encode_values(values)[0]

    def series(self, frame: pd.DataFrame, what: str = "series") -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(asset, row positions, values (T, C))`` per asset."""
        self.require_fitted(what)
        check_frame(frame, self.columns, f"BinTokenizer.{what}")
        values = frame[list(self.columns)].to_numpy(dtype=np.float64)
        return [(asset, rows, values[rows]) for asset, rows in asset_slices(frame)]

    def _scaled_contexts(self, frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
        values = frame[list(columns)].to_numpy(dtype=np.float64)
        length = self.config.context_length
        scaled = []
        for _, rows in asset_slices(frame):
            series = values[rows]
            for start in range(0, len(series), length):
                context = series[start : start + length]
                scaled.append(context / mean_abs_scale(context)[None, :])
        return np.concatenate(scaled)

    def _layout(self, frame: pd.DataFrame, parts) -> pd.DataFrame:
        values = np.full((len(frame), len(self.columns)), np.nan)
        for rows, block in parts:
            values[rows] = block
        out = pd.DataFrame(values, columns=list(self.columns))
        out.insert(0, "timestamp", frame["timestamp"].to_numpy())
        out.insert(0, "asset", frame["asset"].astype(str).to_numpy())
        return out
