"""The agent jobs' universe: the fenced panel, a frozen encoder's features on it, and the class of
every rebalance.

Shared by ``chaosfm agent train``/``eval`` and ``chaosfm leakage --agent`` so that all three build
the panel, read the encoder and label periods one way:

* :func:`build_panel` loads the universe, resolves the one fence of every job, and builds the
  causal :func:`~chaosfm.agents.market_panel`. With an encoder run (a ``chaosfm pretrain`` JEPA)
  the encoder's embedding of each asset's last context (:func:`~chaosfm.agents.encoder_features`)
  joins the features, standardised like the panel's own features on the rows at or before the
  fence; its convergence is computed only when asked (it costs a minute on ``sp500_stocks``).
* :func:`period_rows` labels each rebalance row by the evaluator's rule
  (:func:`chaosfm.evaluate.window_class_at` on the hold's first target row): ``in_sample`` up to
  the agent's fence, ``within_pretrain`` where only the encoder saw the rows, then ``embargoed``
  and ``fresh``; and returns each class's first and last row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from chaosfm._config import ConfigError
from chaosfm.agents import (
    AgentTrainConfig,
    EnvConfig,
    MarketPanel,
    eligible_starts,
    encoder_features,
    evaluate_agent,
    market_panel,
)
from chaosfm.data import DataError, latest_seen, trained_through_from_json, trained_through_to_json
from chaosfm.evaluate import window_class_at
from chaosfm.jobs._common import load_data, resolve_fence
from chaosfm.train import load_pretrained

__all__ = ["AgentPanel", "build_panel", "period_rows", "score_classes"]

CLASSES = ("in_sample", "within_pretrain", "fresh")
_ALL = "_universe"  # one calendar for every asset: the classes are read at the universe's latest record


@dataclass(frozen=True)
class AgentPanel:
    """A fenced universe as the agent trades it.

    Attributes:
        frame: the loaded universe.
        seen: its rows before the fence (what training may read).
        panel: the causal panel (features standardised on the rows at or before ``fit_end``).
        stamps: ``(T,)`` the panel's timestamps.
        names: its ``A`` asset names.
        last: the fence row: the last row a training episode may touch.
        fit_end: the fence's timestamp (the earliest of the assets' last training rows).
        encoder_through: the latest row of each asset the encoder run or its upstream (a tokenizer)
            saw (JSON form), or None without one.
        convergence: ``(T, A)`` the encoder's Multiverse Crossing convergence, when asked for.
        bifurcation: ``(T, A)`` its bifurcation index, alongside the convergence.
        lyapunov: ``(T, A)`` its one-step Lyapunov proxy, alongside the convergence.
    """

    frame: pd.DataFrame
    seen: pd.DataFrame
    panel: MarketPanel
    stamps: np.ndarray
    names: list[str]
    last: int
    fit_end: pd.Timestamp
    encoder_through: dict[str, Any] | None = None
    convergence: np.ndarray | None = None
    bifurcation: np.ndarray | None = None
    lyapunov: np.ndarray | None = None


def _standardised(values: np.ndarray, fit_rows: int) -> np.ndarray:
    """``(T, A, E)`` scaled by the mean and std of the finite rows before ``fit_rows`` (pooled over assets)."""
    fitted = values[:fit_rows].reshape(-1, values.shape[-1])
    fitted = fitted[np.all(np.isfinite(fitted), axis=-1)]
    if len(fitted) == 0:
        raise ConfigError("encoder: no row at or before the fence has a full encoder context; move the cutoff later")
    return (values - fitted.mean(axis=0)) / np.maximum(fitted.std(axis=0), 1e-12)


def build_panel(
    data: str,
    cutoff: Any,
    embargo: int,
    encoder: str | Path | None = None,
    *,
    convergence: bool = False,
    seed: int = 0,
    frame: pd.DataFrame | None = None,
) -> AgentPanel:
    """The universe ``data`` fenced at ``cutoff`` (default: each asset's row at 80%), as a panel.

    Args:
        data: dataset names or paths (many assets).
        cutoff: the fence (see :func:`chaosfm.jobs._common.resolve_fence`).
        embargo: rows after the fence that are neither trained on nor scored.
        encoder: a ``chaosfm pretrain`` run whose embeddings join the features, or None.
        convergence: also compute the encoder's convergence (it needs a flow head).
        seed: the convergence draws' seed.
        frame: the universe already loaded (``data`` then only names it).

    Raises:
        ConfigError: the encoder cannot read the universe, has no flow head for convergence, or
            no row before the fence has a full context.
    """
    frame = load_data(data) if frame is None else frame
    fence = resolve_fence(frame, cutoff, embargo=embargo)
    seen = frame[fence.before(frame)]
    # One fence row for the whole calendar: the earliest of the assets' last training rows, so no
    # asset's rows after its own cutoff reach a training episode.
    fit_end = seen.groupby("asset")["timestamp"].max().min()
    panel, stamps, names = market_panel(frame, fit_end=fit_end)
    last = int(np.flatnonzero(pd.Index(stamps) <= fit_end)[-1])
    if encoder is None:
        if convergence:
            raise ConfigError("mvx_thresholds: MVX thresholds need an agent trained with an `encoder` run (a "
                              "pretrained JEPA with a flow head, whose convergence gates the trades); this run has "
                              "no encoder")
        return AgentPanel(frame, seen, panel, stamps, names, last, fit_end)
    model, inputs, meta = load_pretrained(encoder)
    if convergence and model.flow is None:
        raise ConfigError(f"mvx_thresholds: the encoder {encoder} has no flow head (pretrain it with cfm_weight > 0) "
                          "and so no Multiverse Crossing convergence")
    try:
        found = encoder_features(model, inputs, frame, stamps, names, convergence=convergence,
                                 key=jax.random.key(seed) if convergence else None)
    except DataError as error:
        raise ConfigError(f"encoder: {encoder} cannot read {data}: {error}") from None
    extra = _standardised(np.asarray(found.embeddings, np.float64), last + 1)
    panel, _, _ = market_panel(frame, fit_end=fit_end, extra=extra)
    # What the encoder computes depends on what it and its own upstream (a tokenizer) saw.
    records = [meta.get("trained_through") or {}, meta.get("upstream_trained_through") or {}]
    seen_by_encoder = trained_through_to_json({asset: latest_seen(records, asset)
                                               for asset in dict.fromkeys([*records[0], *records[1]])} or None)
    scores = [None if values is None else np.asarray(values, np.float64)
              for values in (found.convergence, found.bifurcation, found.lyapunov)]
    return AgentPanel(frame, seen, panel, stamps, names, last, fit_end, seen_by_encoder, *scores)


def period_rows(universe: AgentPanel, embargo: int, env: EnvConfig) -> dict[str, tuple[int, int] | None]:
    """Each class's rebalance rows ``(first, last)`` (the last row a hold may touch), or None.

    ``in_sample`` is the training rows, from the first row a whole episode fits at (past the
    features' warm-ups) to the fence row. After the fence, a rebalance at row ``t`` is classified
    by its hold's first target row ``t + 1`` with the evaluator's rule, against the agent's fence
    and the encoder's latest ``trained_through`` (``within_pretrain``); the classes are contiguous
    on one calendar. Only holds that end inside their class's rows are kept.
    """
    holding = env.holding
    stamps = pd.DatetimeIndex(universe.stamps)
    own = {_ALL: universe.fit_end}
    record = trained_through_from_json(universe.encoder_through) or {}
    upstream_last = max(record.values()) if record else None
    upstream = [{_ALL: upstream_last}] if upstream_last is not None else []
    labels = [window_class_at(stamps, stamps[t + 1], _ALL, own, upstream, embargo) for t in range(len(stamps) - 1)]
    starts = np.asarray(eligible_starts(universe.panel, env, first=0, last=universe.last))
    out: dict[str, tuple[int, int] | None] = {"in_sample": (int(np.argmax(starts)), universe.last)
                                               if starts.any() else None}
    for name in CLASSES[1:]:
        rows = [t for t, label in enumerate(labels) if label == name]
        # The hold of the class's last rebalance may not reach into the next class.
        out[name] = (rows[0], rows[-1] + 1) if rows and rows[-1] + 1 - rows[0] >= holding else None
    return out


def score_classes(
    universe: AgentPanel, params: Any, trainer: AgentTrainConfig, *, embargo: int, key: Any, portfolios: int,
    classes: tuple[str, ...] = ("within_pretrain", "fresh"), evaluate: Callable[..., dict[str, Any]] = evaluate_agent,
) -> dict[str, dict[str, Any]]:
    """The agent and the reference books on each class's calendar (:func:`period_rows`), with the
    same key for every class and every critic, so that two critics are paired on the same
    portfolios and dates. A class without room for a rebalance is left out. ``evaluate`` scores
    one calendar (:func:`~chaosfm.agents.evaluate_agent`'s signature; another agent's evaluator).

    Raises:
        ConfigError: no class has room (too few rows after the fence), or a calendar has rows
            without ``n_assets`` valid assets.
    """
    rows = period_rows(universe, embargo, trainer.env)
    results = {}
    for name in classes:
        if rows.get(name) is None:
            continue
        first, last = rows[name]
        try:
            results[name] = evaluate(universe.panel, params, trainer, first=first, last=last, key=key,
                                     n_portfolios=portfolios, stamps=universe.stamps)
        except ValueError as error:  # rows without enough valid assets for an episode
            raise ConfigError(f"{name} rows {first}..{last}: {error}") from None
    if not results:
        raise ConfigError(f"no rebalance of {trainer.env.holding} rows fits after the fence and the {embargo}-row "
                          f"embargo ({len(universe.stamps) - universe.last - 1} rows after the fence)")
    return results
