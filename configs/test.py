r"""Tiny configuration for tests: a few steps of a very small dual-pathway ResNet on the embedded data.

  python main.py --workdir=/tmp/vc_test --config=configs/test.py

Expected result: finishes in seconds; accuracy is not meaningful.
"""

from configs import default


def get_config():
    """Returns the default config shrunk to a few seconds of CPU work."""
    config = default.get_config()
    # Two stages (the model takes 1-4): the train step compiles in about half the time of four stages' (3.4 s
    # against 7.3 s on 2 CPU cores), and most tests compile it. Tests that need more capacity set their own.
    config.model.num_blocks = (1, 1)
    config.model.width = 8
    config.model.dropout = 0.1
    config.training.batch_size = 32
    config.training.eval_batch_size = 512
    config.training.num_epochs = -1
    config.training.num_train_steps = 6
    config.training.eval_every_epochs = 1.0
    config.training.log_every_steps = 2
    config.training.checkpoint_every_steps = 2
    config.schedule.warmup_epochs = 0.0
    return config
