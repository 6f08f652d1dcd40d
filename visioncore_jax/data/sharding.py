"""Host batches → global jax.Arrays split over the `data` axis of the device mesh."""

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def to_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's slice of the batch into global arrays sharded along the batch axis.

    Raises a ValueError saying what to change when the global batch does not divide by the device count.
    """
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    local_size = len(next(iter(local_batch.values())))
    global_size = local_size * jax.process_count()
    num_devices = mesh.devices.size
    if global_size % num_devices:
        raise ValueError(
            f"A global batch of {global_size} examples does not divide by the {num_devices} devices; set "
            f"config.training.batch_size (and eval_batch_size) to a multiple of {num_devices}."
        )
    return {key: jax.make_array_from_process_local_data(sharding, value) for key, value in local_batch.items()}
