"""The held-out part of the training rows: what a run's ``val_loss`` is measured on.

A held-out loss during training must be measured on rows the gradient never sees and that lie at
or before the cutoff (rows after it are the evaluation's, and watching them while training would
leak them into every choice made from the curve). :func:`heldout_split` keeps the last
``fraction`` of each training stream (at least one whole window, so it can be scored) out of the
training streams; :func:`heldout_windows` cuts that tail into a fixed batch of non-overlapping
windows for :func:`~chaosfm.train.train`'s ``heldout`` (:func:`chaosfm.train.hold_out` does both,
as every training job does). The tokenizers' fit holds out its rows the same way.

A *stream* is what :class:`~chaosfm.train.WindowSampler` reads: per asset, a mapping of aligned
arrays (codes and their exogenous series; features and labels), oldest position first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["HeldoutSplit", "heldout_split", "heldout_windows"]

Streams = Mapping[str, Mapping[str, np.ndarray]]


class HeldoutSplit(NamedTuple):
    """Training streams with their held-out tails removed, and the tails.

    Attributes:
        train: asset -> {name: array}, what the gradient sees (every asset, shortened or whole).
        heldout: asset -> {name: array}, the last positions of the assets long enough to lend them.
        first: asset -> the position in the original stream where its held-out tail begins.
        note: why nothing was held out (``fraction`` 0, or every stream too short), else None.
    """

    train: dict[str, dict[str, np.ndarray]]
    heldout: dict[str, dict[str, np.ndarray]]
    first: dict[str, int]
    note: str | None


def _length(asset: str, arrays: Mapping[str, np.ndarray]) -> int:
    sizes = {name: len(array) for name, array in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"stream {asset!r}: arrays of different lengths {sizes}")
    return next(iter(sizes.values()), 0)


def heldout_split(streams: Streams, fraction: float, window: int, *, first_start: int = 0) -> HeldoutSplit:
    """Keep the last ``fraction`` of each stream out of training, for a held-out loss.

    An asset of ``n`` positions lends its last ``max(window, ceil(fraction * n))`` positions when
    what stays (less ``first_start`` warm-up positions) still holds a training window; a shorter
    asset stays whole in training and lends nothing.

    Args:
        streams: asset -> {name: array} of aligned arrays, all at or before the cutoff.
        fraction: share of each stream to hold out, in [0, 1).
        window: positions one window needs (the training window; the held-out one is the same).
        first_start: warm-up positions at the start of a stream no window starts in.

    Returns:
        The split; ``note`` says why it is empty when it is.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction: {fraction} is outside [0, 1)")
    train, heldout, first = {}, {}, {}
    for asset, arrays in streams.items():
        n = _length(asset, arrays)
        held = max(window, math.ceil(fraction * n)) if fraction > 0 else 0
        if held and n - held - first_start >= window:
            cut = n - held
            train[asset] = {name: np.asarray(a)[:cut] for name, a in arrays.items()}
            heldout[asset] = {name: np.asarray(a)[cut:] for name, a in arrays.items()}
            first[asset] = cut
        else:
            train[asset] = {name: np.asarray(a) for name, a in arrays.items()}
    note = None
    if fraction == 0:
        note = "val_fraction is 0"
    elif not heldout:
        longest = max((_length(a, s) for a, s in streams.items()), default=0)
        note = (
            f"no training stream is long enough to hold out a window of {window} positions and keep "
            f"one for training (longest: {longest} positions; needs {2 * window + first_start})"
        )
    return HeldoutSplit(train, heldout, first, note)


def heldout_windows(
    heldout: Streams, window: int, count: int, *, keep: Callable[[dict[str, np.ndarray]], bool] | None = None
) -> dict[str, np.ndarray] | None:
    """At most ``count`` non-overlapping windows of the held-out tails, as one batch.

    Each tail is cut into consecutive windows ending at its last position (the newest rows are
    always scored); when there are more than ``count`` in all, ``count`` of them evenly spread
    over the list are kept. The same windows every call: the held-out loss of two steps differs
    only by the weights.

    Args:
        heldout: asset -> {name: array}, e.g. :attr:`HeldoutSplit.heldout`.
        window: positions per window.
        count: the most windows to keep (e.g. the training batch size).
        keep: ``keep(window) -> bool``, which windows count at all (e.g. those holding a scored
            row); None: every window.

    Returns:
        ``{name: (windows, window, ...)}``, or None when no tail holds a window.
    """
    pieces: list[dict[str, np.ndarray]] = []
    for asset, arrays in heldout.items():
        n = _length(asset, arrays)
        for end in range(n, window - 1, -window):
            piece = {name: np.asarray(a)[end - window : end] for name, a in arrays.items()}
            if keep is None or keep(piece):
                pieces.append(piece)
    if not pieces:
        return None
    if len(pieces) > count:
        keep = np.unique(np.linspace(0, len(pieces) - 1, count).round().astype(int))
        pieces = [pieces[i] for i in keep]
    return {name: np.stack([piece[name] for piece in pieces]) for name in pieces[0]}
