"""Barlow Twins and the cross-resolution consistency loss against numpy written out by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.models import barlow_twins_loss, cross_resolution_loss, downsample_pairs, pooled_embedding


def _numpy_barlow(a, b, lam, eps=1e-5):
    """Zbontar et al. 2021 eq. 1, element by element: batch-normalise each view, cross-correlate."""
    n, d = a.shape
    a_hat = (a - a.mean(axis=0)) / np.sqrt(a.var(axis=0) + eps)
    b_hat = (b - b.mean(axis=0)) / np.sqrt(b.var(axis=0) + eps)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a_hat[k, i] * b_hat[k, j] for k in range(n)) / n
            loss += (1.0 - c_ij) ** 2 if i == j else lam * c_ij**2
    return loss


def test_barlow_twins_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 5)) * np.array([0.1, 1.0, 3.0, 0.5, 2.0]) + 1.5
    b = 0.7 * a + 0.3 * rng.standard_normal(a.shape) @ rng.standard_normal((5, 5))
    for lam in (5e-3, 0.5):
        got = barlow_twins_loss(jnp.asarray(a), jnp.asarray(b), off_diagonal_weight=lam)
        assert got.dtype == jnp.float32
        assert float(got) == pytest.approx(_numpy_barlow(a, b, lam), rel=1e-4)
    # 0/1 weights are the same as keeping the rows of weight 1.
    w = (rng.random(40) > 0.3).astype(np.float32)
    keep = w > 0
    weighted = barlow_twins_loss(jnp.asarray(a), jnp.asarray(b), jnp.asarray(w), off_diagonal_weight=0.1)
    assert float(weighted) == pytest.approx(_numpy_barlow(a[keep], b[keep], 0.1), rel=1e-4)
    # Two identical views with uncorrelated dimensions sit at the optimum; a collapsed view does not.
    raw = rng.standard_normal((64, 4))
    white = np.linalg.qr(raw - raw.mean(axis=0))[0]  # centred, orthogonal columns
    assert float(barlow_twins_loss(jnp.asarray(white), jnp.asarray(white), off_diagonal_weight=1.0)) < 1e-4
    constant = np.ones((64, 4))
    assert float(barlow_twins_loss(jnp.asarray(white), jnp.asarray(constant))) == pytest.approx(4.0, abs=1e-3)


def test_downsample_pairs_ends_at_the_last_step():
    x = np.arange(14, dtype=np.float32).reshape(7, 2)  # odd: the first step is dropped
    got = np.asarray(downsample_pairs(jnp.asarray(x)))
    want = np.array([[(x[1 + 2 * m, f] + x[2 + 2 * m, f]) / 2 for f in range(2)] for m in range(3)])
    np.testing.assert_allclose(got, want)
    even = np.asarray(downsample_pairs(jnp.asarray(x[1:])))  # (6, 2): the same three pairs
    np.testing.assert_allclose(even, want)
    with pytest.raises(ValueError, match="at least 2"):
        downsample_pairs(jnp.zeros((1, 2)))


def test_cross_resolution_loss_matches_numpy():
    rng = np.random.default_rng(1)
    fine = rng.standard_normal((3, 8, 4))
    coarse = rng.standard_normal((3, 4, 4))
    want = 0.0
    for b in range(3):
        p = coarse[b].mean(axis=0) / np.linalg.norm(coarse[b].mean(axis=0))
        q = fine[b].mean(axis=0) / np.linalg.norm(fine[b].mean(axis=0))
        want += np.sum((p - q) ** 2) / 3
    assert float(cross_resolution_loss(jnp.asarray(coarse), jnp.asarray(fine))) == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(pooled_embedding(jnp.asarray(fine[0])))), 1.0, rtol=1e-5)
    # The same direction at both resolutions costs nothing, whatever the lengths.
    same = cross_resolution_loss(jnp.asarray(fine[:, :4] * 2.0), jnp.asarray(fine[:, :4]))
    assert float(same) == pytest.approx(0.0, abs=1e-6)
