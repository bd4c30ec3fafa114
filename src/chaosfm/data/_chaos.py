"""Built-in chaotic systems: Lorenz-63, Rössler, Mackey–Glass, Hénon and Lorenz-96.

:func:`chaotic_system` integrates one on demand and returns a trajectory frame
(``asset, timestamp, x0..xk``) whose ``attrs`` record the parameters, the integrator and the
largest Lyapunov exponent; :func:`largest_lyapunov_exponent` estimates that exponent by
Benettin's method. :data:`SYSTEMS` lists what is built in.

All arithmetic is float64 inside a local ``jax.enable_x64`` context: the process-wide default
stays float32 (DESIGN.md, "Numerics"), but float32 rounding (~1e-7) grows to the size of the
attractor within ~16 Lyapunov times, so generated data would depend on the precision.

Shape letters: ``time`` samples of a trajectory, ``state`` the system's dimension, ``history``
the window of past values that is the Mackey–Glass state, ``segment`` Benettin's intervals.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from chaosfm._config import ConfigError, require_int
from chaosfm.data._errors import DataError, NonFiniteError, UnknownDatasetError

# Adaptive-step tolerances of every diffrax solve: tighter than the exponent needs, so that a
# trajectory is accurate to ~1e-8 over a Lyapunov time whatever the platform.
_RTOL = 1e-9
_ATOL = 1e-9
# A step this small means the solution is running off to infinity: stop (diffrax then fills the
# rest with inf, which is reported) instead of shrinking the step for millions of iterations.
_MIN_STEP = 1e-10
_MAX_SOLVER_STEPS = 2**24
# Mackey–Glass is integrated with fixed RK4 steps no longer than this (time units).
_MACKEY_GLASS_MAX_STEP = 0.1
# Benettin's estimate ignores this fraction of its intervals after the burn-in, while the tangent
# vector aligns with the most unstable direction.
_TANGENT_TRANSIENT_FRACTION = 0.1

_SPROTT_2003 = "Sprott, J. C. (2003). Chaos and Time-Series Analysis. Oxford UP, Appendix A"


@dataclasses.dataclass(frozen=True)
class ChaoticSystem:
    """One built-in system: its defaults and what is published about its chaos.

    Attributes:
        name: registry key, also the ``asset`` of the frames it generates.
        description: the equations, in one line.
        kind: ``"flow"`` (an ODE, integrated with diffrax), ``"map"`` (iterated) or ``"delay"``
            (a delay differential equation, integrated by the method of steps).
        dimension: number of state columns ``x0..xk`` with the default parameters.
        parameters: default parameter values, read-only; keyword arguments override them.
        dt: default sampling interval in the system's time units (1 iteration for a map).
        length: default number of samples.
        burn_in: default time integrated and discarded before the first sample (iterations for
            a map), long enough to forget the initial condition.
        lyapunov_reference: published largest Lyapunov exponent with the default parameters, in
            nats per unit time (per iteration for a map), or ``None``.
        lyapunov_citation: where ``lyapunov_reference`` is published.
        lyapunov_steps: default ``n_steps`` of :func:`largest_lyapunov_exponent`, in samples of
            ``dt``: enough for the estimate to settle within a few per cent.
        lyapunov_renorm_every: default ``renorm_every``, in samples of ``dt``.
    """

    name: str
    description: str
    kind: Literal["flow", "map", "delay"]
    dimension: int
    parameters: Mapping[str, float]
    dt: float
    length: int
    burn_in: float
    lyapunov_reference: float | None
    lyapunov_citation: str | None
    lyapunov_steps: int
    lyapunov_renorm_every: int


def _read_only(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(values)


SYSTEMS: Mapping[str, ChaoticSystem] = _read_only(
    lorenz63=ChaoticSystem(
        name="lorenz63", kind="flow", dimension=3,
        description="Lorenz (1963): x' = sigma (y - x), y' = x (rho - z) - y, z' = x y - beta z",
        parameters=_read_only(sigma=10.0, rho=28.0, beta=8.0 / 3.0),
        dt=0.02, length=10_000, burn_in=50.0, lyapunov_steps=100_000, lyapunov_renorm_every=25,
        lyapunov_reference=0.9056, lyapunov_citation=_SPROTT_2003,
    ),
    rossler=ChaoticSystem(
        name="rossler", kind="flow", dimension=3,
        description="Rössler (1976): x' = -y - z, y' = x + a y, z' = b + z (x - c)",
        parameters=_read_only(a=0.2, b=0.2, c=5.7),
        dt=0.1, length=10_000, burn_in=200.0, lyapunov_steps=100_000, lyapunov_renorm_every=10,
        lyapunov_reference=0.0714, lyapunov_citation=_SPROTT_2003,
    ),
    mackey_glass=ChaoticSystem(
        name="mackey_glass", kind="delay", dimension=1,
        description="Mackey & Glass (1977): x'(t) = beta x(t-tau) / (1 + x(t-tau)^n) - gamma x(t)",
        parameters=_read_only(beta=0.2, gamma=0.1, n=10.0, tau=17.0),
        dt=1.0, length=10_000, burn_in=1_000.0, lyapunov_steps=30_000, lyapunov_renorm_every=10,
        # NeuroBench's Lyapunov time for these parameters is 197, estimated with jitcdde_lyap.
        lyapunov_reference=1.0 / 197.0,
        lyapunov_citation=(
            "Yik et al., NeuroBench (arXiv:2304.04640; Nature Communications, 2025), "
            "Mackey-Glass task: Lyapunov time 197 for tau=17"
        ),
    ),
    henon=ChaoticSystem(
        name="henon", kind="map", dimension=2,
        description="Hénon (1976) map: x' = 1 - a x^2 + y, y' = b x",
        parameters=_read_only(a=1.4, b=0.3),
        dt=1.0, length=10_000, burn_in=1_000.0, lyapunov_steps=100_000, lyapunov_renorm_every=10,
        lyapunov_reference=0.41922, lyapunov_citation=_SPROTT_2003,
    ),
    lorenz96=ChaoticSystem(
        name="lorenz96", kind="flow", dimension=10,
        description=(
            "Lorenz (1996): x_i' = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + forcing, "
            "i = 0..dimension-1 on a ring"
        ),
        parameters=_read_only(forcing=8.0, dimension=10),
        dt=0.05, length=10_000, burn_in=50.0, lyapunov_steps=10_000, lyapunov_renorm_every=10,
        lyapunov_reference=None, lyapunov_citation=None,
    ),
)

# Seeded initial conditions are drawn uniformly within `spread` of a point near the attractor,
# inside its basin, so the burn-in only has to forget the draw. Lorenz-96 starts near its
# unstable equilibrium x_i = forcing instead.
_NEAR_ATTRACTOR: Mapping[str, tuple[tuple[float, ...], float]] = _read_only(
    lorenz63=((-8.0, 7.0, 27.0), 1.0), rossler=((1.0, -6.0, 0.1), 0.5),
    mackey_glass=((0.9,), 0.3), henon=((0.0, 0.0), 0.1),
)
_LORENZ96_SPREAD = 1.0


# ---- equations: args is a dict of float64 scalars, so one compilation serves every value ----


def _lorenz63_field(t: Any, state: Float[Array, "3"], args: dict[str, Array]) -> Float[Array, "3"]:
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([args["sigma"] * (y - x), x * (args["rho"] - z) - y, x * y - args["beta"] * z])


def _rossler_field(t: Any, state: Float[Array, "3"], args: dict[str, Array]) -> Float[Array, "3"]:
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([-y - z, x + args["a"] * y, args["b"] + z * (x - args["c"])])


def _lorenz96_field(t: Any, state: Float[Array, " state"], args: dict[str, Array]) -> Array:
    ahead_one, behind_one, behind_two = (jnp.roll(state, k) for k in (-1, 1, 2))
    return (ahead_one - behind_two) * behind_one - state + args["forcing"]


_VECTOR_FIELDS: Mapping[str, Callable[..., Array]] = _read_only(
    lorenz63=_lorenz63_field, rossler=_rossler_field, lorenz96=_lorenz96_field
)


def _henon_map(state: Float[Array, "2"], args: dict[str, Array]) -> Float[Array, "2"]:
    x, y = state[0], state[1]
    return jnp.stack([1.0 - args["a"] * x**2 + y, args["b"] * x])


# Mackey–Glass by the method of steps. diffrax has no delay support, and its adaptive steps would
# need a dense interpolant of the whole past to evaluate x(t - tau). A fixed grid avoids both:
# with step h the delay is tau/h grid steps, the state is the window of the last ~tau/h values,
# and x(t - tau) at the RK4 stages (t, t + h/2, t + h) is linearly interpolated between its
# entries. One sampling interval is then a map on the window, iterated by lax.scan and
# differentiated by jax.jvp for Benettin's tangent (the discretisation Farmer 1982, "Chaotic
# attractors of an infinite-dimensional dynamical system", Physica D 4, 366-393, also uses).


def _mackey_glass_grid(dt: float, tau: float) -> tuple[int, float, float]:
    """RK4 steps per sample, the step h, and the delay in steps tau/h (>= 1, so that the
    stages read only the past)."""
    substeps = max(1, math.ceil(dt / min(_MACKEY_GLASS_MAX_STEP, tau) - 1e-9))
    step = dt / substeps
    delay_steps = tau / step
    if abs(delay_steps - round(delay_steps)) < 1e-9:
        delay_steps = float(round(delay_steps))
    return substeps, step, delay_steps


def _mackey_glass_map(
    history: Float[Array, " history"], args: dict[str, Array], grid: tuple[int, float, float]
) -> Float[Array, " history"]:
    """One sampling interval; ``history[-1]`` is x(t) and ``history[-1 - j]`` is x(t - j h)."""
    substeps, step, delay_steps = grid

    def lagged(window: Array, lag: float) -> Array:  # x(t - lag h), linear between grid points
        whole = math.floor(lag)
        fraction = lag - whole
        value = window[-1 - whole]
        if fraction == 0.0:
            return value
        return (1.0 - fraction) * value + fraction * window[-2 - whole]

    def rate(x, delayed):
        return args["beta"] * delayed / (1.0 + delayed ** args["n"]) - args["gamma"] * x

    def rk4(_, window):
        x = window[-1]
        delayed_middle = lagged(window, delay_steps - 0.5)
        k1 = rate(x, lagged(window, delay_steps))
        k2 = rate(x + 0.5 * step * k1, delayed_middle)
        k3 = rate(x + 0.5 * step * k2, delayed_middle)
        k4 = rate(x + step * k3, lagged(window, delay_steps - 1.0))
        x_next = x + step / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return jnp.concatenate([window[1:], x_next[None]])

    return lax.fori_loop(0, substeps, rk4, history)


def _map_state(start: np.ndarray, grid: tuple | None) -> Array:
    """The point itself, or for Mackey–Glass a constant window over lags 0 .. floor(delay) + 1."""
    return jnp.asarray(start) if grid is None else jnp.full(math.floor(grid[2]) + 2, start[0])


def _map(name: str, state: Array, args: dict[str, Array], grid: tuple | None) -> Array:
    return _henon_map(state, args) if name == "henon" else _mackey_glass_map(state, args, grid)


# ---- integration, compiled once per system and shape ----------------------------------------


def _diffrax() -> Any:
    # diffrax (with lineax, optimistix) takes ~0.5 s to import; only an integration needs it.
    import diffrax

    return diffrax


def _solve(term: Any, t1: Array, y0: Any, args: Any, saveat: Any):
    diffrax = _diffrax()
    controller = diffrax.PIDController(rtol=_RTOL, atol=_ATOL, dtmin=_MIN_STEP, force_dtmin=False)
    return diffrax.diffeqsolve(
        term, diffrax.Tsit5(), t0=0.0, t1=t1, dt0=None, y0=y0, args=args, saveat=saveat,
        stepsize_controller=controller, max_steps=_MAX_SOLVER_STEPS, throw=False,
    )


@functools.partial(jax.jit, static_argnames=("name",))
def _flow_trajectory(
    name: str, start: Float[Array, " state"], args: dict[str, Array], times: Float[Array, " time"]
) -> Float[Array, "time state"]:
    diffrax = _diffrax()
    term = diffrax.ODETerm(_VECTOR_FIELDS[name])
    return _solve(term, times[-1], start, args, diffrax.SaveAt(ts=times)).ys


@functools.partial(jax.jit, static_argnames=("name", "grid", "length"))
def _map_trajectory(
    name: str, start: Array, args: dict[str, Array], burn_in: Array, grid: tuple | None, length: int
) -> Float[Array, "time state"]:
    state = lax.fori_loop(0, burn_in, lambda _, s: _map(name, s, args, grid), start)

    def iterate(state, _):
        observed = state if name == "henon" else state[-1:]  # Mackey–Glass shows x(t) only
        return _map(name, state, args, grid), observed

    return lax.scan(iterate, state, None, length=length)[1]


@functools.partial(jax.jit, static_argnames=("name", "grid", "n_segments"))
def _benettin(
    name: str, start: Array, tangent: Array, args: dict[str, Array], interval: Array,
    grid: tuple | None, n_segments: int,
) -> Float[Array, " segment"]:
    """Log-growth of a tangent vector over each of ``n_segments`` intervals (Benettin et al.
    1980): advance state and tangent together, then rescale the tangent to unit length.

    ``interval`` is a time for a flow, a number of map applications otherwise.
    """
    if name in _VECTOR_FIELDS:
        diffrax = _diffrax()
        field = _VECTOR_FIELDS[name]
        term = diffrax.ODETerm(
            lambda t, y, args: jax.jvp(lambda s: field(t, s, args), (y[0],), (y[1],))
        )

        def advance(state, tangent):
            ys = _solve(term, interval, (state, tangent), args, diffrax.SaveAt(t1=True)).ys
            return ys[0][-1], ys[1][-1]
    else:

        def advance(state, tangent):
            def step(_, pair):
                return jax.jvp(lambda s: _map(name, s, args, grid), (pair[0],), (pair[1],))

            return lax.fori_loop(0, interval, step, (state, tangent))

    def segment(pair, _):
        state, tangent = advance(*pair)
        growth = jnp.linalg.norm(tangent)
        return (state, tangent / growth), jnp.log(growth)

    return lax.scan(segment, (start, tangent), None, length=n_segments)[1]


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
            + (" (the constant history x(t), t <= 0)" if system.kind == "delay" else ""),
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
    if system.name == "lorenz96":
        centre, spread = np.full(params["dimension"], params["forcing"]), _LORENZ96_SPREAD
    else:
        point, spread = _NEAR_ATTRACTOR[system.name]
        centre = np.asarray(point)
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


def _equation_args(params: Mapping[str, float]) -> dict[str, Array]:
    """Parameters as float64 scalars (call inside x64); ``dimension`` is a shape, not an arg."""
    return {k: jnp.asarray(v, dtype=jnp.float64) for k, v in params.items() if k != "dimension"}


# ---- public API -----------------------------------------------------------------------------


def chaotic_system(
    name: str,
    *,
    length: int | None = None,
    dt: float | None = None,
    seed: int = 0,
    initial_condition: ArrayLike | None = None,
    burn_in: float | None = None,
    **params: float,
) -> pd.DataFrame:
    """Integrate a built-in chaotic system and return its trajectory frame.

    Flows (``lorenz63``, ``rossler``, ``lorenz96``) are solved with diffrax's Tsit5 under a PID
    step-size controller (``rtol = atol = 1e-9``) and saved at ``t = burn_in + i dt``;
    ``mackey_glass`` by the method of steps (fixed RK4 steps of at most 0.1 time units, linear
    interpolation of the delayed state, constant history before t = 0); ``henon`` is iterated.
    All in float64.

    Args:
        name: a key of :data:`SYSTEMS`.
        length: number of samples (rows); default ``SYSTEMS[name].length``.
        dt: sampling interval in the system's time units; default ``SYSTEMS[name].dt``. The
            Hénon map only takes ``dt=1`` (one iteration).
        seed: picks the initial condition near the attractor (``jax.random.key(seed)``) when
            ``initial_condition`` is not given; same seed, same frame.
        initial_condition: the state at time 0, one value per state column; for
            ``mackey_glass`` the value of the constant history ``x(t), t <= 0``.
        burn_in: time integrated and discarded before the first sample (iterations for Hénon;
            rounded to whole samples for Mackey–Glass); default ``SYSTEMS[name].burn_in``.
        **params: the system's parameters (``SYSTEMS[name].parameters``), e.g. ``rho=28``; for
            ``lorenz96`` also ``dimension`` (default 10).

    Returns:
        A frame with columns ``asset`` (= ``name``), ``timestamp`` (float time ``i dt`` since
        the end of the burn-in; the integer iteration ``i`` for Hénon) and float64 ``x0..xk``.
        ``frame.attrs`` holds ``name``, ``kind`` (``"trajectory"``), ``system`` (the
        parameters), ``dt``, ``burn_in``, ``seed``, ``initial_condition``,
        ``lyapunov_exponent`` (largest, per unit time; per iteration for Hénon; from
        :func:`largest_lyapunov_exponent` for these parameters with its default seed 0),
        ``lyapunov_reference`` (``{"value", "citation"}`` for the default parameters, else
        ``None``), ``integrator``, ``rtol`` and ``atol`` (``None`` for fixed-step methods),
        ``source`` and ``licence``.

    Raises:
        UnknownDatasetError: ``name`` is not a built-in system.
        NonFiniteError: the initial condition has NaN/inf, or the integration blew up.
        DataError: a non-positive ``length`` or ``dt``, a negative ``burn_in``, an unknown or
            non-finite parameter, or an initial condition of the wrong size.
    """
    system = _system(name)
    params = _parameters(system, params)
    length = _check_integer(system.length if length is None else length, "length", name)
    seed = _check_integer(seed, "seed", name, minimum=None)
    if system.kind == "map" and dt not in (None, 1):
        raise DataError(
            f"dt={dt!r}: the Hénon map advances one iteration per sample; leave dt unset",
            source=name, rule="dt = 1 for a map",
        )
    dt = system.dt if dt is None else dt
    if not _is_real(dt) or not math.isfinite(dt) or dt <= 0:
        raise DataError(f"dt={dt!r} must be a finite number > 0", source=name, rule="dt > 0")
    burn_in = system.burn_in if burn_in is None else burn_in
    if not _is_real(burn_in) or not math.isfinite(burn_in) or burn_in < 0:
        raise DataError(
            f"burn_in={burn_in!r} must be a finite number >= 0", source=name, rule="burn_in >= 0"
        )
    if initial_condition is not None:
        start = _given_start(system, params, initial_condition)

    with jax.enable_x64(True):
        if initial_condition is None:
            start = _seeded_start(system, params, jax.random.split(jax.random.key(seed))[0])
        args = _equation_args(params)
        if system.kind == "flow":
            times = jnp.asarray(burn_in + dt * np.arange(length, dtype=np.float64))
            states = _flow_trajectory(name, jnp.asarray(start), args, times)
            integrator, rtol, atol = "diffrax.Tsit5 with diffrax.PIDController", _RTOL, _ATOL
        else:  # dt is 1 for the Hénon map
            grid = _mackey_glass_grid(float(dt), params["tau"]) if system.kind == "delay" else None
            state = _map_state(start, grid)
            states = _map_trajectory(name, state, args, round(burn_in / dt), grid, length)
            integrator, rtol, atol = "map iteration", None, None
            if grid is not None:
                integrator = f"RK4 method of steps (step {grid[1]:g}, x(t - tau) interpolated)"
        states = np.asarray(states)
    _check_finite(states, name, start, params)

    steps = np.arange(length, dtype=np.int64)
    timestamps = steps if system.kind == "map" else dt * steps.astype(np.float64)
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
        lyapunov_reference=reference, integrator=integrator, rtol=rtol, atol=atol,
        source="generated by chaosfm with diffrax", licence="generated",
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
    dynamics (``jax.jvp`` of the vector field, of the map, or of the discretised Mackey–Glass
    step); every ``renorm_every`` samples its growth is logged and it is rescaled to unit
    length (Benettin, Galgani, Giorgilli & Strelcyn 1980, Meccanica 15, 9-30). The exponent is
    the mean log-growth per unit time, after the burn-in ``SYSTEMS[name].burn_in`` and a tenth
    of the intervals more while the tangent aligns with the most unstable direction. Flows are
    solved with diffrax on the augmented system (Tsit5, ``rtol = atol = 1e-9``). Results are
    cached per ``(name, seed, n_steps, renorm_every, params)`` for the life of the process.

    Args:
        name: a key of :data:`SYSTEMS`.
        seed: picks the initial state (as in :func:`chaotic_system`) and the initial tangent.
        n_steps: length of the estimate in samples of ``SYSTEMS[name].dt`` (iterations for
            Hénon), rounded down to whole renormalisation intervals; default
            ``SYSTEMS[name].lyapunov_steps``.
        renorm_every: samples between renormalisations; default
            ``SYSTEMS[name].lyapunov_renorm_every``.
        **params: the system's parameters, as for :func:`chaotic_system`.

    Returns:
        The exponent in nats per unit time (per iteration for Hénon).

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
    grid = _mackey_glass_grid(system.dt, params["tau"]) if system.kind == "delay" else None
    with jax.enable_x64(True):
        state_key, tangent_key = jax.random.split(jax.random.key(seed))
        start = _seeded_start(system, params, state_key)
        state = _map_state(start, grid)
        interval = jnp.asarray(interval_time if system.kind == "flow" else renorm_every)
        tangent = jax.random.normal(tangent_key, state.shape, jnp.float64)
        log_growth = _benettin(
            name, state, tangent / jnp.linalg.norm(tangent), _equation_args(params), interval,
            grid, n_burn_in + n_segments,
        )
        log_growth = np.asarray(log_growth)[n_burn_in:]
    _check_finite(log_growth, name, start, params)
    settled = log_growth[int(_TANGENT_TRANSIENT_FRACTION * n_segments):]
    return float(settled.mean() / interval_time)
