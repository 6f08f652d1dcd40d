r"""Temporal experiment: classify the motion in 8-frame clips with a frame encoder and a ConvGRU.

`embedded_clips`: a square moving in one of 4 directions at one of 2 speeds (8 classes) among static
distractors; a single frame does not tell the class. The ConvGRU runs with `nn.scan`, so its compile time does
not grow with the clip length (see BENCHMARKS.md).

Command:
  python main.py --workdir=workdirs/video --config=configs/video_convgru.py

Expected result (2 CPU cores): eval_accuracy ~0.99 after 4 epochs (0.9975 measured), about 4 minutes.
"""

import ml_collections

from configs import default


def get_config():
    """Returns the ConvGRU clip-classification configuration."""
    config = default.get_config()
    config.data.name = "embedded_clips"
    config.data.image_size = 16
    config.data.crop_padding = 2
    config.data.random_flip = False  # a flip would turn "left" into "right": the label would lie
    config.model.name = "conv_gru"
    config.model.dropout = 0.1
    config.model.encoder_widths = (16, 32)
    config.model.conv = ml_collections.ConfigDict(dict(conv_type="standard", norm="batch", activation="relu"))
    config.model.gru = ml_collections.ConfigDict(dict(
        hidden=32,
        kernel_size=3,
        conv_type="standard",  # 'standard' | 'depthwise' | 'grouped'
        groups=1,
        recurrent_norm=True,  # per-gate LayerNorm of the recurrent projection
        learnable_h0=True,
        residual=False,
        hidden_clamp=-1.0,  # > 0 clamps the hidden state to +-value every step
        reset_before=False,  # True: Cho et al.'s candidate tanh(Wx + U(r*h)); False: torch/cuDNN's r*(Uh + b)
        unroll=1,  # time steps per iteration of the scan's loop (compile time grows with it; BENCHMARKS.md)
        recurrent_matmul=True,  # the recurrent conv as an im2col matmul: fast in a loop on XLA:CPU
    ))
    # > 0: embed the clips' behavior vectors (running speed, pupil) to this many channels and concatenate them
    # to the ConvGRU input, broadcast over space (VisionCore's modulator); 0: images only.
    config.model.behavior_embed_dim = 0
    config.training.batch_size = 64
    config.training.num_epochs = 4.0
    config.training.checkpoint_every_steps = 250
    return config
