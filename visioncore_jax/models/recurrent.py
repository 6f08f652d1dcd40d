"""A convolutional GRU run with `nn.scan` over time (one compiled step, whatever the sequence length).

Gates follow torch.nn.GRU / cuDNN: z = σ(W_xz x + b_xz + W_hz h + b_hz), r = σ(W_xr x + b_xr + W_hr h + b_hr),
n = tanh(W_xn x + b_xn + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h, with convolutions in place of the
matrix products (`reset_before=True`: Cho et al.'s n = tanh(W_xn x + b_xn + W_hn (r ⊙ h) + b_hn)). (The
original never used r; its "fix" tanh(n + r·h) is not a GRU either.) The input projections of all time steps
are one convolution before the scan. Kernels stack the gates as (z, r, n); torch.nn.GRU stacks (r, z, n).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.conv_block import CONV_TYPES
from visioncore_jax.models.layers import DIAGNOSTICS, sow_gate_stats

# Measured defaults (benchmarks/convgru_scan.py, BENCHMARKS.md): the standard recurrent convolution as an im2col
# matrix product (PatchConv) in the scan (5-6x faster per step on XLA:CPU, compile time flat in T); one time
# step per loop iteration (partial unrolling bought nothing and costs compile time).
UNROLL = 1
RECURRENT_MATMUL = True

# torch's default conv init, kaiming_uniform(a=√5): variance 1/3 over fan-in, uniform.
input_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class PatchConv(nn.Module):
    """A stride-1 "SAME" convolution computed as one matrix product of the k·k shifted copies of `x` (im2col):
    the same parameters (`kernel` [k, k, C, F], `bias` [F]) and outputs as `nn.Conv`.

    Hand-written for the recurrent convolution inside the scan: XLA:CPU runs convolutions (and, worse, their
    gradients) inside a while loop far slower than outside (jax-ml/jax#12868; 7-9x here, BENCHMARKS.md),
    while slices, pads and dots in a loop body run at full speed.
    """

    features: int
    kernel_size: int
    kernel_init: nn.initializers.Initializer = input_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps NHWC `x` to `features` channels."""
        k, channels = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        height, width = x.shape[1:3]
        padded = jnp.pad(x, ((0, 0), ((k - 1) // 2, k // 2), ((k - 1) // 2, k // 2), (0, 0)))
        patches = jnp.concatenate([padded[:, dy:dy + height, dx:dx + width] for dy in range(k) for dx in range(k)],
                                  axis=-1)
        return patches @ kernel.reshape(k * k * channels, self.features).astype(x.dtype) + bias.astype(x.dtype)


class GateConv(nn.Module):
    """The convolution producing the three gates: standard, depthwise-separable, or grouped; with bias."""

    features: int
    kernel_size: int
    conv_type: str = "standard"
    groups: int = 1
    kernel_init: nn.initializers.Initializer = input_kernel_init
    as_matmul: bool = False  # a standard conv as PatchConv (same parameters): for loop bodies on XLA:CPU

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps NHWC `x` to `features` gate channels."""
        if self.conv_type not in CONV_TYPES:
            raise ValueError(f"conv_type={self.conv_type!r} is not one of {list(CONV_TYPES)}.")
        size = (self.kernel_size, self.kernel_size)
        if self.conv_type == "depthwise":
            x = nn.Conv(x.shape[-1], size, padding="SAME", feature_group_count=x.shape[-1], use_bias=False,
                        kernel_init=input_kernel_init, name="depthwise")(x)
            return nn.Conv(self.features, (1, 1), kernel_init=self.kernel_init, name="pointwise")(x)
        groups = self.groups if self.conv_type == "grouped" else 1
        if self.as_matmul and groups == 1:
            return PatchConv(self.features, self.kernel_size, self.kernel_init, name="Conv_0")(x)
        if x.shape[-1] % groups or self.features % groups:
            raise ValueError(f"groups={groups} must divide the input ({x.shape[-1]}) and gate ({self.features}) "
                             "channels.")
        return nn.Conv(self.features, size, padding="SAME", feature_group_count=groups,
                       kernel_init=self.kernel_init)(x)


class ConvGRUCell(nn.Module):
    """One ConvGRU step on a precomputed input projection `x_proj` = W_x x + b_x (gates z, r, n in that order).

    `reset_before=False` (torch/cuDNN): n = tanh(W_xn x + b_xn + r ⊙ (W_hn h + b_hn)), one recurrent
    convolution for all three gates. `reset_before=True` (Cho et al. 2014): n = tanh(W_xn x + b_xn +
    W_hn (r ⊙ h) + b_hn), the candidate's recurrent convolution (`recurrent_candidate`) applied after the reset.
    """

    hidden: int
    kernel_size: int = 3
    conv_type: str = "standard"
    groups: int = 1
    recurrent_norm: bool = False
    hidden_clamp: float | None = None
    reset_before: bool = False
    recurrent_matmul: bool = False

    def _recurrent(self, h: jax.Array, gates: int, name: str) -> jax.Array:
        """The recurrent projection of `h` to `gates` gates, each gate's channels normalized on their own
        ([..., gates, hidden]) with `recurrent_norm`: the gates never mix, and any hidden width works (the
        original's GroupNorm over 3·hidden channels did neither)."""
        proj = GateConv(gates * self.hidden, self.kernel_size, self.conv_type, self.groups,
                        kernel_init=nn.initializers.orthogonal(), as_matmul=self.recurrent_matmul, name=name)(h)
        if not self.recurrent_norm:
            return proj
        per_gate = proj.reshape(*proj.shape[:-1], gates, self.hidden)
        norm_name = "recurrent_norm" if name == "recurrent" else f"{name}_norm"
        return nn.LayerNorm(reduction_axes=-1, feature_axes=(-2, -1), name=norm_name)(per_gate).reshape(proj.shape)

    @nn.compact
    def __call__(self, h: jax.Array, x_proj: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns `(h', h')` for `nn.scan`."""
        xz, xr, xn = jnp.split(x_proj, 3, axis=-1)
        if self.reset_before:
            hz, hr = jnp.split(self._recurrent(h, 2, "recurrent"), 2, axis=-1)
            r = nn.sigmoid(xr + hr)
            reset_hn = self._recurrent(r * h, 1, "recurrent_candidate")
        else:
            hz, hr, hn = jnp.split(self._recurrent(h, 3, "recurrent"), 3, axis=-1)
            r = nn.sigmoid(xr + hr)
            reset_hn = r * hn
        z = nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + reset_hn)
        sow_gate_stats(self, z, prefix="update_")
        sow_gate_stats(self, r, prefix="reset_")
        sow_gate_stats(self, n, kind="tanh", prefix="candidate_")
        h = (1.0 - z) * n + z * h
        if self.hidden_clamp is not None:
            h = jnp.clip(h, -self.hidden_clamp, self.hidden_clamp)
        return h, h


class ConvGRU(nn.Module):
    """A ConvGRU over `x` [B, T, H, W, C]; returns the last hidden state [B, H, W, hidden] or, with
    `return_sequences`, all of them [B, T, H, W, hidden]; with `return_state`, `(final_state, output)`.

    `initial_state` [B, H, W, hidden] (per example) starts the recurrence instead of zeros / the learned `h0`:
    passing one call's final state to the next streams a long clip in pieces, equal to one call on the whole
    clip. Gates are stored in the order (z, r, n) (update, reset, candidate) along the kernels' output axis;
    torch.nn.GRU stores (r, z, n) (`visioncore_jax.tools.convert` reorders). Options: `learnable_h0` (a learned
    initial state, zeros at init), `residual` (adds the input to the output when C == hidden; not to the
    state), `hidden_clamp` (clamps the hidden state to ±value each step; it does not clip gradients),
    `recurrent_norm`, `reset_before` (see ConvGRUCell), depthwise-separable or grouped gate convolutions,
    `unroll` (time steps per iteration of the scan's loop) and `recurrent_matmul` (the standard recurrent
    convolution as an im2col matrix product, `PatchConv`, same parameters; see BENCHMARKS.md). Recurrent kernels are
    orthogonal at init, input kernels kaiming-uniform (a=√5).
    """

    hidden: int
    kernel_size: int = 3
    conv_type: str = "standard"
    groups: int = 1
    recurrent_norm: bool = False
    learnable_h0: bool = False
    residual: bool = False
    hidden_clamp: float | None = None
    return_sequences: bool = False
    reset_before: bool = False
    unroll: int = UNROLL
    recurrent_matmul: bool = RECURRENT_MATMUL
    return_state: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, initial_state: jax.Array | None = None):
        """Runs the GRU over the time axis of `x`, from `initial_state` when given."""
        batch, steps, height, width, channels = x.shape
        if self.residual and channels != self.hidden:
            raise ValueError(f"residual=True needs input channels ({channels}) == hidden ({self.hidden}).")
        state_shape = (batch, height, width, self.hidden)
        if initial_state is not None and initial_state.shape != state_shape:
            raise ValueError(f"initial_state has shape {initial_state.shape}; this ConvGRU needs [B, H, W, hidden] "
                             f"= {state_shape} (the final state of a previous call on the same clips).")
        if self.unroll < 1:
            raise ValueError(f"unroll={self.unroll} must be >= 1 (time steps per loop iteration).")
        x_proj = GateConv(3 * self.hidden, self.kernel_size, self.conv_type, self.groups, name="input")(
            x.reshape(batch * steps, height, width, channels)).reshape(batch, steps, height, width, 3 * self.hidden)
        h0 = (self.param("h0", nn.initializers.zeros, (self.hidden,)) if self.learnable_h0
              else jnp.zeros((self.hidden,), x.dtype))
        h0 = jnp.broadcast_to(h0, state_shape) if initial_state is None else initial_state
        # Gate statistics sown at each time step are stacked along a leading time axis.
        scan = nn.scan(ConvGRUCell, variable_broadcast="params", variable_axes={DIAGNOSTICS: 0},
                       split_rngs={"params": False}, in_axes=1, out_axes=1, unroll=min(self.unroll, steps))
        cell = scan(self.hidden, self.kernel_size, self.conv_type, self.groups, self.recurrent_norm, self.hidden_clamp,
                    self.reset_before, self.recurrent_matmul, name="cell")
        h_last, sequence = cell(h0.astype(x_proj.dtype), x_proj)
        output = sequence if self.return_sequences else h_last
        if self.residual:
            output = output + (x if self.return_sequences else x[:, -1])
        return (h_last, output) if self.return_state else output
