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


# ---- Black–Scholes digital Greeks by closed-form Malliavin weights (_greeks.py) ---------------
from chaosfm.predictor import basket_digital_greeks, digital_closed_form, digital_greeks  # noqa: E402


def scipy_digital(spot, strike, vol, rate, maturity):
    """Black–Scholes digital call Greeks from scipy's normal: the independent reference."""
    d1 = (np.log(spot / strike) + (rate + 0.5 * vol**2) * maturity) / (vol * np.sqrt(maturity))
    d2 = d1 - vol * np.sqrt(maturity)
    discount = np.exp(-rate * maturity)
    return {
        "price": discount * norm.cdf(d2),
        "delta": discount * norm.pdf(d2) / (vol * spot * np.sqrt(maturity)),
        "gamma": -discount * norm.pdf(d2) * d1 / (vol**2 * spot**2 * maturity),
        "vega": -discount * norm.pdf(d2) * d1 / vol,
    }


@pytest.mark.parametrize("spot", [100.0, 90.0])
def test_digital_delta_gamma_vega_match_black_scholes_within_four_standard_errors(spot):
    estimate = digital_greeks(spot, STRIKE, VOL, RATE, T, 1 << 20, key=jax.random.key(11))
    reference = scipy_digital(spot, STRIKE, VOL, RATE, T)
    for name, greek in estimate._asdict().items():
        assert greek.n_paths == 1 << 20
        assert 0 < greek.standard_error < 0.05 * abs(reference[name]), name  # informative
        assert abs(greek.value - reference[name]) < 4 * greek.standard_error, (name, greek, reference[name])
        np.testing.assert_allclose(digital_closed_form(spot, STRIKE, VOL, RATE, T)[name], reference[name], rtol=1e-9)


def test_one_asset_basket_equals_the_one_asset_weights():
    key = jax.random.key(12)
    single = digital_greeks(S0, STRIKE, VOL, RATE, T, 100_000, key=key, batch_size=30_000)
    basket = basket_digital_greeks([S0], [1.0], STRIKE, [VOL], [[1.0]], RATE, T, 100_000, key=key, batch_size=30_000)
    for name in ("price", "delta", "gamma", "vega"):
        value = np.ravel(getattr(basket, name))[0]
        error = np.ravel(getattr(basket, "price_se" if name == "price" else f"{name}_se"))[0]
        np.testing.assert_allclose(value, getattr(single, name).value, rtol=2e-5, err_msg=name)
        np.testing.assert_allclose(error, getattr(single, name).standard_error, rtol=2e-5, err_msg=name)


BASKET = dict(
    spots=np.array([100.0, 90.0, 110.0]), weights=np.array([0.4, 0.3, 0.3]), strike=100.0,
    vols=np.array([0.2, 0.3, 0.25]), correlation=np.array([[1.0, 0.5, 0.3], [0.5, 1.0, 0.2], [0.3, 0.2, 1.0]]),
    rate=0.03, maturity=1.0,
)


def finite_difference_delta(n_paths, bump, seed):
    """Central differences of the basket digital price in each S_i(0), common random numbers:
    slow and obviously correct (numpy, no weights). Returns (delta, standard error), each (D,)."""
    b = BASKET
    normals = np.random.default_rng(seed).standard_normal((n_paths, b["spots"].size))
    log_move = (b["rate"] - 0.5 * b["vols"] ** 2) * b["maturity"] + b["vols"] * np.sqrt(b["maturity"]) * (
        normals @ np.linalg.cholesky(b["correlation"]).T
    )
    growth = np.exp(log_move)  # (P, D): S_T / S_0
    values, errors = [], []
    for i in range(b["spots"].size):
        up, down = b["spots"].copy(), b["spots"].copy()
        up[i] += bump
        down[i] -= bump
        payoff = lambda s: np.exp(-b["rate"] * b["maturity"]) * ((growth * s) @ b["weights"] > b["strike"])  # noqa: E731
        terms = (payoff(up).astype(float) - payoff(down)) / (2 * bump)
        values.append(terms.mean())
        errors.append(terms.std(ddof=1) / np.sqrt(n_paths))
    return np.array(values), np.array(errors)


def test_basket_delta_matches_common_random_number_finite_differences():
    estimate = basket_digital_greeks(**BASKET, n_paths=1 << 20, key=jax.random.key(13))
    reference, reference_se = finite_difference_delta(2_000_000, bump=0.5, seed=14)
    combined = np.sqrt(estimate.delta_se**2 + reference_se**2)
    assert np.all(estimate.delta > 0) and np.all(estimate.delta_se < 0.05 * estimate.delta)
    assert np.all(np.abs(estimate.delta - reference) < 4 * combined), (estimate.delta, reference, combined)
    # The gamma matrix is symmetric up to Monte Carlo error (its weight is symmetric path by path).
    np.testing.assert_allclose(estimate.gamma, estimate.gamma.T, rtol=1e-5, atol=1e-12)


def test_basket_vega_matches_finite_differences_in_sigma():
    # d/d sigma_i with correlation fixed: the same normals, bumped volatilities (numpy).
    b, bump = BASKET, 0.005
    estimate = basket_digital_greeks(**b, n_paths=1 << 20, key=jax.random.key(15))
    normals = np.random.default_rng(16).standard_normal((2_000_000, 3)) @ np.linalg.cholesky(b["correlation"]).T

    def price_terms(vols):
        log_move = (b["rate"] - 0.5 * vols**2) * b["maturity"] + vols * np.sqrt(b["maturity"]) * normals
        return np.exp(-b["rate"] * b["maturity"]) * ((b["spots"] * np.exp(log_move)) @ b["weights"] > b["strike"])

    for i in range(3):
        up, down = b["vols"].copy(), b["vols"].copy()
        up[i] += bump
        down[i] -= bump
        terms = (price_terms(up).astype(float) - price_terms(down)) / (2 * bump)
        combined = np.hypot(estimate.vega_se[i], terms.std(ddof=1) / np.sqrt(terms.size))
        assert abs(estimate.vega[i] - terms.mean()) < 4 * combined, (i, estimate.vega[i], terms.mean(), combined)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(correlation=np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]])), "positive definite"),
        (dict(vols=np.array([0.2, -0.1, 0.2])), "positive"),
        (dict(weights=np.array([1.0, 1.0])), "must be"),
        (dict(maturity=0.0), "maturity"),
    ],
)
def test_bad_basket_arguments_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        basket_digital_greeks(**(BASKET | bad), n_paths=100, key=jax.random.key(0))


# ---- D-dimensional Bismut–Elworthy–Li weight --------------------------------------------------
def _basket_sde():
    b = BASKET
    cholesky = np.linalg.cholesky(b["correlation"])
    vols, chol = jnp.asarray(b["vols"], jnp.float32), jnp.asarray(cholesky, jnp.float32)
    drift = lambda x: b["rate"] * x  # noqa: E731
    diffusion = lambda x: (vols * x)[:, None] * chol  # noqa: E731 - diag(sigma x) L: (D, D)
    return drift, diffusion, cholesky


def test_vector_path_tangent_and_weight_are_exact_for_correlated_gbm():
    # Euler on diag(sigma x) L dB multiplies X_i and row i of Y by the same factor each step, so
    # Y_T = diag(X_T / x0), and (s^-1 Y)^T is the constant diag(1 / (sigma x0)) L^-T.
    import diffrax

    drift, diffusion, cholesky = _basket_sde()
    key, b = jax.random.key(21), BASKET
    path = malliavin_path(drift, diffusion, jnp.asarray(b["spots"], jnp.float32), T, key=key, steps=32)
    b_t = np.asarray(diffrax.VirtualBrownianTree(0.0, T, tol=T / 32 / 4, shape=(3,), key=key).evaluate(0.0, T))
    np.testing.assert_allclose(path.tangent, np.diag(np.asarray(path.state) / b["spots"]), rtol=1e-5, atol=1e-7)
    expected = np.linalg.solve(cholesky.T, b_t) / (b["vols"] * b["spots"])
    np.testing.assert_allclose(path.weight_integral, expected, rtol=1e-4, atol=1e-6)


def test_vector_delta_of_the_basket_digital_matches_the_closed_form_weights():
    drift, diffusion, _ = _basket_sde()
    b = BASKET
    payoff = lambda x: jnp.exp(-b["rate"] * T) * (x @ jnp.asarray(b["weights"], jnp.float32) > b["strike"])  # noqa: E731
    euler = delta(payoff, b["spots"], T, 20_000, key=jax.random.key(22), drift=drift, diffusion=diffusion, steps=32)
    exact = basket_digital_greeks(**b, n_paths=1 << 20, key=jax.random.key(23))
    assert euler.value.shape == (3,) and euler.n_paths == 20_000
    assert np.all(np.abs(euler.value - exact.delta) < 4 * np.hypot(euler.standard_error, exact.delta_se))
