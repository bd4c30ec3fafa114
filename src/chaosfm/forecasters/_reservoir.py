"""Reservoir computers as forecasters: an echo state network and next-generation RC (NG-RC).

* :class:`EchoStateNetwork` (``"esn"``): a sparse random reservoir of leaky tanh units driven by
  the normalised state, ``r_t = (1 - a) r_{t-1} + a tanh(rho W r_{t-1} + sigma W_in u_t + b)``
  (Jaeger 2001, GMD Report 148; Lukoševičius 2012, "A practical guide to applying echo state
  networks", Sec. 3), a ridge readout ``u_{t+1} - u_t = W_out [r_t; u_t] + c``, a warm-up
  driven by the last ``warmup`` context rows (teacher forcing), then autonomous closed-loop
  forecasting, as Pathak et al. (2018, PRL 120, 024102) forecast chaotic flows.
* :class:`NextGenerationReservoir` (``"ngrc"``): Gauthier, Bollt, Griffith & Barbosa (2021,
  Nat. Commun. 12, 5564, Eqs. 5-7): features are ``k`` linear taps ``u_t, u_{t-s}, ...,
  u_{t-(k-1)s}``, every unique quadratic monomial of them, and a constant; a ridge readout maps
  them onto the one-step increment ``u_{t+1} - u_t``.

Both use reservoirpy (Trouvain et al. 2020, ICANN; MIT licence): its ``mat_gen`` draws the
reservoir matrices, ``Reservoir.run`` drives the ESN's teacher-forced states, and ``Ridge``
solves both readouts (the constant is its unpenalised intercept, ``fit_bias``). Two parts are
NumPy twins of reservoirpy nodes, for speed measured on this 2-core machine, and tests check
that they agree with the nodes: the closed loops (reservoirpy's nodes hold one state vector, so
S sample paths cost S times one: 1,000 steps of a 1,000-unit reservoir take 21 ms per path
through ``Reservoir.step`` plus 8 ms through ``Ridge.step``, ~2.9 s for 100 paths, against
0.15 s for 20 paths at once, 7 ms a path, as one sparse ``(N, N) @ (N, S)`` product per step),
and NG-RC's teacher-forced features (see :func:`ngrc_design`).

Hyperparameters left as None are chosen by the validation search of ``_closed_loop.py`` on
training rows only; see ``chosen_`` and ``search_scores_`` after ``fit``. The levels searched
(``SEARCH``) were set in development runs on Lorenz-63 that looked at windows after the cutoff
of the seed-0 trajectory and of seeds 1-10; ``chaosfm bench chaos`` scores trajectories from seed
1001 on, which those runs never touched.
Forecasts and samples: see :class:`~chaosfm.forecasters._closed_loop.AbstractClosedLoopForecaster`.

Dimension letters: B runs, T rows, C channels, H horizon steps, N reservoir units, F readout
features, L rows an NG-RC step reads (``(k - 1) s + 1``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from chaosfm._config import require_int
from chaosfm.forecasters._closed_loop import (
    AbstractClosedLoopForecaster,
    Scaling,
    ValidationPlan,
    count,
    in_unit_interval,
    mean_valid_time,
    non_negative,
    positive,
    require_choice,
    settings_grid,
)


@dataclass(frozen=True)
class Readout:
    """A linear readout ``y = x @ weights + bias``: ``weights (F, C)``, ``bias (C,)``."""

    weights: np.ndarray
    bias: np.ndarray

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights + self.bias


def ridge_readouts(
    designs: Sequence[tuple[np.ndarray, np.ndarray]], ridges: Sequence[float]
) -> list[Readout]:
    """One reservoirpy ``Ridge`` readout per penalty, all from one pass over the data.

    Per asset, ``(features (N_a, F), targets (N_a, C))``; the assets' Gram matrices are summed
    (the design matrices concatenated). With centred features ``X`` and targets ``Y`` the weights
    are ``(X^T X + lambda I)^{-1} X^T Y`` and the intercept ``mean(Y) - mean(X) @ weights``
    (reservoirpy's ``Ridge(fit_bias=True)``: the intercept is not penalised).
    """
    from reservoirpy.nodes import Ridge

    # Ridge.worker computes one asset's Gram statistics and Ridge.master solves from them, the
    # two halves of Ridge.fit; calling them directly solves several penalties for one Gram.
    statistics = [Ridge().worker(features, targets) for features, targets in designs]
    features, targets = designs[0]
    readouts = []
    for ridge in ridges:
        node = Ridge(ridge=ridge, input_dim=features.shape[1], output_dim=targets.shape[1])
        node.master(iter(statistics))
        readouts.append(Readout(np.asarray(node.Wout), np.asarray(node.bias).reshape(-1)))
    return readouts


# --------------------------------------------------------------------------------------------
# Echo state network.


@dataclass(frozen=True)
class Reservoir:
    """The driven part of an ESN: ``weights (N, N)`` sparse, ``input_weights (N, C)``,
    ``bias (N,)``, ``leak_rate`` a."""

    weights: Any
    input_weights: np.ndarray
    bias: np.ndarray
    leak_rate: float

    def step(self, states: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """States ``(N, B)`` after reading ``inputs`` ``(B, C)`` (reservoirpy's ``Reservoir._step``
        for B states at once)."""
        drive = self.weights @ states + self.input_weights @ inputs.T + self.bias[:, None]
        return (1.0 - self.leak_rate) * states + self.leak_rate * np.tanh(drive)

    def teacher_forced(self, series: np.ndarray) -> np.ndarray:
        """``(T, N)`` states driven by ``series`` ``(T, C)`` from rest, by reservoirpy."""
        from reservoirpy.nodes import Reservoir as ReservoirNode

        node = ReservoirNode(
            W=self.weights, Win=self.input_weights, bias=self.bias, lr=self.leak_rate, seed=0
        )
        return node.run(series)


@functools.lru_cache(maxsize=8)
def base_matrices(
    units: int, channels: int, degree: int, seed: int
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Unit-scale reservoir matrices from reservoirpy's ``mat_gen``, all from ``seed``.

    Returns ``W`` ``(N, N)`` sparse CSR, Gaussian entries, ``min(degree, N)`` per row, spectral
    radius 1; ``W_in`` ``(N, C)`` dense, entries ±1; ``b`` ``(N,)``, entries ±1. Cached (read
    only): the search scales one draw, and the spectral radius costs an ARPACK solve.
    """
    from reservoirpy import mat_gen

    w_rng, in_rng, bias_rng = np.random.default_rng(seed).spawn(3)
    weights = mat_gen.normal(
        units, units, degree=min(degree, units), direction="in", sr=1.0, seed=w_rng
    ).tocsr()
    input_weights = np.asarray(mat_gen.bernoulli(units, channels, connectivity=1.0, seed=in_rng))
    bias = np.asarray(mat_gen.bernoulli(units, connectivity=1.0, seed=bias_rng)).reshape(units)
    for array in (weights.data, input_weights, bias):
        array.flags.writeable = False
    return weights, input_weights, bias


def esn_design(
    reservoir: Reservoir, series: np.ndarray, warmup: int
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced ``(features [r_t; u_t] (N_a, N + C), increments u_{t+1} - u_t (N_a, C))``
    for every ``t`` whose state has read at least ``warmup`` rows (the washout is dropped)."""
    states = reservoir.teacher_forced(series)
    rows = slice(warmup - 1, len(series) - 1)
    features = np.concatenate([states[rows], series[rows]], axis=1)
    return features, series[warmup:] - series[warmup - 1 : -1]


def esn_paths(
    reservoir: Reservoir, readout: Readout, contexts: np.ndarray, horizon: int, scaling: Scaling
) -> np.ndarray:
    """``(B, H, C)`` closed-loop runs after driving the reservoir from rest with ``contexts``
    ``(B, T, C)`` (the warm-up); states are clipped to ``scaling``'s box."""
    states = np.zeros((reservoir.weights.shape[0], contexts.shape[0]))  # (N, B)
    for t in range(contexts.shape[1]):
        states = reservoir.step(states, contexts[:, t])
    current = contexts[:, -1]
    paths = np.empty((contexts.shape[0], horizon, contexts.shape[2]))
    for h in range(horizon):
        current = scaling.clip(current + readout(np.concatenate([states.T, current], axis=1)))
        paths[:, h] = current
        states = reservoir.step(states, current)
    return paths


def fractional_design(levels: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Combinations of ``levels``; halved when three or more options have two levels each.

    The half keeps the runs whose level indices over the two-level options sum to an even
    number: the 2^(3-1) design with defining relation I = ABC (Box, Hunter & Hunter 2005,
    *Statistics for Experimenters*, 2nd ed., Sec. 6.2), which still varies every option and, on
    any two of them, is their full 2 x 2 factorial.
    """
    runs = settings_grid(levels)
    two_level = [name for name, values in levels.items() if len(values) == 2]
    if len(two_level) >= 3:
        runs = [
            run for run in runs
            if sum(list(levels[name]).index(run[name]) for name in two_level) % 2 == 0
        ]
    return runs


@final
class EchoStateNetwork(AbstractClosedLoopForecaster):
    """Echo state network on a trajectory's normalised channels (see the module docstring).

    Args:
        units: reservoir size N.
        spectral_radius: rho, the spectral radius of the recurrent matrix; None searches
            ``SEARCH["spectral_radius"]``.
        leak_rate: a in (0, 1]; None searches ``SEARCH["leak_rate"]``.
        input_scaling: sigma, the scale of the ±1 input weights; None searches.
        ridge: the readout's penalty lambda >= 0; None searches.
        degree: nonzero recurrent weights per unit.
        bias_scaling: scale of the ±1 unit biases (they break the reservoir's odd symmetry,
            which Lorenz-63 does not share).
        warmup: context rows driven through the reservoir before the closed loop, and the washout
            dropped from each training asset; the context needs this many rows. On Lorenz-63
            with 1,000 units, 200 rows forget the start state to below 1e-15 at every searched
            setting (3e-13 at leak 0.5, radius 1.1, input scaling 0.1; leak 0.3 needs ~300).
        validation_fraction: share of each training asset held out by the search.
        validation_windows: validation forecasts per asset.
        seed: the reservoir's random matrices.
    """

    name = "esn"
    SEARCH = {
        "spectral_radius": (0.6, 1.1),
        "leak_rate": (0.5, 1.0),
        "input_scaling": (0.1, 0.5),
        "ridge": (1e-8, 1e-6, 1e-4),
    }
    """The searched levels: a half fraction of the three reservoir options (4 reservoirs) times
    the three penalties = 12 settings; the penalties share one Gram matrix per reservoir."""

    def __init__(
        self,
        units: int = 1000,
        *,
        spectral_radius: float | None = None,
        leak_rate: float | None = None,
        input_scaling: float | None = None,
        ridge: float | None = None,
        degree: int = 10,
        bias_scaling: float = 0.5,
        warmup: int = 200,
        validation_fraction: float = 0.2,
        validation_windows: int = 5,
        seed: int = 0,
    ) -> None:
        self.units = require_int(units, "units", 1)
        self.levels = {
            name: require_choice(value, name, self.SEARCH[name], check)
            for name, value, check in [
                ("spectral_radius", spectral_radius, positive),
                ("leak_rate", leak_rate, in_unit_interval),
                ("input_scaling", input_scaling, positive),
                ("ridge", ridge, non_negative),
            ]
        }
        self.degree = require_int(degree, "degree", 1)
        self.bias_scaling = non_negative(bias_scaling, "bias_scaling")
        self.warmup = require_int(warmup, "warmup", 1)
        self.seed = require_int(seed, "seed", None)
        self._init_search(validation_fraction, validation_windows)
        self.reservoir_: Reservoir | None = None
        self.readout_: Readout | None = None

    def _search_grid(self) -> list[dict[str, Any]]:
        reservoir_levels = {k: v for k, v in self.levels.items() if k != "ridge"}
        return [
            {**run, "ridge": ridge}
            for run in fractional_design(reservoir_levels)
            for ridge in self.levels["ridge"]
        ]

    def _context_rows(self, setting: Mapping[str, Any]) -> int:
        return self.warmup

    def _context_reason(self, setting: Mapping[str, Any]) -> str:
        return f"a warm-up of warmup={self.warmup} rows driven through the reservoir"

    def _fit_rows(self, setting: Mapping[str, Any]) -> int:
        return self.warmup + 1

    def _reservoir(self, setting: Mapping[str, Any], channels: int) -> Reservoir:
        weights, input_weights, bias = base_matrices(self.units, channels, self.degree, self.seed)
        return Reservoir(
            weights=setting["spectral_radius"] * weights,
            input_weights=setting["input_scaling"] * input_weights,
            bias=self.bias_scaling * bias,
            leak_rate=setting["leak_rate"],
        )

    def _score(
        self, grid: list[dict[str, Any]], series: list[np.ndarray], plan: ValidationPlan
    ) -> list[float]:
        scores: dict[int, float] = {}
        fit_part = plan.fit_part(series)
        contexts = plan.contexts(series, self.warmup)
        groups: dict[tuple, list[int]] = {}
        for index, setting in enumerate(grid):
            groups.setdefault(tuple(v for k, v in setting.items() if k != "ridge"), []).append(index)
        for members in groups.values():
            reservoir = self._reservoir(grid[members[0]], series[0].shape[1])
            designs = [esn_design(reservoir, values, self.warmup) for values in fit_part]
            readouts = ridge_readouts(designs, [grid[i]["ridge"] for i in members])
            for index, readout in zip(members, readouts):
                paths = esn_paths(reservoir, readout, contexts, plan.horizon, self.scaling)
                scores[index] = mean_valid_time(paths, plan, series)
        return [scores[i] for i in range(len(grid))]

    def _fit_final(self, setting: dict[str, Any], series: list[np.ndarray]) -> np.ndarray:
        self.reservoir_ = self._reservoir(setting, series[0].shape[1])
        designs = [esn_design(self.reservoir_, values, self.warmup) for values in series]
        (self.readout_,) = ridge_readouts(designs, [setting["ridge"]])
        return np.concatenate([self.readout_(f) - y for f, y in designs]).std(axis=0)

    def _paths(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        return esn_paths(self.reservoir_, self.readout_, contexts, horizon, self.scaling)


# --------------------------------------------------------------------------------------------
# Next-generation reservoir computing.


def ngrc_features(windows: np.ndarray, taps: int, skip: int) -> np.ndarray:
    """``(B, F)`` NG-RC features of the last row of each window ``(B, L, C)``, ``L >= (k-1)s+1``.

    ``O_lin = [u_t, u_{t-s}, ..., u_{t-(k-1)s}]`` (``k C`` values, newest first, channels inner),
    then ``O_nonlin``: every product ``O_lin[i] O_lin[j]``, ``i <= j``, in row-major upper-triangle
    order (Gauthier et al. 2021, Eqs. 5-6; reservoirpy's ``NVAR(order=2)`` layout). The constant
    is the readout's intercept. ``F = kC + kC(kC + 1)/2``.
    """
    last = windows.shape[1] - 1
    linear = np.concatenate([windows[:, last - j * skip] for j in range(taps)], axis=1)
    first, second = np.triu_indices(linear.shape[1])
    return np.concatenate([linear, linear[:, first] * linear[:, second]], axis=1)


def ngrc_design(series: np.ndarray, taps: int, skip: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced ``(features (N_a, F), increments (N_a, C))`` for every ``t`` whose taps
    all lie inside ``series`` ``(T, C)``: ``t = (k-1)s, ..., T-2``.

    The same features as reservoirpy's ``NVAR(delay=k, order=2, strides=s).run`` after its
    zero-padded first rows (a test checks), computed for all rows at once: ``NVAR.run`` steps
    row by row, 1.5-3.3 s for 6,400 rows of Lorenz-63 at k = 4 on this machine, against 14 ms.
    """
    span = (taps - 1) * skip + 1
    windows = sliding_window_view(series[:-1], span, axis=0).transpose(0, 2, 1)  # (N_a, L, C)
    return ngrc_features(windows, taps, skip), series[span:] - series[span - 1 : -1]


def ngrc_paths(
    readout: Readout, taps: int, skip: int, contexts: np.ndarray, horizon: int, scaling: Scaling
) -> np.ndarray:
    """``(B, H, C)`` closed-loop NG-RC runs from the last ``(k-1)s+1`` rows of ``contexts``."""
    window = contexts[:, contexts.shape[1] - ((taps - 1) * skip + 1) :]  # (B, L, C)
    paths = np.empty((contexts.shape[0], horizon, contexts.shape[2]))
    for h in range(horizon):
        current = scaling.clip(window[:, -1] + readout(ngrc_features(window, taps, skip)))
        paths[:, h] = current
        window = np.concatenate([window[:, 1:], current[:, None]], axis=1)
    return paths


@final
class NextGenerationReservoir(AbstractClosedLoopForecaster):
    """NG-RC (Gauthier et al. 2021) on a trajectory's normalised channels.

    Args:
        taps: k, the linear taps; None searches ``SEARCH["taps"]``.
        skip: s, rows between taps; None searches.
        ridge: the readout's penalty lambda >= 0; None searches.
        validation_fraction: share of each training asset held out by the search.
        validation_windows: validation forecasts per asset.
    """

    name = "ngrc"
    SEARCH = {"taps": (2, 3, 4), "skip": (1, 2), "ridge": (1e-7, 1e-5)}
    """12 settings; Gauthier et al. used k = 2, s = 1 on Lorenz-63 at dt = 0.025."""

    def __init__(
        self,
        *,
        taps: int | None = None,
        skip: int | None = None,
        ridge: float | None = None,
        validation_fraction: float = 0.2,
        validation_windows: int = 5,
    ) -> None:
        self.levels = {
            "taps": require_choice(taps, "taps", self.SEARCH["taps"], count),
            "skip": require_choice(skip, "skip", self.SEARCH["skip"], count),
            "ridge": require_choice(ridge, "ridge", self.SEARCH["ridge"], non_negative),
        }
        self._init_search(validation_fraction, validation_windows)
        self.readout_: Readout | None = None

    def _search_grid(self) -> list[dict[str, Any]]:
        return settings_grid(self.levels)

    def _context_rows(self, setting: Mapping[str, Any]) -> int:
        return (setting["taps"] - 1) * setting["skip"] + 1

    def _context_reason(self, setting: Mapping[str, Any]) -> str:
        return f"taps={setting['taps']} rows spaced skip={setting['skip']} apart"

    def _fit_rows(self, setting: Mapping[str, Any]) -> int:
        return self._context_rows(setting) + 1

    def _score(
        self, grid: list[dict[str, Any]], series: list[np.ndarray], plan: ValidationPlan
    ) -> list[float]:
        scores: dict[int, float] = {}
        fit_part = plan.fit_part(series)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, setting in enumerate(grid):
            groups.setdefault((setting["taps"], setting["skip"]), []).append(index)
        for (taps, skip), members in groups.items():
            designs = [ngrc_design(values, taps, skip) for values in fit_part]
            readouts = ridge_readouts(designs, [grid[i]["ridge"] for i in members])
            contexts = plan.contexts(series, (taps - 1) * skip + 1)
            for index, readout in zip(members, readouts):
                paths = ngrc_paths(readout, taps, skip, contexts, plan.horizon, self.scaling)
                scores[index] = mean_valid_time(paths, plan, series)
        return [scores[i] for i in range(len(grid))]

    def _fit_final(self, setting: dict[str, Any], series: list[np.ndarray]) -> np.ndarray:
        designs = [ngrc_design(values, setting["taps"], setting["skip"]) for values in series]
        (self.readout_,) = ridge_readouts(designs, [setting["ridge"]])
        return np.concatenate([self.readout_(f) - y for f, y in designs]).std(axis=0)

    def _paths(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        taps, skip = self.chosen_["taps"], self.chosen_["skip"]
        return ngrc_paths(self.readout_, taps, skip, contexts, horizon, self.scaling)
