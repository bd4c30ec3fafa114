"""Data parallelism over a 4-device CPU mesh gives the single-device result."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from train._data import periodic_data, tiny_run_config
    from chaosfm.jobs.train import train_code_model

    assert len(jax.devices()) == 4, jax.devices()
    results = {{}}
    for devices in (None, 4):
        config = tiny_run_config("gpt", steps=6, batch_size=8, devices=devices, checkpoint_every=6)
        result = train_code_model(config, {root!r} + f"/run-{{devices}}", periodic_data())
        results[devices] = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(result.model)]
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(results[None], results[4]))
    scale = max(float(np.max(np.abs(a))) for a in results[None])
    print(json.dumps({{"worst": worst, "scale": scale}}))
    """
)


@pytest.mark.slow
def test_data_parallel_over_four_devices_matches_one_device(tmp_path, subprocess_env):
    env = {**subprocess_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    tests_dir = str(Path(__file__).resolve().parents[1])
    script = _SCRIPT.format(tests=tests_dir, root=str(tmp_path))
    process = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=600)
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    report = json.loads(process.stdout.decode().strip().splitlines()[-1])
    # The same arithmetic but for the order of the batch reduction: float32 rounding only.
    assert report["worst"] <= 1e-5 * max(1.0, report["scale"])
