"""One process of the multi-host test: `python -m tests.multihost_worker WORKDIR DATA_DIR DEVICES STEPS`;
joins a jax.distributed run through `main.initialize_distributed` when JAX_COORDINATOR_ADDRESS is set, then
trains a small plain CNN (the fault zoo's) with checkpoints every 4 steps and an eval every 8."""

import os
import sys

workdir, data_dir, devices, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"

from main import initialize_distributed  # noqa: E402
from tests.fault_zoo import PlainCNN, zoo_config  # noqa: E402
from visioncore_jax.train import train_and_evaluate  # noqa: E402

if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    initialize_distributed()
config = zoo_config(data_dir, steps=steps, eval_every=8)
# A 1,024-image slice (32 steps an epoch, more than a run's steps): each of the test's 7 processes reads, decodes
# and measures a quarter of the zoo's 4,096 images.
config.data.train_split = "train[:1024]"
config.training.update(log_every_steps=3, checkpoint_every_steps=4, eval_every_epochs=8 / 32)
train_and_evaluate(config, workdir, model=PlainCNN(depth=2, width=8))
