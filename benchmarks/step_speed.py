r"""Speed of the jitted train step (and, where the data is offline, the full training loop): images/s and memory
for the benchmarked models, in float32 and bfloat16, with the diagnostics statistics off and on.

Every variant is compiled first; then `--rounds` rounds each time `--steps` steps of every variant in turn, so
drift on a shared machine affects all of them alike; the median round is reported. The step is built as
training builds it (`build_experiment` + `jitted_steps`) and re-fed one device-resident batch. CIFAR-100 configs
run on mock CIFAR-shaped batches (random inputs and labels, nothing downloaded); the others read their embedded
datasets.

Memory: `xla MiB` is the compiled step's own footprint from XLA's buffer assignment (arguments + outputs + temps
- donated aliases), the same on every backend; on a GPU/TPU `device peak MiB` is the device allocator's peak
(`memory_stats()['peak_bytes_in_use']`, process-wide, so it grows over the variants), on CPU the process's peak
resident set (`ru_maxrss`, also cumulative).

  python -m benchmarks.step_speed                                  # all models, fp32 + bf16, statistics off/on
  python -m benchmarks.step_speed --models=cifar100_mc --dtypes=float32 --statistics=off --batch=64
  python -m benchmarks.step_speed --models=default --dtypes=float32 --loop   # + train_and_evaluate vs bare
  # GPU (same command; run it on the accelerator host, larger steps for steadier numbers):
  python -m benchmarks.step_speed --steps=50 --rounds=5 --loop
  # A host without the embedded datasets (or TensorFlow): record one batch per model here, replay it there
  python -m benchmarks.step_speed --record=/tmp/batches.pkl
  python -m benchmarks.step_speed --replay=/tmp/batches.pkl --steps=50 --rounds=5
"""

import dataclasses
import pickle
import resource
import tempfile
import time
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from absl import app, flags

from configs import cifar100_mc, cifar100_resnet, default, seg_cbam, video_convgru
from visioncore_jax.data import DatasetInfo, to_global_batch
from visioncore_jax.train import partitioning, train_and_evaluate
from visioncore_jax.train.experiment import Experiment, build_experiment, jitted_steps
from visioncore_jax.train.metrics import TrainMetrics
from visioncore_jax.train.steps import empty_statistics

MODELS = {
    "cifar100_mc": cifar100_mc.get_config,  # dual-pathway ResNet-18 (5,640,804 params), mock CIFAR-100
    "default": default.get_config,  # the default small dual-pathway ResNet, embedded shapes
    "resnet18": cifar100_resnet.get_config,  # single-pathway ResNet-18, mock CIFAR-100
    "convgru": video_convgru.get_config,  # ConvGRU clip classifier, embedded clips
    "unet": seg_cbam.get_config,  # CBAM U-Net, embedded masks
}
MOCK_DATA = ("cifar100",)  # datasets replaced by mock batches of their shapes

flags.DEFINE_list("models", list(MODELS), f"Models to benchmark, of {list(MODELS)}.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "config.training.dtype values.")
flags.DEFINE_list("statistics", ["off", "on"], "Diagnostics statistics in the step: off, on or both.")
flags.DEFINE_integer("steps", 10, "Timed steps per variant per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds over all variants; the median is reported.")
flags.DEFINE_integer("batch", 0, "Global batch size; 0 keeps each config's.")
flags.DEFINE_bool("loop", False, "Also time train_and_evaluate (statistics on) for models with offline data.")
flags.DEFINE_string("record", "", "Write each model's dataset info and one training batch to this file, then stop.")
flags.DEFINE_string("replay", "", "Time the step on the batches of a --record file instead of reading the datasets.")
FLAGS = flags.FLAGS


class MockPipeline:
    """Random batches of a classification dataset's shapes, for timing without the dataset."""

    def __init__(self, num_classes: int, image_shape: tuple[int, ...], num_train_examples: int, seed: int = 0):
        self.info = DatasetInfo(num_classes=num_classes, task="classification",
                                num_train_examples=num_train_examples, num_eval_examples=num_train_examples // 5,
                                image_shape=image_shape, class_names=tuple(map(str, range(num_classes))),
                                train_label_counts=(num_train_examples // num_classes,) * num_classes)
        self._rng = np.random.default_rng(seed)

    def train_batches(self, global_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Infinite stream of normalized-looking random batches."""
        while True:
            yield {"color": self._rng.standard_normal((global_batch_size, *self.info.image_shape), np.float32),
                   "brightness": self._rng.standard_normal((global_batch_size, *self.info.image_shape[:-1], 1),
                                                           np.float32),
                   "label": self._rng.integers(0, self.info.num_classes, global_batch_size, np.int32)}


class ReplayPipeline:
    """One recorded training batch of a dataset, replayed forever (timing where the dataset cannot be read)."""

    def __init__(self, info: DatasetInfo, batch: dict[str, np.ndarray]):
        self.info = info
        self._batch = batch

    def train_batches(self, global_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """The recorded batch, again and again (its size must be `global_batch_size`)."""
        recorded = len(next(iter(self._batch.values())))
        if recorded != global_batch_size:
            raise ValueError(f"--replay: the recorded batch holds {recorded} examples, not {global_batch_size}; "
                             "record it with the same --batch.")
        while True:
            yield self._batch


def benchmark_config(model: str, dtype: str, batch: int) -> ml_collections.ConfigDict:
    """The config of benchmarked `model` in compute `dtype`, with `batch` (0: the config's own)."""
    if model not in MODELS:
        raise ValueError(f"--models: {model!r} is not one of {list(MODELS)}.")
    config = MODELS[model]()
    config.training.dtype = dtype
    if batch:
        config.training.batch_size = batch
    return config


def build(config: ml_collections.ConfigDict, replay: ReplayPipeline | None = None) -> Experiment:
    """The experiment of `config`, on mock batches when its dataset is one of MOCK_DATA, else on `replay`'s batch
    when given, else on its dataset."""
    pipeline = replay
    if config.data.name in MOCK_DATA:
        pipeline = MockPipeline(100 if config.data.name == "cifar100" else 10, (32, 32, 3), 50_000)
    return build_experiment(config, pipeline=pipeline)


def record_batches(configs: dict, path: str) -> None:
    """Writes {(model, dtype): (dataset info, one training batch)} of the configs that read a dataset to `path`."""
    recorded = {}
    for key, config in configs.items():
        if config.data.name not in MOCK_DATA:
            pipeline = build(config).pipeline
            recorded[key] = (pipeline.info, next(pipeline.train_batches(config.training.batch_size)))
    with open(path, "wb") as file:
        pickle.dump(recorded, file)
    print(f"recorded {len(recorded)} batches to {path}: {sorted(recorded)}")


def replay_pipelines(path: str) -> dict:
    """{(model, dtype): ReplayPipeline} from a `record_batches` file."""
    with open(path, "rb") as file:
        return {key: ReplayPipeline(info, batch) for key, (info, batch) in pickle.load(file).items()}


class StepTimer:
    """The compiled train step of `experiment` on one device-resident batch, timed over `steps` calls, with the
    diagnostics statistics on or off (each compiled once, by `compile`)."""

    def __init__(self, experiment: Experiment):
        self.experiment = experiment
        mesh = experiment.mesh
        self.batch = to_global_batch(next(experiment.pipeline.train_batches(experiment.config.training.batch_size)),
                                     mesh)
        self.hyperparams = partitioning.put_hyperparams(experiment.hyperparams(0), mesh)
        self.train_fn, _ = jitted_steps(experiment)
        self.state = experiment.init_state()
        self.compiled = {}
        self.empty = jax.device_get(empty_statistics(self.state, self.batch, self.hyperparams,
                                                     task=experiment.task))

    def step_args(self, statistics: bool):
        """The step's arguments: (state, empty metrics, empty statistics or None, batch, hyperparameters)."""
        replicated = partitioning.replicated(self.experiment.mesh)
        metrics = jax.device_put(TrainMetrics.empty(), replicated)
        stats = jax.device_put(self.empty, replicated) if statistics else None
        return self.state, metrics, stats, self.batch, self.hyperparams

    def compile(self, statistics: bool) -> int | None:
        """Compiles the step (statistics on or off) once, for `images_per_sec`; returns XLA's buffer-assignment
        footprint of it in bytes (None where the backend does not report it)."""
        compiled = self.train_fn.lower(*self.step_args(statistics)).compile()
        self.compiled[statistics] = compiled
        analysis = compiled.memory_analysis()
        if analysis is None:
            return None
        return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
                - analysis.alias_size_in_bytes)

    def images_per_sec(self, steps: int, statistics: bool) -> float:
        """Steady-state images/s over `steps` steps (after one untimed step) of the step `compile` built."""
        step = self.compiled[statistics]
        state, metrics, stats, batch, regularization = self.step_args(statistics)
        state, metrics, stats = step(state, metrics, stats, batch, regularization)
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics, stats = step(state, metrics, stats, batch, regularization)
        jax.block_until_ready((state, stats))
        elapsed = time.perf_counter() - start
        self.state = state
        return steps * self.experiment.config.training.batch_size / elapsed


def loop_run_seconds(config: ml_collections.ConfigDict, num_steps: int) -> float:
    """Wall time of `train_and_evaluate` (its default diagnostics on) for `num_steps` steps, logging every 10."""
    run_config = config.copy_and_resolve_references()
    run_config.training.update(num_epochs=-1, num_train_steps=num_steps, log_every_steps=10)
    run_config.schedule.warmup_epochs = 0.0  # the schedule does not change the cost; short runs need no warmup
    run_config.diagnostics.report = False  # the end-of-run plots are not part of the steady state
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        jax.block_until_ready(train_and_evaluate(run_config, workdir))
        return time.perf_counter() - start


def loop_vs_bare(config: ml_collections.ConfigDict, timer: StepTimer, steps: int, rounds: int) -> list[tuple]:
    """Rounds of (bare step with statistics, loop between evals, loop over an eval period) images/s, measured
    alternately. The loop's rates are differences of runs (compilation - done once, by an untimed first run -,
    set-up, the final eval and checkpoint cancel out): a `steps`-step run against one of `2 * steps` (steps only,
    when `2 * steps` ends before the first eval) and one of `steps` + the eval period (that many steps plus one
    eval and its checkpoint, as training runs them)."""
    batch, period = config.training.batch_size, timer.experiment.eval_every_steps
    if 2 * steps >= period:
        raise ValueError(f"--loop: {2 * steps} steps reach the first eval (every {period} steps); use fewer --steps.")
    loop_run_seconds(config, steps)
    measured = []
    for _ in range(rounds):
        bare = timer.images_per_sec(2 * steps, statistics=True)
        short, double, with_eval = (loop_run_seconds(config, n) for n in (steps, 2 * steps, steps + period))
        measured.append((bare, steps * batch / (double - short), period * batch / (with_eval - short)))
    return measured


def device_peak_mib() -> float:
    """The device allocator's peak (accelerators) or the process's peak resident set (CPU), in MiB."""
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


@dataclasses.dataclass
class Variant:
    """One timed row: a model in one dtype with statistics on or off."""

    model: str
    dtype: str
    statistics: bool
    timer: StepTimer
    xla_mib: float | None = None
    peak_mib: float = 0.0
    rates: list = dataclasses.field(default_factory=list)


def main(argv):
    del argv
    for name in FLAGS.statistics:
        if name not in ("off", "on"):
            raise app.UsageError(f"--statistics: {name!r} is not 'off' or 'on'.")
    if FLAGS.loop and FLAGS.replay:
        raise app.UsageError("--loop trains on the datasets themselves; it cannot run on --replay batches.")
    configs = {(m, d): benchmark_config(m, d, FLAGS.batch) for m in FLAGS.models for d in FLAGS.dtypes}
    if FLAGS.record:
        record_batches(configs, FLAGS.record)
        return
    replays = replay_pipelines(FLAGS.replay) if FLAGS.replay else {}
    missing = [key for key, config in configs.items() if FLAGS.replay and config.data.name not in MOCK_DATA
               and key not in replays]
    if missing:
        raise app.UsageError(f"--replay: {FLAGS.replay} has no batch of {missing}; record them with the same "
                             "--models and --dtypes.")
    variants = []
    for (model, dtype), config in configs.items():
        timer = StepTimer(build(config, replays.get((model, dtype))))
        for statistics in ("off", "on"):
            if statistics in FLAGS.statistics:
                variant = Variant(model, dtype, statistics == "on", timer)
                memory = timer.compile(variant.statistics)
                variant.xla_mib = None if memory is None else memory / 2**20
                timer.images_per_sec(1, variant.statistics)
                variant.peak_mib = device_peak_mib()
                variants.append(variant)
    for _ in range(FLAGS.rounds):
        for variant in variants:
            variant.rates.append(variant.timer.images_per_sec(FLAGS.steps, variant.statistics))

    device = jax.devices()[0]
    peak_kind = "device peak" if device.memory_stats() else "process peak RSS"
    print(f"{jax.device_count()} x {device.device_kind}, JAX {jax.__version__}; {FLAGS.rounds} rounds of "
          f"{FLAGS.steps} steps; median images/s")
    print(f"| model | params | dtype | batch | statistics | images/s | rounds | stats overhead | xla MiB | "
          f"{peak_kind} MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    medians = {(v.model, v.dtype, v.statistics): float(np.median(v.rates)) for v in variants}
    for v in variants:
        rate = medians[(v.model, v.dtype, v.statistics)]
        off = medians.get((v.model, v.dtype, False))
        overhead = f"{100 * (off / rate - 1):+.1f}%" if v.statistics and off else ""
        params = sum(x.size for x in jax.tree.leaves(v.timer.state.params))
        xla = "n/a" if v.xla_mib is None else f"{v.xla_mib:.0f}"
        print(f"| {v.model} | {params:,} | {v.dtype} | {v.timer.experiment.config.training.batch_size} | "
              f"{'on' if v.statistics else 'off'} | {rate:.1f} | {np.round(v.rates, 1).tolist()} | {overhead} | "
              f"{xla} | {v.peak_mib:.0f} |")
    if FLAGS.loop:
        for (model, dtype), config in configs.items():
            if config.data.name in MOCK_DATA:
                continue
            timer = next(v.timer for v in variants if (v.model, v.dtype) == (model, dtype))
            if True not in timer.compiled:
                timer.compile(True)
            rounds = loop_vs_bare(config, timer, FLAGS.steps * 4, FLAGS.rounds)
            steps_only = [loop / bare for bare, loop, _ in rounds]
            with_eval = [loop / bare for bare, _, loop in rounds]
            print(f"loop {model} {dtype}: images/s per round (bare step with statistics, loop between evals, loop "
                  f"over an eval period) {np.round(rounds, 1).tolist()}")
            print(f"loop {model} {dtype}: loop / bare step with statistics: between evals "
                  f"{np.round(steps_only, 3).tolist()} median {np.median(steps_only):.3f}; over an eval period "
                  f"{np.round(with_eval, 3).tolist()} median {np.median(with_eval):.3f}")


if __name__ == "__main__":
    app.run(main)
