"""solve_spd against NumPy's LAPACK solve on random SPD systems."""

import jax.numpy as jnp
import numpy as np

from chaosfm.predictor._linalg import solve_spd


def test_matches_numpy_solve_on_spd_systems():
    rng = np.random.default_rng(0)
    for size in (1, 2, 6, 9):
        a = rng.standard_normal((size, size))
        matrix = a @ a.T + 0.5 * np.eye(size)
        rhs = rng.standard_normal(size)
        got = np.asarray(solve_spd(jnp.asarray(matrix, jnp.float32), jnp.asarray(rhs, jnp.float32)))
        np.testing.assert_allclose(got, np.linalg.solve(matrix, rhs), rtol=2e-3, atol=2e-4)
