"""Tests of chaosfm.data._systems: every registered system against what is published about it.

Each system's largest Lyapunov exponent, measured by chaosfm's Benettin code with the system's
defaults, is compared with the published value (within 10%); its period is re-measured for a
few; its equations are checked against plain numpy re-implementations written from the papers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from chaosfm.data import SYSTEMS, chaotic_system, dominant_period, largest_lyapunov_exponent, state_columns

from ._helpers import rk4

LENGTH = 600  # as in test_chaos.py, so that the compiled integrators are shared
WITH_REFERENCE = [name for name, system in SYSTEMS.items() if system.lyapunov_reference is not None]


def test_every_system_is_documented_and_consistent():
    for name, system in SYSTEMS.items():
        assert system.name == name and system.description and system.citation, name
        assert (system.lyapunov_reference is None) == (system.lyapunov_citation is None), name
        # The equations read exactly the registry's parameters, in order; the ring's size and the
        # delay are shapes, not arguments.
        arguments = tuple(k for k in system.parameters if k not in ("dimension", "tau"))
        assert system.equations.parameter_names == arguments, name
        if system.equations.discrete_time:
            assert system.period is None and system.dt == 1.0, name
        else:
            assert 30 <= system.period / system.dt <= 100, (name, system.period / system.dt)
        assert system.near_attractor(system.parameters).shape == (system.dimension,), name
        assert system.spread > 0 and system.lyapunov_steps >= 10 * system.lyapunov_renorm_every, name


def test_kinds_cover_flows_hyperchaos_a_delay_equation_a_ring_and_maps():
    kinds = {system.kind for system in SYSTEMS.values()}
    assert kinds == {"flow", "map", "delay"}
    assert any(system.dimension == 4 for system in SYSTEMS.values())  # hyperchaos
    assert SYSTEMS["lorenz96_40"].dimension == 40
    assert sum(system.kind == "map" for system in SYSTEMS.values()) >= 10


def test_fixed_size_systems_of_one_kind_share_one_compiled_family():
    chen, sprott_b, lorenz63 = (SYSTEMS[n].equations for n in ("chen", "sprott_b", "lorenz63"))
    assert chen.family == sprott_b.family == lorenz63.family
    assert {chen.field, sprott_b.field, lorenz63.field} <= set(chen.family)
    assert SYSTEMS["lozi"].equations.family == SYSTEMS["henon"].equations.family
    # A ring's size is a parameter: it keeps a family of its own.
    assert SYSTEMS["lorenz96"].equations.family == ()


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_largest_exponent_is_within_ten_percent_of_the_published_value(name):
    system = SYSTEMS[name]
    measured = largest_lyapunov_exponent(name)
    assert abs(measured / system.lyapunov_reference - 1.0) < 0.10, (measured, system.lyapunov_reference)


@pytest.mark.parametrize("name", [n for n in SYSTEMS if n not in WITH_REFERENCE])
def test_systems_without_a_reference_are_chaotic(name):
    # Lorenz-96 (F = 8) on rings of 10 and 40 sites: no primary table of the exponent could be
    # traced (see the registry); its scale, ~1-2 per time unit, is not in doubt.
    assert 0.5 < largest_lyapunov_exponent(name) < 3.0


def test_exact_exponents_are_exact():
    assert largest_lyapunov_exponent("tent") == pytest.approx(math.log(1.99), rel=1e-9)
    assert largest_lyapunov_exponent("arnold_cat") == pytest.approx(math.log((3 + math.sqrt(5)) / 2), rel=1e-9)
    assert largest_lyapunov_exponent("logistic") == pytest.approx(math.log(2.0), rel=2e-3)


@pytest.mark.parametrize("name", ["lorenz63", "chua", "sprott_s", "mackey_glass"])
def test_registered_period_is_re_measured_within_ten_percent(name):
    system = SYSTEMS[name]
    frame = chaotic_system(name, length=2**14, seed=1)
    period = dominant_period(frame[state_columns(frame)].to_numpy(), system.dt)
    assert abs(period / system.period - 1.0) < 0.10, (period, system.period)


# ---- the equations against plain numpy, written from the papers --------------------------------


def _chen(s, a=35.0, b=3.0, c=28.0):
    return np.array([a * (s[1] - s[0]), (c - a) * s[0] - s[0] * s[2] + c * s[1], s[0] * s[1] - b * s[2]])


def _rossler_hyperchaos(s, a=0.25, b=3.0, c=0.5, d=0.05):
    x, y, z, w = s
    return np.array([-y - z, x + a * y + w, b + x * z, -c * z + d * w])


def _sprott_s(s):
    return np.array([-s[0] - 4.0 * s[1], s[0] + s[2] ** 2, 1.0 + s[0]])


@pytest.mark.parametrize(
    ("name", "field", "rows"), [("chen", _chen, (5, 20, 40)), ("rossler_hyperchaos", _rossler_hyperchaos, (10, 50)),
                                ("sprott_s", _sprott_s, (20, 100))],
)
def test_flows_match_slow_rk4_within_a_lyapunov_time(name, field, rows):
    system = SYSTEMS[name]
    start = system.near_attractor(system.parameters)
    frame = chaotic_system(name, length=LENGTH, initial_condition=start, burn_in=0.0)
    states = frame[state_columns(frame)].to_numpy()
    for row in rows:
        time = row * system.dt
        assert time * system.lyapunov_reference < 1.0  # differences grow by less than e
        expected = rk4(field, start, time, step=system.dt / 50)
        np.testing.assert_allclose(states[row], expected, atol=1e-6 * (1 + np.abs(expected).max()))


def _iterate(step, start, count):
    state, out = np.array(start, dtype=np.float64), []
    for _ in range(count):
        out.append(state)
        state = step(state)
    return np.array(out)


def _ikeda(s, a=0.4, b=6.0, c=1.0, d=0.9):
    z = complex(s[0], s[1])
    z = c + d * np.exp(1j * (a - b / (1.0 + abs(z) ** 2))) * z
    return np.array([z.real, z.imag])


MAPS = {
    "ikeda": _ikeda,
    "lozi": lambda s: np.array([1.0 - 1.7 * abs(s[0]) + s[1], 0.5 * s[0]]),
    "tinkerbell": lambda s: np.array(
        [s[0] ** 2 - s[1] ** 2 + 0.9 * s[0] - 0.6013 * s[1], 2 * s[0] * s[1] + 2 * s[0] + 0.5 * s[1]]
    ),
    "holmes_cubic": lambda s: np.array([s[1], -0.2 * s[0] + 2.77 * s[1] - s[1] ** 3]),
    "delayed_logistic": lambda s: np.array([2.27 * s[0] * (1.0 - s[1]), s[0]]),
    "ricker": lambda s: np.array([20.0 * s[0] * np.exp(-s[0])]),
    "sine": lambda s: np.array([np.sin(np.pi * s[0])]),
}


@pytest.mark.parametrize("name", list(MAPS))
def test_maps_match_direct_iteration(name):
    system = SYSTEMS[name]
    start = system.near_attractor(system.parameters)
    frame = chaotic_system(name, length=LENGTH, initial_condition=start, burn_in=0)
    # A dozen iterations: rounding differences grow by e^lambda per step.
    np.testing.assert_allclose(
        frame[state_columns(frame)].to_numpy()[:12], _iterate(MAPS[name], start, 12), rtol=1e-9, atol=1e-12
    )


def test_arnold_cat_is_the_integer_torus_automorphism():
    # On a grid of multiples of 1/64 (exact in binary) the map is integer arithmetic mod 64.
    frame = chaotic_system("arnold_cat", length=LENGTH, initial_condition=[5 / 64, 17 / 64], burn_in=0)
    x, y, expected = 5, 17, []
    for _ in range(30):
        expected.append((x / 64, y / 64))
        x, y = (x + y) % 64, (x + 2 * y) % 64
    np.testing.assert_array_equal(frame[["x0", "x1"]].to_numpy()[:30], np.array(expected))
