"""Malliavin delta by the Bismut–Elworthy–Li weight against Black–Scholes and OU closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from chaosfm.predictor import delta, malliavin_path

S0, STRIKE, RATE, VOL, T = 100.0, 100.0, 0.05, 0.2, 1.0
D1 = (np.log(S0 / STRIKE) + (RATE + 0.5 * VOL**2) * T) / (VOL * np.sqrt(T))
D2 = D1 - VOL * np.sqrt(T)


def black_scholes(payoff, key, n_paths=20_000):
    return delta(
        payoff, S0, T, n_paths, key=key, drift=lambda x: RATE * x, diffusion=lambda x: VOL * x, steps=64
    )


def test_digital_call_delta_matches_black_scholes_within_three_standard_errors():
    digital = lambda x: jnp.exp(-RATE * T) * (x > STRIKE)  # noqa: E731 - discontinuous at K
    estimate = black_scholes(digital, jax.random.key(1))
    closed_form = np.exp(-RATE * T) * norm.pdf(D2) / (VOL * S0 * np.sqrt(T))
    assert estimate.n_paths == 20_000
    assert 0 < estimate.standard_error < 0.02 * closed_form  # the estimate is informative
    assert abs(estimate.value - closed_form) < 3 * estimate.standard_error


def test_vanilla_call_delta_is_n_of_d1():
    call = lambda x: jnp.exp(-RATE * T) * jnp.maximum(x - STRIKE, 0.0)  # noqa: E731
    estimate = black_scholes(call, jax.random.key(2))
    assert abs(estimate.value - norm.cdf(D1)) < 3 * estimate.standard_error


def test_ornstein_uhlenbeck_digital_delta_uses_the_tangent_process():
    # dX = -theta X dt + s dW: X_T ~ N(x0 e^{-theta T}, s^2 (1 - e^{-2 theta T}) / (2 theta)) and
    # Y_t = e^{-theta t} (a tangent that is not X / x0), so d/dx0 P(X_T > K) = e^{-theta T} phi(.) / sd.
    theta, s, x0, strike = 1.5, 0.7, 0.2, 0.4
    mean = x0 * np.exp(-theta * T)
    sd = s * np.sqrt((1 - np.exp(-2 * theta * T)) / (2 * theta))
    closed_form = np.exp(-theta * T) * norm.pdf((mean - strike) / sd) / sd
    estimate = delta(
        lambda x: (x > strike).astype(jnp.float32), x0, T, 20_000, key=jax.random.key(3),
        drift=lambda x: -theta * x, diffusion=lambda x: s, steps=64,
    )
    assert abs(estimate.value - closed_form) < 3 * estimate.standard_error


def test_path_tangent_and_weight_are_exact_for_geometric_brownian_motion():
    # Euler on GBM multiplies X and Y by the same factor each step, so Y_T = X_T / x0 exactly,
    # and s(X)^-1 Y = 1 / (vol x0) makes the weight integral W_T / (vol x0).
    import diffrax

    key = jax.random.key(4)
    path = malliavin_path(lambda x: RATE * x, lambda x: VOL * x, S0, T, key=key, steps=32)
    w_t = diffrax.VirtualBrownianTree(0.0, T, tol=T / 32 / 4, shape=(1,), key=key).evaluate(0.0, T)[0]
    np.testing.assert_allclose(path.tangent, path.state / S0, rtol=1e-5)
    np.testing.assert_allclose(path.weight_integral, w_t / (VOL * S0), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("bad", [dict(T=0.0), dict(n_paths=1)])
def test_bad_arguments_are_refused(bad):
    args = dict(T=1.0, n_paths=10) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        delta(lambda x: x, 1.0, args["T"], args["n_paths"], key=jax.random.key(0),
              drift=lambda x: 0.0 * x, diffusion=lambda x: 1.0 + 0.0 * x)
