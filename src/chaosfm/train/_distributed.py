"""Several processes, one run: JAX's multi-controller runtime, the one place it is started.

Every process runs the same program (the same job, config and seed); ``jax.distributed.initialize``
joins them into one runtime, after which ``jax.devices()`` lists the devices of every process and
one jitted step spans them all. :func:`initialize_distributed` must run before any JAX computation.

What differs between processes, and is decided here:

* the batch: each process builds only its rows of the global batch (:func:`local_rows`) and
  :func:`global_batch` assembles the global array from every process's piece
  (``jax.make_array_from_process_local_data``);
* host values entering the mesh (:func:`place`) and leaving it (:func:`gather_to_host`: every
  array whole on every host, the form a checkpoint stores, so a checkpoint resumes under any
  process count);
* writing: only process 0 (:func:`is_main_process`) writes logs and checkpoints; the others wait at
  :func:`barrier`.

With one process every function here is the plain single-process operation (``jax.device_put``,
``jax.device_get``), so a one-process run computes exactly what it computed before.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DistributedConfig",
    "barrier",
    "gather_json",
    "gather_to_host",
    "global_batch",
    "initialize_distributed",
    "is_main_process",
    "local_rows",
    "place",
]

AUTO = "auto"
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
_ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d+)$")


class DistributedConfig(BaseModel):
    """``distributed:``: how this process joins a multi-process run (all unset: one process).

    ``coordinator: auto`` calls ``jax.distributed.initialize()`` with no arguments: JAX detects
    the cluster (SLURM, Open MPI, Cloud TPU, Kubernetes) and fills in all three values.
    """

    model_config = ConfigDict(extra="forbid")

    coordinator: str | None = Field(
        None, description="HOST:PORT of process 0's coordinator service, or auto (cluster detection)"
    )
    num_processes: int | None = Field(None, gt=0, description="processes in the run")
    process_id: int | None = Field(None, ge=0, description="this process's rank, 0 .. num_processes - 1")

    @field_validator("coordinator")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None or value == AUTO:
            return value
        match = _ADDRESS.match(value.strip())
        if match is None:
            raise ValueError(
                f"distributed.coordinator: {value!r} is not HOST:PORT (e.g. 10.0.0.1:1234), nor auto"
            )
        port = int(match["port"])
        if not 0 < port < 65536:
            raise ValueError(f"distributed.coordinator: port {port} of {value!r} is outside 1..65535")
        return value.strip()

    @model_validator(mode="after")
    def _rank_in_range(self) -> "DistributedConfig":
        if self.coordinator == AUTO:
            if self.num_processes is not None or self.process_id is not None:
                raise ValueError(
                    "distributed.coordinator: auto detects num_processes and process_id from the "
                    "cluster; leave distributed.num_processes and distributed.process_id out"
                )
            return self
        if self.process_id is not None and self.num_processes is not None:
            if self.process_id >= self.num_processes:
                raise ValueError(
                    f"distributed.process_id: {self.process_id} is out of range for "
                    f"distributed.num_processes={self.num_processes} (0..{self.num_processes - 1})"
                )
        if self.coordinator is not None:
            missing = [
                f"distributed.{name}"
                for name, value in (("num_processes", self.num_processes), ("process_id", self.process_id))
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)}: needed with distributed.coordinator={self.coordinator!r} "
                    "(or write distributed.coordinator: auto on a cluster JAX detects)"
                )
        elif (self.num_processes is not None or self.process_id is not None) and not os.environ.get(
            COORDINATOR_ENV
        ):
            raise ValueError(
                "distributed.coordinator: needed with distributed.num_processes / distributed.process_id "
                f"(HOST:PORT of process 0's coordinator, or the {COORDINATOR_ENV} environment variable)"
            )
        return self

    @property
    def requested(self) -> bool:
        """Whether this process joins a multi-process run: a key is set, or JAX's
        ``JAX_COORDINATOR_ADDRESS`` environment variable is."""
        values = (self.coordinator, self.num_processes, self.process_id)
        return any(value is not None for value in values) or bool(os.environ.get(COORDINATOR_ENV))


def initialize_distributed(config: DistributedConfig | None) -> bool:
    """Join the multi-process run ``config`` describes; a no-op when it describes none.

    Calls ``jax.distributed.initialize(coordinator_address, num_processes, process_id)`` (values
    left unset are read by JAX: ``JAX_COORDINATOR_ADDRESS``, or the cluster's own variables), after
    selecting gloo for CPU collectives (the CPU backend has no cross-process collectives without
    it). Must run before any JAX computation; calling it again once joined does nothing.

    Returns:
        True when this process is part of a multi-process run.
    """
    if config is None or not config.requested:
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if config.coordinator == AUTO:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=config.coordinator,
            num_processes=config.num_processes,
            process_id=config.process_id,
        )
    return True


def is_main_process() -> bool:
    """Process 0: the one that writes logs, checkpoints and run folders."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have reached the barrier ``name`` (a no-op with one)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def local_rows(sharding: Any, batch_size: int) -> slice:
    """The rows of a ``batch_size`` batch laid out by ``sharding`` (split along its first axis)
    that live on this process's devices: one contiguous block.

    Raises:
        ValueError: this process's devices do not hold one contiguous block of rows.
    """
    blocks = sorted(
        {(index[0].start or 0, batch_size if index[0].stop is None else index[0].stop)
         for index in sharding.addressable_devices_indices_map((batch_size,)).values()}
    )
    start, stop = blocks[0][0], blocks[0][1]
    for block_start, block_stop in blocks[1:]:
        if block_start > stop:
            raise ValueError(
                f"this process's devices hold rows {blocks} of the batch, not one block; "
                "order the mesh's devices by process"
            )
        stop = max(stop, block_stop)
    return slice(start, stop)


def global_batch(local: Any, sharding: Any, batch_size: int) -> Any:
    """The global batch (a pytree of ``jax.Array`` of ``batch_size`` rows each) from this
    process's rows ``local`` (:func:`local_rows`); with one process, ``jax.device_put``."""
    import jax

    if jax.process_count() == 1:
        return jax.device_put(local, sharding)

    def assemble(leaf: Any) -> Any:
        leaf = np.asarray(leaf)
        return jax.make_array_from_process_local_data(sharding, leaf, (batch_size, *leaf.shape[1:]))

    return jax.tree_util.tree_map(assemble, local)


def place(tree: Any, shardings: Any) -> Any:
    """Put host values (the same on every process) onto the mesh as ``shardings`` say.

    Typed PRNG keys travel as their key data. With one process, ``jax.device_put``.
    """
    import jax

    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(leaf: Any, sharding: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)  # already on the mesh: a re-layout
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(leaf)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        return jax.device_put(np.asarray(leaf), sharding)

    return jax.tree_util.tree_map(one, tree, shardings)


def gather_json(value: Any) -> list[Any]:
    """``value`` (JSON-ready, e.g. a batch stream's state) of every process, in process order, on
    every process (a collective: all processes call it). With one process, ``[value]``."""
    import json

    import jax

    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int64))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)  # allgather needs one shape on every process
    padded[: data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded))  # (processes, longest)
    return [json.loads(bytes(row[:size])) for row, size in zip(rows, lengths)]


def gather_to_host(tree: Any) -> Any:
    """Every array of ``tree`` whole, as NumPy, on every process (a collective: all processes
    call it). Typed PRNG keys come back as host keys. With one process, ``jax.device_get``."""
    import jax

    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(leaf: Any) -> Any:
        if not isinstance(leaf, jax.Array):
            return leaf
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = np.asarray(multihost_utils.process_allgather(jax.random.key_data(leaf), tiled=True))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(one, tree)
