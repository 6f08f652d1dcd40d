"""The timing scripts time what they say: conv_ops' closures compute a convolution and its two gradients, and
step_parts' forward and forward + backward compute the train step's loss and its gradient."""

import jax
import numpy as np
import pytest

from benchmarks import conv_ops, step_parts, step_speed


def test_conv_ops_closures_compute_the_convolution_and_its_gradients():
    forward, input_grad, weight_grad, _ = conv_ops.jax_ops(4, 3)
    x, w, dy = (np.asarray(a, np.float64) for a in conv_ops.jax_inputs(4, 3))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifted = [(i, j, padded[:, i:i + 4, j:j + 4]) for i in range(3) for j in range(3)]
    expected_y = sum(np.einsum("nhwc,cd->nhwd", patch, w[i, j]) for i, j, patch in shifted)
    expected_dw = np.stack([np.einsum("nhwc,nhwd->cd", patch, dy) for _, _, patch in shifted]).reshape(w.shape)
    # dx: each output pixel (h, w) sent dy[h, w] @ w[i, j].T to input pixel (h + i - 1, w + j - 1).
    expected_dx_padded = np.zeros_like(padded)
    for i, j, _ in shifted:
        expected_dx_padded[:, i:i + 4, j:j + 4] += np.einsum("nhwd,cd->nhwc", dy, w[i, j])
    np.testing.assert_allclose(forward(), expected_y, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(input_grad(), expected_dx_padded[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(weight_grad(), expected_dw, rtol=1e-5, atol=1e-3)


@pytest.mark.slow
def test_step_parts_forward_is_the_steps_loss_and_backward_its_gradient():
    config = step_speed.benchmark_config("resnet18", "float32", 8)
    config.model.update(width=8, num_blocks=(1, 1), dropout=0.0)
    timer = step_speed.StepTimer(step_speed.build(config))
    forward, forward_backward = step_parts.part_functions(timer)
    loss, grads = forward_backward()
    np.testing.assert_allclose(forward(), loss, rtol=1e-6)
    assert jax.tree.structure(grads) == jax.tree.structure(timer.state.params)

    state, metrics, stats, batch, hyperparams = timer.step_args(False)
    _, metrics, _ = timer.train_fn(state, metrics, stats, batch, hyperparams)
    np.testing.assert_allclose(metrics.compute()["loss"], loss, rtol=1e-5)
