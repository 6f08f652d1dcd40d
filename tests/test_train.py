"""End-to-end training: TensorBoard scalars, checkpoints, exact resume after a kill, data-parallel equivalence,
and clear errors for bad configs."""

import functools
import glob
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import test as test_config
from tests.conftest import main_in_process, read_scalars
from visioncore_jax.data import build_input, to_global_batch
from visioncore_jax.models import build_model
from visioncore_jax.optim import build_optimizer, optimizer_hyperparams
from visioncore_jax.train import checkpointing, partitioning, train_and_evaluate
from visioncore_jax.train.experiment import build_experiment, jitted_steps
from visioncore_jax.train.metrics import TrainMetrics
from visioncore_jax.train.state import create_train_state
from visioncore_jax.train.steps import train_step
from visioncore_jax.train.tasks import Classification

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def config(tfds_data_dir):
    """The tiny test config reading the session's TFDS dir."""
    config = test_config.get_config()
    config.data.data_dir = tfds_data_dir
    return config


def run_main(workdir, data_dir, *overrides, wait=True):
    """Runs `main.py` on configs/test.py in a subprocess (a real process that can be killed)."""
    command = [sys.executable, "main.py", f"--workdir={workdir}", "--config=configs/test.py",
               f"--config.data.data_dir={data_dir}", *overrides]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=300)
        return process.returncode, output
    return process


def scalar_tags(workdir):
    """Scalar names and their last values in the TensorBoard event files of `workdir`."""
    return {tag: series[-1][1] for tag, series in read_scalars(workdir).items()}


def finished_steps(workdir):
    """Steps with a finalized checkpoint in `workdir/checkpoints`."""
    return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
                  if os.path.basename(p).isdigit())


def load_params(workdir, step):
    """The parameters saved at `step` as numpy arrays (whatever devices saved them)."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        target = jax.tree.map(lambda leaf: np.empty(leaf.shape, leaf.dtype), metadata.item_metadata.tree)
        return checkpointer.restore(path, target)["params"]


@pytest.mark.slow
def test_train_and_evaluate_writes_scalars_checkpoints_and_config(config, tmp_path):
    workdir = str(tmp_path / "run")
    state = train_and_evaluate(config, workdir)
    assert int(state.step) == config.training.num_train_steps
    scalars = scalar_tags(workdir)
    for tag in ("train_loss", "train_accuracy", "train_learning_rate", "eval_loss", "eval_accuracy",
                "steps_per_sec"):
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    num_classes = build_input(config).info.num_classes
    # A few steps of a tiny model: the loss is still close to ln(K), and finite.
    assert abs(scalars["eval_loss"] - np.log(num_classes)) < 1.0
    assert 0.0 <= scalars["eval_accuracy"] <= 1.0
    assert finished_steps(workdir)[-1] == config.training.num_train_steps
    assert os.path.exists(os.path.join(workdir, "config.json"))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters_and_logs(config, tfds_data_dir, tmp_path, monkeypatch):
    # Log windows (3 steps) and the diagnostics period (one eval, at the end) span the checkpoints (every 10). A
    # slice of the data and no report: each run reads, measures and evaluates less.
    steps = ("--config.training.num_train_steps=60", "--config.training.checkpoint_every_steps=10",
             "--config.training.log_every_steps=3", "--config.data.train_split=train[:2048]",
             "--config.data.eval_split=test[:512]", "--config.diagnostics.report=False")
    reference_dir, resumed_dir = str(tmp_path / "reference"), str(tmp_path / "resumed")
    # The uninterrupted reference: the same command in this process; the killed and resumed runs are processes.
    monkeypatch.chdir(REPO)
    code, _, stderr = main_in_process([f"--workdir={reference_dir}", "--config=configs/test.py",
                                       f"--config.data.data_dir={tfds_data_dir}", *steps])
    assert code == 0, stderr[-3000:]

    process = run_main(resumed_dir, tfds_data_dir, *steps, wait=False)
    deadline = time.time() + 240
    while max(finished_steps(resumed_dir), default=0) == 0 and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    output, _ = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{output[-2000:]}"
    killed_at = finished_steps(resumed_dir)
    assert 0 < killed_at[-1] < 60

    code, output = run_main(resumed_dir, tfds_data_dir, *steps)
    assert code == 0, output[-3000:]
    assert f"Resumed from the checkpoint at step {killed_at[-1]}" in output
    reference, resumed = load_params(reference_dir, 60), load_params(resumed_dir, 60)
    jax.tree.map(np.testing.assert_array_equal, reference, resumed)
    assert_same_logs(reference_dir, resumed_dir)


TIMING_TAGS = ("steps_per_sec", "uptime", "timing/")


def assert_same_logs(reference_dir, resumed_dir):
    """Every TensorBoard scalar (each step once, equal values; timings aside) and every diagnostics record of
    `resumed_dir` equals that of `reference_dir`."""
    reference, resumed = read_scalars(reference_dir), read_scalars(resumed_dir)
    untimed = sorted(tag for tag in reference if not tag.startswith(TIMING_TAGS))
    assert sorted(tag for tag in resumed if not tag.startswith(TIMING_TAGS)) == untimed
    assert any(tag.startswith("diagnostics/") for tag in untimed)
    for tag in untimed:
        assert resumed[tag] == reference[tag], tag
    for name in ("train.jsonl", "eval.jsonl"):
        with open(os.path.join(reference_dir, "diagnostics", name)) as f, \
                open(os.path.join(resumed_dir, "diagnostics", name)) as g:
            assert g.read() == f.read(), name


def one_step(config, devices, batch, regularization):
    """Initial state and metrics after one jitted train step of `config`'s model on `devices`."""
    model = build_model(config, 10)
    tx, schedule = build_optimizer(config, steps_per_epoch=10, total_steps=100)
    example = {k: v[:1] for k, v in batch.items() if k != "label"}
    mesh = partitioning.make_mesh(devices)
    initial = partitioning.compile_run_once(partitioning.jit_replicated(
        create_train_state, mesh, model=model, tx=tx, example_inputs=example, seed=0))()
    initial_params = jax.device_get(initial.params)
    metrics = jax.device_put(TrainMetrics.empty(), partitioning.replicated(mesh))
    step = functools.partial(train_step, task=Classification(aux_loss_weight=config.model.aux_loss_weight))
    hyperparams = partitioning.put_hyperparams({"learning_rate": float(schedule(0)), **regularization,
                                                **optimizer_hyperparams(config.optimizer)}, mesh)
    state, metrics, _ = partitioning.jit_train_step(step, mesh)(initial, metrics, None, to_global_batch(batch, mesh),
                                                                hyperparams)
    return model, initial_params, state, metrics.compute()


@pytest.mark.slow
def test_data_parallel_step_equals_single_device_step(config):
    assert jax.device_count() == 2
    config = config.copy_and_resolve_references()
    config.optimizer.name = "sgd"  # Adam's g / sqrt(v) would amplify float reduction-order noise in tiny grads
    batch = next(build_input(config).train_batches(config.training.batch_size))
    regularization = {"dropout_rate": 0.1, "label_smoothing": 0.1}
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        _, initial, state, metrics = one_step(config, devices, batch, regularization)
        assert len(state.params["head"]["kernel"].sharding.device_set) == len(devices)
        updates = jax.tree.map(np.subtract, jax.device_get(state.params), initial)
        results.append((metrics, updates, jax.device_get(state.batch_stats)))

    (metrics_1, updates_1, stats_1), (metrics_n, updates_n, stats_n) = results
    np.testing.assert_allclose(metrics_1["loss"], metrics_n["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics_1["grad_norm"], metrics_n["grad_norm"], rtol=1e-4)
    # Each module's update equal within 1% of its norm: the batch's gradient summed in another order differs by float
    # noise (up to ~2.5% of single elements where terms cancel, on some CPUs), a step that averaged only one
    # device's half of the batch by tens of percent.
    leaves_n = jax.tree.leaves(updates_n)
    for (path, update_1), update_n in zip(jax.tree_util.tree_leaves_with_path(updates_1), leaves_n, strict=True):
        assert np.linalg.norm(update_n - update_1) <= 1e-2 * np.linalg.norm(update_1), jax.tree_util.keystr(path)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), stats_1, stats_n)


@pytest.mark.slow
def test_runs_differing_in_learning_rate_and_schedule_share_one_compiled_step(config):
    """The LR is a step input: a run with another LR and schedule reuses the compiled step, and each step moves
    the parameters by its own LR."""
    other = config.copy_and_resolve_references()
    other.optimizer.learning_rate, other.schedule.name = 0.5, "onecycle"
    functions, programs, rates, deltas = [], [], [], []
    for run_config in (config, other):
        experiment = build_experiment(run_config)
        train_fn, _ = jitted_steps(experiment)
        state = experiment.init_state()
        before = jax.device_get(state.params["head"]["kernel"])
        batch = to_global_batch(next(experiment.pipeline.train_batches(run_config.training.batch_size)),
                                experiment.mesh)
        metrics = jax.device_put(TrainMetrics.empty(), partitioning.replicated(experiment.mesh))
        hyperparams = partitioning.put_hyperparams(experiment.hyperparams(0), experiment.mesh)
        state, metrics, _ = train_fn(state, metrics, None, batch, hyperparams)
        functions.append(train_fn)
        programs.append(train_fn._cache_size())  # programs compiled so far (other tests of this process too)
        rates.append(float(metrics.compute()["learning_rate"]))
        deltas.append(jax.device_get(state.params["head"]["kernel"]) - before)
        assert rates[-1] == pytest.approx(float(experiment.learning_rate_fn(0)), rel=1e-6)
    assert functions[0] is functions[1] and programs[1] == programs[0]  # the second run compiled nothing
    assert rates[1] != pytest.approx(rates[0])
    np.testing.assert_allclose(deltas[1], deltas[0] * rates[1] / rates[0], rtol=1e-4, atol=1e-9)


@pytest.mark.slow
def test_auxiliary_heads_are_trained_by_a_weighted_loss(config):
    config = config.copy_and_resolve_references()
    config.model.aux_loss_weight = 0.5
    batch = next(build_input(config).train_batches(config.training.batch_size))
    regularization = {"dropout_rate": 0.0, "label_smoothing": 0.0}
    model, initial, state, metrics = one_step(config, jax.devices()[:1], batch, regularization)
    for head in ("aux_head_color", "aux_head_brightness", "head"):
        assert np.abs(jax.device_get(state.params[head]["kernel"]) - initial[head]["kernel"]).max() > 0
    variables = model.init(jax.random.PRNGKey(0), {k: v[:1] for k, v in batch.items() if k != "label"},
                           train=False)
    outputs, _ = model.apply({**variables, "params": initial}, batch, train=True, dropout_rate=0.0,
                             rngs={"dropout": jax.random.PRNGKey(0)},
                             mutable=["batch_stats"])
    ce = lambda logits: float(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean())  # noqa
    expected = ce(outputs["logits"]) + 0.5 * (ce(outputs["aux_logits"]["color"]) +
                                              ce(outputs["aux_logits"]["brightness"]))
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)


@pytest.mark.slow
def test_incompatible_checkpoint_is_a_clear_error_and_a_corrupt_one_is_skipped(config, tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(config, workdir)
    wider = config.copy_and_resolve_references()
    wider.model.width = 16
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match="Use a new --workdir"):
        train_and_evaluate(wider, workdir)
    *_, previous, last = finished_steps(workdir)
    for path in glob.glob(os.path.join(workdir, "checkpoints", str(last), "state", "d", "*")):
        with open(path, "wb") as f:
            f.write(b"not a checkpoint")
    longer = config.copy_and_resolve_references()
    longer.training.num_train_steps += 2
    state = train_and_evaluate(longer, workdir)  # resumes from `previous`, the damaged one moved aside
    assert int(state.step) == longer.training.num_train_steps
    assert os.path.isdir(os.path.join(workdir, "checkpoints", f"corrupt-{last}"))
    assert previous in finished_steps(workdir)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tfds_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    process = run_main(workdir, tfds_data_dir, "--config.training.num_train_steps=100000",
                       "--config.training.checkpoint_every_steps=100000", "--config.data.train_split=train[:2048]",
                       "--config.data.eval_split=test[:512]", wait=False)  # a slice: less to read before step 0
    deadline = time.time() + 240
    while not finished_steps(workdir) and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)  # the step-0 checkpoint is written just before the first step
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-3000:]
    assert "rerun the same command to resume" in output
    saved = finished_steps(workdir)
    assert saved[0] == 0 and len(saved) == 2 and 0 < saved[1] < 100000  # the step-0 save, then the SIGTERM save
