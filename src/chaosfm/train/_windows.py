"""The one window sampler: training batches of consecutive positions, a function of the step alone.

Every training job (code models, stages, JEPA pretraining, the multitask head) draws its batches
here. A *stream* is a mapping of aligned arrays (codes and their exogenous series; features and
labels), one stream per asset. Windows of ``window`` consecutive positions are drawn uniformly over
every start position of every stream that holds one, with ``numpy.random.default_rng([seed,
step])``: the batch of a step never depends on the steps before it, so a resumed run sees the
batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from chaosfm._config import ConfigError

__all__ = ["WindowSampler"]


class WindowSampler:
    """``sampler(step) -> {name: (batch, window, ...)}`` over aligned arrays per stream.

    Args:
        streams: asset -> {name: array}; the arrays of one stream share their first axis.
        window: positions per window.
        batch_size: windows per batch.
        seed: the run's seed.
        first_start: no window starts before this position of a stream (warm-up rows).
        what: names the window in the error when no stream is long enough.

    Attributes:
        starts: every start position, as an index into the concatenated streams.
        windows: how many distinct windows there are.
    """

    def __init__(
        self,
        streams: Mapping[str, Mapping[str, np.ndarray]],
        window: int,
        batch_size: int,
        seed: int,
        *,
        first_start: int = 0,
        what: str = "window",
    ):
        lengths = {}
        for asset, arrays in streams.items():
            sizes = {name: len(array) for name, array in arrays.items()}
            if len(set(sizes.values())) > 1:
                raise ValueError(f"stream {asset!r}: arrays of different lengths {sizes}")
            lengths[asset] = next(iter(sizes.values()), 0)
        usable = [a for a in streams if lengths[a] - first_start >= window]
        if not usable:
            longest = max(lengths.values(), default=0)
            raise ConfigError(
                f"{what}: a window of {window} positions is longer than every training stream "
                f"(longest {longest}{f', {first_start} of them warm-up' if first_start else ''})"
            )
        names = list(streams[usable[0]])
        self.arrays = {name: np.concatenate([np.asarray(streams[a][name]) for a in usable]) for name in names}
        offsets = np.cumsum([0] + [lengths[a] for a in usable])
        self.starts = np.concatenate(
            [offsets[i] + np.arange(first_start, lengths[a] - window + 1) for i, a in enumerate(usable)]
        )
        self.window, self.batch_size, self.seed = int(window), int(batch_size), int(seed)

    @property
    def windows(self) -> int:
        return int(self.starts.size)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        starts = self.starts[rng.integers(0, self.starts.size, self.batch_size)]
        index = starts[:, None] + np.arange(self.window)[None, :]  # (batch, window)
        return {name: array[index] for name, array in self.arrays.items()}
