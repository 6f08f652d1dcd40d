r"""Converts a PyTorch checkpoint into a workdir that main.py resumes, fine-tunes or evaluates.

  python -m visioncore_jax.convert --from=model.pth --config=configs/cifar100_mc.py --workdir=workdirs/imported
  python main.py --mode=eval --workdir=workdirs/imported --config=configs/cifar100_mc.py

Supported: the originals' MultiChannelResNetNetwork (config.model.name='dual_resnet') and torchvision-style
ResNet state dicts (model 'resnet'); .pth/.pt (needs torch), .npz and .safetensors. See
visioncore_jax/tools/convert.py.
"""

from absl import app, flags
from ml_collections import config_flags

from visioncore_jax.tools import convert

flags.DEFINE_string("from", None, "The PyTorch state dict: .pth/.pt (needs torch), .npz or .safetensors.")
flags.DEFINE_string("workdir", None, "The new workdir to write the converted checkpoint and config.json to.")
config_flags.DEFINE_config_file("config", None, "The config describing the checkpoint's model (configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["from", "workdir", "config"])


def main(argv):
    del argv
    values = flags.FLAGS
    try:
        convert.convert(values["from"].value, values.config, values.workdir)
    except convert.ConversionError as error:
        raise app.UsageError(str(error)) from error


if __name__ == "__main__":
    app.run(main)
