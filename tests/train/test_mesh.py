"""The ('data', 'fsdp') training mesh: the sharding rule, the layout chosen by ``mesh: auto``, the
config, and training on 8 forced CPU devices laid out (8, 1), (4, 2), (2, 4), (1, 8) giving the
one-device loss curve."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, PartitionSpec

from chaosfm._config import ConfigError
from chaosfm.train import (
    MeshShape,
    TrainConfig,
    choose_mesh_shape,
    param_sharding,
    parse_train_run_config,
    training_mesh,
)

from ._data import tiny_config

P = PartitionSpec


def _mesh(data, fsdp):
    return AbstractMesh((data, fsdp), ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))


def _spec(shape, fsdp, data=1):
    tree = {"x": jax.ShapeDtypeStruct(shape, np.float32)}
    return param_sharding(tree, _mesh(data, fsdp))["x"].spec


def test_the_rule_splits_the_largest_axis_that_divides_by_fsdp():
    assert _spec((64, 256), 4) == P(None, "fsdp")  # 256 is the larger axis and divides by 4
    assert _spec((256, 64), 4) == P("fsdp", None)
    assert _spec((128, 10), 4) == P("fsdp", None)  # 10 does not divide by 4: the other axis
    assert _spec((6, 1000), 8) == P(None, "fsdp")
    assert _spec((64, 64), 2) == P("fsdp", None)  # a tie goes to the first axis
    assert _spec((4, 3, 512), 4, data=2) == P(None, None, "fsdp")
    assert _spec((4096,), 8) == P("fsdp")  # a large vector (a raveled moment) is split too


def test_the_rule_replicates_what_does_not_divide_small_arrays_and_fsdp_one():
    assert _spec((1001, 3), 2) == P()  # no axis divides by 2
    assert _spec((), 4) == P()  # a step count
    assert _spec((512,), 4) == P()  # a norm scale: fewer than MIN_SHARDED_SIZE elements
    assert _spec((10, 64), 4) == P()  # 640 elements
    assert _spec((64, 256), 1, data=8) == P()  # plain data parallelism


def test_the_rule_lays_out_adam_moments_like_their_parameters():
    import optax

    params = {"w": jax.ShapeDtypeStruct((64, 256), np.float32), "b": jax.ShapeDtypeStruct((64,), np.float32)}
    state = jax.eval_shape(optax.adam(1e-3).init, params)
    layout = param_sharding(state, _mesh(2, 4))
    assert layout[0].mu["w"].spec == layout[0].nu["w"].spec == P(None, "fsdp")
    assert layout[0].mu["b"].spec == P() and layout[0].count.spec == P()


def test_auto_puts_every_device_on_data_until_the_state_does_not_fit_one():
    gb = 1 << 30
    assert choose_mesh_shape(8, state_bytes=1 * gb, device_bytes=16 * gb) == (8, 1)
    # budget: half of 4 GB; 3 GB / 2 fits
    assert choose_mesh_shape(8, state_bytes=3 * gb, device_bytes=4 * gb) == (4, 2)
    assert choose_mesh_shape(6, state_bytes=10, device_bytes=7) == (2, 3)  # 10/3 <= 3.5, 10/2 is not
    assert choose_mesh_shape(8, state_bytes=100, device_bytes=10) == (1, 8)  # nothing fits: all on fsdp


def test_the_config_reads_a_mesh_and_keeps_devices_as_data_only():
    assert TrainConfig(devices=4).mesh is None
    config = TrainConfig(mesh={"data": 4, "fsdp": 2})
    assert config.mesh == MeshShape(data=4, fsdp=2) and config.devices == 8
    assert TrainConfig(mesh={"fsdp": 8}).devices == 8
    assert TrainConfig(mesh="auto").devices is None
    run = parse_train_run_config(tiny_config("gpt", mesh={"data": 2, "fsdp": 2}, devices=4))
    assert run.train.devices == 4


def test_the_config_refuses_a_mesh_that_is_not_the_device_count():
    off_count = r"train.mesh: data 4 × fsdp 2 = 8 devices, but train.devices is 6; the product must be"
    with pytest.raises(ConfigError, match=off_count):
        parse_train_run_config(tiny_config("gpt", mesh={"data": 4, "fsdp": 2}, devices=6))
    with pytest.raises(ConfigError, match=r"train.mesh: fsdp: Input should be greater than 0 \(got 0\)"):
        parse_train_run_config(tiny_config("gpt", mesh={"data": 4, "fsdp": 0}))
    with pytest.raises(ConfigError, match=r"train.mesh: unknown key 'tensor'; allowed: data, fsdp"):
        parse_train_run_config(tiny_config("gpt", mesh={"data": 4, "tensor": 2}))
    with pytest.raises(ConfigError, match=r"train.mesh: 'everything' is not a layout"):
        parse_train_run_config(tiny_config("gpt", mesh="everything"))


def test_one_device_needs_no_mesh_and_a_mesh_past_the_devices_is_refused():
    assert training_mesh(TrainConfig(batch_size=4), None, state_bytes=0) is None
    one = training_mesh(TrainConfig(batch_size=4, mesh={"data": 1, "fsdp": 1}), None, state_bytes=0)
    assert one.shape == {"data": 1, "fsdp": 1}
    too_many = len(jax.devices()) + 1
    with pytest.raises(ConfigError, match=rf"train.mesh: {too_many} devices asked for, \d+ available"):
        training_mesh(TrainConfig(batch_size=4, mesh={"data": too_many}), None, state_bytes=0)


_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import equinox as eqx, jax, numpy as np
    sys.path.insert(0, {tests!r})
    from train._data import periodic_data, tiny_config
    from chaosfm._config import ConfigError
    from chaosfm.train import data_mesh, fit_code_model, param_sharding, parse_train_run_config, training_mesh

    assert len(jax.devices()) == 8, jax.devices()

    def config(**train):
        raw = tiny_config("gpt", steps=5, batch_size=8, checkpoint_every=5, log_every=1, **train)
        raw["model"]["d_model"] = 64  # w_in (64, 256), head (64, 10), w_k (64, 32), embedding (10, 64)
        return parse_train_run_config(raw)

    def leaves(tree):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {{jax.tree_util.keystr(path): leaf for path, leaf in flat}}

    report = {{"runs": {{}}, "errors": {{}}}}
    # devices: 8 is {{data: 8, fsdp: 1}}; the others name the layout.
    layouts = {{"one": {{}}, "8x1": {{"devices": 8}}, "4x2": {{"mesh": {{"data": 4, "fsdp": 2}}}},
               "2x4": {{"mesh": {{"data": 2, "fsdp": 4}}}}, "1x8": {{"mesh": {{"data": 1, "fsdp": 8}}}}}}
    for name, train in layouts.items():
        started = time.perf_counter()
        run = config(**train)
        mesh = data_mesh(run.train.devices, run.train.batch_size)
        result = fit_code_model(run, periodic_data(), {root!r} + "/" + name, mesh=mesh)
        entry = {{
            "losses": [line["loss"] for line in result.history],
            "params": [np.asarray(leaf).tolist() for leaf in jax.tree_util.tree_leaves(result.model)
                       if hasattr(leaf, "dtype") and np.issubdtype(leaf.dtype, np.floating)],
            "seconds": round(time.perf_counter() - started, 1),
        }}
        if result.shardings is not None:
            placed = leaves(result.shardings["params"])
            state = leaves(result.shardings["opt_state"])
            mesh_of = next(iter(placed.values())).mesh
            trained = eqx.filter(result.model, eqx.is_inexact_array)
            rule = {{path: s.spec for path, s in leaves(param_sharding(trained, mesh_of)).items()}}
            entry["mesh"] = dict(mesh_of.shape)
            entry["specs"] = {{path: str(s.spec) for path, s in placed.items()}}
            entry["off_rule"] = [path for path, s in placed.items() if s.spec != rule[path]]
            entry["state_specs"] = {{path: str(s.spec) for path, s in state.items()}}
        report["runs"][name] = entry

    for label, train, mesh in (
        ("batch", {{"mesh": {{"data": 4, "fsdp": 2}}, "batch_size": 12}}, None),
        ("product", {{"mesh": {{"data": 4, "fsdp": 2}}}}, data_mesh(4, 8)),
    ):
        try:
            raw = tiny_config("gpt", **{{"batch_size": 8, **train}})
            training_mesh(parse_train_run_config(raw).train, mesh, state_bytes=0)
            report["errors"][label] = None
        except ConfigError as error:
            report["errors"][label] = str(error)
    auto = config(mesh="auto").train
    report["auto_small"] = dict(training_mesh(auto, None, state_bytes=1000).shape)
    report["auto_huge"] = dict(training_mesh(auto, None, state_bytes=10**18).shape)
    report["seconds"] = {{name: run["seconds"] for name, run in report["runs"].items()}}
    reference = np.asarray(report["runs"]["one"]["losses"])
    report["worst_relative_loss_gap"] = {{
        name: float(np.max(np.abs(np.asarray(run["losses"]) - reference) / np.abs(reference)))
        for name, run in report["runs"].items() if name != "one"
    }}
    print(json.dumps(report))
    """
)

TOLERANCE = 1e-5
"""Relative, float32: the layouts differ from one device only in the order of reductions (the
batch's mean, the gradient's all-reduce, the global norm summed per leaf with fsdp)."""


def _eight_devices(subprocess_env, root) -> dict:
    flags = f"{subprocess_env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
    env = {**subprocess_env, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    tests_dir = str(Path(__file__).resolve().parents[1])
    script = _SCRIPT.format(tests=tests_dir, root=str(root))
    process = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=900)
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    return json.loads(process.stdout.decode().strip().splitlines()[-1])


@pytest.mark.slow
def test_every_layout_of_eight_devices_trains_like_one_device_and_places_arrays_by_the_rule(subprocess_env, tmp_path):
    """One subprocess (8 forced CPU devices) for all layouts: it compiles once per layout."""
    report = _eight_devices(subprocess_env, tmp_path)
    runs = report["runs"]

    # The loss curve and the final weights of one device, within float32 rounding.
    reference = np.asarray(runs["one"]["losses"])
    assert reference.size == 5 and reference[-1] < reference[0]  # it learns
    for name in ("8x1", "4x2", "2x4", "1x8"):
        data, fsdp = map(int, name.split("x"))
        assert runs[name]["mesh"] == {"data": data, "fsdp": fsdp}, name
        np.testing.assert_allclose(runs[name]["losses"], reference, rtol=TOLERANCE, atol=0, err_msg=name)
        assert report["worst_relative_loss_gap"][name] <= TOLERANCE, name
        for got, want in zip(runs[name]["params"], runs["one"]["params"], strict=True):
            got, want = np.asarray(got), np.asarray(want)
            assert np.max(np.abs(got - want)) <= TOLERANCE * max(1.0, np.max(np.abs(want))), name

    # Each parameter, and its AdamW moments, where the rule says (a few checked by hand).
    for name in ("8x1", "4x2", "2x4", "1x8"):
        assert runs[name]["off_rule"] == [], name
    assert set(runs["8x1"]["specs"].values()) == {str(P())}  # fsdp 1: replicated
    for name in ("4x2", "2x4", "1x8"):
        specs, state = runs[name]["specs"], runs[name]["state_specs"]
        assert specs[".blocks[0].mlp.w_in"] == str(P(None, "fsdp")), name  # (64, 256)
        assert specs[".blocks[0].mlp.w_out"] == str(P("fsdp", None)), name  # (256, 64)
        assert specs[".blocks[0].attention.w_k"] == str(P("fsdp", None)), name  # (64, 32)
        assert specs[".head"] == specs[".embedding"] == str(P()), name  # 640 elements each
        moments = [path for path in state if path.endswith("mlp.w_in")]
        assert len(moments) == 2 and all(state[p] == specs[".blocks[0].mlp.w_in"] for p in moments), name

    # What does not fit is refused; auto keeps a small model on data alone.
    errors = report["errors"]
    assert "train.batch_size: 12 does not split over the mesh data 4 × fsdp 2 = 8 devices" in errors["batch"]
    assert "train.mesh: data 4 × fsdp 2 = 8 devices, but the run has 4" in errors["product"]
    assert report["auto_small"] == {"data": 8, "fsdp": 1}
    assert report["auto_huge"] == {"data": 1, "fsdp": 8}
