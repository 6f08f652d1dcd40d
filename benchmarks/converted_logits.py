r"""Logits of a converted workdir against the PyTorch original's, on the original's inputs.

The reference .npz (`rgb` [B, 3, H, W], `luma` [B, 1, H, W] in [0, 1], `logits` [B, K]) comes from running the
original model in a PyTorch environment (torch is not a dependency of this project); see BENCHMARKS.md.

  python -m visioncore_jax.convert --from=original.npz --config=configs/cifar100_mc.py --workdir=W
  python -m benchmarks.converted_logits --workdir=W --config=configs/cifar100_mc.py --reference=logits.npz
"""

import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from visioncore_jax.models import build_model
from visioncore_jax.tools.convert import initial_state
from visioncore_jax.tools.evaluate import checkpoint_step, restore_model_variables
from visioncore_jax.train import checkpointing

flags.DEFINE_string("workdir", None, "The converted workdir.")
flags.DEFINE_string("reference", None, "The original's inputs and logits (.npz).")
config_flags.DEFINE_config_file("config", None, "The config the workdir was converted with.")
flags.mark_flags_as_required(["workdir", "reference", "config"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    reference = np.load(FLAGS.reference)
    model = build_model(FLAGS.config, reference["logits"].shape[-1])
    with checkpointing.create_manager(FLAGS.workdir, 1) as manager:
        step = checkpoint_step(manager, "latest", None)
        variables = restore_model_variables(manager, step, initial_state(FLAGS.config, model))
    nhwc = lambda x: jnp.asarray(np.transpose(x, (0, 2, 3, 1)))  # noqa: E731
    logits = model.apply(variables, {"color": nhwc(reference["rgb"]), "brightness": nhwc(reference["luma"])},
                         train=False)["logits"]
    difference = np.abs(np.asarray(logits) - reference["logits"])
    print(f"{len(logits)} examples, {logits.shape[-1]} classes: max |logit difference| {difference.max():.3g}, "
          f"mean {difference.mean():.3g}; max |logit| {np.abs(reference['logits']).max():.3g}; same argmax: "
          f"{np.mean(np.argmax(logits, -1) == np.argmax(reference['logits'], -1)):.0%}")


if __name__ == "__main__":
    app.run(main)
