"""The device mesh of a training run and how arrays are laid out on it: the one place
``train.devices`` and ``train.mesh`` become a ``Mesh``.

A training mesh has two axes, ``('data', 'fsdp')``. The batch is split over both (every device
reads its own windows, as in FSDP); parameters, gradients and optimizer state are split over
``fsdp`` by :func:`param_sharding` (ZeRO-3 / FSDP under GSPMD: XLA inserts the all-gathers before
a weight is used and the reduce-scatters of its gradient). ``fsdp = 1`` is plain data parallelism.

With several processes (JAX's multi-controller runtime) ``jax.devices()`` lists every process's
devices, and the mesh must span all of them: with neither ``train.devices`` nor ``train.mesh`` set
it is ``{data: all devices, fsdp: 1}``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from chaosfm._config import ConfigError

__all__ = [
    "MESH_AXES",
    "MIN_SHARDED_SIZE",
    "batch_sharding",
    "choose_mesh_shape",
    "data_mesh",
    "device_memory_bytes",
    "param_sharding",
    "training_mesh",
]

MESH_AXES = ("data", "fsdp")
MIN_SHARDED_SIZE = 1024
"""Arrays with fewer elements stay replicated: gathering them costs more latency than they save."""
STATE_SHARE = 0.5
"""``mesh: auto`` keeps parameters, gradients and optimizer state within this share of one
device's memory; the rest is left to activations."""


def data_mesh(devices: int | None, batch_size: int | None, *, section: str = "train"):
    """A ``jax.sharding.Mesh`` with one ``data`` axis over the first ``devices`` devices, or None
    for one device (``devices`` None). The loop lays it out as ``('data', 'fsdp')`` with
    :func:`training_mesh`.

    Args:
        devices: the config's ``devices``.
        batch_size: the config's ``batch_size``, checked to split over the devices (None: no check;
            :func:`training_mesh` checks the counts it is given).
        section: where the config's ``devices`` key lives (``""``: at the top level), for errors.

    Raises:
        ConfigError: more devices than there are, or a batch that does not split over them.
    """
    if devices is None:
        return None
    import jax
    from jax.sharding import Mesh

    if batch_size is not None and batch_size % devices:
        raise ConfigError(f"train.batch_size: {batch_size} does not split over train.devices={devices}")
    available = len(jax.devices())
    if devices > available:
        raise ConfigError(
            f"{_key(section, 'devices')}: {devices} asked for, {available} available (with "
            f"{_key(section, 'mesh')}: its data × fsdp)"
        )
    return Mesh(np.asarray(jax.devices()[:devices]), ("data",))


def _key(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def device_memory_bytes(device: Any, devices_sharing_host: int) -> int:
    """Memory of one device: the accelerator's ``bytes_limit``, or for CPU devices (which report
    none) the machine's RAM split evenly between the ``devices_sharing_host`` devices on it."""
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // max(devices_sharing_host, 1)


def choose_mesh_shape(devices: int, state_bytes: int, device_bytes: int) -> tuple[int, int]:
    """``mesh: auto``: ``(data, fsdp)`` over ``devices`` devices.

    Every device on ``data`` when the whole training state (parameters, gradients, optimizer
    state: ``state_bytes``) fits within :data:`STATE_SHARE` of ``device_bytes``; otherwise the
    smallest ``fsdp`` dividing ``devices`` whose share of the state fits (all devices on ``fsdp``
    if none does).
    """
    budget = STATE_SHARE * device_bytes
    for fsdp in range(1, devices + 1):
        if devices % fsdp == 0 and state_bytes / fsdp <= budget:
            return devices // fsdp, fsdp
    return 1, devices


def training_mesh(
    config: Any, mesh: Any, *, state_bytes: int, section: str = "train", batches: dict[str, int] | None = None
):
    """The ``('data', 'fsdp')`` mesh the loop trains on, or None for one device.

    Args:
        config: the loop's :class:`~chaosfm.train.TrainConfig` (``devices``, ``mesh``,
            ``batch_size``).
        mesh: what the job handed the loop: None, a 1-D ``data`` mesh from :func:`data_mesh`
            (its devices are used, laid out as ``config.mesh`` says; ``{data: N, fsdp: 1}``
            when it says nothing), or a mesh that already has ``('data', 'fsdp')`` axes.
        state_bytes: bytes of parameters, gradients and optimizer state, for ``mesh: auto``.
        section: where the config's ``devices`` and ``mesh`` keys live (``""``: at the top
            level, as in the agent's config), for errors.
        batches: the counts that are split over ``data × fsdp``, by the config key that sets
            them; None: ``{section.batch_size: config.batch_size}``.

    Raises:
        ConfigError: a layout whose product is not the device count, more devices than there
            are, a batch that does not split over ``data × fsdp``, or, with several processes, a
            mesh that leaves out some process's devices.
    """
    import jax
    from jax.sharding import AxisType

    layout = config.mesh
    if batches is None:
        batches = {_key(section, "batch_size"): config.batch_size}
    if mesh is not None and tuple(mesh.axis_names) == MESH_AXES:
        shape = (mesh.shape["data"], mesh.shape["fsdp"])
        _check_batch(batches, shape)
        _check_every_process(list(mesh.devices.flat), section)
        return mesh
    if mesh is None and layout is None:
        if jax.process_count() == 1:
            return None
        mesh = data_mesh(len(jax.devices()), None, section=section)
    if mesh is not None:
        devices = list(mesh.devices.flat)
    else:
        count = len(jax.devices()) if layout == "auto" else layout.data * layout.fsdp
        if count > len(jax.devices()):
            raise ConfigError(
                f"{_key(section, 'mesh')}: {count} devices asked for, {len(jax.devices())} available"
            )
        devices = jax.devices()[:count]
    _check_every_process(devices, section)
    if layout is None:
        shape = (len(devices), 1)
    elif layout == "auto":
        on_first_host = sum(device.process_index == devices[0].process_index for device in devices)
        shape = choose_mesh_shape(len(devices), state_bytes, device_memory_bytes(devices[0], on_first_host))
    else:
        shape = (layout.data, layout.fsdp)
        if shape[0] * shape[1] != len(devices):
            raise ConfigError(
                f"{_key(section, 'mesh')}: data {shape[0]} × fsdp {shape[1]} = {shape[0] * shape[1]} devices, "
                f"but the run has {len(devices)}; the product must be the device count"
            )
    _check_batch(batches, shape)
    return jax.make_mesh(shape, MESH_AXES, (AxisType.Auto, AxisType.Auto), devices=devices)


def _check_every_process(devices: list[Any], section: str) -> None:
    import jax

    if jax.process_count() > 1 and len(devices) != jax.device_count():
        raise ConfigError(
            f"{_key(section, 'devices')}: {len(devices)} of the {jax.device_count()} devices of this "
            f"{jax.process_count()}-process run; with several processes the mesh must span every "
            f"device of every process (leave {_key(section, 'devices')} out, or set it to the total)"
        )


def _check_batch(batches: dict[str, int], shape: tuple[int, int]) -> None:
    for key, count in batches.items():
        if count % (shape[0] * shape[1]):
            raise ConfigError(
                f"{key}: {count} does not split over the mesh data {shape[0]} × fsdp "
                f"{shape[1]} = {shape[0] * shape[1]} devices (the batch is split over both axes)"
            )


def param_sharding(tree: Any, mesh: Any, *, min_size: int = MIN_SHARDED_SIZE) -> Any:
    """Where each array of ``tree`` (parameters, their gradients, or an optimizer state that
    mirrors them) lives on ``mesh``: a pytree of ``NamedSharding`` of the same structure.

    The rule (FSDP / ZeRO-3): an array is split along ``fsdp`` on its largest axis whose size
    divides by the ``fsdp`` size (the first such axis on a tie); it is replicated when no axis
    divides, when it has fewer than ``min_size`` elements (scalars, step counts, small vectors),
    or when ``fsdp`` is 1. Nothing is split along ``data``. The rule reads shapes only, so an
    optimizer state whose moments mirror the parameters is laid out like them.

    Args:
        tree: a pytree whose leaves have ``.shape`` (arrays or ``jax.ShapeDtypeStruct``).
        mesh: a mesh with an ``fsdp`` axis.
        min_size: arrays with fewer elements are replicated.
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    fsdp = mesh.shape["fsdp"]

    def place(leaf: Any) -> NamedSharding:
        shape = tuple(np.shape(leaf))
        if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
            return NamedSharding(mesh, PartitionSpec())
        divisible = [axis for axis, size in enumerate(shape) if size % fsdp == 0]
        if not divisible:
            return NamedSharding(mesh, PartitionSpec())
        axis = max(divisible, key=lambda a: (shape[a], -a))
        spec = [None] * len(shape)
        spec[axis] = "fsdp"
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree_util.tree_map(place, tree)


def batch_sharding(mesh: Any):
    """The batch's layout: its first axis split over ``data × fsdp`` (every device reads its own
    windows), the other axes whole."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec(MESH_AXES))
