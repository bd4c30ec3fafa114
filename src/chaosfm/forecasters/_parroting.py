"""Context parroting: forecast by copying what followed the best match of the recent past.

Zhang & Gilpin (2025), "Context parroting: a simple but tough-to-beat baseline for foundation
models in scientific machine learning" (arXiv:2505.11349), find that time-series foundation
models forecast chaotic systems largely by locating the recent motif earlier in their context
and repeating its continuation, and that doing exactly that, with no training, is a strong
baseline. It is a nearest-neighbour analogue forecast (Lorenz 1969, "Atmospheric predictability
as revealed by naturally occurring analogues", J. Atmos. Sci. 26) restricted to the context.

Dimension letters: S samples, H horizon steps, C channels, T context rows, D motif length.
"""

from __future__ import annotations

from typing import Any, final

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from chaosfm._config import require_int
from chaosfm.forecasters._base import AbstractForecaster, Forecast
from chaosfm.forecasters._baselines import _ALL_KINDS, _begin_fit, _read_context


def _match_distances(scaled: np.ndarray, motif_length: int, last_start: int) -> np.ndarray:
    """Squared distances ``(last_start + 1,)`` from the motif to the windows starting 0..last_start.

    Args:
        scaled: ``(T, C)`` standardised series; the motif is its last ``motif_length`` rows.
        motif_length: D.
        last_start: the latest window start to compare.
    """
    windows = sliding_window_view(scaled[: last_start + motif_length], motif_length, axis=0)
    motif = scaled[-motif_length:].T  # (C, D), the layout of each window
    return np.square(windows - motif).sum(axis=(1, 2))  # windows: (last_start + 1, C, D)


def _distinct_best(distances: np.ndarray, count: int, min_separation: int) -> np.ndarray:
    """Up to ``count`` window starts, best first, no two closer than ``min_separation`` rows.

    Greedy non-maximum suppression: a start one or two rows from a chosen one is mostly the same
    past episode, so it would not add a different future to the samples.
    """
    blocked = np.zeros(len(distances), dtype=bool)
    chosen: list[int] = []
    for start in np.argsort(distances, kind="stable"):
        if blocked[start]:
            continue
        chosen.append(int(start))
        if len(chosen) == count:
            break
        blocked[max(0, start - min_separation + 1) : start + min_separation] = True
    return np.asarray(chosen)


def _last_start(length: int, motif_length: int, remaining: int) -> int:
    """Latest admissible match start in a series of ``length`` rows.

    A match must be followed by ``remaining`` rows in the series (its whole continuation) and
    must end at least ``motif_length`` rows before the series does, so it cannot overlap the
    motif: an overlapping "trivial match" (Yeh et al. 2016, matrix profile I, Sec. 3) is the
    motif shifted by a row or two and would parrot persistence. When no start leaves room for
    the whole continuation the result is negative and the caller chains.
    """
    return length - motif_length - max(remaining, motif_length)


def _copy_forward(
    raw: np.ndarray, scale: np.ndarray, start: int, horizon: int, motif_length: int
) -> np.ndarray:
    """``(H, C)``: what followed the window at ``start``, chained when the context runs out.

    Each round copies the continuation of the current match (all of it, up to the rows still
    needed), appends it to the series and, if more rows are needed, looks for the best match of
    the new motif in the extended series.
    """
    series, pieces, remaining = raw, [], horizon
    while True:
        take = min(remaining, len(series) - start - motif_length)
        piece = series[start + motif_length : start + motif_length + take]
        pieces.append(piece)
        remaining -= take
        if remaining == 0:
            return np.concatenate(pieces)
        series = np.concatenate([series, piece])
        last = _last_start(len(series), motif_length, remaining)
        if last < 0:
            last = len(series) - 2 * motif_length
        start = int(np.argmin(_match_distances(series / scale, motif_length, last)))


def parrot(
    series: np.ndarray,
    horizon: int,
    num_samples: int,
    motif_length: int,
    min_separation: int = 1,
) -> np.ndarray:
    """Context-parroting paths ``(S, H, C)`` from a series ``(T, C)``.

    The motif is the last ``D = motif_length`` rows. Each channel is divided by its standard
    deviation over the series, so channels weigh alike in the Euclidean distance over the whole
    ``(D, C)`` motif. Candidate matches end at least ``max(H, D)`` rows before the series does:
    their full continuation is in the series and they do not overlap the motif. Path ``k`` copies
    the continuation of the ``k``-th best distinct match (``k`` modulo the number of matches when
    there are fewer than S), so path 0 is the best match and the spread of the paths is the
    ambiguity of the match. When ``T < D + H`` no match has a whole continuation: matches need
    only to end ``D`` rows early, and the forecast chains (see :func:`_copy_forward`).

    Args:
        series: ``(T, C)`` with ``T >= 2 D``.
        horizon: H.
        num_samples: S.
        motif_length: D.
        min_separation: the fewest rows between the starts of two paths' matches.
    """
    length = len(series)
    if length < 2 * motif_length:
        raise ValueError(
            f"parroting with motif_length={motif_length} needs a series of at least "
            f"2 * motif_length = {2 * motif_length} rows; got {length}"
        )
    scale = series.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    last = _last_start(length, motif_length, horizon)
    if last < 0:
        last = length - 2 * motif_length
    starts = _distinct_best(
        _match_distances(series / scale, motif_length, last), num_samples, min_separation
    )
    copies = [_copy_forward(series, scale, int(s), horizon, motif_length) for s in starts]
    return np.stack([copies[k % len(copies)] for k in range(num_samples)])


@final
class ContextParroting(AbstractForecaster):
    """Context parroting (Zhang & Gilpin 2025): copy the continuation of the best past match.

    Trajectories are parroted on their levels, all channels matched together. Market data is
    parroted on log returns of the close (a level-free motif: a pattern recurs at another
    price), and the copied returns are cumulated from the last close into prices. No parameters
    are fitted; ``fit`` records the columns and ``trained_through``. Deterministic: ``key`` is
    accepted and ignored.

    Args:
        motif_length: D, the recent rows matched; the context needs ``2 D`` rows (``2 D + 1``
            prices for market data).
        min_separation: the fewest rows between two paths' match starts (default ``D // 2``,
            at least 1), so that different paths parrot different past episodes.
    """

    name = "context_parroting"
    kinds = _ALL_KINDS

    def __init__(self, motif_length: int = 20, *, min_separation: int | None = None) -> None:
        self.motif_length = require_int(motif_length, "motif_length", 1)
        if min_separation is None:
            min_separation = max(1, self.motif_length // 2)
        self.min_separation = require_int(min_separation, "min_separation", 1)
        self._kind: str | None = None
        self._columns: list[str] | None = None

    def fit(self, frame: pd.DataFrame) -> "ContextParroting":
        self._kind, self._columns = _begin_fit(self, frame)
        return self

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Samples ``(S, H, C)``; sample 0 follows the best match."""
        market = self._kind == "market"
        need = 2 * self.motif_length + (1 if market else 0)
        values, asset = _read_context(
            self, context, horizon, num_samples, need,
            f"a motif of motif_length={self.motif_length} and one earlier window to match it"
            + (", in log returns" if market else ""),
        )
        if market:
            if np.any(values <= 0):
                raise ValueError("market prices must be > 0 to take logs")
            returns = np.diff(np.log(values), axis=0)
            paths = parrot(returns, horizon, num_samples, self.motif_length, self.min_separation)
            samples = values[-1] * np.exp(np.cumsum(paths, axis=1))
        else:
            samples = parrot(values, horizon, num_samples, self.motif_length, self.min_separation)
        # The best match is the parroting forecast proper; the others show its ambiguity.
        return Forecast(samples, self._columns, asset=asset, point=samples[0])

