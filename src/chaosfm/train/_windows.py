"""The one window sampler: training batches of consecutive positions, a function of the step alone.

Every training job (code models, stages, JEPA pretraining, the multitask head) draws its batches
here. A *stream* is a mapping of aligned arrays (codes and their exogenous series; features and
labels), one stream per asset. Windows of ``window`` consecutive positions are drawn uniformly over
every start position of every stream that holds one, with ``numpy.random.default_rng([seed,
step])``: the batch of a step never depends on the steps before it, so a resumed run sees the
batches an uninterrupted one would.

:func:`hold_out` first keeps the last rows of each stream out of the sampler, as the fixed batch
a run's held-out loss (``val_loss``) is measured on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from chaosfm._config import ConfigError
from chaosfm._progress import say
from chaosfm.data import heldout_split, heldout_windows

__all__ = ["WindowSampler", "draw_windows", "hold_out"]


def draw_windows(windows: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The windows of ``step``'s batch: ``batch_size`` indices in ``0 .. windows - 1``, uniform with
    replacement, from ``numpy.random.default_rng([seed, step])``: the one draw behind every
    :class:`WindowSampler` batch and every shard stream's record order
    (:class:`~chaosfm.train.ShardStream`)."""
    return np.random.default_rng([seed, step]).integers(0, windows, batch_size)


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
        return self.windows_at(draw_windows(self.starts.size, self.batch_size, self.seed, step))

    def windows_at(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The windows numbered ``indices`` (into :attr:`starts`): ``{name: (len(indices), window, ...)}``."""
        starts = self.starts[np.asarray(indices)]
        index = starts[:, None] + np.arange(self.window)[None, :]  # (batch, window)
        return {name: array[index] for name, array in self.arrays.items()}


def hold_out(
    streams: Mapping[str, Mapping[str, np.ndarray]],
    fraction: float,
    window: int,
    count: int,
    *,
    first_start: int = 0,
    label: str = "train",
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray] | None]:
    """Split the streams of a training run for its held-out loss.

    The last ``fraction`` of each stream (:func:`chaosfm.data.heldout_split`: rows at or before
    the cutoff, at least one window) leaves the training streams and becomes at most ``count``
    fixed windows (:func:`chaosfm.data.heldout_windows`).

    Args:
        streams: asset -> {name: array}, what :class:`WindowSampler` would read.
        fraction: share of each stream to hold out (``train.val_fraction``); 0: none.
        window: positions per window.
        count: the most held-out windows (the batch size).
        first_start: warm-up positions no window starts in.
        label: names the run in the note said when nothing could be held out.

    Returns:
        The training streams, and the held-out batch (None when nothing was held out; with
        ``fraction`` above 0 a note then says why, so a run without ``val_loss`` is never silent).
    """
    split = heldout_split(streams, fraction, window, first_start=first_start)
    batch = heldout_windows(split.heldout, window, count)
    if batch is None and fraction > 0:
        say(f"{label}: no held-out loss: {split.note}")
    return split.train, batch
