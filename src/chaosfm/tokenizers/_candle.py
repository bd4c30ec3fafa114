"""What FSQ and VQ-VAE share: candle features, normalisation, the optax loop, encode and decode.

Both are autoencoders ``candles -> Encoder -> quantizer -> Decoder -> candles`` around the causal
CNN of ``_cnn.py``; they differ only in the quantizer, an equinox module with

- ``quantize(z) -> (z_q, codes, aux_loss)``: latents ``(N, D)`` to quantized latents with a
  straight-through gradient, int32 codes ``(N,)`` and a loss added to the reconstruction loss;
- ``encode(z) -> codes`` and ``decode(codes) -> z_q``: the same without gradients;
- ``update(z, codes, *, picks, step) -> quantizer``: a new quantizer after a training step (EMA
  codebook updates and dead-code restarts for VQ-VAE, nothing for FSQ); ``picks`` are
  ``restart_picks`` distinct random rows of ``z``, drawn by the training loop;
- ``vocab_size`` and ``restart_picks`` (how many random rows ``update`` wants; 0 for none).

Dimension letters: T candles, F features, D latent dimensions, P candles per patch, B windows in
a batch, W candles per window, N latents.

Features are standardised with the mean and standard deviation of the training rows only; the
reconstruction loss is the mean squared error in those units, so every feature weighs the same.
The first rows of an asset, whose features are undefined (no previous close), are left out of
training and set to the training mean when encoding.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float, Int, PRNGKeyArray

from chaosfm._config import ConfigError, require_int
from chaosfm._random import numpy_rng
from chaosfm._progress import COMPILING, progress
from chaosfm.data import (
    FEATURE_COLUMNS,
    MARKET_COLUMNS,
    DataError,
    TimeFence,
    frame_kind,
    heldout_split,
    heldout_windows,
    require_ohlc,
    trained_through,
)
from chaosfm.tokenizers._base import (
    AbstractTokenizer,
    ContextInput,
    asset_slices,
    check_codes,
    check_fence,
    check_frame,
    check_positive,
    fence_from_record,
    fence_record,
    read_header,
    read_leaves,
    write_tokenizer,
)
from chaosfm.tokenizers._candle_features import _warmup_length, feature_arrays
from chaosfm.tokenizers._candle_train import _heldout_loss, _train_step
from chaosfm.tokenizers._cnn import Decoder, Encoder, receptive_field

# Encode pads each series on the right to a multiple of this many codes, so a handful of
# compiled shapes serve every length (padding on the right cannot change causal outputs).
_BUCKET = 512
_DATA_BUCKET = 8192
_NEEDS_CANDLES = "the {} tokenizer (candle features; the bins tokenizer reads close only)"


@dataclasses.dataclass(frozen=True)
class CandleConfig:
    """Network and training settings shared by the FSQ and VQ-VAE tokenizers."""

    features: tuple[str, ...] = ("symlog_return", "body", "upper_wick", "lower_wick", "range")
    patch: int = 1  # candles per code; 1 gives one code per candle
    # Encoder channels. 24 encodes ~30% faster than 32 on a 2-core CPU with the same health on four
    # indices (FSQ held-out usage 0.87, worst RMSE ratio 0.39); encoding is the hot path.
    width: int = 24
    decoder_width: int = 64  # decoding is off the hot path, and a wider decoder reconstructs better
    taps: int = 3  # kernel size of each causal convolution
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # receptive field 1 + 2 * 15 = 31 candles
    window: int = 128  # candles per training window (at least the receptive field)
    batch_size: int = 32  # windows per step: 4096 candles, enough to see most codes each step
    learning_rate: float = 2e-3  # peak of a warm-up + cosine schedule
    weight_decay: float = 1e-4
    clip_norm: float = 1.0  # global gradient norm clip; fat-tailed candles make rare huge steps

    def __post_init__(self) -> None:
        features = tuple(self.features) if not isinstance(self.features, str) else (self.features,)
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "dilations", tuple(self.dilations))
        if not features:
            raise ConfigError("features must name at least one candle feature")
        unknown = [f for f in features if f not in FEATURE_COLUMNS]
        if unknown:
            raise ConfigError(f"unknown feature(s) {unknown}; known: {', '.join(FEATURE_COLUMNS)}")
        if len(set(features)) != len(features):
            raise ConfigError(f"features repeat a name: {list(features)}")
        require_int(self.patch, "patch", 1)
        require_int(self.width, "width", 1)
        require_int(self.decoder_width, "decoder_width", 1)
        require_int(self.taps, "taps", 1)
        if not self.dilations:
            raise ConfigError("dilations must list at least one dilation")
        for d in self.dilations:
            require_int(d, "each dilation", 1)
        require_int(self.window, "window", 1)
        require_int(self.batch_size, "batch_size", 1)
        check_positive(self.learning_rate, "learning_rate")
        check_positive(self.clip_norm, "clip_norm")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.window < self.receptive_field:
            raise ConfigError(
                f"window {self.window} is shorter than the encoder's receptive field "
                f"{self.receptive_field} candles (taps {self.taps}, dilations {list(self.dilations)}); "
                "lengthen the window or use fewer dilations"
            )
        if self.window % self.patch:
            raise ConfigError(f"window {self.window} must be a multiple of patch {self.patch}")

    @property
    def receptive_field(self) -> int:
        """Candles one code sees: the encoder's receptive field plus the rest of its patch."""
        return receptive_field(self.taps, self.dilations) + self.patch - 1


class Networks(eqx.Module):
    """The trainable half of a candle tokenizer: encoder and decoder."""

    encoder: Encoder
    decoder: Decoder


def _make_autoencoder(config: CandleConfig, latent: int, key: PRNGKeyArray) -> Networks:
    encoder_key, decoder_key = jax.random.split(key)
    features = len(config.features)
    return Networks(
        encoder=Encoder(
            features, latent, width=config.width, taps=config.taps, dilations=config.dilations,
            patch=config.patch, key=encoder_key,
        ),
        decoder=Decoder(
            latent, features, width=config.decoder_width, taps=config.taps,
            dilations=config.dilations, patch=config.patch, key=decoder_key,
        ),
    )


def _initialise(config: CandleConfig, latent: int, make_quantizer: Any, key: PRNGKeyArray):
    network_key, quantizer_key = jax.random.split(key)
    return _make_autoencoder(config, latent, network_key), make_quantizer(config, quantizer_key)


def _bucket(length: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(length / multiple)) * multiple)


class AbstractCandleTokenizer(AbstractTokenizer):
    """A causal CNN autoencoder over candle features with a quantizer in the middle.

    Concrete subclasses set ``name`` and ``config_class`` and implement :meth:`latent_dim`,
    :meth:`make_quantizer` and :meth:`vocab_size`; everything else lives here.

    Attributes:
        config: the frozen config (a ``config_class`` instance).
        trained_through: last timestamp of every asset the fit saw.
        history: ``{"step", "loss", "mse", "batch_usage"}`` records written during ``fit``.
    """

    config_class: ClassVar[type[CandleConfig]]

    def __init__(self, config: CandleConfig | None = None, **options: Any):
        base = config if config is not None else self.config_class()
        if not isinstance(base, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(base).__name__}"
            )
        try:
            self.config = dataclasses.replace(base, **options) if options else base
        except TypeError as error:
            allowed = ", ".join(f.name for f in dataclasses.fields(self.config_class))
            raise ConfigError(f"{type(self).__name__}: {error}; allowed options: {allowed}") from None
        self.trained_through = None
        self.history: list[dict[str, float]] = []
        self._autoencoder: Networks | None = None
        self._quantizer: Any = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None

    # --- what a concrete tokenizer supplies ---------------------------------------------------

    @property
    @abc.abstractmethod
    def latent_dim(self) -> int:
        """D, the size of one latent vector."""

    @staticmethod
    @abc.abstractmethod
    def make_quantizer(config: CandleConfig, key: PRNGKeyArray) -> Any:
        """A fresh, untrained quantizer (see the module docstring for its methods)."""

    # --- common API ------------------------------------------------------------------------------

    @property
    def special_tokens(self) -> int:
        return 0

    @property
    def value_names(self) -> tuple[str, ...]:
        return self.config.features

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    def series(self, frame: pd.DataFrame, what: str = "series") -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(asset, row positions, features (T, F))`` per asset; NaN only in warm-up rows."""
        require_ohlc(frame, _NEEDS_CANDLES.format(self.name))
        check_frame(frame, MARKET_COLUMNS, what)
        slices = asset_slices(frame)
        out = []
        for (asset, rows), values in zip(slices, feature_arrays(frame, self.config.features, slices)):
            _warmup_length(values, what, asset)
            out.append((asset, rows, values))
        return out

    def fit(
        self,
        frame: pd.DataFrame,
        *,
        key: PRNGKeyArray | None = None,
        steps: int | None = 2000,
        fence: TimeFence | None = None,
        val_fraction: float = 0.0,
        eval_every: int | None = None,
    ) -> AbstractCandleTokenizer:
        """Train encoder, quantizer and decoder on ``frame`` with optax; return self.

        Every call starts from fresh weights drawn from ``key``.

        Args:
            frame: a validated market frame, every row at or before ``fence``'s cutoff.
            key: PRNG key for initialisation and window sampling (required).
            steps: optimiser steps.
            fence: when given, rows past its cutoff raise :class:`~chaosfm.data.LeakageError`.
            val_fraction: the last fraction of each asset's rows (at least one window) kept out
                of the gradient and of the normalisation; the loss on up to ``batch_size`` windows
                of them is ``val_loss`` in :attr:`history` (0: nothing held out).
            eval_every: steps between held-out losses (None: a tenth of ``steps``, at least 1);
                one is also taken before the first step and after the last.

        Raises:
            LeakageError, DataError, ConfigError.
        """
        what = f"{type(self).__name__}.fit"
        if key is None:
            raise ConfigError(f"{what} needs key=jax.random.key(seed); randomness is never implicit")
        steps = require_int(2000 if steps is None else steps, "steps", 1)
        series = self.series(frame, what)
        check_fence(frame, fence, what)
        data, starts, mean, std, heldout = self._training_windows(series, what, val_fraction)
        init_key, loop_key = jax.random.split(key)
        networks, quantizer = _initialise(self.config, self.latent_dim, self.make_quantizer, init_key)
        optimiser, step_fn, init_fn = _train_step(self.config)
        opt_state = init_fn(eqx.filter(networks, eqx.is_array))
        # Random draws of the loop are made here with numpy, from loop_key: threefry inside the
        # step would add seconds of XLA compilation for nothing.
        rng = numpy_rng(loop_key)
        window_starts = starts[rng.integers(0, len(starts), (steps, self.config.batch_size))]
        latents = self.config.batch_size * self.config.window // self.config.patch
        wanted = min(quantizer.restart_picks, latents)
        restart_picks = (
            np.stack([rng.choice(latents, wanted, replace=False) for _ in range(steps)])
            if wanted else np.zeros((steps, 0))
        ).astype(np.int32)
        history = []
        every = max(1, steps // 100)
        every_eval = eval_every or max(1, steps // 10)
        # A record's "step" counts the updates made to the weights its losses were measured with.
        for step in progress(range(steps), f"{self.name} fit", total=steps, first=COMPILING):
            held = {}
            if heldout is not None and step % every_eval == 0:
                held = {"val_loss": float(_heldout_loss(networks, quantizer, heldout))}
            networks, quantizer, opt_state, stats = step_fn(
                networks, quantizer, opt_state, data, window_starts[step], restart_picks[step],
                np.int32(step), np.int32(steps),
            )
            if step % every == 0 or step == steps - 1:
                history.append({"step": step, **{k: float(v) for k, v in stats.items()}, **held})
            elif held:
                history.append({"step": step, **held})
        if heldout is not None:
            history.append({"step": steps, "val_loss": float(_heldout_loss(networks, quantizer, heldout))})
        if not all(math.isfinite(h.get("loss", 0.0)) for h in history):
            raise FloatingPointError(f"{what}: the loss became NaN or inf; lower learning_rate")
        self._autoencoder, self._quantizer = networks, quantizer
        self._mean, self._std = mean, std
        self.history = history
        self.trained_through = trained_through(frame)
        return self

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """int32 codes ``(codes,)``: each asset's codes in turn, one per patch of candles.

        Patches start at an asset's first row; a trailing incomplete patch gets no code.
        """
        series = self.series(frame, f"{type(self).__name__}.encode")
        parts = [self.encode_series(values) for _, _, values in series]
        return np.concatenate(parts).astype(np.int32)

    def encode_series(self, values: Float[np.ndarray, "T F"]) -> Int[np.ndarray, " codes"]:
        """int32 codes ``(T // P,)`` of one series of features ``(T, F)`` in feature units
        (leading NaN rows are warm-up, as :meth:`series` gives them)."""
        self.require_fitted("encode")
        x = self._normalised(values, "encode")
        if x.shape[0] < self.receptive_field:
            raise DataError(
                f"encode: {x.shape[0]} candles is shorter than the receptive field "
                f"{self.receptive_field} of this tokenizer",
                rule="window >= receptive field",
            )
        count = x.shape[0] // self.config.patch
        padded = np.zeros((_bucket(count, _BUCKET) * self.config.patch, x.shape[1]), np.float32)
        padded[: x.shape[0]] = x
        codes = _encode_jit(self._autoencoder.encoder, self._quantizer, padded)
        # Slice on the host: slicing the device array would dispatch (and compile) an XLA op.
        return np.asarray(codes)[:count].astype(np.int32, copy=False)

    def decode(self, codes: Any, **context: Any) -> np.ndarray:
        """Features ``(codes * P, F)`` in feature units from one series of codes ``(codes,)``,
        or ``(batch, codes * P, F)`` from ``(batch, codes)``."""
        self.require_fitted("decode")
        if context:
            raise ConfigError(f"{type(self).__name__}.decode takes no context, got {sorted(context)}")
        array = check_codes(codes, self.vocab_size, 0)
        count = array.shape[-1]
        # Power-of-two lengths: few compiled shapes, and a short batch of sampled paths is not
        # padded to hundreds of codes per row.
        padded = np.zeros((*array.shape[:-1], max(16, 1 << (count - 1).bit_length())), np.int32)
        padded[..., :count] = array
        decode = _decode_jit if array.ndim == 1 else _decode_batch_jit
        out = decode(self._autoencoder.decoder, self._quantizer, padded)
        out = np.asarray(out)[..., : count * self.config.patch, :].astype(np.float64)
        return out * self._std + self._mean

    # --- code streams and forecasts (the contract of AbstractTokenizer) --------------------------

    @property
    def target_columns(self) -> tuple[str, ...]:
        return ("close",)

    @property
    def rows_per_code(self) -> int | None:
        return int(self.config.patch)

    @property
    def learns_by_gradient(self) -> bool:
        return True

    @property
    def one_code_per_candle(self) -> bool:
        return self.config.patch == 1

    def check_encodable(self, frame: pd.DataFrame, source: str) -> None:
        kind = frame_kind(frame)
        if kind != "market":
            raise ConfigError(f"{source}: is {kind} data, but a {self.name} tokenizer encodes market candles")
        require_ohlc(frame, _NEEDS_CANDLES.format(self.name))

    def stream_length(self, rows: int, frame: pd.DataFrame) -> int:
        return rows // self.config.patch

    def code_stream(self, values: np.ndarray, scale: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """One code per patch of candles, from the first row; ``scale`` is unused (features are
        standardised with the fit's statistics)."""
        stream = self.encode_series(values)
        patch = self.config.patch
        return stream.astype(np.int32), np.arange(len(stream)) * patch + patch - 1

    def _return_feature(self) -> tuple[int, Any]:
        """Index of the decoded return feature and the map back to log returns."""
        names = list(self.value_names)
        if "log_return" in names:
            return names.index("log_return"), lambda x: x
        if "symlog_return" in names:
            return names.index("symlog_return"), lambda x: np.sign(x) * np.expm1(np.abs(x)) / 100.0
        raise ConfigError(
            f"the {self.name} tokenizer's features {names} hold no log_return or symlog_return; "
            "close prices cannot be rebuilt from them"
        )

    def context_input(self, context: pd.DataFrame, max_codes: int) -> ContextInput:
        """Codes of whole patches, the oldest rows dropped so the last code ends at the origin; the
        state holds the last close and the context's last codes (up to 64), after which sampled
        codes are decoded so the causal decoder's receptive field is filled."""
        self._return_feature()  # fail before sampling
        patch = self.config.patch
        context = context.iloc[len(context) % patch :]
        ((_, _, values),) = self.series(context, "context_input")
        codes, ends = self.code_stream(values)
        state = {"lead": codes[-min(codes.size, 64) :], "last_close": float(context["close"].iloc[-1])}
        return ContextInput(codes[-max_codes:], ends[-max_codes:], context.reset_index(drop=True), state)

    def horizon_codes(self, horizon: int) -> int:
        return -(-horizon // self.config.patch)

    def forecast_output(self, drawn: np.ndarray, state: Any, horizon: int) -> np.ndarray:
        """Closes ``(S, H, 1)`` rebuilt from the decoded returns, from the context's last close."""
        index, to_log_return = self._return_feature()
        lead = state["lead"]
        drawn = np.asarray(drawn)
        paths = np.concatenate([np.broadcast_to(lead, (drawn.shape[0], lead.size)), drawn], axis=1)
        returns = self.decode(paths)[:, lead.size * self.config.patch :, index][:, :horizon]  # (S, H)
        return (state["last_close"] * np.exp(np.cumsum(to_log_return(returns), axis=1)))[:, :, None]

    def return_decoder(self) -> Any:
        """``codes (n,) -> per-code log returns (n,)`` through the decoder, in JAX: the decoded
        return feature (``log_return``, or ``symlog_return`` inverted), summed over each code's
        ``P`` candles."""
        self.require_fitted("return_decoder")
        index, _ = self._return_feature()
        symlog = self.value_names[index] == "symlog_return"
        decoder, quantizer = self._autoencoder.decoder, self._quantizer
        mean, std = float(self._mean[index]), float(self._std[index])
        patch = int(self.config.patch)

        def decode(codes):
            value = decoder(quantizer.decode(codes))[:, index] * std + mean  # (n * P,)
            if symlog:
                value = jnp.sign(value) * jnp.expm1(jnp.abs(value)) / 100.0
            return jnp.sum(value.reshape(-1, patch), axis=-1)

        return decode

    def tokens(self, frame: pd.DataFrame) -> pd.DataFrame:
        series = self.series(frame, f"{type(self).__name__}.tokens")
        parts = []
        patch = self.config.patch
        for asset, rows, values in series:
            codes = self.encode_series(values)
            last_rows = rows[patch - 1 :: patch][: len(codes)]
            parts.append(pd.DataFrame({
                "asset": asset,
                "timestamp": frame["timestamp"].to_numpy()[last_rows],
                "code": codes,
            }))
        return pd.concat(parts, ignore_index=True)

    def targets(self, frame: pd.DataFrame) -> pd.DataFrame:
        series = self.series(frame, f"{type(self).__name__}.targets")
        return self._layout(frame, [(rows, values) for _, rows, values in series])

    def reconstruct(self, frame: pd.DataFrame) -> pd.DataFrame:
        series = self.series(frame, f"{type(self).__name__}.reconstruct")
        laid_out = []
        for _, rows, values in series:
            decoded = self.decode(self.encode_series(values))
            full = np.full_like(values, np.nan)
            full[: len(decoded)] = decoded
            laid_out.append((rows, full))
        return self._layout(frame, laid_out)

    def save(self, directory: str | Path) -> Path:
        self.require_fitted("save")
        header = {
            "kind": self.name,
            "format": 1,
            "config": dataclasses.asdict(self.config),
            "mean": self._mean.tolist(),
            "std": self._std.tolist(),
            "trained_through": fence_record(self.trained_through),
        }
        return write_tokenizer(directory, header, (self._autoencoder, self._quantizer))

    @classmethod
    def load(cls, directory: str | Path) -> AbstractCandleTokenizer:
        header = read_header(directory, cls.name)
        try:
            tokenizer = cls(cls.config_class(**header["config"]))
        except TypeError as error:
            raise ConfigError(f"{directory}: tokenizer.json has a bad config ({error})") from None
        # Only the structure and shapes matter: every leaf is read from model.eqx.
        like = _initialise(tokenizer.config, tokenizer.latent_dim, cls.make_quantizer, jax.random.key(0))
        tokenizer._autoencoder, tokenizer._quantizer = read_leaves(directory, like)
        tokenizer._mean = np.asarray(header["mean"], dtype=np.float64)
        tokenizer._std = np.asarray(header["std"], dtype=np.float64)
        tokenizer.trained_through = fence_from_record(header["trained_through"])
        return tokenizer

    # --- internals -------------------------------------------------------------------------------

    def _training_windows(self, series, what, val_fraction: float = 0.0):
        window = self.config.window
        valid = [(asset, values[_warmup_length(values, what, asset):]) for asset, _, values in series]
        short = [(a, len(v)) for a, v in valid if len(v) < window]
        if short:
            raise DataError(
                f"{what}: asset(s) {', '.join(f'{a} ({n} candles)' for a, n in short)} have fewer "
                f"candles than one training window ({window}); lower window (at least the receptive "
                f"field, {self.receptive_field}) or drop the asset",
                rule="window >= receptive field",
            )
        split = heldout_split({a: {"x": v} for a, v in valid}, val_fraction, window)
        held = heldout_windows(split.heldout, window, self.config.batch_size)
        valid = [(asset, split.train[asset]["x"]) for asset, _ in valid]
        stacked = np.concatenate([v for _, v in valid])
        mean = stacked.mean(axis=0)
        std = np.maximum(stacked.std(axis=0), 1e-8)
        # Zero rows pad the data to a bucket size, so the training step compiles once for many
        # data sizes; no window starts in the padding.
        data = np.zeros((_bucket(len(stacked), _DATA_BUCKET), stacked.shape[1]), np.float32)
        data[: len(stacked)] = (stacked - mean[None, :]) / std[None, :]
        starts, offset = [], 0
        for _, values in valid:
            starts.append(offset + np.arange(len(values) - window + 1))
            offset += len(values)
        heldout = None if held is None else jnp.asarray((held["x"] - mean) / std, jnp.float32)  # (B, W, F)
        return jnp.asarray(data), np.concatenate(starts).astype(np.int32), mean, std, heldout

    def _normalised(self, values: np.ndarray, what: str) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.config.features):
            raise DataError(
                f"{what}: expected features of shape (candles, {len(self.config.features)}), "
                f"got {values.shape}", rule="feature shape",
            )
        warm = _warmup_length(values, what, "<series>")
        x = (values - self._mean[None, :]) / self._std[None, :]
        x[:warm] = 0.0
        return x.astype(np.float32)

    def _layout(self, frame: pd.DataFrame, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
        values = np.full((len(frame), len(self.config.features)), np.nan)
        for rows, block in parts:
            values[rows] = block
        out = pd.DataFrame(values, columns=list(self.config.features))
        out.insert(0, "timestamp", frame["timestamp"].to_numpy())
        out.insert(0, "asset", frame["asset"].astype(str).to_numpy())
        return out


@eqx.filter_jit
def _encode_jit(encoder: Encoder, quantizer: Any, x: Float[Array, "T F"]) -> Int[Array, " N"]:
    return quantizer.encode(encoder(x))


@eqx.filter_jit
def _decode_jit(decoder: Decoder, quantizer: Any, codes: Int[Array, " N"]) -> Float[Array, "T F"]:
    return decoder(quantizer.decode(codes))


@eqx.filter_jit
def _decode_batch_jit(decoder: Decoder, quantizer: Any, codes: Int[Array, "B N"]) -> Float[Array, "B T F"]:
    return jax.vmap(lambda row: decoder(quantizer.decode(row)))(codes)
