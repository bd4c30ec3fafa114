"""The learned forecaster of chaotic trajectories: a Mamba-2 flow model that reads its context.

:class:`FlowMambaForecaster` (``flow_mamba``) fits a :class:`~chaosfm.models.FlowMamba` to the
training rows of one or several trajectories and forecasts by rolling it out closed loop from the
end of the context. Fitting has three parts, every choice made on training rows only:

1. **Teacher forcing**: the one-step increments of random training windows (``window`` rows),
   in normalised units (per-channel mean and spread fitted on the training rows: ``normalisation
   ="training"``; or each series' own, and at forecast time the context's: ``"context"``, for a
   model meant for systems it has not seen).
2. **Rollout** (optional, ``rollout > 0``): windows whose last ``rollout`` rows the model must
   reach on its own predictions, back-propagated through the rollout, at a lower learning rate.
3. **Ridge readout**: the step head's dense readout is refitted in closed form on every training
   position, with features read over whole training series (as a forecast reads a long context,
   not the short windows of training). The ridge penalty is chosen on a validation split, the last
   ``validation_fraction`` of each training series: readouts fitted on the rows before it, scored
   by how many steps closed-loop forecasts from origins in it stay within the VPT threshold; the
   winner is refitted on all rows. Why: gradient steps leave the readout short of its least-squares
   optimum, and a one-step error of 1e-3 or 1e-4 of the attractor is the difference between 4 and
   8 Lyapunov times (the error grows as ``exp(lambda t)``).

Samples: path 0 is the unperturbed rollout (the point forecast); paths 1.. start from the last
context state plus Gaussian noise of the readout's one-step residual spread on training rows.

Dimension letters: S samples, H horizon, C channels, T rows, F readout features.
"""

from __future__ import annotations

import tempfile
from typing import Any, Literal, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chaosfm.forecasters._base import AbstractForecaster, Forecast
from chaosfm.forecasters._baselines import _begin_fit, _read_context, _series_by_asset
from chaosfm.forecasters._closed_loop import (
    _CLIP_MARGIN,
    frame_clock,
    mean_valid_time,
    perturbed_starts,
    plan_validation,
)
from chaosfm.models import FlowConfig, FlowMamba, flow_loss
from chaosfm.train import TrainConfig, WindowSampler, train

class FlowSettings(BaseModel):
    """Model shape, training and readout settings of :class:`FlowMambaForecaster`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    d_model: int = Field(64, ge=1, description="width of the Mamba stream that reads the context")
    n_layers: int = Field(2, ge=1, description="Mamba-2 mixers")
    d_state: int = Field(16, ge=1)
    head_dim: int = Field(16, ge=1)
    mlp_width: int = Field(128, ge=1, description="step head: width of each hidden layer")
    mlp_layers: int = Field(3, ge=1, description="step head: hidden layers")
    squares: bool = Field(
        True,
        description="the readout also sees the squares of the last hidden layer (Pathak et al. 2018's quadratic "
                    "readout; on Lorenz-63's training rows it held 7.03 Lyapunov times on the validation tail "
                    "against 6.76 without)",
    )
    window: int = Field(64, ge=4, description="rows per teacher-forced training window")
    warmup: int = Field(8, ge=0, description="leading rows of a window left out of the loss")
    batch_size: int = Field(32, ge=1)
    steps: int = Field(3000, ge=1, description="teacher-forcing updates")
    learning_rate: float = Field(3e-3, gt=0)
    rollout: int = Field(0, ge=0, description="closed-loop rows per window in the rollout phase; 0 skips it")
    rollout_steps: int = Field(500, ge=1, description="updates of the rollout phase")
    rollout_learning_rate: float = Field(1e-4, gt=0)
    ridge: tuple[float, ...] = Field(
        (1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6),
        description="ridge penalties (per sample) tried for the readout; () keeps the readout gradient steps left",
    )
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="tail of each series for choosing the ridge")
    validation_windows: int = Field(6, ge=1, description="closed-loop forecasts per series scoring a ridge")
    validation_context: int = Field(1000, ge=2, description="rows each validation forecast reads")
    normalisation: Literal["training", "context"] = "training"
    readout: Literal["training", "context"] = Field(
        "training",
        description="'context' refits the readout by ridge on each forecast's own context (in-context "
                    "least squares: the zero-shot mode, with normalisation='context')",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _readout_needs_a_penalty(self) -> "FlowSettings":
        if self.readout == "context" and not self.ridge:
            raise ValueError("readout='context' fits a ridge readout on each context: give ridge penalties")
        return self


@final
class FlowMambaForecaster(AbstractForecaster):
    """A Mamba-2 flow model of a trajectory, rolled out closed loop (see the module).

    Args:
        **settings: fields of :class:`FlowSettings`.

    Attributes (after ``fit``):
        chosen_: the ridge penalty chosen on the validation split, its score and the score's unit.
        search_scores_: ``[({"ridge": penalty}, mean valid time), ...]`` of every penalty tried.
        history_: the training loop's logged metrics, per phase.
    """

    name = "flow_mamba"
    kinds = ("trajectory",)

    def __init__(self, **settings: Any) -> None:
        try:
            self.settings = FlowSettings(**settings)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ValueError(f"flow_mamba options: {problems}") from None
        self._columns: list[str] | None = None
        self.model: FlowMamba | None = None
        self.chosen_: dict[str, Any] = {}
        self.search_scores_: list[tuple[dict[str, float], float]] = []
        self.history_: dict[str, list[dict[str, float]]] = {}

    # ---- normalisation ------------------------------------------------------------------------

    @staticmethod
    def _statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, spread and one-step increment spread ``(C,)`` each, from ``values`` ``(T, C)``."""
        mean, spread = values.mean(axis=0), values.std(axis=0)
        spread = np.where(spread > 0, spread, 1.0)
        steps = np.diff((values - mean) / spread, axis=0).std(axis=0)
        return mean, spread, np.where(steps > 0, steps, 1.0)

    # ---- fit ----------------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame) -> "FlowMambaForecaster":
        settings = self.settings
        _, self._columns = _begin_fit(self, frame)
        series = _series_by_asset(frame, self._columns)
        short = {a: len(v) for a, v in series.items() if len(v) < settings.window + 1}
        if short:
            raise ValueError(
                f"flow_mamba: series {short} are shorter than window + 1 = {settings.window + 1} rows"
            )
        if settings.normalisation == "training":
            pooled = self._statistics(np.concatenate(list(series.values())))
            self._stats = pooled
            stats = {asset: pooled for asset in series}
        else:
            self._stats = None
            stats = {asset: self._statistics(values) for asset, values in series.items()}
        normalised = {a: ((v - stats[a][0]) / stats[a][1]).astype(np.float32) for a, v in series.items()}
        scales = {a: stats[a][2].astype(np.float32) for a in series}
        streams = {
            a: {"states": normalised[a], "scale": np.broadcast_to(scales[a], normalised[a].shape).copy()}
            for a in series
        }
        channels = len(self._columns)
        config = FlowConfig(
            channels=channels, d_model=settings.d_model, n_layers=settings.n_layers,
            d_state=settings.d_state, head_dim=settings.head_dim, mlp_width=settings.mlp_width,
            mlp_layers=settings.mlp_layers, squares=settings.squares,
        )
        model = FlowMamba(config, key=jax.random.key(settings.seed))
        with tempfile.TemporaryDirectory(prefix="chaosfm-flow-") as scratch:
            model = self._train_phase(model, streams, settings.window, settings.steps,
                                      settings.learning_rate, 0, f"{scratch}/teacher")
            if settings.rollout:
                model = self._train_phase(
                    model, streams, settings.window + settings.rollout, settings.rollout_steps,
                    settings.rollout_learning_rate, settings.rollout, f"{scratch}/rollout",
                )
        if settings.ridge:
            model = self._refit_readout(model, normalised, scales, frame_clock(frame.attrs))
        self.model = model
        self._noise = self._residual_spread(model, normalised, scales)
        self._bounds = _clip_box(np.concatenate(list(normalised.values()))) if self._stats is not None else None
        return self

    def _train_phase(self, model, streams, window, steps, learning_rate, rollout, folder) -> FlowMamba:
        settings = self.settings
        sampler = WindowSampler(streams, window + 1, settings.batch_size, settings.seed,
                                what="flow_mamba training window")
        config = TrainConfig(
            steps=steps, batch_size=settings.batch_size, learning_rate=learning_rate,
            warmup_steps=min(100, steps // 10), weight_decay=0.0, checkpoint_every=steps,
            keep_checkpoints=1, log_every=max(1, steps // 20), seed=settings.seed,
        )
        warmup = min(settings.warmup, window // 2)

        def loss(m, batch, key):
            return flow_loss(m, batch, key, warmup=warmup, rollout=rollout)

        phase = "rollout" if rollout else "teacher"
        result = train(model, loss, sampler, config, folder, description=f"flow_mamba {phase}")
        self.history_[phase] = result.history
        return result.model

    def _refit_readout(self, model, normalised, scales, clock) -> FlowMamba:
        """Ridge readout: the penalty chosen on each series' held-out tail, then refitted on every
        row. The trained layers saw the tails too (they are training rows); only the readout is
        chosen on them."""
        settings = self.settings
        assets = list(normalised)
        series = [normalised[a].astype(np.float64) for a in assets]
        context = min(settings.validation_context, min(len(v) for v in series) // 2)
        plan = plan_validation(
            [len(v) for v in series], fraction=settings.validation_fraction, windows=settings.validation_windows,
            fit_rows=settings.window + 1, context_rows=context, lyapunov_exponent=clock[0], dt=clock[1],
        )
        design, targets = [], []
        for asset, values in zip(assets, series):
            features = np.asarray(_features(model, jnp.asarray(values[:-1], jnp.float32)), np.float64)
            design.append(np.concatenate([features, np.ones((len(features), 1))], axis=1))  # row p predicts p + 1
            targets.append(np.diff(values, axis=0) / scales[asset])
        skip = min(settings.warmup, min(len(d) for d in design) // 4)  # the state is still filling
        contexts = jnp.asarray(plan.contexts(series, context), jnp.float32)  # (B, context, C)
        bounds = _clip_box(np.concatenate(plan.fit_part(series)))
        window_scales = jnp.asarray(np.stack([scales[assets[a]] for a, _ in plan.windows]))
        scored = []
        for penalty in settings.ridge:
            if settings.readout == "context":  # each validation forecast fits its readout on its context
                weights = np.stack([self._context_readout(model, c, s, penalty)
                                    for c, s in zip(np.asarray(contexts), np.asarray(window_scales))])
                paths = _context_paths(model, contexts, jnp.asarray(weights[:, :-1], jnp.float32),
                                       jnp.asarray(weights[:, -1], jnp.float32), window_scales, bounds, plan.horizon)
            else:
                weights = _ridge([d[skip : cut - 1] for d, cut in zip(design, plan.split)],
                                 [t[skip : cut - 1] for t, cut in zip(targets, plan.split)], penalty)
                candidate = model.with_readout(weights[:-1], weights[-1])
                paths = _validation_paths(candidate, contexts, window_scales, bounds, plan.horizon)
            scored.append((mean_valid_time(np.asarray(paths, np.float64), plan, series), penalty))
        score, penalty = max(scored, key=lambda pair: pair[0])  # the first listed among ties
        weights = _ridge([d[skip:] for d in design], [t[skip:] for t in targets], penalty)
        self.chosen_ = {"ridge": penalty, "validation_score": score, "validation_unit": plan.unit_name}
        self.search_scores_ = [({"ridge": p}, v) for v, p in scored]
        return model.with_readout(weights[:-1], weights[-1])

    def _context_readout(self, model: FlowMamba, context: np.ndarray, scale: np.ndarray, penalty: float) -> np.ndarray:
        """``(F + 1, C)`` ridge readout fitted on one normalised context's own one-step increments."""
        features = np.asarray(_features(model, jnp.asarray(context[:-1], jnp.float32)), np.float64)
        skip = min(self.settings.warmup, len(features) // 4)
        design = np.concatenate([features, np.ones((len(features), 1))], axis=1)[skip:]
        targets = (np.diff(np.asarray(context, np.float64), axis=0) / scale)[skip:]
        return _ridge([design], [targets], penalty)

    def _residual_spread(self, model, normalised, scales) -> np.ndarray:
        """Per-channel spread ``(C,)`` of the one-step error on training rows, normalised units."""
        predict = eqx.filter_jit(lambda m, x: m(x)[0])
        errors = []
        for asset, values in normalised.items():
            increments = np.asarray(predict(model, jnp.asarray(values[:-1])), np.float64) * scales[asset]
            errors.append(np.diff(values.astype(np.float64), axis=0) - increments)
        return np.concatenate(errors).std(axis=0)

    # ---- forecast -----------------------------------------------------------------------------

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Samples ``(S, H, C)``; path 0 is the unperturbed rollout (the point forecast)."""
        if self.model is None:
            raise RuntimeError("FlowMambaForecaster.forecast was called before fit")
        need = 2 if self._stats is not None and self.settings.readout == "training" else 16
        values, asset = _read_context(
            self, context, horizon, num_samples, need,
            "rows to read" if self._stats is not None else "rows to normalise by (normalisation='context')",
        )
        mean, spread, scale = self._stats if self._stats is not None else self._statistics(values)
        normalised = ((values - mean) / spread).astype(np.float32)
        starts = perturbed_starts(normalised[-1], self._noise, num_samples, key, "FlowMambaForecaster")
        model = self.model
        if self.settings.readout == "context":
            weights = self._context_readout(model, normalised, scale, self.chosen_["ridge"])
            model = model.with_readout(weights[:-1], weights[-1])
        bounds = self._bounds if self._stats is not None else _clip_box(normalised)
        paths = np.asarray(_rollout(model, jnp.asarray(normalised), jnp.asarray(starts, jnp.float32),
                                    jnp.asarray(scale, jnp.float32), bounds, horizon), np.float64)
        samples = paths * spread + mean
        return Forecast(samples, self._columns, asset=asset, point=samples[0])


def _ridge(design: list[np.ndarray], targets: list[np.ndarray], penalty: float) -> np.ndarray:
    """``(F + 1, C)`` ridge weights (last row the bias) over the stacked rows, float64."""
    x, y = np.concatenate(design), np.concatenate(targets)
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += penalty * len(x)
    return np.linalg.solve(gram, x.T @ y)


@eqx.filter_jit
def _rollout(model: FlowMamba, context: jax.Array, starts: jax.Array, scale: jax.Array, bounds: tuple, steps: int
             ) -> jax.Array:
    """``(S, H, C)``: the stack reads ``context[:-1]`` once, then one closed-loop run per start."""
    state = model.read(context[:-1])
    return jax.vmap(lambda start: model.run(state, start, steps, scale, bounds))(starts)


def _clip_box(normalised: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """Closed-loop states stay within the range of ``normalised`` rows widened by half of it on
    each side (the box the closed-loop baselines use): a run that leaves the attractor stays
    finite and is scored as the miss it is."""
    low, high = normalised.min(axis=0), normalised.max(axis=0)
    margin = _CLIP_MARGIN * np.maximum(high - low, 1.0)
    return jnp.asarray(low - margin, jnp.float32), jnp.asarray(high + margin, jnp.float32)


@eqx.filter_jit
def _validation_paths(model: FlowMamba, contexts: jax.Array, scales: jax.Array, bounds: tuple, steps: int
                      ) -> jax.Array:
    """``(B, H, C)`` closed-loop runs from each of the contexts ``(B, T, C)`` (scales ``(B, C)``)."""
    def one(context, scale):
        return model.run(model.read(context[:-1]), context[-1], steps, scale, bounds)

    return jax.vmap(one)(contexts, scales)


@eqx.filter_jit
def _features(model: FlowMamba, values: jax.Array) -> jax.Array:
    return model.readout_features(values)


@eqx.filter_jit
def _context_paths(model: FlowMamba, contexts: jax.Array, weights: jax.Array, biases: jax.Array, scales: jax.Array,
                   bounds: tuple, steps: int) -> jax.Array:
    """``(B, H, C)`` closed-loop runs, each context with its own readout ``(B, F, C)``, ``(B, C)``."""
    def one(context, w, b, scale):
        fitted = model.with_readout(w, b)
        return fitted.run(fitted.read(context[:-1]), context[-1], steps, scale, bounds)

    return jax.vmap(one)(contexts, weights, biases, scales)
