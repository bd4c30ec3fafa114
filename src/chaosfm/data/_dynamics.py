"""How a chaotic system advances: a flow (an ODE, solved with diffrax), an iterated map, or a
delay differential equation (the method of steps) — each with its trajectory and its Benettin
tangent growth, compiled once per *family*.

A family is a tuple of equations of the same kind on a state of the same size; the registry
(:mod:`chaosfm.data._systems`) builds them. Its members share one compiled program that picks
the member's equations with ``lax.switch`` on a traced index, and their parameters travel as one
float64 vector padded to the family's widest member: integrating a second system of a family
costs no compilation (tracing diffrax's Tsit5 takes seconds; the switch costs far less). A
delay equation is its own family, compiled once per grid of the method of steps.

All methods are called inside ``jax.enable_x64`` (see :mod:`chaosfm.data._chaos`).

Shape letters: ``time`` samples, ``state`` the integrated state (for the delay equation the
window of past values), ``segment`` Benettin's renormalisation intervals, ``capacity`` the
segment buffer (a power of two >= the segments asked for, so that runs of different lengths
share a compilation).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

# Adaptive-step tolerances of every diffrax solve: tighter than the exponent needs, so that a
# trajectory is accurate to ~1e-8 over a Lyapunov time whatever the platform.
RTOL = 1e-9
ATOL = 1e-9
# A step this small means the solution is running off to infinity: stop (diffrax then fills the
# rest with inf, which is reported) instead of shrinking the step for millions of iterations.
_MIN_STEP = 1e-10
_MAX_SOLVER_STEPS = 2**24
_MIN_CAPACITY = 256


def _diffrax() -> Any:
    # diffrax (with lineax, optimistix) takes ~0.5 s to import; only an integration needs it.
    import diffrax

    return diffrax


def _parameter_names(function: Callable[..., Any], leading: int) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)[leading:]


def _positional(function: Callable[..., Any], leading: int) -> Callable[..., Array]:
    """``function(*leading_args, p[0], ..., p[k-1])`` called as ``f(*leading_args, p)``."""
    count = len(_parameter_names(function, leading))

    def call(*args: Any) -> Array:
        *head, vector = args
        return function(*head, *(vector[i] for i in range(count)))

    return call


def _switch(family: tuple[Callable[..., Any], ...], index: Array, leading: int) -> Callable[..., Array]:
    """The family's member ``index`` as a function of ``(*leading_args, parameter_vector)``."""
    branches = [_positional(member, leading) for member in family]
    if len(branches) == 1:
        return branches[0]
    return lambda *args: lax.switch(index, branches, *args)


def _capacity(n_segments: int) -> int:
    return max(_MIN_CAPACITY, 1 << (n_segments - 1).bit_length())


def _renormalised_growth(
    advance: Callable[[Array, Array], tuple[Array, Array]], state: Array, tangent: Array,
    n_segments: Array, capacity: int,
) -> Float[Array, " capacity"]:
    """Log-growth of a tangent vector over each of ``n_segments`` intervals (Benettin, Galgani,
    Giorgilli & Strelcyn 1980, Meccanica 15, 9-30): advance state and tangent together, log the
    tangent's growth, rescale it to unit length. Entries past ``n_segments`` are NaN."""

    def segment(i, carry):
        state, tangent, logs = carry
        state, tangent = advance(state, tangent)
        growth = jnp.linalg.norm(tangent)
        return state, tangent / growth, logs.at[i].set(jnp.log(growth))

    logs = jnp.full(capacity, jnp.nan, dtype=tangent.dtype)
    return lax.fori_loop(0, n_segments, segment, (state, tangent, logs))[2]


def _solve(term: Any, t1: Array, y0: Any, args: Any, saveat: Any):
    diffrax = _diffrax()
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL, dtmin=_MIN_STEP, force_dtmin=False)
    return diffrax.diffeqsolve(
        term, diffrax.Tsit5(), t0=0.0, t1=t1, dt0=None, y0=y0, args=args, saveat=saveat,
        stepsize_controller=controller, max_steps=_MAX_SOLVER_STEPS, throw=False,
    )


# ---- compiled programs: one per family (and trajectory length) -------------------------------


@functools.partial(jax.jit, static_argnames=("family",))
def _flow_trajectory(
    family: tuple, index: Array, start: Float[Array, " state"], params: Float[Array, " p"],
    times: Float[Array, " time"],
) -> Float[Array, "time state"]:
    diffrax = _diffrax()
    term = diffrax.ODETerm(_switch(family, index, leading=2))
    return _solve(term, times[-1], start, params, diffrax.SaveAt(ts=times)).ys


@functools.partial(jax.jit, static_argnames=("family", "capacity"))
def _flow_growth(
    family: tuple, index: Array, start: Array, tangent: Array, params: Array, interval: Array,
    n_segments: Array, capacity: int,
) -> Float[Array, " capacity"]:
    diffrax = _diffrax()
    field = _switch(family, index, leading=2)
    term = diffrax.ODETerm(lambda t, y, args: jax.jvp(lambda s: field(t, s, args), (y[0],), (y[1],)))

    def advance(state, tangent):
        ys = _solve(term, interval, (state, tangent), params, diffrax.SaveAt(t1=True)).ys
        return ys[0][-1], ys[1][-1]

    return _renormalised_growth(advance, start, tangent, n_segments, capacity)


@functools.partial(jax.jit, static_argnames=("family", "observed", "length"))
def _map_trajectory(
    family: tuple, index: Array, start: Array, params: Array, burn_in: Array, observed: int | None,
    length: int,
) -> Float[Array, "time state"]:
    step = _switch(family, index, leading=1)
    state = lax.fori_loop(0, burn_in, lambda _, s: step(s, params), start)

    def iterate(state, _):
        return step(state, params), state if observed is None else state[-observed:]

    return lax.scan(iterate, state, None, length=length)[1]


@functools.partial(jax.jit, static_argnames=("family", "capacity"))
def _map_growth(
    family: tuple, index: Array, start: Array, tangent: Array, params: Array, interval: Array,
    n_segments: Array, capacity: int,
) -> Float[Array, " capacity"]:
    step = _switch(family, index, leading=1)

    def advance(state, tangent):
        def once(_, pair):
            return jax.jvp(lambda s: step(s, params), (pair[0],), (pair[1],))

        return lax.fori_loop(0, interval, once, (state, tangent))

    return _renormalised_growth(advance, start, tangent, n_segments, capacity)


# ---- the kinds of dynamics -------------------------------------------------------------------


class AbstractDynamics(abc.ABC):
    """The equations of one system and how to advance them.

    Attributes:
        kind: ``"flow"``, ``"map"`` or ``"delay"``, for people (listings, docs), never dispatched on.
        discrete_time: samples are iterations (``dt`` is 1, timestamps are integers).
        initial_condition_note: what an initial condition means, when it is not the state.
        family: the equations compiled together with these (set by the registry); empty means
            just these.
    """

    kind: ClassVar[str]
    discrete_time: ClassVar[bool]
    initial_condition_note: ClassVar[str] = ""
    family: tuple[Callable[..., Any], ...]

    @property
    @abc.abstractmethod
    def equations(self) -> Callable[..., Any]:
        """The function a family is made of."""

    @property
    @abc.abstractmethod
    def parameter_names(self) -> tuple[str, ...]:
        """The parameters the equations read, in positional order."""

    @abc.abstractmethod
    def initial_state(self, start: Any, params: Mapping[str, float], dt: float) -> Array:
        """The integrated state for the point ``start`` (``(state,)`` float64)."""

    @abc.abstractmethod
    def trajectory(
        self, state: Array, params: Mapping[str, float], *, dt: float, burn_in: float, length: int
    ) -> Float[Array, "time columns"]:
        """``length`` samples ``dt`` apart, after ``burn_in`` time units (iterations for a map)."""

    @abc.abstractmethod
    def log_growth(
        self, state: Array, tangent: Array, params: Mapping[str, float], *, dt: float,
        renorm_every: int, n_segments: int,
    ) -> Float[Array, " segment"]:
        """Benettin's log-growth of ``tangent`` over ``n_segments`` intervals of ``renorm_every``
        samples of ``dt`` each."""

    @abc.abstractmethod
    def integrator(self, params: Mapping[str, float], dt: float) -> tuple[str, float | None, float | None]:
        """``(description, rtol, atol)`` of the integration, for a frame's attrs."""

    def _members(self) -> tuple[tuple[Callable[..., Any], ...], Array]:
        family = self.family or (self.equations,)
        return family, jnp.asarray(family.index(self.equations), dtype=jnp.int32)

    def _vector(self, params: Mapping[str, float], leading: int) -> Float[Array, " p"]:
        """The parameters as one float64 vector, padded to the family's widest member."""
        family, _ = self._members()
        width = max(len(_parameter_names(member, leading)) for member in family)
        values = [params[name] for name in self.parameter_names]
        return jnp.asarray(values + [0.0] * (width - len(values)), dtype=jnp.float64)


@dataclasses.dataclass(frozen=True)
class Flow(AbstractDynamics):
    """An autonomous ODE ``x' = field(t, x, *parameters)``, solved with diffrax's Tsit5 under a
    PID step-size controller (``rtol = atol = 1e-9``); Benettin's tangent obeys the linearised
    field (``jax.jvp``) on the same adaptive steps."""

    field: Callable[..., Array]
    family: tuple[Callable[..., Any], ...] = ()
    kind: ClassVar[str] = "flow"
    discrete_time: ClassVar[bool] = False

    @property
    def equations(self) -> Callable[..., Array]:
        return self.field

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return _parameter_names(self.field, 2)

    def initial_state(self, start: Any, params: Mapping[str, float], dt: float) -> Array:
        return jnp.asarray(start)

    def trajectory(self, state, params, *, dt, burn_in, length):
        family, index = self._members()
        times = jnp.asarray(burn_in + dt * np.arange(length, dtype=np.float64))
        return _flow_trajectory(family, index, state, self._vector(params, 2), times)

    def log_growth(self, state, tangent, params, *, dt, renorm_every, n_segments):
        family, index = self._members()
        interval = jnp.asarray(renorm_every * dt)
        logs = _flow_growth(
            family, index, state, tangent, self._vector(params, 2), interval, n_segments,
            _capacity(n_segments),
        )
        return logs[:n_segments]

    def integrator(self, params, dt):
        return "diffrax.Tsit5 with diffrax.PIDController", RTOL, ATOL


@dataclasses.dataclass(frozen=True)
class IteratedMap(AbstractDynamics):
    """A map ``x_{n+1} = step(x_n, *parameters)``, one iteration per sample."""

    step: Callable[..., Array]
    family: tuple[Callable[..., Any], ...] = ()
    kind: ClassVar[str] = "map"
    discrete_time: ClassVar[bool] = True

    @property
    def equations(self) -> Callable[..., Array]:
        return self.step

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return _parameter_names(self.step, 1)

    def initial_state(self, start: Any, params: Mapping[str, float], dt: float) -> Array:
        return jnp.asarray(start)

    def trajectory(self, state, params, *, dt, burn_in, length):
        family, index = self._members()
        return _map_trajectory(
            family, index, state, self._vector(params, 1), round(burn_in / dt), None, length
        )

    def log_growth(self, state, tangent, params, *, dt, renorm_every, n_segments):
        family, index = self._members()
        logs = _map_growth(
            family, index, state, tangent, self._vector(params, 1), jnp.asarray(renorm_every),
            n_segments, _capacity(n_segments),
        )
        return logs[:n_segments]

    def integrator(self, params, dt):
        return "map iteration", None, None


# Mackey–Glass by the method of steps. diffrax has no delay support, and its adaptive steps would
# need a dense interpolant of the whole past to evaluate x(t - tau). A fixed grid avoids both:
# with step h the delay is tau/h grid steps, the state is the window of the last ~tau/h values,
# and x(t - tau) at the RK4 stages (t, t + h/2, t + h) is linearly interpolated between its
# entries. One sampling interval is then a map on the window, iterated like any map and
# differentiated by jax.jvp for Benettin's tangent (the discretisation Farmer 1982, "Chaotic
# attractors of an infinite-dimensional dynamical system", Physica D 4, 366-393, also uses).


@functools.lru_cache(maxsize=64)
def _method_of_steps(rate: Callable[..., Array], grid: tuple[int, float, float]) -> Callable[..., Array]:
    """One sampling interval of ``x' = rate(x, x(t - tau), *parameters)`` on the window, as a
    map ``step(history, *parameters)``; ``history[-1]`` is x(t), ``history[-1 - j]`` x(t - j h).
    Cached so that one grid is one function, hence one compilation."""
    substeps, step, delay_steps = grid

    def lagged(window: Array, lag: float) -> Array:  # x(t - lag h), linear between grid points
        whole = math.floor(lag)
        fraction = lag - whole
        value = window[-1 - whole]
        if fraction == 0.0:
            return value
        return (1.0 - fraction) * value + fraction * window[-2 - whole]

    def advance(history: Array, *parameters: Array) -> Array:
        def rk4(_, window):
            x = window[-1]
            delayed_middle = lagged(window, delay_steps - 0.5)
            k1 = rate(x, lagged(window, delay_steps), *parameters)
            k2 = rate(x + 0.5 * step * k1, delayed_middle, *parameters)
            k3 = rate(x + 0.5 * step * k2, delayed_middle, *parameters)
            k4 = rate(x + step * k3, lagged(window, delay_steps - 1.0), *parameters)
            x_next = x + step / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            return jnp.concatenate([window[1:], x_next[None]])

        return lax.fori_loop(0, substeps, rk4, history)

    # The map kernels read the parameter names off the signature: give it the rate's.
    names = _parameter_names(rate, 2)
    advance.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("history", *names)]
    )
    return advance


@dataclasses.dataclass(frozen=True)
class DelayEquation(AbstractDynamics):
    """A scalar delay differential equation ``x'(t) = rate(x(t), x(t - tau), *parameters)`` with
    a constant history ``x(t) = x(0), t <= 0``, integrated by the method of steps: fixed RK4
    steps of at most ``max_step`` time units, ``x(t - tau)`` linearly interpolated on the grid.
    The parameter ``tau`` sets the grid; the samples show ``x(t)`` only."""

    rate: Callable[..., Array]
    max_step: float = 0.1
    family: tuple[Callable[..., Any], ...] = ()
    kind: ClassVar[str] = "delay"
    discrete_time: ClassVar[bool] = False
    initial_condition_note: ClassVar[str] = " (the constant history x(t), t <= 0)"

    @property
    def equations(self) -> Callable[..., Array]:
        return self.rate

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return _parameter_names(self.rate, 2)

    def grid(self, dt: float, tau: float) -> tuple[int, float, float]:
        """RK4 steps per sample, the step h, and the delay in steps tau/h (>= 1, so that the
        stages read only the past)."""
        substeps = max(1, math.ceil(dt / min(self.max_step, tau) - 1e-9))
        step = dt / substeps
        delay_steps = tau / step
        if abs(delay_steps - round(delay_steps)) < 1e-9:
            delay_steps = float(round(delay_steps))
        return substeps, step, delay_steps

    def initial_state(self, start: Any, params: Mapping[str, float], dt: float) -> Array:
        """A constant window over lags 0 .. floor(delay) + 1."""
        _, _, delay_steps = self.grid(dt, params["tau"])
        return jnp.full(math.floor(delay_steps) + 2, start[0])

    def _advance(self, params: Mapping[str, float], dt: float) -> tuple[tuple, Array, Array]:
        step = _method_of_steps(self.rate, self.grid(dt, params["tau"]))
        values = [params[name] for name in self.parameter_names]
        return (step,), jnp.asarray(0, dtype=jnp.int32), jnp.asarray(values, dtype=jnp.float64)

    def trajectory(self, state, params, *, dt, burn_in, length):
        family, index, vector = self._advance(params, dt)
        return _map_trajectory(family, index, state, vector, round(burn_in / dt), 1, length)

    def log_growth(self, state, tangent, params, *, dt, renorm_every, n_segments):
        family, index, vector = self._advance(params, dt)
        logs = _map_growth(
            family, index, state, tangent, vector, jnp.asarray(renorm_every), n_segments,
            _capacity(n_segments),
        )
        return logs[:n_segments]

    def integrator(self, params, dt):
        _, step, _ = self.grid(dt, params["tau"])
        return f"RK4 method of steps (step {step:g}, x(t - tau) interpolated)", None, None
