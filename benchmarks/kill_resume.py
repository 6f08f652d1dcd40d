r"""Kill -9 at random points, resume, and compare with an uninterrupted run: parameters bit for bit, every
TensorBoard scalar (timings aside) and every diagnostics record; also counts steps written twice in the raw
event files. With --damage, the newest checkpoint is truncated after every second kill (the resume must move it
aside and fall back to the one before it).

  python -m benchmarks.kill_resume --runs=4 [--damage]
"""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import app, flags

flags.DEFINE_integer("runs", 4, "Killed-and-resumed runs.")
flags.DEFINE_integer("steps", 30, "Training steps of each run.")
flags.DEFINE_bool("damage", False, "Truncate the newest checkpoint's array files after every second kill.")
flags.DEFINE_integer("seed", 0, "Seed of the kill times.")
FLAGS = flags.FLAGS
TIMINGS = ("steps_per_sec", "uptime", "timing/")


def run(workdir, data_dir, steps, wait=True):
    command = [sys.executable, "main.py", f"--workdir={workdir}", "--config=configs/test.py",
               f"--config.data.data_dir={data_dir}", f"--config.training.num_train_steps={steps}",
               "--config.training.checkpoint_every_steps=4", "--config.training.log_every_steps=3",
               f"--config.training.eval_every_epochs={12 / 375}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output = process.communicate()[0]
        if process.returncode:
            raise RuntimeError(output[-3000:])
    return process


def steps_saved(workdir):
    names = [os.path.basename(p) for p in glob.glob(f"{workdir}/checkpoints/*")]
    return sorted(int(name) for name in names if name.isdigit())


def events(workdir):
    """{tag: [(step, value bytes)]} in file order, from every raw event record (nothing purged)."""
    series = {}
    for path in sorted(glob.glob(f"{workdir}/events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            for value in event.summary.value:
                if not value.tag.startswith(TIMINGS) and value.HasField("tensor"):
                    series.setdefault(value.tag, []).append((event.step, value.tensor.SerializeToString()))
    return series


def params(workdir, step):
    with ocp.CheckpointManager(f"{workdir}/checkpoints") as manager:
        return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]["params"]


def records(workdir):
    return [open(f"{workdir}/diagnostics/{name}").read() for name in ("train.jsonl", "eval.jsonl")]


def main(_):
    rng = random.Random(FLAGS.seed)
    root = tempfile.mkdtemp(prefix="kill_resume_")
    data_dir = os.path.join(root, "tfds")
    reference = os.path.join(root, "reference")
    run(reference, data_dir, FLAGS.steps)
    expected_events, expected_records = events(reference), records(reference)
    expected_params = params(reference, FLAGS.steps)
    results = []
    for index in range(FLAGS.runs):
        workdir = os.path.join(root, f"run{index}")
        process = run(workdir, data_dir, FLAGS.steps, wait=False)
        while not steps_saved(workdir) and process.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 15))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        saved = steps_saved(workdir)
        damaged = None
        if FLAGS.damage and index % 2 and len(saved) > 1:
            damaged = saved[-1]
            for path in glob.glob(f"{workdir}/checkpoints/{damaged}/state/**/d/*", recursive=True):
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
        resumed = run(workdir, data_dir, FLAGS.steps, wait=False)
        output = resumed.communicate()[0]
        same_params = all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(expected_params), jax.tree.leaves(params(workdir, FLAGS.steps)), strict=True))
        got = events(workdir)
        duplicated = sum(c - 1 for series in got.values() for c in Counter(s for s, _ in series).values())
        result = {"killed_after_checkpoint": saved[-1] if saved else None, "damaged": damaged,
                  "resumed_ok": resumed.returncode == 0, "moved_aside": os.path.isdir(
                      f"{workdir}/checkpoints/corrupt-{damaged}") if damaged is not None else None,
                  "params_identical": same_params, "scalars_identical": got == expected_events,
                  "records_identical": records(workdir) == expected_records, "duplicated_steps": duplicated}
        if resumed.returncode:
            result["error"] = output[-500:]
        print(json.dumps(result), flush=True)
        results.append(result)
    shutil.rmtree(root, ignore_errors=True)
    ok = sum(r["params_identical"] and r["scalars_identical"] and r["records_identical"]
             and not r["duplicated_steps"] for r in results)
    print(f"{ok} of {len(results)} killed runs identical to the uninterrupted one (parameters, scalars, records).")


if __name__ == "__main__":
    app.run(main)
