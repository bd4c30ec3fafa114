"""Every job that trains honours ``train.devices``: data parallel over a mesh gives the one-device
result (JEPA pretraining and the multitask head; code models and stages share the same mesh
builder, tested in tests/train/test_mesh.py), and a device count that does not fit is refused."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from chaosfm._config import ConfigError
from chaosfm.train import data_mesh

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    import equinox as eqx
    from chaosfm.data import load
    from chaosfm.jobs import multitask, pretrain
    from chaosfm.train import load_multitask_run, load_pretrained

    assert len(jax.devices()) == 2, jax.devices()
    root = sys.argv[1]
    frame = load("sp500")
    frame = frame[(frame["timestamp"] >= "2004-01-01") & (frame["timestamp"] <= "2007-12-31")].reset_index(drop=True)
    frame.attrs["name"] = "sp500"
    worst = {}
    leaves = {}
    for devices in (None, 2):
        config = pretrain.PretrainConfig.model_validate({
            "data": {"names": ["sp500"], "cutoff": "2006-06-30"},
            "model": {"context_length": 16, "d_model": 16, "n_layers": 1, "d_state": 8, "head_dim": 8, "d_embed": 8,
                      "d_pred": 8, "min_future": 4, "max_future": 8, "min_span": 2, "max_span": 4, "cfm_horizon": 3,
                      "cfm_steps": 2},
            "train": {"steps": 3, "batch_size": 4, "warmup_steps": 0, "checkpoint_every": 3, "devices": devices},
            "out": f"{root}/pretrain-{devices}",
        })
        pretrain.run(config, frame=frame)
        model, _, _ = load_pretrained(f"{root}/pretrain-{devices}")
        leaves.setdefault("pretrain", []).append(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))
        config = multitask.read(None, {
            "data": "sp500", "horizon": 5, "vol_horizon": 5, "segment_length": 8, "burn_in": 0, "causal_checks": 0,
            "cutoff": "2006-06-30", "out": f"{root}/multitask-{devices}", "train.steps": 3, "train.batch_size": 4,
            "train.tbptt_segments": 1, "train.checkpoint_every": 3, "train.devices": devices,
        })
        multitask.run(config, frame=frame)
        model, _, _ = load_multitask_run(f"{root}/multitask-{devices}")
        leaves.setdefault("multitask", []).append(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))
    for name, (one, two) in leaves.items():
        worst[name] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(one, two))
        worst[name + "_scale"] = max(float(np.max(np.abs(np.asarray(a)))) for a in one)
    print(json.dumps(worst))
    """
)


@pytest.mark.slow
def test_pretrain_and_multitask_over_two_devices_match_one_device(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "CHAOSFM_PROGRESS": "0",
        "CHAOSFM_QUIET": "1",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    process = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], env=env, capture_output=True,
                             timeout=900)
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    report = json.loads(process.stdout.decode().strip().splitlines()[-1])
    for name in ("pretrain", "multitask"):
        # The same arithmetic but for the order of the batch reduction: float32 rounding only.
        assert report[name] <= 1e-4 * max(1.0, report[name + "_scale"]), report


def test_a_device_count_that_does_not_fit_is_refused():
    assert data_mesh(None, 4) is None
    assert data_mesh(1, 4).shape == {"data": 1}
    with pytest.raises(ConfigError, match=r"train.devices: 96 asked for, \d+ available"):
        data_mesh(96, 96)
    with pytest.raises(ConfigError, match="train.batch_size: 3 does not split over train.devices=2"):
        data_mesh(2, 3)
