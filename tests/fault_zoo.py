"""The fault zoo's parts: small models with a switch per injected fault, and an input pipeline wrapper that
corrupts batches the way broken user pipelines do. Runs go through the public API (`train_and_evaluate`,
`diagnostics.analyze`, `run_preflight`)."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import test as test_config
from visioncore_jax.models.layers import sow_activation_stats, sow_gate_stats

ZOO_TRAIN_EXAMPLES = 4096


def zoo_config(data_dir: str, steps: int = 60, eval_every: int = 10):
    """The test config on a 4,096-image training subset for `steps` steps, with a record (eval on 256 images)
    every `eval_every` steps, LR 1e-2 (tiny models learn in few steps) and no report plots."""
    config = test_config.get_config()
    config.data.update(data_dir=data_dir, train_split=f"train[:{ZOO_TRAIN_EXAMPLES}]", eval_split="test[:256]")
    config.optimizer.learning_rate = 1e-2
    config.diagnostics.report = False
    config.training.update(num_train_steps=steps, eval_batch_size=256, log_every_steps=eval_every,
                           checkpoint_every_steps=10_000,
                           eval_every_epochs=eval_every / (ZOO_TRAIN_EXAMPLES // config.training.batch_size))
    return config


class PlainCNN(nn.Module):
    """A plain conv net (no normalization, no residuals) on the color input, with switches for the faults."""

    num_classes: int = 10
    depth: int = 3
    width: int = 16
    activation: str = "relu"
    kernel_scale: float = 1.0
    bias_init: float = 0.0
    output_bias: tuple = ()
    logit_scale: float = 1.0
    softmax_head: bool = False
    unused_branch: bool = False

    @nn.compact
    def __call__(self, inputs, *, train: bool, dropout_rate=None):
        """Returns `{'logits': [B, K]}` (probabilities with `softmax_head`)."""
        del train, dropout_rate
        base = nn.initializers.variance_scaling(2.0 if self.activation == "relu" else 1.0, "fan_in", "normal")
        kernel_init = lambda *a: self.kernel_scale * base(*a)  # noqa: E731
        activation = {"relu": nn.relu, "sigmoid": nn.sigmoid}[self.activation]
        x = inputs["color"]
        for index in range(self.depth):
            x = nn.Conv(self.width, (3, 3), strides=2 if index < 2 else 1, kernel_init=kernel_init,
                        bias_init=nn.initializers.constant(self.bias_init), name=f"conv{index}")(x)
            x = activation(x)
            sow_activation_stats(self, x, prefix=f"conv{index}_")
        features = x.mean(axis=(1, 2))
        if self.unused_branch:
            nn.Dense(8, name="unused")(features)  # computed, never reaches the loss
        bias_init = (lambda *_: jnp.asarray(self.output_bias, jnp.float32)) if self.output_bias else \
            nn.initializers.zeros
        logits = self.logit_scale * nn.Dense(self.num_classes, bias_init=bias_init, name="head")(features)
        return {"logits": jax.nn.softmax(logits) if self.softmax_head else logits}


class GatedCNN(nn.Module):
    """Conv features reweighted by a sigmoid gate (attention-like) whose weights start `gate_scale` x larger."""

    num_classes: int = 10
    gate_scale: float = 1.0

    @nn.compact
    def __call__(self, inputs, *, train: bool, dropout_rate=None):
        """Returns `{'logits': [B, K]}`."""
        del train, dropout_rate
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="conv")(inputs["color"]))
        gate_init = lambda *a: self.gate_scale * nn.initializers.lecun_normal()(*a)  # noqa: E731
        gate = nn.sigmoid(nn.Conv(16, (1, 1), kernel_init=gate_init, name="gate")(x))
        sow_gate_stats(self, gate, prefix="gate_")
        return {"logits": nn.Dense(self.num_classes, name="head")((x * gate).mean(axis=(1, 2)))}


class TinyDual(nn.Module):
    """Two plain conv pathways under top-level `color` / `brightness` modules (as in the real dual-pathway
    model), fused before the head; no normalization, so an input's scale reaches its gradients."""

    num_classes: int = 10
    stop_brightness: bool = False

    @nn.compact
    def __call__(self, inputs, *, train: bool, dropout_rate=None):
        """Returns `{'logits': [B, K]}`."""
        del train, dropout_rate
        features = []
        for pathway in ("color", "brightness"):
            x = _Pathway(name=pathway)(inputs[pathway])
            features.append(jax.lax.stop_gradient(x) if pathway == "brightness" and self.stop_brightness else x)
        return {"logits": nn.Dense(self.num_classes, name="head")(jnp.concatenate(features, -1))}


class _Pathway(nn.Module):
    """Two strided ReLU convs without bias (the ResNet convention) and global average pooling."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, use_bias=False, name="conv0")(x))
        return nn.relu(nn.Conv(16, (3, 3), strides=2, use_bias=False, name="conv1")(x)).mean(axis=(1, 2))


class FaultyPipeline:
    """Wraps an InputPipeline; `train_fault(batch, index)` / `eval_fault(batch)` corrupt what it yields."""

    def __init__(self, pipeline, train_fault: Callable | None = None, eval_fault: Callable | None = None):
        self._pipeline, self._train_fault, self._eval_fault = pipeline, train_fault, eval_fault
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def train_batches(self, global_batch_size: int, start_step: int = 0):
        """The wrapped stream, corrupted by `train_fault`."""
        self.calls += 1
        for index, batch in enumerate(self._pipeline.train_batches(global_batch_size, start_step), start=start_step):
            yield self._train_fault(dict(batch), index) if self._train_fault else batch

    def eval_batches(self, global_batch_size: int):
        """The wrapped eval batches, corrupted by `eval_fault`."""
        for batch in self._pipeline.eval_batches(global_batch_size):
            yield self._eval_fault(dict(batch)) if self._eval_fault else batch


def skewed_labels(batch, index):
    """95% of the labels replaced by class 0 (a training folder where one class dominates)."""
    rng = np.random.default_rng(index)
    batch["label"] = np.where(rng.random(batch["label"].shape) < 0.95, 0, batch["label"]).astype(batch["label"].dtype)
    return batch


def random_labels(batch, index):
    """Labels replaced by random ones (a different draw per batch)."""
    rng = np.random.default_rng(index)
    batch["label"] = rng.integers(0, 10, batch["label"].shape).astype(batch["label"].dtype)
    return batch


def apply_recommendation(config: dict, recommendation: str):
    """The run's config (config.json's nested dict) with `recommendation`'s `--config.*` overrides applied the
    way main.py applies them (ml_collections config flags on a locked config: an unknown key or a value of the
    wrong type raises); returns (before, after) as ConfigDicts. `--mode=` flags are left out."""
    import shlex

    import ml_collections
    from absl import flags
    from ml_collections import config_flags

    def as_python(value):  # config.json writes the config's tuples as lists
        if isinstance(value, dict):
            return {k: as_python(v) for k, v in value.items()}
        return tuple(as_python(v) for v in value) if isinstance(value, list) else value

    config = as_python(config)
    before = ml_collections.ConfigDict(config)
    flag_values = flags.FlagValues()
    argv = ["main.py", *(flag for flag in shlex.split(recommendation) if flag.startswith("--config."))]
    config_flags.DEFINE_config_dict("config", ml_collections.ConfigDict(config), flag_values=flag_values,
                                    lock_config=True, sys_argv=argv)
    flag_values(argv)
    return before, flag_values.config


def assert_recommendations_apply(findings, config: dict):
    """Every recommendation of every finding applies to the run's config and changes it."""
    for finding in findings:
        for recommendation in finding.recommendations:
            before, after = apply_recommendation(config, recommendation)
            if "--config." in recommendation:
                assert before.to_dict() != after.to_dict(), f"{finding.id}: {recommendation} changes nothing"
            for flag in recommendation.split():
                if flag.startswith("--mode="):
                    assert flag.removeprefix("--mode=") in ("preflight", "lr_find", "diagnose", "repair"), flag
