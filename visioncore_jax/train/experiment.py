"""Everything built from a config before the first step: input, model, task, optimizer, mesh, durations.

Shared by training, preflight checks and the LR range test, so they all see the same objects.
"""

import collections
import dataclasses
import functools
import logging

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from visioncore_jax.data import InputPipeline, build_input
from visioncore_jax.errors import InputError
from visioncore_jax.models import build_model
from visioncore_jax.optim import build_optimizer, durations, optimizer_hyperparams
from visioncore_jax.optim.optimizers import optimizer_and_learning_rate
from visioncore_jax.optim.regularization import regularization_at
from visioncore_jax.train import partitioning
from visioncore_jax.train.losses import class_weights
from visioncore_jax.train.state import TrainState, create_train_state
from visioncore_jax.train.steps import eval_step, train_step
from visioncore_jax.train.tasks import Classification, Segmentation
from visioncore_jax.train.validation import validate_config


@dataclasses.dataclass(frozen=True)
class Experiment:
    """The built objects of one config."""

    config: ml_collections.ConfigDict
    mesh: Mesh
    pipeline: InputPipeline
    model: nn.Module
    task: Classification | Segmentation
    tx: optax.GradientTransformation
    learning_rate_fn: optax.Schedule
    steps_per_epoch: int
    num_train_steps: int
    eval_every_steps: int

    @property
    def info(self):
        """The dataset's DatasetInfo."""
        return self.pipeline.info

    def example_inputs(self) -> dict:
        """Zero inputs of one example (color, its brightness, and the dataset's extra inputs), for model
        initialisation."""
        shape = self.info.image_shape[:-1]
        extras = {key: jnp.zeros((1, *extra_shape)) for key, extra_shape in self.info.extra_shapes}
        return {"color": jnp.zeros((1, *shape, 3)), "brightness": jnp.zeros((1, *shape, 1)), **extras}

    def init_state(self) -> TrainState:
        """The initial train state (replicated over the mesh); its compiled initialisation is reused for the same
        model and optimizer objects (see `_interned`, `optimizer_chain`), input shapes and seed."""
        inputs = self.example_inputs()
        key = (self.mesh, id(self.model), id(self.tx), self.config.seed,
               tuple((name, value.shape) for name, value in sorted(inputs.items())))
        if key not in _INITS:
            init = partitioning.jit_replicated(create_train_state, self.mesh, model=self.model, tx=self.tx,
                                               example_inputs=inputs, seed=self.config.seed)
            # The entry holds the model and optimizer, so their ids in its key cannot be reused while it lives.
            _INITS[key] = (self.model, self.tx, partitioning.compile_run_once(init))
            while len(_INITS) > MAX_INTERNED_MODELS:
                _INITS.popitem(last=False)
        _INITS.move_to_end(key)
        return _INITS[key][2]()

    @functools.cached_property
    def learning_rates(self) -> np.ndarray:
        """The LR of every train step of the run (float32), evaluated once on the host: the train step takes
        its LR as an input, so the compiled program depends on neither the LR nor the schedule."""
        # Evaluated over a power-of-two number of steps: runs of similar length reuse the eager ops' kernels.
        steps = np.arange(1 << max(self.num_train_steps - 1, 1).bit_length())
        rates = np.broadcast_to(np.asarray(self.learning_rate_fn(steps), np.float32), steps.shape)
        return rates[:self.num_train_steps]

    def hyperparams(self, step: int, learning_rate: float | None = None) -> dict[str, float]:
        """The runtime hyperparameters of train step `step` (0-based): its scheduled LR (or `learning_rate`), the
        progressive regularization's dropout rate and label smoothing, and the optimizer's clip norm and weight
        decay."""
        if learning_rate is None:
            learning_rate = self.learning_rates[step]
        epoch = step / self.steps_per_epoch
        return {"learning_rate": float(learning_rate), **regularization_at(self.config, epoch),
                **optimizer_hyperparams(self.config.optimizer)}

    def with_schedule(self, schedule: optax.Schedule,
                      optimizer: ml_collections.ConfigDict | None = None) -> "Experiment":
        """This experiment with `schedule` (a function of optimizer updates) driving the LR, and `optimizer` in
        place of `config.optimizer` when given: what preflight checks and the LR range test train with. The
        optimizer chain and the recorded LR come from the same function as in training, so gradient
        accumulation maps train steps to updates the same way."""
        config = self.config
        if optimizer is not None:
            config = config.copy_and_resolve_references()
            config.optimizer = optimizer
        tx, learning_rate_fn = optimizer_and_learning_rate(config, schedule)
        return dataclasses.replace(self, config=config, tx=tx, learning_rate_fn=learning_rate_fn)


def _task(config: ml_collections.ConfigDict, info) -> Classification | Segmentation:
    """The task of the dataset's labels, with class weights when configured."""
    training = config.training
    weights = None
    if training.class_weighting != "none":
        weights = tuple(float(w) for w in class_weights(info.train_label_counts, training.class_weighting,
                                                        tuple(training.class_weight_range)))
        logging.info("Class weights (%s): %s", training.class_weighting, np.round(weights, 3).tolist())
    if info.task == "segmentation":
        return Segmentation(dice_weight=float(config.training.dice_weight), class_weights=weights)
    return Classification(class_weights=weights, aux_loss_weight=float(config.model.aux_loss_weight))


# Compiled state initialisations of this process, least recently used first (see `Experiment.init_state`).
_INITS: collections.OrderedDict = collections.OrderedDict()
# Models built in this process, most recent last: an equal model is replaced by the one built first, so jitted
# steps (which key their compiled programs on the train state's `apply_fn`, i.e. on the model object) reuse them.
_MODELS: list[nn.Module] = []
MAX_INTERNED_MODELS = 16


def _interned(model: nn.Module) -> nn.Module:
    """The earlier-built model equal to `model` (flax modules compare their fields), else `model`."""
    for index, known in enumerate(_MODELS):
        try:
            equal = bool(known == model)
        except Exception:  # noqa: BLE001 - fields that do not compare (arrays): treat as different
            equal = False
        if equal:
            _MODELS.append(_MODELS.pop(index))
            return known
    _MODELS.append(model)
    del _MODELS[:-MAX_INTERNED_MODELS]
    return model


def build_experiment(config: ml_collections.ConfigDict, *, model: nn.Module | None = None,
                     pipeline: InputPipeline | None = None) -> Experiment:
    """Validates `config` and builds the experiment; `model` / `pipeline` replace the configured ones when given
    (for custom models, and for the fault injections of the diagnostics tests)."""
    training = config.training
    mesh = partitioning.make_mesh()
    validate_config(config, mesh.devices.size)
    pipeline = pipeline or build_input(config)
    info = pipeline.info
    steps_per_epoch = durations.steps_per_epoch(info.num_train_examples, training.batch_size)
    if steps_per_epoch < 1:
        raise InputError(
            f"--config.training.batch_size={training.batch_size} exceeds the {info.num_train_examples} training "
            "examples; use a smaller batch."
        )
    num_train_steps = durations.num_train_steps(training, steps_per_epoch)
    tx, learning_rate_fn = build_optimizer(config, steps_per_epoch, num_train_steps)
    return Experiment(
        config=config, mesh=mesh, pipeline=pipeline, model=_interned(model or build_model(config, info.num_classes)),
        task=_task(config, info), tx=tx, learning_rate_fn=learning_rate_fn, steps_per_epoch=steps_per_epoch,
        num_train_steps=num_train_steps,
        eval_every_steps=max(1, round(training.eval_every_epochs * steps_per_epoch)),
    )


def jitted_steps(experiment: Experiment):
    """`(train_fn, eval_fn)`: the task's train and eval steps, jitted over the mesh. The train step computes
    the diagnostics statistics when given an aggregate instead of None. Experiments with the same mesh and task
    get the same functions, whose compiled programs are then reused for equal models and optimizer settings (see
    `_interned`, `optimizer_chain`)."""
    return _jitted_steps(experiment.mesh, experiment.task)


@functools.lru_cache(maxsize=8)
def _jitted_steps(mesh: Mesh, task):
    """The jitted train and eval steps bound to `task`."""
    train_fn = partitioning.jit_train_step(functools.partial(train_step, task=task), mesh)
    eval_fn = partitioning.jit_eval_step(functools.partial(eval_step, task=task), mesh)
    return train_fn, eval_fn
