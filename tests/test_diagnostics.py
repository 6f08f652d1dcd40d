"""In-step statistics against NumPy, their aggregation, records (schema, truncation on resume), the analyzer's
entry points, and the report."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import read_scalars
from tests.fault_zoo import TinyDual, zoo_config
from visioncore_jax import diagnostics
from visioncore_jax.diagnostics.schema import SCHEMA_VERSION
from visioncore_jax.models.layers import DIAGNOSTICS
from visioncore_jax.train import train_and_evaluate
from visioncore_jax.train.statistics import accumulate, empty_summary, module_of, per_array_sums, step_statistics


def test_module_of_groups_by_the_top_two_levels():
    assert module_of(("color", "stage2_block0", "Conv_0", "kernel")) == "color/stage2_block0"
    assert module_of(("head", "kernel")) == "head"


def test_step_statistics_match_numpy():
    model = TinyDual()
    inputs = {"color": jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 3)), jnp.float32),
              "brightness": jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 1)), jnp.float32)}
    params = model.init(jax.random.PRNGKey(0), inputs, train=False)["params"]

    def loss_fn(p):
        return jnp.mean(model.apply({"params": p}, inputs, train=False)["logits"] ** 2)

    grads = jax.grad(loss_fn)(params)
    new_params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    stats = jax.device_get(step_statistics(grads=grads, params=params, new_params=new_params, sown={},
                                           data_loss=jnp.float32(1.5), weight_decay=0.2))
    flat_grads, flat_params = traverse_util.flatten_dict(grads), traverse_util.flatten_dict(params)
    for module in ("color/conv0", "brightness/conv1", "head"):
        keys = [k for k in flat_grads if module_of(k) == module]
        grad_norm = np.sqrt(sum(np.sum(np.square(np.asarray(flat_grads[k], np.float64))) for k in keys))
        param_norm = np.sqrt(sum(np.sum(np.square(np.asarray(flat_params[k], np.float64))) for k in keys))
        np.testing.assert_allclose(stats[f"modules/{module}/grad_norm"], grad_norm, rtol=1e-5)
        np.testing.assert_allclose(stats[f"modules/{module}/update_norm"], 0.1 * grad_norm, rtol=1e-4)
        np.testing.assert_allclose(stats[f"modules/{module}/update_ratio"], 0.1 * grad_norm / param_norm, rtol=1e-4)
    squared = {p: sum(np.sum(np.square(np.asarray(v, np.float64))) for k, v in flat_grads.items() if k[0] == p)
               for p in ("color", "brightness")}
    np.testing.assert_allclose(stats["pathways/color/grad_share"], squared["color"] / sum(squared.values()),
                               rtol=1e-5)
    kernels = sum(np.sum(np.square(np.asarray(v, np.float64))) for k, v in flat_params.items() if k[-1] == "kernel")
    np.testing.assert_allclose(stats["scalars/reg_loss"], 0.5 * 0.2 * kernels, rtol=1e-5)
    assert stats["scalars/nonfinite_grads"] == 0 and stats["first_nonfinite_module"] == -1

    grads = jax.tree_util.tree_map_with_path(
        lambda path, g: g.at[0].set(jnp.nan) if path[0].key == "head" and path[1].key == "bias" else g, grads)
    stats = step_statistics(grads=grads, params=params, new_params=params, sown={}, data_loss=jnp.float32(1.0),
                            weight_decay=0.0)
    modules = sorted({module_of(k) for k in flat_grads})
    assert stats["scalars/nonfinite_grads"] == 1 and modules[int(stats["first_nonfinite_module"])] == "head"


def test_per_array_sums_keep_the_order_of_arrays_whose_shapes_repeat():
    rng = np.random.default_rng(0)
    shapes = [(3, 3), (5,), (3, 3), (2, 3, 3), (5,), (3, 3), ()]  # interleaved repeats, a scalar
    arrays = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    for grouped in (True, False):  # accelerators group by shape; CPU sums each array
        sums = jax.jit(functools.partial(per_array_sums, group_by_shape=grouped))([jnp.asarray(a) for a in arrays])
        np.testing.assert_allclose(np.asarray(sums), [a.sum() for a in arrays], rtol=1e-6, atol=1e-6)


def test_sown_activation_and_gate_statistics():
    from tests.fault_zoo import GatedCNN, PlainCNN

    inputs = {"color": jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)}
    model = PlainCNN(bias_init=-10.0)
    variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
    _, sown = model.apply(variables, inputs, train=False, mutable=[DIAGNOSTICS])
    stats = step_statistics(grads=variables["params"], params=variables["params"], new_params=variables["params"],
                            sown=sown[DIAGNOSTICS], data_loss=jnp.float32(0.0), weight_decay=0.0)
    assert float(stats["activations/conv0/zero_fraction"]) == 1.0  # bias -10 kills every ReLU
    model = GatedCNN(gate_scale=50.0)
    variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
    logits, sown = model.apply(variables, inputs, train=False, mutable=[DIAGNOSTICS])
    gate_stats = sown[DIAGNOSTICS]["gate_gate_stats"][0]
    assert float(gate_stats["saturated_fraction"]) > 0.5
    # Without the collection mutable, nothing is sown (and nothing computed).
    assert set(model.apply(variables, inputs, train=False)) == {"logits"}


def test_accumulate_gives_mean_min_max_first_last_and_first_nonfinite():
    values = [{"a": 1.0, "first_nonfinite_module": -1.0}, {"a": 4.0, "first_nonfinite_module": 2.0},
              {"a": -2.0, "first_nonfinite_module": 0.0}]
    summary = empty_summary(values[0])
    for step, value in enumerate(values, start=11):
        summary = accumulate(summary, {k: jnp.float32(v) for k, v in value.items()}, jnp.int32(step))
    assert float(summary["count"]) == 3 and float(summary["sum"]["a"]) == 3.0
    assert (float(summary["min"]["a"]), float(summary["max"]["a"])) == (-2.0, 4.0)
    assert (float(summary["first"]["a"]), float(summary["last"]["a"])) == (1.0, -2.0)
    assert (float(summary["first_nonfinite_step"]), float(summary["first_nonfinite_module"])) == (12.0, 2.0)


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.slow
def test_records_statistics_switch_and_resume_truncation(tfds_data_dir, tmp_path):
    config = zoo_config(tfds_data_dir, steps=12, eval_every=4)
    config.training.checkpoint_every_steps = 4
    config.schedule.name = "constant"  # the run is cut short below: its LR must not depend on the run length
    train_and_evaluate(config, str(tmp_path / "full"))
    full = read_jsonl(tmp_path / "full" / "diagnostics" / "train.jsonl")
    assert [r["step"] for r in full] == [4, 8, 12] and all(r["schema_version"] == SCHEMA_VERSION for r in full)
    assert [r["num_steps"] for r in full] == [4, 4, 4]
    record = full[0]
    assert list(record["modules"])[:2] == ["color/stem_conv", "color/stem_bn"]  # forward order
    assert set(record["pathways"]) == {"color", "brightness"}
    assert 0 < record["activations"]["color/stage1_block0"]["zero_fraction"]["mean"] < 1
    scalars = read_scalars(str(tmp_path / "full"))
    np.testing.assert_allclose(scalars["diagnostics/grad_norm/head"][0][1], record["modules"]["head"]["grad_norm"]
                               ["mean"], rtol=1e-6)
    # The record's loss is the data loss TensorBoard shows (log window = record period); AdamW's decoupled decay
    # is no loss term, so no L2 term is recorded.
    np.testing.assert_allclose(scalars["train_loss"][0][1], record["scalars"]["loss"]["mean"], rtol=1e-5)
    assert "reg_loss" not in record["scalars"] and record["optimizer"] == "adamw"
    evals = read_jsonl(tmp_path / "full" / "diagnostics" / "eval.jsonl")
    assert len(evals) == 3 and np.asarray(evals[-1]["confusion"]).sum() == 256  # eval split test[:256]
    assert evals[-1]["num_examples"] == 256
    assert evals[-1]["per_class_accuracy"][0] == pytest.approx(
        evals[-1]["confusion"][0][0] / sum(evals[-1]["confusion"][0]))

    # Stop at 8, add what a killed run could leave (a record past the checkpoint, a partial line), resume.
    config.training.num_train_steps = 8
    train_and_evaluate(config, str(tmp_path / "resumed"))
    with open(tmp_path / "resumed" / "diagnostics" / "train.jsonl", "a") as f:
        f.write(json.dumps({**full[2], "step": 10}) + "\n" + '{"schema_version": 1, "ki')
    config.training.num_train_steps = 12
    train_and_evaluate(config, str(tmp_path / "resumed"))
    resumed = read_jsonl(tmp_path / "resumed" / "diagnostics" / "train.jsonl")
    assert [r["step"] for r in resumed] == [4, 8, 12]
    assert resumed[2]["scalars"]["loss"] == full[2]["scalars"]["loss"]
    assert resumed[2]["modules"]["head"] == full[2]["modules"]["head"]

    # Statistics off: no train records, the same training.
    config.diagnostics.enabled = False
    state = train_and_evaluate(config, str(tmp_path / "off"))
    assert not (tmp_path / "off" / "diagnostics" / "train.jsonl").exists()
    on_scalars, off_scalars = read_scalars(str(tmp_path / "full")), read_scalars(str(tmp_path / "off"))
    assert on_scalars["train_loss"] == off_scalars["train_loss"]
    assert int(state.step) == 12


def test_analyze_a_workdir_without_records_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no diagnostics records"):
        diagnostics.analyze(str(tmp_path))


def test_analyze_rejects_another_schema_version(tmp_path):
    (tmp_path / "diagnostics").mkdir()
    (tmp_path / "diagnostics" / "train.jsonl").write_text(json.dumps({"schema_version": 99, "step": 1}) + "\n")
    with pytest.raises(ValueError, match="schema_version 99"):
        diagnostics.analyze(str(tmp_path))
