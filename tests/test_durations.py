"""Run durations and the step -> LR map: one definition for training, the schedule plot and the tools."""

import math

import numpy as np
import pytest

from configs import test as test_config
from visioncore_jax.optim import build_optimizer, durations
from visioncore_jax.optim.schedule_plot import lr_trajectory


def test_steps_per_epoch_drops_the_partial_batch():
    assert durations.steps_per_epoch(1000, 128) == 7
    assert durations.steps_per_epoch(1024, 128) == 8


def test_num_train_steps_rounds_a_fractional_epoch_up_and_needs_exactly_one_duration():
    training = test_config.get_config().training
    training.update(num_epochs=2.5, num_train_steps=-1)
    assert durations.num_train_steps(training, 7) == math.ceil(17.5) == 18
    training.update(num_epochs=-1, num_train_steps=40)
    assert durations.num_train_steps(training, 7) == 40
    training.update(num_epochs=2.0, num_train_steps=40)
    with pytest.raises(ValueError, match="exactly one"):
        durations.num_train_steps(training, 7)


@pytest.mark.parametrize("accumulation_steps", [1, 3])
def test_schedule_plot_draws_the_lr_training_applies(accumulation_steps):
    """The plot has one point per train step of the run (ceil of a fractional epoch count) and, under gradient
    accumulation, the LR of step s is the schedule of update s // k, exactly as training records it."""
    config = test_config.get_config()
    config.training.update(num_epochs=5.5, num_train_steps=-1)
    config.schedule.update(name="warmup_cosine", warmup_epochs=2.0)
    config.optimizer.accumulation_steps = accumulation_steps
    spe = 7
    epochs, rates = lr_trajectory(config, spe)
    total = math.ceil(5.5 * spe)
    assert len(rates) == total
    np.testing.assert_allclose(epochs, np.arange(total) / spe)
    _, learning_rate_fn = build_optimizer(config, spe, total)
    np.testing.assert_allclose(rates, [float(learning_rate_fn(s)) for s in range(total)], rtol=1e-6, atol=1e-9)
    if accumulation_steps > 1:
        # Constant within each update's k micro-steps, changing between updates during warmup.
        assert rates[0] == rates[1] == rates[2] and rates[3] > rates[2]
