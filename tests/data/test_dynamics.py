"""Tests of chaosfm.data._dynamics: a family's shared compiled integrator gives what the member's
own equations give alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from chaosfm.data import SYSTEMS
from chaosfm.data._dynamics import Flow, IteratedMap, _capacity


def test_a_family_member_integrates_as_it_would_alone():
    # The shared program switches to the member's equations and pads its parameter vector; the
    # result must be the member's own solution, bit for bit.
    system = SYSTEMS["sprott_r"]
    shared = system.equations
    alone = Flow(shared.field)
    assert len(shared.family) > 1 and alone.family == ()
    params = dict(system.parameters)
    with jax.enable_x64(True):
        start = jnp.asarray(system.near_attractor(params))
        a = np.asarray(shared.trajectory(start, params, dt=0.1, burn_in=5.0, length=50))
        b = np.asarray(alone.trajectory(start, params, dt=0.1, burn_in=5.0, length=50))
    np.testing.assert_array_equal(a, b)


def test_a_map_family_member_grows_tangents_as_it_would_alone():
    system = SYSTEMS["lozi"]
    shared, alone = system.equations, IteratedMap(system.equations.step)
    params = dict(system.parameters)
    with jax.enable_x64(True):
        start = jnp.asarray(system.near_attractor(params))
        tangent = jnp.asarray([1.0, 0.0])
        a = np.asarray(shared.log_growth(start, tangent, params, dt=1.0, renorm_every=5, n_segments=40))
        b = np.asarray(alone.log_growth(start, tangent, params, dt=1.0, renorm_every=5, n_segments=40))
    assert a.shape == (40,) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_segment_buffers_come_in_powers_of_two():
    assert [_capacity(n) for n in (1, 256, 257, 4100)] == [256, 256, 512, 8192]
