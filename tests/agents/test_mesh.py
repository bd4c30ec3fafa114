"""The agents on the ('data', 'fsdp') mesh: a tiny QR-DQN training on 8 forced CPU devices laid out
(8, 1), (4, 2), (2, 4), (1, 8), and a tiny TD-MPC2 market training laid out (2, 4), give
the one-device loss curve and weights, every array of the agent lies where ``param_sharding``'s rule
says, and ``chaosfm agent train`` takes ``devices`` / ``mesh`` (refusing counts that do not split)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from chaosfm._config import ConfigError
from chaosfm.jobs import agent

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np, pandas as pd
    sys.path.insert(0, {tests!r})
    from agents.test_trainer import CONFIG, FENCE, FIRST, _panel
    from chaosfm._config import ConfigError
    from chaosfm.agents import train_agent
    from chaosfm.jobs import agent as job
    from chaosfm.train import data_mesh, param_sharding, training_mesh

    assert len(jax.devices()) == 8, jax.devices()
    # Two hidden layers of 64: hidden_layers[1] (64, 64) and head (3 x 16 = 48, 64) are large enough
    # to split; hidden_layers[0] (64, 4) and the biases stay whole (fewer than 1024 elements).
    config = CONFIG.replace(iterations=4, portfolios=8,
                            qrdqn=CONFIG.qrdqn.replace(hidden=64, layers=2, n_quantiles=16, batch_size=64))
    panel = _panel(informative=True)

    def paths(tree):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {{jax.tree_util.keystr(path): leaf for path, leaf in flat}}

    def placement(state, mesh):
        # Where each array of the state is, and which ones are not where the rule puts them.
        placed, rule = paths(state), paths(param_sharding(state, mesh))
        return {{"mesh": dict(mesh.shape),
                "specs": {{path: str(leaf.sharding.spec) for path, leaf in placed.items()}},
                "off_rule": [path for path, leaf in placed.items() if leaf.sharding.spec != rule[path].spec]}}

    report = {{"runs": {{}}, "errors": {{}}}}
    layouts = {{"one": None, "8x1": {{"devices": 8}}, "4x2": {{"mesh": {{"data": 4, "fsdp": 2}}}},
               "2x4": {{"mesh": {{"data": 2, "fsdp": 4}}}}, "1x8": {{"mesh": {{"data": 1, "fsdp": 8}}}}}}
    for name, keys in layouts.items():
        mesh = None
        if keys is not None:  # the job's keys, laid out by the one mesh builder
            layout = job.read(None, keys)
            mesh = training_mesh(layout, data_mesh(layout.devices, None, section=""), state_bytes=0, section="",
                                 batches={{"portfolios": 8, "critic.batch_size": 64}})
        state, history = train_agent(panel, config, first=FIRST, last=FENCE, key=jax.random.key(0), mesh=mesh)
        entry = {{"losses": history["loss"].tolist(),
                 "params": [np.asarray(leaf).ravel().tolist() for leaf in jax.tree_util.tree_leaves(state)]}}
        if mesh is not None:
            entry.update(placement(state, mesh))
        report["runs"][name] = entry

    # The job: one device against (2, 4), and what it refuses.
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2015-01-01", periods=300)
    frame = pd.concat([pd.DataFrame({{"timestamp": dates.strftime("%Y-%m-%d"), "ticker": f"S{{i}}",
                                     "close": 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(300)))}})
                       for i in range(6)])
    data = {root!r} + "/stocks.csv"
    frame.to_csv(data, index=False)

    def run(out, **keys):
        values = {{"data": data, "out": {root!r} + "/" + out, "env": {{"n_assets": 4, "holding": 2,
                  "episode_rebalances": 4}}, "portfolios": 8, "iterations": 3, "updates_per_iteration": 2,
                  "critic": {{"batch_size": 32}}, **keys}}
        job.train(job.read(None, values))
        return pd.read_csv(values["out"] + "/history.csv")["loss"].tolist()

    # TD-MPC2's market training (the tiny config of test_tdmpc2_market.py, 8 portfolios, 16 samples):
    # one device against (2, 4), with the convergence map (dynamic CVaR, gated assets).
    from agents import test_tdmpc2_market as small
    from chaosfm.agents import MarketTDMPC2Config, train_tdmpc2_market
    tdmpc2 = MarketTDMPC2Config.from_fields(small.BOOK.replace(portfolios=8), small.FEATURES + 1,
                                            {{**small.TINY, "hidden": 32, "latent_dim": 32, "seed_iterations": 1,
                                             "actor": "policy"}})
    report["tdmpc2"] = {{}}
    # One split layout: (8, 1) replication is the QR-DQN layouts' case, and each compile here is long.
    for name, keys in (("one", None), ("2x4", {{"mesh": {{"data": 2, "fsdp": 4}}}})):
        mesh = None
        if keys is not None:  # the job's keys for agent tdmpc2, laid out by the one mesh builder
            layout = job.read(None, {{"agent": "tdmpc2", **keys}})
            mesh = training_mesh(layout, data_mesh(layout.devices, None, section=""), state_bytes=0, section="",
                                 batches={{"portfolios": 8, "tdmpc2.batch_size": tdmpc2.batch_size}})
        state, history = train_tdmpc2_market(small._panel(0), tdmpc2, first=0, last=small.FENCE,
                                             key=jax.random.key(0), convergence=small._convergence(), mesh=mesh)
        entry = {{"losses": history["loss"].tolist(), "policy": history["policy"].tolist(),
                 "params": [np.asarray(leaf).ravel().tolist() for leaf in jax.tree_util.tree_leaves(state)]}}
        if mesh is not None:
            entry.update(placement(state, mesh))
        report["tdmpc2"][name] = entry

    report["job"] = {{"one": run("one"), "2x4": run("mesh", mesh={{"data": 2, "fsdp": 4}})}}
    for label, keys in (("portfolios", {{"portfolios": 6}}), ("batch", {{"critic": {{"batch_size": 20}}}}),
                        ("devices", {{"devices": 16}})):
        try:
            run("refused", **{{"mesh": {{"data": 4, "fsdp": 2}}, **keys}} if label != "devices" else keys)
            report["errors"][label] = None
        except ConfigError as error:
            report["errors"][label] = str(error)
    print(json.dumps(report))
    """
)

TOLERANCE = 1e-5
"""Relative, float32: the layouts differ from one device only in the order of reductions (the
replay batch's mean loss, the gradient's all-reduce); every key is the one-device key."""


def _report(root: Path) -> dict:
    import os

    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    tests_dir = str(Path(__file__).resolve().parents[1])
    script = _SCRIPT.format(tests=tests_dir, root=str(root))
    process = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=900)
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    return json.loads(process.stdout.decode().strip().splitlines()[-1])


@pytest.mark.slow
def test_both_agents_train_like_one_device_on_every_layout_and_the_job_takes_a_mesh(tmp_path):
    # One test, not one per check: a module fixture of this report was built once per xdist worker
    # (one Python process on 8 forced devices, ~2 min), as tests of the module landed on both workers.
    report = _report(tmp_path)
    _check_every_layout_trains_like_one_device_and_places_the_agent_by_the_rule(report)
    _check_the_job_takes_a_mesh_and_refuses_what_does_not_split(report)
    _check_tdmpc2_trains_like_one_device_on_a_mesh_and_places_the_learner_by_the_rule(report)


def _check_every_layout_trains_like_one_device_and_places_the_agent_by_the_rule(report: dict) -> None:
    runs = report["runs"]
    reference = np.asarray(runs["one"]["losses"])
    assert reference.size == 4 and np.all(np.isfinite(reference))
    for name in ("8x1", "4x2", "2x4", "1x8"):
        data, fsdp = map(int, name.split("x"))
        assert runs[name]["mesh"] == {"data": data, "fsdp": fsdp}, name
        np.testing.assert_allclose(runs[name]["losses"], reference, rtol=TOLERANCE, atol=0, err_msg=name)
        for got, want in zip(runs[name]["params"], runs["one"]["params"], strict=True):
            got, want = np.asarray(got), np.asarray(want)
            assert np.max(np.abs(got - want), initial=0) <= TOLERANCE * max(1.0, np.max(np.abs(want), initial=0))
        assert runs[name]["off_rule"] == [], name

    # A few by hand: online, target and both Adam moments alike.
    assert set(runs["8x1"]["specs"].values()) == {"P()"}  # fsdp 1: replicated
    for name in ("4x2", "2x4", "1x8"):
        specs = runs[name]["specs"]
        heads = [path for path in specs if path.endswith(".head.weight")]
        middles = [path for path in specs if path.endswith(".hidden_layers[1].weight")]
        firsts = [path for path in specs if path.endswith(".hidden_layers[0].weight")]
        assert len(heads) == len(middles) == len(firsts) == 4, name  # params, target_params, mu, nu
        assert {specs[p] for p in heads} == {"P(None, 'fsdp')"}, name  # (48, 64): the larger axis
        assert {specs[p] for p in middles} == {"P('fsdp', None)"}, name  # (64, 64): a tie, the first axis
        assert {specs[p] for p in firsts} == {"P()"}, name  # (64, 4): 256 elements
        assert specs[".step"] == "P()", name


def _check_the_job_takes_a_mesh_and_refuses_what_does_not_split(report: dict) -> None:
    job = report["job"]
    assert len(job["one"]) == 3
    np.testing.assert_allclose(job["2x4"], job["one"], rtol=TOLERANCE, atol=0)
    errors = report["errors"]
    assert errors["portfolios"].startswith("portfolios: 6 does not split over the mesh data 4 × fsdp 2 = 8")
    assert errors["batch"].startswith("critic.batch_size: 20 does not split over the mesh data 4 × fsdp 2 = 8")
    assert errors["devices"].startswith("devices: 16 asked for, 8 available")


def _check_tdmpc2_trains_like_one_device_on_a_mesh_and_places_the_learner_by_the_rule(report: dict) -> None:
    runs = report["tdmpc2"]
    reference = np.asarray(runs["one"]["losses"])
    assert reference.size == 3 and np.all(np.isfinite(reference))
    for name in ("2x4",):
        data, fsdp = map(int, name.split("x"))
        assert runs[name]["mesh"] == {"data": data, "fsdp": fsdp}, name
        np.testing.assert_allclose(runs[name]["losses"], reference, rtol=TOLERANCE, atol=0, err_msg=name)
        np.testing.assert_allclose(runs[name]["policy"], runs["one"]["policy"], rtol=TOLERANCE, atol=0, err_msg=name)
        assert len(runs[name]["params"]) == len(runs["one"]["params"]), name
        for got, want in zip(runs[name]["params"], runs["one"]["params"], strict=True):
            got, want = np.asarray(got), np.asarray(want)
            assert np.max(np.abs(got - want), initial=0) <= TOLERANCE * max(1.0, np.max(np.abs(want), initial=0))
        assert runs[name]["off_rule"] == [], name
    specs = runs["2x4"]["specs"]
    split = {path: spec for path, spec in specs.items() if "fsdp" in spec}
    # hidden 32, latent 32: e.g. the dynamics' (32, 33) first layer splits its 32 rows, and every
    # part of the learner has a split array: the model, the policy, the target critics, both Adam states.
    for part in (".model.", ".policy.", ".target_critics.", ".model_opt_state", ".policy_opt_state"):
        assert any(path.startswith(part) for path in split), part
    assert specs[".step"] == "P()" and specs[".value_scale"] == "P()"


def test_the_config_takes_devices_and_mesh_for_both_agents():
    assert agent.read(None, {"mesh": {"data": 2, "fsdp": 4}}).devices == 8
    assert agent.read(None, {"devices": 4}).mesh is None
    assert agent.read(None, {}).devices is None and agent.read(None, {}).mesh is None
    with pytest.raises(ConfigError, match=r"mesh: data 4 × fsdp 2 = 8 devices, but devices is 6"):
        agent.read(None, {"mesh": {"data": 4, "fsdp": 2}, "devices": 6})
    with pytest.raises(ConfigError, match=r"key 'mesh': Value error, mesh: unknown key 'tensor'"):
        agent.read(None, {"mesh": {"tensor": 2}})
    assert agent.read(None, {"agent": "tdmpc2", "mesh": {"data": 2, "fsdp": 4}}).devices == 8
    assert agent.read(None, {"agent": "tdmpc2", "devices": 2}).mesh is None
