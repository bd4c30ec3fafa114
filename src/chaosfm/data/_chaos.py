"""Built-in chaotic systems on demand: :func:`chaotic_system`, :func:`largest_lyapunov_exponent`
and :func:`dominant_period`.

:func:`chaotic_system` integrates one system of the registry :data:`SYSTEMS`
(:mod:`chaosfm.data._systems`: equations, defaults, published exponents, citations) and returns
a trajectory frame (``asset, timestamp, x0..xk``) whose ``attrs`` record the parameters, the
integrator and the largest Lyapunov exponent; :func:`largest_lyapunov_exponent` estimates that
exponent by Benettin's method; :func:`dominant_period` measures a trajectory's characteristic
period. How each kind of system advances (diffrax for flows, iteration for maps, the method of
steps for delay equations) is in :mod:`chaosfm.data._dynamics`.

All arithmetic is float64 inside a local ``jax.enable_x64`` context: the process-wide default
stays float32 (DESIGN.md, "Numerics"), but float32 rounding (~1e-7) grows to the size of the
attractor within ~16 Lyapunov times, so generated data would depend on the precision.

Shape letters: ``time`` samples of a trajectory, ``state`` the system's dimension, ``segment``
Benettin's intervals.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, ArrayLike

from chaosfm._config import ConfigError, require_int
from chaosfm.data._errors import DataError, NonFiniteError, UnknownDatasetError
from chaosfm.data._systems import SYSTEMS, ChaoticSystem

# Benettin's estimate ignores this fraction of its intervals after the burn-in, while the tangent
# vector aligns with the most unstable direction.
_TANGENT_TRANSIENT_FRACTION = 0.1
# dominant_period: Welch segments of this many samples (fewer if the series is shorter), half
# overlapping; the lowest bins (the mean's leakage through the window) are ignored.
_WELCH_SEGMENT = 4096
_LOWEST_BIN = 2


# ---- checking what the user asked for -------------------------------------------------------


def _system(name: str) -> ChaoticSystem:
    if not isinstance(name, str) or name not in SYSTEMS:
        raise UnknownDatasetError(
            f"unknown chaotic system {name!r}; known systems are {', '.join(SYSTEMS)}",
            source=str(name),
        )
    return SYSTEMS[name]


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _parameters(system: ChaoticSystem, overrides: Mapping[str, Any]) -> dict[str, float]:
    unknown = sorted(set(overrides) - set(system.parameters))
    if unknown:
        raise DataError(
            f"unknown parameter(s) {unknown}; {system.name} takes {', '.join(system.parameters)}",
            source=system.name, rule="known parameters",
        )
    resolved = {**system.parameters, **overrides}
    for key, value in resolved.items():
        if not _is_real(value) or not math.isfinite(value):
            raise DataError(
                f"parameter {key}={value!r} is not a finite number",
                source=system.name, rule="finite parameters",
            )
        resolved[key] = float(value)
    if "dimension" in resolved:
        if resolved["dimension"] != int(resolved["dimension"]) or resolved["dimension"] < 4:
            raise DataError(
                f"dimension={overrides['dimension']!r} must be an integer >= 4 (each x_i couples "
                "to x_{i-2}, x_{i-1} and x_{i+1} on the ring)",
                source=system.name, rule="dimension >= 4",
            )
        resolved["dimension"] = int(resolved["dimension"])
    if resolved.get("tau", 1.0) <= 0:
        raise DataError(
            f"delay tau={resolved['tau']!r} must be > 0", source=system.name, rule="tau > 0"
        )
    return resolved


def _check_integer(value: Any, what: str, source: str, minimum: int | None = 1) -> int:
    """:func:`chaosfm._config.require_int` as a DataError naming the system (a data option)."""
    try:
        return require_int(value, what, minimum)
    except ConfigError as error:
        bound = "" if minimum is None else f" >= {minimum}"
        raise DataError(f"{what}={value!r}: {error}", source=source, rule=f"integer {what}{bound}") from None


def _given_start(system: ChaoticSystem, params: Mapping, value: ArrayLike) -> np.ndarray:
    dimension = int(params.get("dimension", system.dimension))
    try:
        state = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(
            f"initial_condition {value!r} is not a list of numbers",
            source=system.name, rule="numeric initial condition",
        ) from None
    if state.shape != (dimension,):
        raise DataError(
            f"initial_condition has {state.size} value(s), {system.name} has dimension {dimension}"
            + system.equations.initial_condition_note,
            source=system.name, rule="initial condition of the system's dimension",
        )
    if not np.isfinite(state).all():
        raise NonFiniteError(
            f"initial_condition {state.tolist()} has NaN or infinite values",
            source=system.name, column=f"x{int(np.flatnonzero(~np.isfinite(state))[0])}",
        )
    return state


def _seeded_start(system: ChaoticSystem, params: Mapping[str, float], key: Array) -> np.ndarray:
    """A random initial condition near the attractor, drawn from ``key`` (call inside x64)."""
    centre = system.near_attractor(params)
    spread = system.spread
    offset = jax.random.uniform(key, centre.shape, jnp.float64, minval=-spread, maxval=spread)
    return centre + np.asarray(offset)


def _check_finite(values: np.ndarray, name: str, start: np.ndarray, params: Mapping) -> None:
    bad_rows = ~np.isfinite(values).reshape(values.shape[0], -1).all(axis=1)
    if bad_rows.any():
        raise NonFiniteError(
            "the integration blew up (non-finite state, or the solver's step size collapsed) "
            f"from initial condition {start.tolist()} with parameters {dict(params)}; the "
            "initial condition or the parameters leave the attractor's basin",
            source=name, row=int(np.flatnonzero(bad_rows)[0]),
        )


def _positive(value: Any, what: str, source: str) -> float:
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise DataError(f"{what}={value!r} must be a finite number > 0", source=source, rule=f"{what} > 0")
    return float(value)


def _sampling_interval(system: ChaoticSystem, dt: Any, points_per_period: Any) -> float:
    """The ``dt`` asked for, or the one ``points_per_period`` implies, or the default."""
    name = system.name
    if system.equations.discrete_time:
        if points_per_period is not None:
            raise DataError(
                f"points_per_period={points_per_period!r}: {name} is a map, one iteration per "
                "sample; leave points_per_period unset",
                source=name, rule="no points_per_period for a map",
            )
        if dt not in (None, 1):
            raise DataError(
                f"dt={dt!r}: {name} is a map, it advances one iteration per sample; leave dt unset",
                source=name, rule="dt = 1 for a map",
            )
        return 1.0
    if points_per_period is None:
        return system.dt if dt is None else _positive(dt, "dt", name)
    if dt is not None:
        raise DataError(
            f"dt={dt!r} and points_per_period={points_per_period!r} both given; points_per_period "
            f"sets dt = period / points_per_period (period {system.period:g} for {name})",
            source=name, rule="dt or points_per_period, not both",
        )
    return system.period / _positive(points_per_period, "points_per_period", name)


# ---- public API -----------------------------------------------------------------------------


def chaotic_system(
    name: str,
    *,
    length: int | None = None,
    dt: float | None = None,
    points_per_period: float | None = None,
    seed: int = 0,
    initial_condition: ArrayLike | None = None,
    burn_in: float | None = None,
    **params: float,
) -> pd.DataFrame:
    """Integrate a built-in chaotic system and return its trajectory frame.

    Flows are solved with diffrax's Tsit5 under a PID step-size controller (``rtol = atol =
    1e-9``) and saved at ``t = burn_in + i dt``; delay equations (``mackey_glass``) by the method
    of steps (fixed RK4 steps of at most 0.1 time units, linear interpolation of the delayed
    state, constant history before t = 0); maps are iterated. All in float64.

    Args:
        name: a key of :data:`SYSTEMS`.
        length: number of samples (rows); default ``SYSTEMS[name].length``.
        dt: sampling interval in the system's time units; default ``SYSTEMS[name].dt``. A map
            only takes ``dt=1`` (one iteration).
        points_per_period: samples per ``SYSTEMS[name].period`` instead of ``dt`` (then ``dt =
            period / points_per_period``), to sample systems of different speeds alike; not
            with ``dt``, not for maps.
        seed: picks the initial condition near the attractor (``jax.random.key(seed)``) when
            ``initial_condition`` is not given; same seed, same frame; different seeds,
            independent trajectories on the attractor (after the burn-in).
        initial_condition: the state at time 0, one value per state column; for a delay
            equation the value of the constant history ``x(t), t <= 0``.
        burn_in: time integrated and discarded before the first sample (iterations for a map;
            rounded to whole samples for a delay equation); default ``SYSTEMS[name].burn_in``.
        **params: the system's parameters (``SYSTEMS[name].parameters``), e.g. ``rho=28``; for
            the Lorenz-96 rings also ``dimension``.

    Returns:
        A frame with columns ``asset`` (= ``name``), ``timestamp`` (float time ``i dt`` since
        the end of the burn-in; the integer iteration ``i`` for a map) and float64 ``x0..xk``.
        ``frame.attrs`` holds ``name``, ``kind`` (``"trajectory"``), ``system`` (the
        parameters), ``dt``, ``burn_in``, ``seed``, ``initial_condition``,
        ``lyapunov_exponent`` (largest, per unit time; per iteration for a map; from
        :func:`largest_lyapunov_exponent` for these parameters with its default seed 0),
        ``lyapunov_reference`` (``{"value", "citation"}`` for the default parameters, else
        ``None``), ``period`` (``SYSTEMS[name].period``), ``integrator``, ``rtol`` and ``atol``
        (``None`` for fixed-step methods), ``source`` and ``licence``.

    Raises:
        UnknownDatasetError: ``name`` is not a built-in system.
        NonFiniteError: the initial condition has NaN/inf, or the integration blew up.
        DataError: a non-positive ``length``, ``dt`` or ``points_per_period``, both ``dt`` and
            ``points_per_period``, a negative ``burn_in``, an unknown or non-finite parameter,
            or an initial condition of the wrong size.
    """
    system = _system(name)
    params = _parameters(system, params)
    length = _check_integer(system.length if length is None else length, "length", name)
    seed = _check_integer(seed, "seed", name, minimum=None)
    dt = _sampling_interval(system, dt, points_per_period)
    burn_in = system.burn_in if burn_in is None else burn_in
    if not _is_real(burn_in) or not math.isfinite(burn_in) or burn_in < 0:
        raise DataError(
            f"burn_in={burn_in!r} must be a finite number >= 0", source=name, rule="burn_in >= 0"
        )
    if initial_condition is not None:
        start = _given_start(system, params, initial_condition)

    dynamics = system.equations
    with jax.enable_x64(True):
        if initial_condition is None:
            start = _seeded_start(system, params, jax.random.split(jax.random.key(seed))[0])
        state = dynamics.initial_state(start, params, dt)
        states = dynamics.trajectory(state, params, dt=dt, burn_in=burn_in, length=length)
        states = np.asarray(states)
    integrator, rtol, atol = dynamics.integrator(params, dt)
    _check_finite(states, name, start, params)

    steps = np.arange(length, dtype=np.int64)
    timestamps = steps if dynamics.discrete_time else dt * steps.astype(np.float64)
    frame = pd.DataFrame(
        {"asset": np.full(length, name, dtype=object), "timestamp": timestamps}
        | {f"x{i}": states[:, i] for i in range(states.shape[1])}
    )
    is_default = all(params[k] == float(v) for k, v in system.parameters.items())
    reference = None
    if system.lyapunov_reference is not None and is_default:
        reference = {"value": system.lyapunov_reference, "citation": system.lyapunov_citation}
    frame.attrs.update(
        name=name, kind="trajectory", system=dict(params), dt=float(dt), burn_in=float(burn_in),
        seed=seed, initial_condition=start.tolist(),
        lyapunov_exponent=largest_lyapunov_exponent(name, **params),
        lyapunov_reference=reference, period=system.period, integrator=integrator, rtol=rtol,
        atol=atol, source="generated by chaosfm with diffrax", licence="generated",
    )
    return frame


def largest_lyapunov_exponent(
    name: str,
    *,
    seed: int = 0,
    n_steps: int | None = None,
    renorm_every: int | None = None,
    **params: float,
) -> float:
    """Largest Lyapunov exponent of a built-in system by Benettin's method.

    The state and a tangent vector are advanced together, the tangent by the linearised
    dynamics (``jax.jvp`` of the vector field, of the map, or of the discretised delay
    equation's step); every ``renorm_every`` samples its growth is logged and it is rescaled to
    unit length (Benettin, Galgani, Giorgilli & Strelcyn 1980, Meccanica 15, 9-30). The exponent
    is the mean log-growth per unit time, after the burn-in ``SYSTEMS[name].burn_in`` and a
    tenth of the intervals more while the tangent aligns with the most unstable direction. Flows
    are solved with diffrax on the augmented system (Tsit5, ``rtol = atol = 1e-9``). Results
    are cached per ``(name, seed, n_steps, renorm_every, params)`` for the life of the process.

    Args:
        name: a key of :data:`SYSTEMS`.
        seed: picks the initial state (as in :func:`chaotic_system`) and the initial tangent.
        n_steps: length of the estimate in samples of ``SYSTEMS[name].dt`` (iterations for a
            map), rounded down to whole renormalisation intervals; default
            ``SYSTEMS[name].lyapunov_steps``.
        renorm_every: samples between renormalisations; default
            ``SYSTEMS[name].lyapunov_renorm_every``.
        **params: the system's parameters, as for :func:`chaotic_system`.

    Returns:
        The exponent in nats per unit time (per iteration for a map).

    Raises:
        UnknownDatasetError: ``name`` is not a built-in system.
        DataError: a non-positive ``n_steps`` or ``renorm_every``, ``n_steps < renorm_every``,
            or a bad parameter.
        NonFiniteError: the integration blew up.
    """
    system = _system(name)
    params = _parameters(system, params)
    n_steps = _check_integer(system.lyapunov_steps if n_steps is None else n_steps, "n_steps", name)
    renorm_every = _check_integer(
        system.lyapunov_renorm_every if renorm_every is None else renorm_every, "renorm_every", name
    )
    if n_steps < renorm_every:
        raise DataError(
            f"n_steps={n_steps} is shorter than one renormalisation interval "
            f"(renorm_every={renorm_every})",
            source=name, rule="n_steps >= renorm_every",
        )
    seed = _check_integer(seed, "seed", name, minimum=None)
    return _cached_exponent(name, seed, n_steps, renorm_every, tuple(sorted(params.items())))


@functools.lru_cache(maxsize=256)
def _cached_exponent(
    name: str, seed: int, n_steps: int, renorm_every: int, params_items: tuple[tuple[str, Any], ...]
) -> float:
    system = SYSTEMS[name]
    params = dict(params_items)
    interval_time = renorm_every * system.dt
    n_burn_in = math.ceil(system.burn_in / interval_time)
    n_segments = n_steps // renorm_every
    dynamics = system.equations
    with jax.enable_x64(True):
        state_key, tangent_key = jax.random.split(jax.random.key(seed))
        start = _seeded_start(system, params, state_key)
        state = dynamics.initial_state(start, params, system.dt)
        tangent = jax.random.normal(tangent_key, state.shape, jnp.float64)
        log_growth = dynamics.log_growth(
            state, tangent / jnp.linalg.norm(tangent), params, dt=system.dt,
            renorm_every=renorm_every, n_segments=n_burn_in + n_segments,
        )
        log_growth = np.asarray(log_growth)[n_burn_in:]
    _check_finite(log_growth, name, start, params)
    settled = log_growth[int(_TANGENT_TRANSIENT_FRACTION * n_segments):]
    return float(settled.mean() / interval_time)


def dominant_period(states: ArrayLike, dt: float) -> float:
    """The dominant period of a trajectory: 1 / the frequency of the largest peak of the state's
    variance-preserving power spectrum ``f S(f)``, ``S`` the sum over state columns of each
    column's power spectrum normalised to unit total power.

    This follows dysts' definition of a system's period (Gilpin 2021, "Chaos as an
    interpretable benchmark for forecasting and data-driven modelling", NeurIPS Datasets and
    Benchmarks: the largest peak of the power spectrum; per column, the median over columns)
    with two changes, both for a period that does not depend on the record. ``S`` is weighted by
    ``f``: systems that hop between lobes (Lorenz-63, Chua) put most of ``S`` at the lowest
    resolved frequencies, a red-noise hump whose maximum moves with the record length (13.7 time
    units for Lorenz-63's x); ``f S(f)``, the variance per unit of log-frequency (Emery & Thomson
    2001, Data Analysis Methods in Physical Oceanography, §5.6), peaks at the oscillation
    instead. And the columns' spectra are summed before the peak is taken: the median of
    per-column peaks flips between Lorenz-63's x and z peaks (0.96 and 0.75) from one seed to
    the next; their sum peaks at 0.76 for every seed. Where every column has one clear peak
    all of these agree (Rössler 5.85, Mackey-Glass 50). Some systems have two comparable peaks
    (Sprott's case F: 5.2 and 20); their period is the one a long trajectory picks.

    ``S`` is Welch's average of Hann-windowed periodograms over half-overlapping segments of up
    to 4096 samples (Welch 1967, IEEE Trans. Audio Electroacoust. 15, 70-73), so that one long
    trajectory gives a stable peak; the two lowest frequency bins (the mean's leakage) are
    ignored.

    Args:
        states: the trajectory, ``(time,)`` or ``(time, state)``, sampled every ``dt``.
        dt: sampling interval, in time units.

    Returns:
        The period in the time units of ``dt``.

    Raises:
        DataError: fewer than 16 samples, a non-finite value, a constant trajectory, or a
            non-positive ``dt``.
    """
    dt = _positive(dt, "dt", "dominant_period")
    values = np.asarray(states, dtype=np.float64)
    values = values.reshape(len(values), -1)
    if len(values) < 16 or not np.isfinite(values).all():
        raise DataError(
            f"a trajectory of {len(values)} finite sample(s) is too short for a spectrum "
            "(at least 16 finite samples)",
            source="dominant_period", rule="16 finite samples",
        )
    size = min(_WELCH_SEGMENT, len(values))
    window = np.hanning(size)[:, None]
    power = np.zeros((size // 2 + 1, values.shape[1]))  # (frequency, state)
    for first in range(0, len(values) - size + 1, size // 2):
        segment = values[first:first + size]
        power += np.abs(np.fft.rfft((segment - segment.mean(axis=0)) * window, axis=0)) ** 2
    totals = power.sum(axis=0)
    if not (totals > 0).any():
        raise DataError(
            "a constant trajectory has no spectrum, hence no period",
            source="dominant_period", rule="a varying trajectory",
        )
    # A constant column has no spectrum: it neither adds nor divides by zero.
    spectrum = (power[:, totals > 0] / totals[totals > 0]).sum(axis=1)
    frequencies = np.fft.rfftfreq(size, d=dt)
    peak = _LOWEST_BIN + int(np.argmax((frequencies * spectrum)[_LOWEST_BIN:]))
    return float(1.0 / frequencies[peak])
