r"""Default experiment: a small dual-pathway ResNet on the embedded offline dataset.

This is the README's main job: it needs no download and runs on a laptop CPU.

Command:
    python main.py --workdir=workdirs/default --config=configs/default.py

Expected result (2 CPU cores): eval_accuracy 0.8845 after 6 epochs (558 steps), in about 5 minutes.
Every other config starts from this one and overrides a few fields.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """Returns the default configuration; every field is documented inline."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    # ---- Data: read through tensorflow-datasets (see visioncore_jax/data). ----
    config.data = ml_collections.ConfigDict()
    # 'embedded_shapes' (offline, procedural) | 'cifar10' | 'cifar100' | 'image_folder'.
    config.data.name = 'embedded_shapes'
    # TFDS data dir; '' means TFDS's default (~/tensorflow_datasets).
    config.data.data_dir = ''
    # Download a TFDS dataset that is not prepared in data_dir (needs network); False fails at once saying how
    # to provide it. The embedded datasets are generated locally either way.
    config.data.download = False
    # Root of an image folder (root/<split>/<class>/*.png); only for name='image_folder'.
    config.data.image_folder = ''
    # Image folders: skip (and count, in the log) images that do not decode instead of stopping with their names.
    config.data.skip_corrupt = False
    # Images are resized to image_size x image_size (CIFAR and the embedded dataset are 32 already).
    config.data.image_size = 32
    config.data.train_split = 'train'
    config.data.eval_split = 'test'
    # Train-only augmentation: random crop after zero padding, horizontal flip.
    config.data.crop_padding = 4
    config.data.random_flip = True
    config.data.shuffle_buffer = 16_384
    # Per-channel normalization of RGB; empty means the dataset's own statistics.
    config.data.mean = ()
    config.data.std = ()

    # ---- Model: see visioncore_jax/models. ----
    config.model = ml_collections.ConfigDict()
    # 'dual_resnet' (color + brightness pathways) | 'resnet' (single RGB pathway).
    config.model.name = 'dual_resnet'
    config.model.block = 'basic'  # 'basic' | 'bottleneck'
    config.model.num_blocks = (1, 1, 1, 1)
    # Planes of the stem and first stage; later stages double it.
    config.model.width = 32
    # CIFAR-style: halves the widths and drops the stem max-pool.
    config.model.reduce_architecture = True
    config.model.dropout = 0.1  # before the classifier (the rate progressive regularization changes)
    config.model.conv_dropout = 0.0  # after each ResNet stage
    # Flax convention: running = momentum * running + (1 - momentum) * batch.
    config.model.bn_momentum = 0.9
    # Weight of the per-pathway auxiliary heads' loss; 0 disables the heads.
    config.model.aux_loss_weight = 0.0

    # ---- Optimizer and LR schedule: see visioncore_jax/optim. ----
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = 'adamw'  # 'sgd' | 'adam' | 'adamw' | 'lamb'
    config.optimizer.learning_rate = 3e-3  # peak learning rate
    config.optimizer.weight_decay = 1e-4  # masked to kernels (no norms, no biases)
    config.optimizer.momentum = 0.9  # sgd only
    config.optimizer.nesterov = True  # sgd only
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.grad_clip_norm = 5.0  # 0 disables clipping
    # Per-module LR multipliers: (regex on '/'-joined parameter paths, multiplier) pairs, first match wins,
    # e.g. --config.optimizer.lr_multipliers="(('head/.*', 10.0),)". A pattern matching nothing is an error.
    config.optimizer.lr_multipliers = ()
    config.optimizer.accumulation_steps = 1  # > 1: one update per k train steps (optax.MultiSteps)

    config.schedule = ml_collections.ConfigDict()
    # 'constant' | 'warmup_cosine' | 'cosine_restarts' | 'onecycle' | 'polynomial' | 'exponential'.
    # Durations: exactly one of <name>_epochs / <name>_steps per pair, the other -1.
    config.schedule.name = 'warmup_cosine'
    # Linear warmup before any schedule; 0 disables it (onecycle has its own ramp: usually 0 there).
    config.schedule.warmup_epochs = 1.0
    config.schedule.warmup_steps = -1
    config.schedule.min_learning_rate = 1e-6  # floor after warmup (also the end of cosine / polynomial); not onecycle
    # cosine_restarts (SGDR): first cycle length, its growth, the peak's decay per cycle, warmup per cycle.
    config.schedule.cycle_epochs = 2.0
    config.schedule.cycle_steps = -1
    config.schedule.cycle_mult = 2.0
    config.schedule.cycle_peak_decay = 1.0
    config.schedule.cycle_warmup_epochs = 0.0
    config.schedule.cycle_warmup_steps = -1
    # onecycle, as torch's OneCycleLR step for step: start = peak / div_factor, rising over pct_start of the
    # run to the peak, falling to start / final_div_factor at the last step; 'cos' | 'linear' annealing;
    # three_phase: back down to the start before the final fall. Not floored at min_learning_rate unless
    # onecycle_floored.
    config.schedule.pct_start = 0.3
    config.schedule.div_factor = 25.0
    config.schedule.final_div_factor = 1e4
    config.schedule.anneal_strategy = 'cos'
    config.schedule.three_phase = False
    config.schedule.onecycle_floored = False
    # polynomial: (peak - min) * (1 - t / T)^power + min.
    config.schedule.power = 1.0
    # exponential: peak * decay_rate^epoch (staircase: whole epochs only).
    config.schedule.decay_rate = 0.9
    config.schedule.staircase = False

    # ---- Loop controls (visioncore_jax/train/controls.py; progressive regularization: optim/regularization.py). ----
    # Reduce-on-plateau: multiplies the schedule's LR by `factor` when `metric` has not improved (relative
    # `threshold`) for more than `patience` evals; mode 'auto' = max for accuracy/dice/iou, min for losses.
    config.plateau = ml_collections.ConfigDict()
    config.plateau.enabled = False
    config.plateau.metric = 'eval_accuracy'
    config.plateau.mode = 'auto'
    config.plateau.patience = 2
    config.plateau.factor = 0.5
    config.plateau.cooldown = 0
    config.plateau.threshold = 1e-3
    config.plateau.min_scale = 1e-3
    # Early stopping on an eval metric.
    config.early_stopping = ml_collections.ConfigDict()
    config.early_stopping.enabled = False
    config.early_stopping.metric = 'eval_accuracy'
    config.early_stopping.mode = 'auto'
    config.early_stopping.patience = 5
    config.early_stopping.min_delta = 0.0
    # NaN recovery: after `max_consecutive_skips` skipped steps in a row (checked every log window) or a
    # non-finite eval loss, roll back to the last checkpoint and multiply the LR by `lr_factor`.
    config.nan_recovery = ml_collections.ConfigDict()
    config.nan_recovery.enabled = True
    config.nan_recovery.max_consecutive_skips = 10
    config.nan_recovery.lr_factor = 0.5
    config.nan_recovery.max_rollbacks = 3
    # Progressive regularization: ((start_epoch, value), ...) pairs; before the first start the model's
    # dropout / the training label smoothing apply. E.g. "((20, 0.2), (30, 0.3))".
    config.regularization = ml_collections.ConfigDict()
    config.regularization.dropout_schedule = ()
    config.regularization.label_smoothing_schedule = ()

    # ---- Training loop: see visioncore_jax/train. ----
    config.training = ml_collections.ConfigDict()
    config.training.batch_size = 128  # global batch, must divide by the device count
    config.training.eval_batch_size = 256
    # Duration: exactly one of num_epochs / num_train_steps is > 0.
    config.training.num_epochs = 6.0
    config.training.num_train_steps = -1
    config.training.label_smoothing = 0.0
    # Per-class loss weights from the training label histogram: 'none' | 'cube_root_inverse' | 'inverse' (clipped
    # to range).
    config.training.class_weighting = 'none'
    config.training.class_weight_range = (0.7, 1.3)
    config.training.dice_weight = 1.0  # segmentation: loss = pixel cross-entropy + dice_weight * soft Dice
    config.training.dtype = 'float32'  # 'float32' | 'bfloat16' (compute; params stay float32)
    config.training.log_every_steps = 50
    config.training.eval_every_epochs = 1.0
    config.training.checkpoint_every_steps = 200
    config.training.max_checkpoints_to_keep = 3

    # ---- Diagnostics: see visioncore_jax/diagnostics and docs/diagnostics.md. ----
    config.diagnostics = ml_collections.ConfigDict()
    # In-step statistics (per-module norms, activations, gates), records under workdir/diagnostics/, and the
    # analyzer's findings and report at the end. False turns all of it off (for overhead comparisons).
    config.diagnostics.enabled = True
    config.diagnostics.report = True  # report.md with plots (and TensorBoard images) at the end of training
    # Preflight: steps of the one-batch overfitting check, and the LR range test's sweep.
    config.diagnostics.overfit_steps = 60
    config.diagnostics.lr_find_steps = 100
    config.diagnostics.lr_find_min = 1e-6
    config.diagnostics.lr_find_max = 10.0
    # Verified repair (python main.py --mode=repair): train steps of each short trial; -1 = a quarter of the run
    # and as far as its main warning/error was seen, at least 40 steps, at most the whole run
    # (visioncore_jax/tools/repair.py).
    config.diagnostics.repair_steps = -1
    # The split every trial is scored on, example by example: '' = the whole split when the run evaluates on a
    # slice of it ('test' for 'test[:256]'), unless the run trains on that split too; else the run's own eval split.
    # More eval examples make a smaller noise margin, the gain a verified fix must beat; the trials' evaluations
    # while they train, and the run's, stay on the run's eval split.
    config.diagnostics.repair_eval_split = ''
    # At the end of training, run the repair when a finding is an error (main.py's train mode).
    config.diagnostics.auto_repair = False
    # Run the preflight checks (python main.py --mode=preflight) before training; a FAIL stops the run.
    config.preflight = False
    return config
