"""Checkpoints round-trip exactly, are written atomically, and a damaged one is named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm._artifacts import ArtifactError
from chaosfm.train import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

PARAMS = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.asarray([np.pi], jnp.float32)}
OPT = (jnp.asarray(3, jnp.int32), {"w": jnp.ones((2, 3)), "b": jnp.zeros(1)})


def _save(run, step, keep=2):
    return save_checkpoint(
        run, step=step, params=PARAMS, opt_state=OPT, key=jax.random.key(11), seed=4, keep=keep
    )


def test_round_trip_is_bit_exact(tmp_path):
    path = _save(tmp_path, 7)
    restored = load_checkpoint(path, params_like=PARAMS, opt_state_like=OPT)
    assert restored.step == 7
    for a, b in zip(
        jax.tree_util.tree_leaves((PARAMS, OPT)),
        jax.tree_util.tree_leaves((restored.params, restored.opt_state)),
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(jax.random.key(11)))
    assert not any(p.name.endswith(".pkl") for p in path.iterdir())


def test_only_the_newest_are_kept_and_partial_writes_are_ignored(tmp_path):
    for step in (5, 10, 15):
        _save(tmp_path, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000010", "step_00000015"]
    # A folder without meta.json is what a kill during a write would leave: never picked.
    (tmp_path / "checkpoints" / "step_00000020").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000015"


@pytest.mark.parametrize("damaged", ["model.eqx", "opt_state.eqx", "state.json"])
def test_a_corrupted_checkpoint_names_the_file(tmp_path, damaged):
    path = _save(tmp_path, 3)
    target = path / damaged
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{damaged}: damaged"):
        load_checkpoint(path, params_like=PARAMS, opt_state_like=OPT)


def test_a_checkpoint_of_another_model_is_refused_with_the_file_name(tmp_path):
    path = _save(tmp_path, 3)
    other = {"w": jnp.zeros((4, 4)), "b": jnp.zeros(1)}
    with pytest.raises(ArtifactError, match="model.eqx: cannot be restored"):
        load_checkpoint(path, params_like=other, opt_state_like=OPT)
