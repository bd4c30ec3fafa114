"""The device mesh of a training run: the one place ``train.devices`` becomes a ``Mesh``."""

from __future__ import annotations

import numpy as np

from chaosfm._config import ConfigError

__all__ = ["data_mesh"]


def data_mesh(devices: int | None, batch_size: int):
    """A ``jax.sharding.Mesh`` with one ``data`` axis over the first ``devices`` devices, or None
    for one device (``devices`` None).

    Raises:
        ConfigError: more devices than there are, or a batch that does not split over them.
    """
    if devices is None:
        return None
    import jax
    from jax.sharding import Mesh

    if batch_size % devices:
        raise ConfigError(f"train.batch_size: {batch_size} does not split over train.devices={devices}")
    available = len(jax.devices())
    if devices > available:
        raise ConfigError(f"train.devices: {devices} asked for, {available} available")
    return Mesh(np.asarray(jax.devices()[:devices]), ("data",))
