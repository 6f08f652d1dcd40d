"""One validation pass over the whole config, run before any data is read, the pipeline built or anything compiled.

`validate_config` checks names against the registries where they are defined (datasets, models, optimizers,
schedules, class weightings, control metrics), value ranges, durations, the batch against the devices, and the
model against the dataset's task and example shape (a dataset's `DatasetSpec` knows both without reading data).
Each failure is an `InputError` whose one-line message names the flag and a valid value. What needs the data
(the batch against the training split's size, a warmup longer than the run, a label outside the classes) is
checked by the builders as soon as the data's metadata is known, with the same error type.
"""

import math
import os
import re
import tempfile
from collections.abc import Sequence

import jax
import ml_collections

from visioncore_jax.data import DATASETS, DatasetSpec
from visioncore_jax.errors import InputError
from visioncore_jax.models import BLOCKS, CLIP_MODELS, DTYPES, MODELS, SEGMENTATION_MODELS
from visioncore_jax.optim import OPTIMIZERS, SCHEDULES
from visioncore_jax.optim.schedules import ANNEAL_STRATEGIES
from visioncore_jax.splits import SPLIT, split_name
from visioncore_jax.train.controls import CONTROL_METRICS, MODES, SEGMENTATION_METRICS
from visioncore_jax.train.losses import CLASS_WEIGHTINGS


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _one_of(key: str, value, valid: Sequence) -> None:
    """`value` of flag `key` is one of `valid`."""
    _require(value in valid, f"--{key}={value!r} is not one of {list(valid)}.")


def _in_range(key: str, value, low: float, high: float, closed: str = "[)") -> None:
    """`low <= value < high` (brackets as in `closed`)."""
    above = value >= low if closed[0] == "[" else value > low
    below = value <= high if closed[1] == "]" else value < high
    _require(above and below, f"--{key}={value} must be in {closed[0]}{low:g}, {high:g}{closed[1]}.")


def _at_least(key: str, value, low: float) -> None:
    _require(value >= low, f"--{key}={value} must be >= {low:g}.")


def _check_duration_pair(block: ml_collections.ConfigDict, prefix: str, name: str) -> None:
    """Exactly one of `<name>_epochs` / `<name>_steps` is set (>= 0); the other is -1."""
    epochs, steps = block[f"{name}_epochs"], block[f"{name}_steps"]
    _require((epochs >= 0) != (steps >= 0),
             f"Set exactly one of --{prefix}.{name}_epochs ({epochs}) and --{prefix}.{name}_steps ({steps}); "
             "disable the other with -1.")


def _check_data(data: ml_collections.ConfigDict) -> None:
    _one_of("config.data.name", data.name, sorted(DATASETS))
    _at_least("config.data.crop_padding", data.crop_padding, 0)
    _at_least("config.data.shuffle_buffer", data.shuffle_buffer, 1)
    _at_least("config.data.image_size", data.image_size, 1)
    for key in ("mean", "std"):
        _require(len(data[key]) in (0, 3), f"--config.data.{key}={tuple(data[key])} needs 3 values (R, G, B) or "
                                           "none.")
    _require(not data.std or min(data.std) > 0, f"--config.data.std={tuple(data.std)} must be positive.")
    if data.name == "image_folder":
        _require(bool(data.image_folder) and os.path.isdir(os.path.expanduser(data.image_folder)),
                 f"--config.data.image_folder={data.image_folder!r} is not a directory; point it at "
                 "root/<split>/<class>/*.png|jpg (e.g. root/train/cat/1.png, root/test/cat/2.png).")


def _check_model(model: ml_collections.ConfigDict) -> None:
    _one_of("config.model.name", model.name, sorted(MODELS))
    needs = {"conv_gru": ("encoder_widths", "conv", "gru", "configs/video_convgru.py"),
             "unet": ("unet", "configs/seg_cbam.py"), "vc_resnet": ("vc", "configs/vc_resnet.py")}
    if model.name in needs:
        *keys, example = needs[model.name]
        _require(all(key in model for key in keys),
                 f"--config.model.name={model.name!r} needs config.model.{', .'.join(keys)}; start from {example}.")
    if model.name == "conv_gru":
        _require(len(model.encoder_widths) > 0 and model.gru.hidden >= 1,
                 "--config.model.encoder_widths must be non-empty and --config.model.gru.hidden >= 1.")
        _at_least("config.model.gru.unroll", model.gru.get("unroll", 1), 1)
    elif model.name == "unet":
        _require(len(model.unet.widths) > 0, "--config.model.unet.widths must be non-empty.")
    elif model.name == "vc_resnet":
        _require(len(model.vc.channels) == len(model.vc.strides) > 0,
                 f"--config.model.vc.channels={tuple(model.vc.channels)} and --config.model.vc.strides="
                 f"{tuple(model.vc.strides)} need one entry per stage each.")
    else:
        _one_of("config.model.block", model.block, sorted(BLOCKS))
    _require(0 < len(model.num_blocks) <= 4 and all(int(n) >= 1 for n in model.num_blocks),
             f"--config.model.num_blocks={tuple(model.num_blocks)} needs 1 to 4 stages of >= 1 block.")
    _at_least("config.model.width", model.width, 2)
    for key in ("dropout", "conv_dropout"):
        _in_range(f"config.model.{key}", model[key], 0.0, 1.0)
    _require(0.0 <= model.bn_momentum < 1.0, f"--config.model.bn_momentum={model.bn_momentum} must be in [0, 1) "
                                             "(flax convention: PyTorch momentum 0.1 is 0.9 here).")
    _require(model.aux_loss_weight == 0 or (model.aux_loss_weight > 0 and model.name == "dual_resnet"),
             f"--config.model.aux_loss_weight={model.aux_loss_weight}: auxiliary per-pathway heads need "
             "--config.model.name=dual_resnet and a weight >= 0.")


def _check_model_fits_data(config: ml_collections.ConfigDict, spec: DatasetSpec) -> None:
    """The model accepts the dataset's examples (images or clips) and produces its task's labels."""
    model, data = config.model, config.data
    segmentation = spec.task == "segmentation"
    _require(segmentation == (model.name in SEGMENTATION_MODELS),
             f"--config.model.name={model.name!r} does not fit the {spec.task} dataset --config.data.name="
             f"{data.name}: use " + (f"one of {list(SEGMENTATION_MODELS)}." if segmentation else
                                     f"a classification model, not {list(SEGMENTATION_MODELS)}."))
    valid = CLIP_MODELS if spec.clips else sorted(set(MODELS) - set(CLIP_MODELS) - set(SEGMENTATION_MODELS))
    _require(spec.clips == (model.name in CLIP_MODELS),
             f"--config.model.name={model.name!r} does not fit the "
             f"{'clips [T, H, W, 3]' if spec.clips else 'images [H, W, 3]'} of --config.data.name={data.name}; "
             f"use one of {list(valid)}.")
    if model.name == "unet":
        factor = 2 ** (len(model.unet.widths) - 1)
        _require(data.image_size % factor == 0,
                 f"--config.data.image_size={data.image_size} must be divisible by {factor} for the "
                 f"{len(model.unet.widths)} levels of --config.model.unet.widths.")


def _check_training(training: ml_collections.ConfigDict, num_devices: int) -> None:
    _one_of("config.training.dtype", training.dtype, list(DTYPES))
    for key in ("log_every_steps", "checkpoint_every_steps", "max_checkpoints_to_keep"):
        _at_least(f"config.training.{key}", training[key], 1)
    for key in ("batch_size", "eval_batch_size"):
        size = training[key]
        multiple = max(num_devices, size // num_devices * num_devices)
        _require(size > 0 and size % num_devices == 0,
                 f"--config.training.{key}={size} must be a positive multiple of the {num_devices} devices; use "
                 f"e.g. --config.training.{key}={multiple}.")
    _require((training.num_epochs > 0) != (training.num_train_steps > 0),
             "Set exactly one of --config.training.num_epochs and --config.training.num_train_steps to a positive "
             f"value (got {training.num_epochs} and {training.num_train_steps}); disable the other with -1.")
    _require(training.eval_every_epochs > 0,
             f"--config.training.eval_every_epochs={training.eval_every_epochs} must be > 0.")
    _one_of("config.training.class_weighting", training.class_weighting, CLASS_WEIGHTINGS)
    low, high = training.class_weight_range
    _require(0 < low <= 1 <= high, f"--config.training.class_weight_range={tuple(training.class_weight_range)} "
                                   "must satisfy 0 < low <= 1 <= high.")
    _in_range("config.training.label_smoothing", training.label_smoothing, 0.0, 1.0)
    _at_least("config.training.dice_weight", training.dice_weight, 0)


def _check_optimizer(opt: ml_collections.ConfigDict) -> None:
    _one_of("config.optimizer.name", opt.name, OPTIMIZERS)
    _require(math.isfinite(opt.learning_rate) and opt.learning_rate > 0,
             f"--config.optimizer.learning_rate={opt.learning_rate} must be > 0.")
    _at_least("config.optimizer.weight_decay", opt.weight_decay, 0)
    _at_least("config.optimizer.grad_clip_norm", opt.grad_clip_norm, 0)
    _at_least("config.optimizer.accumulation_steps", opt.accumulation_steps, 1)
    for key in ("momentum", "b1", "b2"):
        _in_range(f"config.optimizer.{key}", opt[key], 0.0, 1.0)
    _require(opt.eps > 0, f"--config.optimizer.eps={opt.eps} must be > 0.")
    for pair in opt.lr_multipliers:
        _require(len(pair) == 2, f"--config.optimizer.lr_multipliers: {pair!r} is not a (regex, multiplier) pair.")
        try:
            re.compile(pair[0])
        except re.error as error:
            raise InputError(f"--config.optimizer.lr_multipliers: {pair[0]!r} is not a regex ({error}).") from None
        _at_least(f"config.optimizer.lr_multipliers ({pair[0]!r})", pair[1], 0)


def _check_schedule(schedule: ml_collections.ConfigDict, learning_rate: float) -> None:
    _one_of("config.schedule.name", schedule.name, SCHEDULES)
    _in_range("config.schedule.min_learning_rate", schedule.min_learning_rate, 0.0, learning_rate, "[]")
    _check_duration_pair(schedule, "config.schedule", "warmup")
    if schedule.name == "cosine_restarts":
        _check_duration_pair(schedule, "config.schedule", "cycle")
        _check_duration_pair(schedule, "config.schedule", "cycle_warmup")
        _at_least("config.schedule.cycle_mult", schedule.cycle_mult, 1)
        _in_range("config.schedule.cycle_peak_decay", schedule.cycle_peak_decay, 0.0, 1.0, "(]")
    elif schedule.name == "onecycle":
        _in_range("config.schedule.pct_start", schedule.pct_start, 0.0, 1.0, "()")
        _one_of("config.schedule.anneal_strategy", schedule.anneal_strategy, tuple(ANNEAL_STRATEGIES))
        for key in ("div_factor", "final_div_factor"):
            _require(schedule[key] > 0, f"--config.schedule.{key}={schedule[key]} must be > 0.")
    elif schedule.name == "polynomial":
        _require(schedule.power > 0, f"--config.schedule.power={schedule.power} must be > 0.")
    elif schedule.name == "exponential":
        _in_range("config.schedule.decay_rate", schedule.decay_rate, 0.0, 1.0, "(]")


def _check_controls(config: ml_collections.ConfigDict, spec: DatasetSpec) -> None:
    for block in ("plateau", "early_stopping"):
        controls = config[block]
        _one_of(f"config.{block}.metric", controls.metric, CONTROL_METRICS)
        _one_of(f"config.{block}.mode", controls.mode, MODES)
        _at_least(f"config.{block}.patience", controls.patience, 0)
        if controls.enabled and spec.task != "segmentation":
            _require(controls.metric not in SEGMENTATION_METRICS,
                     f"--config.{block}.metric={controls.metric} is measured on segmentation data only; "
                     f"--config.data.name={config.data.name} is {spec.task}: use eval_accuracy or eval_loss.")
    _in_range("config.plateau.factor", config.plateau.factor, 0.0, 1.0, "()")
    _in_range("config.nan_recovery.lr_factor", config.nan_recovery.lr_factor, 0.0, 1.0, "(]")
    _at_least("config.nan_recovery.max_consecutive_skips", config.nan_recovery.max_consecutive_skips, 1)
    _at_least("config.nan_recovery.max_rollbacks", config.nan_recovery.max_rollbacks, 0)
    for key in ("dropout_schedule", "label_smoothing_schedule"):
        for pair in config.regularization[key]:
            _require(len(pair) == 2 and pair[0] >= 0 and 0 <= pair[1] < 1,
                     f"--config.regularization.{key}: {pair!r} must be a (start_epoch >= 0, value in [0, 1)) pair.")


def _check_diagnostics(diagnostics: ml_collections.ConfigDict, data: ml_collections.ConfigDict) -> None:
    _at_least("config.diagnostics.overfit_steps", diagnostics.overfit_steps, 1)
    _at_least("config.diagnostics.lr_find_steps", diagnostics.lr_find_steps, 2)
    _require(0 < diagnostics.lr_find_min < diagnostics.lr_find_max,
             f"--config.diagnostics.lr_find_min={diagnostics.lr_find_min} and lr_find_max="
             f"{diagnostics.lr_find_max} need 0 < min < max.")
    _require(diagnostics.repair_steps == -1 or diagnostics.repair_steps >= 1,
             f"--config.diagnostics.repair_steps={diagnostics.repair_steps} must be -1 (a quarter of the run) or "
             ">= 1.")
    split = diagnostics.get("repair_eval_split", "")  # runs saved before the field: ''
    _require(split == "" or SPLIT.match(split) is not None,
             f"--config.diagnostics.repair_eval_split={split!r} is not a split: use '' (the whole split of a sliced "
             "eval split) or a split name with an optional slice, e.g. 'test' or 'test[:1024]'.")
    _require(not split or split_name(split) != split_name(data.train_split),
             f"--config.diagnostics.repair_eval_split={split!r} reads from the training split "
             f"(--config.data.train_split={data.train_split!r}): name a held-out split, e.g. {data.eval_split!r}.")


def validate_config(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Raises an InputError naming the flag and a valid value for the first invalid field of `config`; reads no
    data. `num_devices` defaults to all devices (the batch must split evenly over them)."""
    _check_data(config.data)
    spec = DATASETS[config.data.name]
    _check_model(config.model)
    _check_model_fits_data(config, spec)
    _check_training(config.training, jax.device_count() if num_devices is None else num_devices)
    _check_optimizer(config.optimizer)
    _check_schedule(config.schedule, config.optimizer.learning_rate)
    _check_controls(config, spec)
    _check_diagnostics(config.diagnostics, config.data)


def check_workdir(workdir: str) -> None:
    """Raises an InputError when `workdir` is a file, or when it (or, for a new workdir, the nearest existing
    directory above it) is not writable; creates nothing. Writability is probed with a temporary file:
    `os.access` says yes to root on a read-only mount."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise InputError(f"--workdir={workdir} is a file; pass a directory (new or a previous run's).")
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InputError(f"--workdir={workdir} is not writable ({error.strerror or error}); pass a directory you "
                         "can write to.") from None
