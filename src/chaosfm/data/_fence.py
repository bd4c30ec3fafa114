"""TimeFence and ``trained_through``: the structural half of the leakage guarantee.

Every fitted artifact records ``trained_through``, the last timestamp of every asset it saw. A
:class:`TimeFence` refuses to let data past its cutoff reach a fit, and tells which rows are
fresh (after the cutoff and the embargo). The evaluator compares window timestamps with the
``trained_through`` of a scorer and of everything upstream of it; nobody labels a window by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.data._errors import DataError, LeakageError

TrainedThrough = dict[str, Any]
"""Asset name -> last timestamp seen (``pd.Timestamp`` or a number for trajectories)."""


def trained_through(frame: pd.DataFrame) -> TrainedThrough:
    """The last timestamp of every asset in ``frame``."""
    if len(frame) == 0:
        return {}
    last = frame.groupby("asset", sort=False)["timestamp"].max()
    return {str(asset): _scalar(value) for asset, value in last.items()}


def merge_trained_through(*records: Mapping[str, Any] | None) -> TrainedThrough:
    """Per asset, the latest timestamp any of ``records`` saw."""
    merged: TrainedThrough = {}
    for record in records:
        for asset, stamp in (record or {}).items():
            merged[asset] = stamp if asset not in merged else max(merged[asset], stamp)
    return merged


def _scalar(value: Any) -> Any:
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    return float(value)


def as_timestamp_like(value: Any, example: Any) -> Any:
    """Convert ``value`` (a cutoff from a config or CLI) to the type of ``example``'s timestamps."""
    if isinstance(example, pd.Timestamp) or isinstance(example, np.datetime64):
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError) as error:
            raise DataError(f"cutoff {value!r} is not a date: {error}", rule="cutoff type") from None
        if stamp.tz is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return stamp
    try:
        return float(value)
    except (ValueError, TypeError):
        raise DataError(
            f"cutoff {value!r} is not a number, and these timestamps are numbers", rule="cutoff type"
        ) from None


def trained_through_to_json(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """JSON form: ISO strings for dates, numbers for numbers."""
    if record is None:
        return None
    return {
        asset: (stamp.isoformat() if isinstance(stamp, pd.Timestamp) else stamp)
        for asset, stamp in record.items()
    }


def trained_through_from_json(record: Mapping[str, Any] | None) -> TrainedThrough | None:
    if record is None:
        return None
    return {
        asset: (pd.Timestamp(stamp) if isinstance(stamp, str) else stamp)
        for asset, stamp in record.items()
    }


@dataclass(frozen=True)
class TimeFence:
    """A cutoff that data used for fitting must not cross, and the embargo after it.

    Attributes:
        cutoff: the last timestamp fitting may see, the same for every asset, or per asset.
        embargo: observations after the cutoff that are neither training data nor fresh: a label
            or a feature window can straddle the cutoff, so the first rows after it are not
            independent of what was fitted.
    """

    cutoff: Any
    embargo: int = 0

    def __post_init__(self) -> None:
        if self.embargo < 0:
            raise DataError(f"embargo must be >= 0, got {self.embargo}", rule="embargo >= 0")

    @classmethod
    def at_fraction(cls, frame: pd.DataFrame, fraction: float, embargo: int = 0) -> "TimeFence":
        """Each asset's cutoff at its row ``fraction`` of the way through (the first ``fraction``
        of its rows are before the fence)."""
        cutoffs = {}
        for asset, part in frame.groupby("asset", sort=False):
            stamps = part["timestamp"]
            cutoffs[str(asset)] = stamps.iloc[max(0, int(len(stamps) * fraction) - 1)]
        return cls(cutoffs, embargo)

    @classmethod
    def resolve(
        cls, frame: pd.DataFrame, cutoff: Any = None, fraction: float = 0.8, embargo: int = 0
    ) -> "TimeFence":
        """The one rule that turns a cutoff setting into a fence over ``frame``'s assets.

        Args:
            frame: the validated frame the fence will cut.
            cutoff: one timestamp for every asset (a date string, a number for trajectories), a
                mapping asset -> timestamp, or None for the default.
            fraction: with no ``cutoff``, each asset's cutoff is its row at this fraction
                (:meth:`at_fraction`: the first ``fraction`` of its rows are before the fence).
            embargo: rows after the cutoff that are neither training data nor fresh.

        Raises:
            DataError: a cutoff that is not a timestamp of the frame's type, or a mapping that
                misses an asset.
        """
        if cutoff is None:
            if not 0 < fraction < 1:
                raise DataError(f"cutoff fraction must lie in (0, 1), got {fraction}", rule="cutoff fraction")
            return cls.at_fraction(frame, fraction, embargo)
        example = frame["timestamp"].iloc[0]
        if isinstance(cutoff, Mapping):
            assets = [str(a) for a in pd.unique(frame["asset"])]
            missing = [a for a in assets if a not in cutoff]
            if missing:
                raise DataError(
                    f"no cutoff for asset(s) {missing}; give one per asset ({', '.join(sorted(cutoff))} given)",
                    rule="time fence",
                )
            return cls({a: as_timestamp_like(cutoff[a], example) for a in assets}, embargo)
        return cls(as_timestamp_like(cutoff, example), embargo)

    def per_asset(self, frame: pd.DataFrame) -> dict[str, Any]:
        """The cutoff of every asset of ``frame``."""
        assets = [str(a) for a in pd.unique(frame["asset"])]
        if isinstance(self.cutoff, Mapping):
            return {a: self.cutoff[a] for a in assets}
        cut = as_timestamp_like(self.cutoff, frame["timestamp"].iloc[0])
        return {a: cut for a in assets}

    def _cutoffs(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) == 0:
            return np.array([])
        example = frame["timestamp"].iloc[0]
        if isinstance(self.cutoff, Mapping):
            missing = set(frame["asset"]) - set(self.cutoff)
            if missing:
                raise DataError(
                    f"the fence has no cutoff for asset(s) {sorted(missing)}", rule="time fence"
                )
            per_asset = {a: as_timestamp_like(c, example) for a, c in self.cutoff.items()}
            return frame["asset"].map(per_asset).to_numpy()
        cut = as_timestamp_like(self.cutoff, example)
        return np.full(len(frame), cut, dtype=object)

    def before(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean mask of rows at or before the cutoff."""
        stamps = frame["timestamp"].to_numpy(dtype=object)
        return np.array([s <= c for s, c in zip(stamps, self._cutoffs(frame))], dtype=bool)

    def train(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows fitting may see."""
        return frame.loc[self.before(frame)].reset_index(drop=True)

    def fresh(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows after the cutoff and the embargo, per asset."""
        after = ~self.before(frame)
        rank = pd.Series(after.astype(int)).groupby(frame["asset"].to_numpy()).cumsum().to_numpy()
        return frame.loc[after & (rank > self.embargo)].reset_index(drop=True)

    def check(self, frame: pd.DataFrame, what: str = "fit") -> None:
        """Raise :class:`LeakageError` if any row of ``frame`` is past the cutoff.

        Args:
            frame: data about to be used by ``what``.
            what: names the consumer in the message, e.g. ``"FSQTokenizer.fit"``.
        """
        after = ~self.before(frame)
        if after.any():
            row = int(np.flatnonzero(after)[0])
            raise LeakageError(
                f"{what} was given data past the cutoff {self.cutoff!s}: "
                f"{int(after.sum())} row(s), the first at {frame['timestamp'].iloc[row]!s} "
                f"(asset {frame['asset'].iloc[row]!r})",
                row=row,
                column="timestamp",
            )

    def check_trained_through(self, record: Mapping[str, Any] | None, what: str) -> None:
        """Raise if an artifact's ``trained_through`` crosses the cutoff."""
        for asset, stamp in (record or {}).items():
            cutoff = self.cutoff[asset] if isinstance(self.cutoff, Mapping) else self.cutoff
            if stamp > as_timestamp_like(cutoff, stamp):
                raise LeakageError(
                    f"{what} saw asset {asset!r} through {stamp!s}, past the cutoff {cutoff!s}"
                )


def latest_seen(records: Iterable[Mapping[str, Any] | None], asset: str) -> Any | None:
    """The latest timestamp of ``asset`` in any of ``records``, or None if none saw it."""
    seen = [r[asset] for r in records if r and asset in r]
    return max(seen) if seen else None
