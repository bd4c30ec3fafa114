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


class AbstractTokenizer(abc.ABC):
    """Frames to int32 codes and back; fitted on training data only.

    Attributes:
        name: short name used in configs and on disk (``"fsq"``, ``"vqvae"``, ``"bins"``).
        trained_through: the last timestamp of every asset the fit saw; ``None`` before ``fit``.
    """

    name: ClassVar[str]
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
    ) -> AbstractTokenizer:
        """Fit on ``frame`` (every row at or before ``fence``'s cutoff) and return self."""

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


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int, or a ConfigError naming ``name`` when it is not an int >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


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


def numpy_rng(key: Any) -> np.random.Generator:
    """A numpy generator seeded by a JAX key (typed or raw): explicit randomness for host-side draws."""
    import jax

    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def fence_record(record: TrainedThrough | None) -> Any:
    return trained_through_to_json(record)


def fence_from_record(record: Any) -> TrainedThrough | None:
    return trained_through_from_json(record)


def load_tokenizer(directory: str | Path) -> AbstractTokenizer:
    """Load whichever tokenizer ``directory`` holds (reads its ``tokenizer.json``)."""
    from chaosfm.tokenizers._bins import BinTokenizer
    from chaosfm.tokenizers._fsq import FSQTokenizer
    from chaosfm.tokenizers._vqvae import VQVAETokenizer

    kinds = {cls.name: cls for cls in (FSQTokenizer, VQVAETokenizer, BinTokenizer)}
    header = read_header(directory)
    kind = header.get("kind")
    if kind not in kinds:
        raise ConfigError(f"{Path(directory) / CONFIG_FILE}: unknown tokenizer kind {kind!r}")
    return kinds[kind].load(directory)
