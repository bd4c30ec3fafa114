"""``parameter_report`` (``models/_inspect.py``): every array leaf, named, counted and described."""

import equinox as eqx
import jax
import numpy as np

from chaosfm.models import GPT, GPTConfig, parameter_report

CONFIG = GPTConfig(vocab_size=11, context_length=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2)


def test_report_of_a_tiny_gpt_covers_every_array_leaf():
    model = GPT(CONFIG, key=jax.random.key(0))
    report = parameter_report(model)
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))
    assert report["count"].sum() == sum(leaf.size for leaf in leaves)
    assert len(report) == len(leaves) and report["name"].is_unique
    for row, leaf in zip(report.itertuples(), leaves):
        values = np.asarray(leaf, np.float64)
        assert row.shape == ("x".join(map(str, leaf.shape)) or "scalar") and row.dtype == str(leaf.dtype)
        assert np.isclose(row.mean_abs, np.abs(values).mean()) and np.isclose(row.std, values.std())
    # names are attribute paths that lead back to their leaf
    assert report["name"].str.contains(r"blocks\[1\]\.").any()
    for name, leaf in zip(report["name"], leaves):
        target = model
        for part in name.replace("[", ".[").split("."):
            target = target[int(part[1:-1])] if part.startswith("[") else getattr(target, part)
        assert np.array_equal(np.asarray(target), np.asarray(leaf)), name
